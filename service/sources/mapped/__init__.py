"""The configurable sender (`type: mapped`): parsing, verification presets, expressions, transforms."""

from service.sources.mapped.adapter import MappedAdapter

__all__ = ["MappedAdapter"]
