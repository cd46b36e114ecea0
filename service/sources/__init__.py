"""Source adapters: one module per sender, registered here by its config `type`."""

from __future__ import annotations

from service.sources.base import SourceAdapter
from service.sources.generic import GenericAdapter

SOURCE_KINDS: dict[str, type[SourceAdapter]] = {
    GenericAdapter.name: GenericAdapter,
}
