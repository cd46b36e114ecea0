"""Sender adapters: one folder per sender (`service/sources/<sender>/`), registered here by its config `type`."""

from __future__ import annotations

from service.sources.base import SourceAdapter
from service.sources.calendly.adapter import CalendlyAdapter
from service.sources.generic.adapter import GenericAdapter
from service.sources.google_ads.adapter import GoogleAdsAdapter
from service.sources.hubspot.adapter import HubSpotAdapter
from service.sources.mapped import MappedAdapter
from service.sources.meta.adapter import MetaLeadAdsAdapter
from service.sources.pipedrive.adapter import PipedriveAdapter
from service.sources.salesforce import SalesforceAdapter
from service.sources.typeform.adapter import TypeformAdapter
from service.sources.unbounce.adapter import UnbounceAdapter
from service.sources.webflow.adapter import WebflowAdapter

SOURCE_KINDS: dict[str, type[SourceAdapter]] = {
    adapter.name: adapter
    for adapter in (
        GenericAdapter,
        HubSpotAdapter,
        TypeformAdapter,
        MetaLeadAdsAdapter,
        PipedriveAdapter,
        CalendlyAdapter,
        WebflowAdapter,
        UnbounceAdapter,
        GoogleAdsAdapter,
        MappedAdapter,
        SalesforceAdapter,
    )
}
