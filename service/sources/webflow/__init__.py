"""Webflow (`type: webflow`): the adapter."""
