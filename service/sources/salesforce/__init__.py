"""Salesforce Outbound Messages (`type: salesforce`): the SOAP envelope, the adapter and its default maps."""

from service.sources.salesforce.adapter import SalesforceAdapter

__all__ = ["SalesforceAdapter"]
