"""Shared state for distributed mode, in Redis: delivery ledger, event log, provider controls.

Every replica (web, dispatchers, source consumers) sees the same state. Each operation
that must not race is one Lua script, so it is atomic on the Redis server:

(The shared rate limiter is `service/state/redis_limiter.py`.)
- `RedisEventStore`: one hash per command (`ev:<command id>`) holding the command, its
  metadata and one ledger entry per provider (`d:<provider>`). The ledger is claimed
  (`in_flight`, with the owner's id) before a provider call and marked `delivered` after,
  so a (command, provider) is never sent twice after a crash or a rebalance. A claim
  whose owner stopped heartbeating is an orphan: the new owner asks the provider whether
  the call landed before sending again.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from typing import Any

import redis

from service.domain.command import LeadUpdateCommand
from service.domain.redact import redact_obj
from service.domain.state import EventFilter, ProviderControl, StateUnavailable
from service.state.store import duplicate_note
from service.store import OPEN_STATUSES, _iso, _overall_status

TERMINAL = ("delivered", "dead_lettered")


# KEYS[1] event hash; ARGV: field, owner, now, owner key prefix, ttl.
# -> {verdict, previous state json}; verdict: claimed | done | busy | mine | orphan
_CLAIM = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local state = {}
if cur then state = cjson.decode(cur) end
local verdict = 'claimed'
if state.status == 'delivered' or state.status == 'dead_lettered' then return {'done', cur} end
if state.status == 'in_flight' and state.owner then
  if state.owner == ARGV[2] then
    return {'mine', cur}
  end
  if redis.call('EXISTS', ARGV[4] .. state.owner) == 1 then return {'busy', cur} end
  verdict = 'orphan'
end
state.status = 'in_flight'
state.owner = ARGV[2]
state.updated_at = tonumber(ARGV[3])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(state))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[5]))
return {verdict, cur or ''}
"""

# KEYS[1] event hash; ARGV: field, patch json, ttl, increment (attempts), replays increment
_PATCH = """
local cur = redis.call('HGET', KEYS[1], ARGV[1])
local state = {}
if cur then state = cjson.decode(cur) end
for k, v in pairs(cjson.decode(ARGV[2])) do state[k] = v end
state.attempts = (tonumber(state.attempts) or 0) + tonumber(ARGV[4])
state.replays = (tonumber(state.replays) or 0) + tonumber(ARGV[5])
redis.call('HSET', KEYS[1], ARGV[1], cjson.encode(state))
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[3]))
return cjson.encode(state)
"""

# KEYS[1] event hash, KEYS[2] sequence, KEYS[3] index; ARGV: command json, lead_key,
# source, event_type, occurred_at, received_at, ttl, command id. Registers once.
_REGISTER = """
if redis.call('HSETNX', KEYS[1], 'command', ARGV[1]) == 1 then
  local seq = redis.call('INCR', KEYS[2])
  redis.call('HSET', KEYS[1], 'seq', seq, 'lead_key', ARGV[2], 'source', ARGV[3],
    'event_type', ARGV[4], 'occurred_at', ARGV[5], 'received_at', ARGV[6])
  redis.call('ZADD', KEYS[3], seq, ARGV[8])
end
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[7]))
return 1
"""

# KEYS[1] field versions hash; ARGV: field, occurred_at pairs. Only ever moves forward.
_FIELD_VERSIONS = """
for i = 1, #ARGV, 2 do
  local cur = redis.call('HGET', KEYS[1], ARGV[i])
  if (not cur) or cur < ARGV[i + 1] then redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
end
redis.call('EXPIRE', KEYS[1], 30 * 24 * 3600)
return 1
"""


class RedisEventStore:
    """Ledger + event log + per-lead field versions. `requeue` re-produces a command to the
    command topic (replay); the admin API calls the same methods as on `EmbeddedStore`."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "leadrelay:",
        ttl_seconds: int = 7 * 24 * 3600,
        requeue: Callable[[LeadUpdateCommand], None] | None = None,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl = int(ttl_seconds)
        self.requeue = requeue
        self._claim = client.register_script(_CLAIM)
        self._patch = client.register_script(_PATCH)
        self._register = client.register_script(_REGISTER)
        self._versions = client.register_script(_FIELD_VERSIONS)

    # ---- keys ---------------------------------------------------------------------------

    def event_key(self, command_id: str) -> str:
        return f"{self.prefix}ev:{command_id}"

    @property
    def owner_prefix(self) -> str:
        return f"{self.prefix}owner:"

    def _call(self, fn: Callable[[], Any]) -> Any:
        try:
            return fn()
        except redis.RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None

    # ---- liveness of dispatcher processes -------------------------------------------------

    def heartbeat(self, owner: str, ttl_seconds: float) -> None:
        self._call(lambda: self.client.set(self.owner_prefix + owner, "1", px=int(ttl_seconds * 1000)))

    def forget_owner(self, owner: str) -> None:
        self._call(lambda: self.client.delete(self.owner_prefix + owner))

    # ---- event log ------------------------------------------------------------------------

    def register(self, command: LeadUpdateCommand, received_at: float | None = None) -> None:
        """Record a command in the event log (idempotent: the first call wins)."""
        self.register_many([(command, received_at or time.time())])

    def register_many(self, commands: list[tuple[LeadUpdateCommand, float]]) -> None:
        """`register` for a whole batch in one pipelined round trip."""

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            for command, received_at in commands:
                self._register(
                    keys=[self.event_key(command.command_id), self.prefix + "seq", self.prefix + "events"],
                    args=[
                        command.to_json(),
                        command.lead_key,
                        command.source,
                        command.event_type,
                        command.occurred_at.isoformat(),
                        received_at or time.time(),
                        self.ttl,
                        command.command_id,
                    ],
                    client=pipe,
                )
            pipe.execute()

        self._call(run)

    def record_duplicate(self, command: LeadUpdateCommand, duplicate_of: str) -> None:
        """A double submit in the event log (never produced to the command topic): the
        command, `duplicate_of`, and each routed provider in status `duplicate`."""
        self.register(command)
        self._call(lambda: self.client.hset(self.event_key(command.command_id), "duplicate_of", duplicate_of))
        for provider in command.providers:
            self.record(
                command.command_id,
                provider,
                "duplicate",
                last_error=duplicate_note(duplicate_of),
                error_stage="dedup",
            )

    def note_duplicate(self, command_id: str) -> None:
        def bump() -> None:
            if self.client.exists(self.event_key(command_id)):
                self.client.hincrby(self.event_key(command_id), "duplicates", 1)

        self._call(bump)

    # ---- ledger ---------------------------------------------------------------------------

    def claim(self, command_id: str, provider: str, owner: str) -> tuple[str, dict[str, Any]]:
        """Take (command, provider) for a call. Verdicts: claimed, orphan (claimed from a dead
        owner: check with the provider first), mine, busy (another live owner), done."""
        verdict, previous = self._call(
            lambda: self._claim(
                keys=[self.event_key(command_id)],
                args=[f"d:{provider}", owner, time.time(), self.owner_prefix, self.ttl],
            )
        )
        verdict = verdict.decode() if isinstance(verdict, bytes) else verdict
        return verdict, (json.loads(previous) if previous else {})

    def claim_many(
        self, command_ids: list[str], provider: str, owner: str, lead_key: str
    ) -> tuple[list[tuple[str, dict[str, Any]]], dict[str, str]]:
        """`claim` for every command of a group plus the lead's field versions, in one round
        trip. Each claim is still its own atomic script."""

        def run() -> list[Any]:
            pipe = self.client.pipeline(transaction=False)
            for command_id in command_ids:
                self._claim(
                    keys=[self.event_key(command_id)],
                    args=[f"d:{provider}", owner, time.time(), self.owner_prefix, self.ttl],
                    client=pipe,
                )
            pipe.hgetall(f"{self.prefix}fv:{provider}:{lead_key}")
            return pipe.execute()

        *claims, versions = self._call(run)
        verdicts = [
            (v.decode() if isinstance(v, bytes) else v, json.loads(prev) if prev else {})
            for v, prev in claims
        ]
        return verdicts, {k.decode(): v.decode() for k, v in versions.items()}

    def record_delivered(
        self,
        command_ids: list[str],
        provider: str,
        lead_key: str,
        versions: dict[str, str],
        count_attempt: bool = True,
        **details: Any,
    ) -> None:
        """Every command of a coalesced call delivered, and the lead's field versions moved
        forward, in one round trip."""
        now = time.time()
        patch = {"status": "delivered", "updated_at": now, "owner": None, "delivered_at": now}
        for key, value in details.items():
            patch[key] = redact_obj(value) if key == "response" else value
        text = json.dumps(patch, default=str)

        def run() -> None:
            pipe = self.client.pipeline(transaction=False)
            for command_id in command_ids:
                self._patch(
                    keys=[self.event_key(command_id)],
                    args=[f"d:{provider}", text, self.ttl, int(count_attempt), 0],
                    client=pipe,
                )
            if versions:
                args: list[str] = []
                for name, occurred_at in versions.items():
                    args += [name, occurred_at]
                self._versions(keys=[f"{self.prefix}fv:{provider}:{lead_key}"], args=args, client=pipe)
            pipe.execute()

        self._call(run)

    def record(
        self,
        command_id: str,
        provider: str,
        status: str,
        *,
        count_attempt: bool = False,
        replay: bool = False,
        **details: Any,
    ) -> dict[str, Any]:
        now = time.time()
        patch: dict[str, Any] = {"status": status, "updated_at": now, "owner": None}
        if status == "delivered":
            patch["delivered_at"] = now
        for key, value in details.items():
            patch[key] = redact_obj(value) if key == "response" else value
        if replay:
            patch["attempts"] = 0
            patch["first_attempt_at"] = None  # a fresh retry horizon
        text = self._call(
            lambda: self._patch(
                keys=[self.event_key(command_id)],
                args=[
                    f"d:{provider}",
                    json.dumps(patch, default=str),
                    self.ttl,
                    1 if count_attempt else 0,
                    1 if replay else 0,
                ],
            )
        )
        return json.loads(text)

    def delivery_state(self, command_id: str, provider: str) -> dict[str, Any]:
        raw = self._call(lambda: self.client.hget(self.event_key(command_id), f"d:{provider}"))
        return json.loads(raw) if raw else {}

    def applied_versions(self, lead_key: str, provider: str) -> dict[str, str]:
        raw = self._call(lambda: self.client.hgetall(f"{self.prefix}fv:{provider}:{lead_key}"))
        return {k.decode(): v.decode() for k, v in raw.items()}

    def record_versions(self, lead_key: str, provider: str, versions: dict[str, str]) -> None:
        if not versions:
            return
        args: list[str] = []
        for name, occurred_at in versions.items():
            args += [name, occurred_at]
        self._call(lambda: self._versions(keys=[f"{self.prefix}fv:{provider}:{lead_key}"], args=args))

    # ---- the admin API's view (same shapes as EmbeddedStore) ------------------------------

    def check_writable(self) -> None:
        self._call(lambda: self.client.set(self.prefix + "probe", "1", ex=60))

    def _load(self, command_id: str) -> dict[bytes, bytes]:
        return self._call(lambda: self.client.hgetall(self.event_key(command_id)))

    @staticmethod
    def _deliveries(raw: dict[bytes, bytes]) -> dict[str, dict[str, Any]]:
        return {k.decode()[2:]: json.loads(v) for k, v in sorted(raw.items()) if k.decode().startswith("d:")}

    def get_event(self, command_id: str) -> dict[str, Any] | None:
        raw = self._load(command_id)
        if b"command" not in raw:
            return None
        command = json.loads(raw[b"command"])
        deliveries = self._deliveries(raw)
        # A routed provider with no ledger entry yet is pending: the dispatcher has not got to it.
        for provider in command.get("providers") or []:
            deliveries.setdefault(provider, {"status": "pending", "attempts": 0})
        text = {k.decode(): v.decode() for k, v in raw.items() if not k.decode().startswith("d:")}
        duplicate_of = text.get("duplicate_of")
        return {
            "command_id": command_id,
            "status": "duplicate"
            if duplicate_of
            else _overall_status([d.get("status", "pending") for d in deliveries.values()]),
            "duplicate_of": duplicate_of,
            "lead_key": text.get("lead_key"),
            "source": text.get("source"),
            "event_type": text.get("event_type"),
            "occurred_at": text.get("occurred_at"),
            "received_at": _iso(float(text["received_at"])) if text.get("received_at") else None,
            "duplicates_received": int(text.get("duplicates", 0)),
            "command": redact_obj(command),
            "deliveries": [
                {
                    "provider": provider,
                    "status": d.get("status", "pending"),
                    "attempts": int(d.get("attempts") or 0),
                    "next_attempt_at": _iso(d["next_attempt_at"])
                    if d.get("next_attempt_at") and d.get("status") in OPEN_STATUSES
                    else None,
                    "first_attempt_at": _iso(d["first_attempt_at"]) if d.get("first_attempt_at") else None,
                    "last_error": d.get("last_error"),
                    "error_stage": d.get("error_stage"),
                    "response": d.get("response"),
                    "request_id": d.get("request_id"),
                    "replays": int(d.get("replays") or 0),
                    "updated_at": _iso(d["updated_at"]) if d.get("updated_at") else None,
                    "delivered_at": _iso(d["delivered_at"]) if d.get("delivered_at") else None,
                }
                for provider, d in sorted(deliveries.items())
            ],
        }

    def list_events(
        self, event_filter: EventFilter | None = None, limit: int = 100, after_seq: int = 0
    ) -> list[dict[str, Any]]:
        wanted = event_filter or EventFilter()
        status, provider = wanted.status, wanted.provider
        rows: list[dict[str, Any]] = []
        cursor = after_seq
        index = self.prefix + "events"
        while len(rows) < limit:
            page = self._call(
                lambda c=cursor: self.client.zrangebyscore(
                    index, f"({c}", "+inf", start=0, num=200, withscores=True
                )
            )
            if not page:
                break
            pipe = self.client.pipeline(transaction=False)
            for member, _ in page:
                pipe.hgetall(self.event_key(member.decode()))
            loaded = self._call(pipe.execute)
            expired: list[bytes] = []
            for (member, seq), raw in zip(page, loaded, strict=True):
                cursor = int(seq)
                if b"command" not in raw:
                    expired.append(member)  # the event's TTL ran out: drop it from the index
                    continue
                command = json.loads(raw[b"command"])
                if not _command_matches(wanted, command, raw):
                    continue
                deliveries = self._deliveries(raw)
                for name in command.get("providers") or []:
                    deliveries.setdefault(name, {"status": "pending", "attempts": 0})
                for name, d in sorted(deliveries.items()):
                    if (status and d.get("status", "pending") != status) or (provider and name != provider):
                        continue
                    rows.append(
                        {
                            "seq": cursor,
                            "command_id": member.decode(),
                            "source": raw.get(b"source", b"").decode(),
                            "event_type": raw.get(b"event_type", b"").decode(),
                            "lead_key": raw.get(b"lead_key", b"").decode(),
                            "lead": command.get("lead"),
                            "received_at": _iso(float(raw[b"received_at"]))
                            if b"received_at" in raw
                            else None,
                            "provider": name,
                            "status": d.get("status", "pending"),
                            "attempts": int(d.get("attempts") or 0),
                            "last_error": d.get("last_error"),
                            "error_stage": d.get("error_stage"),
                            "updated_at": _iso(d["updated_at"]) if d.get("updated_at") else None,
                        }
                    )
                if len(rows) >= limit:
                    break
            if expired:
                self._call(lambda e=expired: self.client.zrem(index, *e))
        return rows[:limit]

    def replay(
        self, command_id: str, provider: str | None = None, routed: list[str] | None = None
    ) -> list[str]:
        """Dead-lettered deliveries of a command get a fresh retry budget and the command is
        produced to the command topic again; the ledger skips providers already delivered."""
        raw = self._load(command_id)
        if b"command" not in raw:
            raise KeyError(command_id)
        if self.requeue is None:
            raise RuntimeError("replay needs the command queue (distributed runtime)")
        command = LeadUpdateCommand.from_json(raw[b"command"])
        deliveries = self._deliveries(raw)
        wanted = [
            name
            for name, d in deliveries.items()
            if d.get("status") == "dead_lettered" and provider in (None, name)
        ]
        wanted += [p for p in routed or [] if provider in (None, p) and p not in deliveries]
        if not wanted:
            return []
        for name in wanted:
            self.record(command_id, name, "pending", replay=True, last_error=None, error_stage=None)
        if routed:
            providers = tuple(dict.fromkeys([*command.providers, *routed]))
            command = command.with_providers(providers)
            self._call(lambda: self.client.hset(self.event_key(command_id), "command", command.to_json()))
        self.requeue(command)
        return sorted(wanted)

    # ---- provider controls (operator pause, the circuit breaker's shared state) ----------

    def provider_controls(self) -> dict[str, ProviderControl]:
        raw = self._call(lambda: self.client.hgetall(self.prefix + "controls"))
        return {k.decode(): ProviderControl(**json.loads(v)) for k, v in raw.items()}

    def put_provider_control(self, control: ProviderControl) -> None:
        text = json.dumps(dataclasses.asdict(control))
        self._call(lambda: self.client.hset(self.prefix + "controls", control.provider, text))


def _command_matches(wanted: EventFilter, command: dict[str, Any], raw: dict[bytes, bytes]) -> bool:
    """The command-level parts of an event filter (source, type, lead, received time)."""
    if wanted.source and command.get("source") != wanted.source:
        return False
    if wanted.event_type and command.get("event_type") != wanted.event_type:
        return False
    if wanted.lead:
        lead = wanted.lead.strip()
        identities = command.get("lead") or {}
        if lead.lower() != identities.get("email") and lead.replace(" ", "") != identities.get("phone"):
            if lead != identities.get("id") and lead != raw.get(b"lead_key", b"").decode():
                return False
    received = float(raw.get(b"received_at") or 0)
    if wanted.since is not None and received < wanted.since:
        return False
    return wanted.until is None or received < wanted.until
