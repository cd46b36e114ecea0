"""Figures for the console's overview: webhook outcomes per source read from the app's Prometheus
counters (summed over gunicorn workers in multiprocess mode), and the bar geometry of the SVG charts
(outcomes per minute; each provider's rate-limit budget used)."""

from __future__ import annotations

import os
from collections import defaultdict
from datetime import datetime
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, multiprocess

# Webhook outcomes that are a refusal of the request, shown as "rejected by reason".
ACCEPTED_OUTCOMES = {"accepted", "duplicate", "ignored", "in_progress"}
# The HTTP status each refusal outcome answers with (service/sources/base.py, the app's 413).
REJECTION_STATUS = {
    "bad_request": 400,
    "validation_error": 400,
    "unauthorized": 401,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "upstream_unavailable": 503,
    "unavailable": 503,
    "internal_error": 503,
}
CHART_WIDTH = 600
CHART_HEIGHT = 120
# The budget chart in a provider's row: one bar per 5-second sample over the last 5 minutes.
BUDGET_WIDTH = 300
BUDGET_HEIGHT = 50
BUDGET_SPAN_SECONDS = 300.0
BUDGET_STEP_SECONDS = 5.0


def _collected() -> Any:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry.collect()
    return REGISTRY.collect()


def counter_totals(metric: str, *labels: str) -> dict[tuple[str, ...], float]:
    """The `<metric>_total` samples of a counter summed by the given labels."""
    totals: dict[tuple[str, ...], float] = defaultdict(float)
    for family in _collected():
        if family.name != metric:
            continue
        for sample in family.samples:
            if sample.name == metric + "_total":
                totals[tuple(sample.labels.get(label, "") for label in labels)] += sample.value
    return dict(totals)


def webhook_outcomes() -> dict[str, dict[str, Any]]:
    """Per source: accepted, duplicates, ignored and the rejections by reason (401, 400, 415...)."""
    sources: dict[str, dict[str, Any]] = {}
    for (source, outcome), value in counter_totals(
        "leadrelay_webhooks_received", "source", "outcome"
    ).items():
        entry = sources.setdefault(source, {"accepted": 0, "duplicate": 0, "ignored": 0, "rejected": {}})
        if outcome in ("accepted", "duplicate", "ignored"):
            entry[outcome] += int(value)
        elif outcome not in ACCEPTED_OUTCOMES:
            reason = f"{REJECTION_STATUS[outcome]} {outcome}" if outcome in REJECTION_STATUS else outcome
            entry["rejected"][reason] = entry["rejected"].get(reason, 0) + int(value)
    return sources


def bars(series: list[dict[str, Any]], key: str) -> dict[str, Any]:
    """Bar rectangles (x, y, width, height) for one per-minute series, scaled to the chart box."""
    peak = max((point[key] for point in series), default=0) or 1
    width = CHART_WIDTH / max(len(series), 1)
    rects = []
    for index, point in enumerate(series):
        height = round(point[key] / peak * (CHART_HEIGHT - 10), 1)
        rects.append(
            {
                "x": round(index * width, 1),
                "y": round(CHART_HEIGHT - height, 1),
                "width": round(max(width - 1, 1), 1),
                "height": height,
                "label": f"{point['minute']}: {point[key]} {key}",
            }
        )
    return {"rects": rects, "peak": peak, "total": sum(point[key] for point in series)}


def budget_bars(rate_limit: dict[str, Any] | None, now: float) -> dict[str, Any] | None:
    """Bars for one provider's budget samples (`overview()["providers"][name]["rate_limit"]`):
    each at its moment on a 5-minute axis ending `now`, as tall as its share of the limit; and
    the latest sample's figures. None when no dispatcher sampled the provider lately."""
    if not rate_limit or not rate_limit["samples"]:
        return None
    calls = rate_limit["calls"] or 1
    step = BUDGET_WIDTH / (BUDGET_SPAN_SECONDS / BUDGET_STEP_SECONDS)
    rects = []
    for sample in rate_limit["samples"]:
        at = datetime.fromisoformat(sample["at"]).timestamp()
        offset = BUDGET_SPAN_SECONDS - (now - at)
        if offset < 0:
            continue
        height = round(min(sample["used"] / calls, 1.0) * (BUDGET_HEIGHT - 2), 1)
        rects.append(
            {
                "x": round(min(offset / BUDGET_SPAN_SECONDS * BUDGET_WIDTH, BUDGET_WIDTH - step), 1),
                "y": round(BUDGET_HEIGHT - height, 1),
                "width": round(max(step - 1, 1), 1),
                "height": height,
                "label": f"{sample['at']}: {sample['used']} of {rate_limit['calls']}",
            }
        )
    latest = rate_limit["samples"][-1]
    return {
        "rects": rects,
        "used": latest["used"],
        "calls": rate_limit["calls"],
        "per_seconds": rate_limit["per_seconds"],
        "peak": max(sample["used"] for sample in rate_limit["samples"]),
    }
