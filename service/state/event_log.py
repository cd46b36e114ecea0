"""The event log over the SQL store: list with filters and a cursor, show with a timeline,
replay one command or every match of a filter, and the overview the console shows."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from service.domain.command import LeadUpdateCommand
from service.domain.redact import redact_obj
from service.domain.state import EventFilter
from service.domain.statuses import OPEN_STATUSES, DeliveryStatus, overall_status

HOUR = 3600.0
# The overview's rate-limit samples reach back this far (the samples are kept an hour).
RATE_LIMIT_SHOWN_SECONDS = 300.0
MATCHING_REPLAY_CHUNK = 500


def iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts)) + f".{int((ts % 1) * 1000):03d}Z"


def _lead_identities(value: str) -> list[str]:
    """The forms a lead filter may match: as typed, and an email's stored (lower-cased) form."""
    value = value.strip()
    return list(dict.fromkeys([value, value.lower()]))


def filter_sql(event_filter: EventFilter) -> tuple[str, list[Any]]:
    """WHERE terms (over `commands c JOIN deliveries d`) for a filter."""
    terms: list[str] = []
    params: list[Any] = []
    for column, value in (
        ("d.status", event_filter.status),
        ("d.provider", event_filter.provider),
        ("c.source", event_filter.source),
        ("c.event_type", event_filter.event_type),
    ):
        if value:
            terms.append(f"{column} = ?")
            params.append(value)
    if event_filter.lead:
        forms = _lead_identities(event_filter.lead)
        marks = ",".join("?" * len(forms))
        terms.append(
            f"(c.lead_id IN ({marks}) OR c.lead_email IN ({marks}) OR c.lead_phone IN ({marks}) OR c.lead_key IN ({marks}))"
        )
        params.extend(forms * 4)
    if event_filter.since is not None:
        terms.append("c.received_at >= ?")
        params.append(event_filter.since)
    if event_filter.until is not None:
        terms.append("c.received_at < ?")
        params.append(event_filter.until)
    return "".join(f" AND {term}" for term in terms), params


class EventLogMixin:
    engine: Any
    requeue: Callable[[LeadUpdateCommand], None] | None = None
    # From RateLimitSamplesMixin (an annotation, not a stub: a stub here would shadow it).
    rate_limit_samples: Callable[[float], dict[str, dict[str, Any]]]
    drain_inbox: Callable[[], int]  # from InboxMixin: every read below sees accepted commands

    def transaction(self) -> Any: ...

    def read(self) -> Any: ...

    def list_events(
        self, filter: EventFilter | None = None, limit: int = 100, after_seq: int = 0, **legacy: Any
    ) -> list[dict[str, Any]]:
        """One row per (command, provider) in queue order after the cursor `after_seq`."""
        self.drain_inbox()
        event_filter = filter or EventFilter(**legacy)
        where, params = filter_sql(event_filter)
        sql = (
            "SELECT c.seq, c.command_id, c.source, c.event_type, c.lead_key, c.lead_id, c.lead_email, c.lead_phone,"
            " c.received_at, d.provider, d.status, d.attempts, d.last_error, d.error_stage, d.updated_at"
            " FROM commands c JOIN deliveries d ON d.command_id = c.command_id WHERE c.seq > ?"
            f"{where} ORDER BY c.seq, d.provider LIMIT ?"
        )
        with self.read() as db:
            rows = db.execute(sql, [after_seq, *params, limit]).fetchall()
        return [
            {
                "seq": row["seq"],
                "command_id": row["command_id"],
                "source": row["source"],
                "event_type": row["event_type"],
                "lead_key": row["lead_key"],
                "lead": {"id": row["lead_id"], "email": row["lead_email"], "phone": row["lead_phone"]},
                "received_at": iso(row["received_at"]),
                "provider": row["provider"],
                "status": row["status"],
                "attempts": row["attempts"],
                "last_error": row["last_error"],
                "error_stage": row["error_stage"],
                "updated_at": iso(row["updated_at"]),
            }
            for row in rows
        ]

    def get_event(self, command_id: str) -> dict[str, Any] | None:
        self.drain_inbox()
        with self.read() as db:
            row = db.execute("SELECT * FROM commands WHERE command_id = ?", (command_id,)).fetchone()
            if row is None:
                return None
            deliveries = db.execute(
                "SELECT provider, status, attempts, polls, next_attempt_at, last_error, error_stage, response,"
                " request_id, replays, updated_at, delivered_at, first_attempt_at FROM deliveries WHERE command_id = ?"
                " ORDER BY provider",
                (command_id,),
            ).fetchall()
            history = db.execute(
                "SELECT at, provider, status, detail FROM history WHERE command_id = ? ORDER BY id",
                (command_id,),
            ).fetchall()
        return {
            "command_id": row["command_id"],
            "status": DeliveryStatus.DUPLICATE
            if row["duplicate_of"]
            else overall_status([d["status"] for d in deliveries]),
            "duplicate_of": row["duplicate_of"],
            "lead_key": row["lead_key"],
            "lead": {"id": row["lead_id"], "email": row["lead_email"], "phone": row["lead_phone"]},
            "source": row["source"],
            "event_type": row["event_type"],
            "occurred_at": row["occurred_at"],
            "received_at": iso(row["received_at"]),
            "duplicates_received": row["duplicates"],
            "command": redact_obj(json.loads(row["body"])),
            "deliveries": [
                {
                    "provider": d["provider"],
                    "status": d["status"],
                    "attempts": d["attempts"],
                    "polls": d["polls"],
                    "next_attempt_at": iso(d["next_attempt_at"]) if d["status"] in OPEN_STATUSES else None,
                    "last_error": d["last_error"],
                    "error_stage": d["error_stage"],
                    "response": json.loads(d["response"]) if d["response"] else None,
                    "request_id": d["request_id"],
                    "replays": d["replays"],
                    "first_attempt_at": iso(d["first_attempt_at"]),
                    "updated_at": iso(d["updated_at"]),
                    "delivered_at": iso(d["delivered_at"]) if d["delivered_at"] else None,
                }
                for d in deliveries
            ],
            "timeline": [
                {"at": iso(h["at"]), "provider": h["provider"], "status": h["status"], "detail": h["detail"]}
                for h in history
            ],
        }

    def replay(
        self, command_id: str, provider: str | None = None, routed: list[str] | None = None
    ) -> list[str]:
        """Send dead-lettered deliveries of a command again (fresh retry budget).
        `routed`: the providers the current config routes the command to, added if missing."""
        self.drain_inbox()
        now = time.time()
        with self.transaction() as db:
            row = db.execute("SELECT seq, body FROM commands WHERE command_id = ?", (command_id,)).fetchone()
            if row is None:
                raise KeyError(command_id)
            if routed:
                command = LeadUpdateCommand.from_json(row["body"])
                wanted = [p for p in routed if provider in (None, p)]
                self._add_deliveries(db, row["seq"], command, wanted, now)  # type: ignore[attr-defined]
            sql = (
                "UPDATE deliveries SET status = 'pending', attempts = 0, polls = 0, first_attempt_at = NULL, next_attempt_at = ?,"
                " replays = replays + 1, updated_at = ? WHERE command_id = ? AND status = 'dead_lettered'"
            )
            params: list[Any] = [now, now, command_id]
            if provider:
                sql += " AND provider = ?"
                params.append(provider)
            replayed = [r["provider"] for r in db.execute(sql + " RETURNING provider", params).fetchall()]
            if replayed:
                db.executemany(
                    "INSERT INTO history (command_id, provider, at, status, detail) VALUES (?, ?, ?, 'replayed', NULL)",
                    [(command_id, p) + (now,) for p in replayed],
                )
            if self.requeue is not None and (replayed or routed):
                command = LeadUpdateCommand.from_json(row["body"])
                if routed:
                    command = command.with_providers(tuple(dict.fromkeys([*command.providers, *routed])))
                self.requeue(command)
            return [
                r["provider"]
                for r in db.execute(
                    "SELECT provider FROM deliveries WHERE command_id = ? AND status = 'pending' ORDER BY provider",
                    (command_id,),
                ).fetchall()
            ]

    def replay_matching(
        self,
        filter: EventFilter,
        *,
        dry_run: bool,
        routed_for: Callable[[str, str], list[str]] | None = None,
    ) -> dict[str, int]:
        """Reset every dead-lettered delivery matching the filter (a filter on another status
        matches nothing); a dry run only counts. `routed_for(source, event_type)` adds the
        currently routed providers to matching unrouted commands."""
        if filter.status not in (None, "dead_lettered", "unrouted"):
            return {"events": 0, "deliveries": 0}  # only dead letters (and unrouted events) are replayed
        self.drain_inbox()
        event_filter = EventFilter(**{**filter.__dict__, "status": "dead_lettered"})
        where, params = filter_sql(event_filter)
        with self.read() as db:
            rows = db.execute(
                "SELECT c.command_id, d.provider FROM commands c JOIN deliveries d ON d.command_id = c.command_id"
                f" WHERE 1 = 1{where} ORDER BY c.seq",
                params,
            ).fetchall()
            unrouted = []
            if (
                routed_for is not None
                and filter.status in (None, "dead_lettered", "unrouted")
                and not filter.provider
            ):
                where_c, params_c = filter_sql(EventFilter(**{**filter.__dict__, "status": None}))
                unrouted = db.execute(
                    "SELECT c.command_id, c.source, c.event_type FROM commands c"
                    " WHERE NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.command_id = c.command_id)"
                    f"{where_c} ORDER BY c.seq",
                    params_c,
                ).fetchall()
        routable = (
            [(r["command_id"], routed_for(r["source"], r["event_type"])) for r in unrouted]
            if routed_for
            else []
        )
        routable = [(command_id, providers) for command_id, providers in routable if providers]
        events = {row["command_id"] for row in rows} | {command_id for command_id, _ in routable}
        result = {"events": len(events), "deliveries": len(rows) + sum(len(p) for _, p in routable)}
        if dry_run:
            return result
        commands = list(dict.fromkeys([row["command_id"] for row in rows] + [c for c, _ in routable]))
        routed = dict(routable)
        for start in range(0, len(commands), MATCHING_REPLAY_CHUNK):
            # Small transactions: a big replay does not hold the writer lock for long.
            with self.transaction():
                for command_id in commands[start : start + MATCHING_REPLAY_CHUNK]:
                    self.replay(command_id, provider=filter.provider, routed=routed.get(command_id))
        return result

    def overview(self, now: float) -> dict[str, Any]:
        """Per provider: delivered in the last hour, failures by stage, dead letters, pending,
        the oldest pending age, polling and the rate-limit budget the dispatchers sampled over
        the last five minutes; per source: accepted and duplicates; and a per-minute series of
        delivered and failed outcomes over the last hour."""
        self.drain_inbox()
        hour_ago = now - HOUR
        with self.read() as db:
            by_status = db.execute(
                "SELECT d.provider, d.status, COUNT(*) AS n, MIN(c.received_at) AS oldest FROM deliveries d"
                " JOIN commands c ON c.command_id = d.command_id GROUP BY d.provider, d.status"
            ).fetchall()
            delivered = db.execute(
                "SELECT provider, COUNT(*) AS n FROM deliveries WHERE status = 'delivered' AND delivered_at >= ?"
                " GROUP BY provider",
                (hour_ago,),
            ).fetchall()
            failures = db.execute(
                "SELECT provider, error_stage, COUNT(*) AS n FROM deliveries WHERE error_stage IS NOT NULL"
                " AND status <> 'delivered' GROUP BY provider, error_stage"
            ).fetchall()
            sources = db.execute(
                # A double submit is a command row too (status `duplicate`), not an accepted event.
                "SELECT source, SUM(CASE WHEN duplicate_of IS NULL THEN 1 ELSE 0 END) AS accepted,"
                " COALESCE(SUM(duplicates), 0) + SUM(CASE WHEN duplicate_of IS NULL THEN 0 ELSE 1 END) AS duplicates"
                " FROM commands GROUP BY source"
            ).fetchall()
            series_rows = db.execute(
                # A failure: a dead letter, or a retry with a reason (a look-up step or a
                # rate-limit wait also goes back to pending, with no reason).
                "SELECT at, status FROM history WHERE at >= ? AND provider IS NOT NULL"
                " AND (status IN ('delivered', 'dead_lettered') OR (status = 'pending' AND detail IS NOT NULL))",
                (hour_ago,),
            ).fetchall()
        providers: dict[str, dict[str, Any]] = {}

        def entry(name: str) -> dict[str, Any]:
            return providers.setdefault(
                name,
                {
                    "delivered_last_hour": 0,
                    "failures_by_stage": {},
                    "dead_letters": 0,
                    "pending": 0,
                    "oldest_pending_age_seconds": 0.0,
                    "polling": 0,
                    "rate_limit": None,
                },
            )

        for row in by_status:
            item = entry(row["provider"])
            if row["status"] == "dead_lettered":
                item["dead_letters"] = row["n"]
            elif row["status"] == "polling":
                item["polling"] = row["n"]
            elif row["status"] in ("pending", "in_flight"):
                item["pending"] += row["n"]
                age = max(0.0, now - row["oldest"])
                item["oldest_pending_age_seconds"] = max(item["oldest_pending_age_seconds"], age)
        for row in delivered:
            entry(row["provider"])["delivered_last_hour"] = row["n"]
        for row in failures:
            entry(row["provider"])["failures_by_stage"][row["error_stage"]] = row["n"]
        for name, budget in self.rate_limit_samples(now - RATE_LIMIT_SHOWN_SECONDS).items():
            samples = [{"at": iso(s["at"]), "used": s["used"]} for s in budget["samples"]]
            entry(name)["rate_limit"] = {**budget, "samples": samples}
        # 60 one-minute buckets, the last one the current minute.
        first_minute = int(now // 60) * 60 - 59 * 60
        minutes = {first_minute + 60 * i: {"delivered": 0, "failed": 0} for i in range(60)}
        for row in series_rows:
            bucket = minutes.get(int(row["at"] // 60) * 60)
            if bucket is not None:
                bucket["delivered" if row["status"] == "delivered" else "failed"] += 1
        return {
            "providers": providers,
            "sources": {
                row["source"]: {"accepted": int(row["accepted"]), "duplicates": int(row["duplicates"])}
                for row in sources
            },
            "series": [{"minute": iso(minute), **counts} for minute, counts in sorted(minutes.items())],
        }
