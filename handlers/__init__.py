"""Provider handlers: one folder per provider (`handlers/<provider>/`), registered here by its config `type`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from handlers.base import ProviderHandler
from handlers.leadsquared.handler import LeadSquaredHandler
from handlers.leadsquared_async.handler import LeadSquaredAsyncHandler
from handlers.octanist.handler import OctanistHandler
from handlers.pollybot.handler import PollyBotHandler

HANDLER_KINDS: dict[str, type[ProviderHandler]] = {
    handler.kind: handler
    for handler in (LeadSquaredHandler, LeadSquaredAsyncHandler, PollyBotHandler, OctanistHandler)
}


def build_handlers(providers: Mapping[str, Mapping[str, Any]]) -> dict[str, ProviderHandler]:
    """One handler per configured (enabled) provider entry."""
    return {
        name: HANDLER_KINDS[settings["type"]](name, settings)
        for name, settings in providers.items()
        if settings.get("enabled", True)
    }
