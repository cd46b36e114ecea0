"""A sender's `value` that is no number is left out, never sent as null (null clears the CRM's value)."""

from __future__ import annotations

from service.sources.common import apply_map, clean_changes


def test_an_unreadable_value_is_left_out_and_counted() -> None:
    mapped = apply_map({"budget": "5k", "city": "Rome"}, {"budget": "value", "city": "city"})
    assert mapped.changes == {"city": "Rome"}
    assert mapped.skipped == 1


def test_an_empty_value_still_clears_and_a_number_is_read() -> None:
    assert apply_map({"budget": ""}, {"budget": "value"}).changes == {"value": None}
    assert apply_map({"budget": "1,200.50"}, {"budget": "value"}).changes["value"] == 1200.5


def test_clean_changes_drops_an_unreadable_value_only() -> None:
    assert clean_changes({"value": "n/a", "status": "won"}) == {"status": "won"}
    assert clean_changes({"value": None}) == {"value": None}
    assert clean_changes({"value": "42"}) == {"value": 42}
