"""Source adapters: one module per sender, registered here by its config `type`."""

from __future__ import annotations

from service.sources.base import SourceAdapter
from service.sources.calendly import CalendlyAdapter
from service.sources.generic import GenericAdapter
from service.sources.google_ads import GoogleAdsAdapter
from service.sources.hubspot import HubSpotAdapter
from service.sources.mapped import MappedAdapter
from service.sources.meta import MetaLeadAdsAdapter
from service.sources.pipedrive import PipedriveAdapter
from service.sources.salesforce import SalesforceAdapter
from service.sources.typeform import TypeformAdapter
from service.sources.unbounce import UnbounceAdapter
from service.sources.webflow import WebflowAdapter

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
