"""The shared `RateLimiter` for several replicas: a sliding-window log per account in Redis.

One sorted set of call stamps per provider account (`<prefix>rl:<account>`), stamped with
the Redis clock (the one clock every replica shares, so skew between machines cannot open
a window wider than allowed), plus a pause key a 429 sets. Each operation is one Lua
script, atomic on the server. Contract: `service/domain/limits.py`.

`settle` skips its round trip for a call that ended within `SETTLE_SKIP_SECONDS` of sending
its acquire: the slot's acquire stamp is then already late enough. The stamp is taken by
Redis after the acquire was sent and before the call starts, and the call reached the
provider before it ended, so the provider counted it at most `SETTLE_SKIP_SECONDS` after
the stamp; the log keeps the stamp for the provider's window plus `SAFETY_MARGIN_SECONDS`
(larger than that), so the slot still covers the provider's whole window after the call.

While an account's window is nearly empty (a limit far above the traffic), an acquire takes
a few slots at once and keeps the spare ones for this thread's next calls, for at most
`RESERVE_FRESH_SECONDS`: one round trip serves several calls. A spare slot is a stamp in the
log like any other, taken before its call, and `settle` measures from when it was asked for,
so the reasoning above holds for it unchanged; one never used is removed by the thread's
next acquire (or leaves the window), and only ever stood for a call that was not made. Spare
slots are taken only while the window holds at most an eighth of `calls`, so under a tight
limit they cost at most that share of one window; a 429 seen here (`penalise`) drops them.
"""

from __future__ import annotations

import collections
import secrets
import threading
import time

import redis

from service.domain.limits import SAFETY_MARGIN_SECONDS, window_seconds
from service.domain.state import StateUnavailable

# KEYS[1] log, KEYS[2] pause; ARGV: calls, window_us, wanted, dropped, then `wanted` new
# members, then `dropped` unused spare members to remove first -> {0, slots taken} or
# {µs to wait, 0}. The first member is taken whenever a slot is free; the others only while
# the window holds at most calls / 8 (spare slots for the caller's next calls). wanted = 0
# only looks (`free_in`): {0, 0} when a slot is free, taking none.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local wanted = tonumber(ARGV[3])
local dropped = tonumber(ARGV[4])
for i = 1, dropped do redis.call('ZREM', KEYS[1], ARGV[4 + wanted + i]) end
local paused = tonumber(redis.call('GET', KEYS[2]) or '0')
if paused > now then return {paused - now, 0} end
local calls = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = redis.call('ZCARD', KEYS[1])
if used < calls then
  if wanted == 0 then return {0, 0} end
  local take = math.max(1, math.min(wanted, math.floor(calls / 8) - used))
  for i = 1, take do redis.call('ZADD', KEYS[1], now, ARGV[4 + i]) end
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) + 1000)
  return {0, take}
end
local frees = redis.call('ZRANGE', KEYS[1], used - calls, used - calls, 'WITHSCORES')
return {math.max(1, tonumber(frees[2]) + window - now), 0}
"""

# KEYS[1] log; ARGV: member. Re-stamp the member with now, if it is still in the window.
_SETTLE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return redis.call('ZADD', KEYS[1], 'XX', 'CH', now, ARGV[1])
"""

# KEYS[2] pause; ARGV: pause_us. The pause only ever grows; the log is left alone.
_PENALISE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local untill = now + tonumber(ARGV[1])
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if untill > current then
  redis.call('SET', KEYS[1], untill, 'PX', math.ceil(tonumber(ARGV[1]) / 1000) + 1000)
end
return 0
"""


# KEYS[1] log; ARGV: window_us -> the stamps inside the window ending now (what `_ACQUIRE` keeps
# after its trim: scores are whole µs, so "> now - window" is ">= now - window + 1").
_USAGE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
return redis.call('ZCOUNT', KEYS[1], now - tonumber(ARGV[1]) + 1, '+inf')
"""

# Half the margin: the other half absorbs any difference between this machine's monotonic
# clock rate and Redis' clock over so short a span.
SETTLE_SKIP_SECONDS = SAFETY_MARGIN_SECONDS / 2
# Spare slots an acquire may take, and how long one is kept for this thread's next call
# (well inside SETTLE_SKIP_SECONDS, so a quick call on a spare slot still needs no re-stamp).
RESERVE_SPARE = 3
RESERVE_FRESH_SECONDS = 0.03


class RedisRateLimiter:
    """Every replica shares one log per account; `settle` re-stamps this process's own slots."""

    def __init__(self, client: redis.Redis, prefix: str = "leadrelay:") -> None:
        self.client = client
        self.prefix = prefix + "rl:"
        self._acquire = client.register_script(_ACQUIRE)
        self._settle = client.register_script(_SETTLE)
        self._penalise = client.register_script(_PENALISE)
        self._usage = client.register_script(_USAGE)
        self._token = secrets.token_hex(4)
        self._seq = 0
        # Per thread and account: (member, when its acquire was sent) of the slots this thread
        # took whose calls have not ended. A caller acquires and settles on one thread, so the
        # slot settled is the one of the call that ended (its send time decides the skip).
        self._local = threading.local()
        self._lock = threading.Lock()
        self._epoch = 0  # moves on each `penalise`: spare slots taken before it are not used

    def _spare(self, account: str) -> collections.deque[tuple[str, float, int]]:
        """This thread's spare slots on `account`: (member, when asked for, epoch)."""
        spare: dict[str, collections.deque[tuple[str, float, int]]] | None = getattr(
            self._local, "spare", None
        )
        if spare is None:
            spare = self._local.spare = collections.defaultdict(collections.deque)
        return spare[account]

    def _in_flight(self, account: str) -> collections.deque[tuple[str, float]]:
        slots: dict[str, collections.deque[tuple[str, float]]] | None = getattr(self._local, "slots", None)
        if slots is None:
            slots = self._local.slots = collections.defaultdict(collections.deque)
        return slots[account]

    def _unique(self) -> str:
        with self._lock:
            self._seq += 1
            return f"{self._token}:{self._seq}"

    def acquire(self, account: str, calls: int, per_seconds: float) -> float:
        spare = self._spare(account)
        epoch = self._epoch
        unused: list[str] = []
        while spare:
            member, asked, taken_in = spare.popleft()
            if taken_in == epoch and time.monotonic() - asked < RESERVE_FRESH_SECONDS:
                self._in_flight(account).append((member, asked))  # settle measures from `asked`
                return 0.0
            unused.append(member)
        window_us = int(window_seconds(per_seconds) * 1_000_000)
        members = [self._unique() for _ in range(1 + RESERVE_SPARE)]
        sent = time.monotonic()
        try:
            wait_us, taken = self._acquire(
                keys=[self.prefix + account, self.prefix + "pause:" + account],
                args=[calls, window_us, len(members), len(unused), *members, *unused],
            )
        except redis.RedisError as exc:
            # Unused spare slots not removed stay in the log until they leave the window: they
            # only ever make the limit stricter.
            raise StateUnavailable(f"redis: {exc}") from None
        if wait_us:
            return float(wait_us) / 1_000_000
        self._in_flight(account).append((members[0], sent))
        spare.extend((member, sent, epoch) for member in members[1 : int(taken)])
        return 0.0

    def settle(self, account: str) -> None:
        in_flight = self._in_flight(account)
        if not in_flight:
            return
        member, sent = in_flight.pop()  # this thread's latest slot: the call that just ended
        if time.monotonic() - sent < SETTLE_SKIP_SECONDS:
            return  # the acquire stamp already covers it (module docstring)
        try:
            self._settle(keys=[self.prefix + account], args=[member])
        except redis.RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None

    def penalise(self, account: str, seconds: float, calls: int, per_seconds: float) -> None:
        with self._lock:
            self._epoch += 1  # no spare slot taken before this 429 is used after it
        try:
            self._penalise(keys=[self.prefix + "pause:" + account], args=[int(seconds * 1_000_000)])
        except redis.RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None

    def usage(self, account: str, per_seconds: float) -> int:
        """Every replica's slots on `account` in the window ending now, on Redis' clock."""
        window_us = int(window_seconds(per_seconds) * 1_000_000)
        try:
            return int(self._usage(keys=[self.prefix + account], args=[window_us]))
        except redis.RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None

    def free_in(self, account: str, calls: int, per_seconds: float) -> float:
        """What `acquire` would answer, on Redis' clock, without taking a slot."""
        window_us = int(window_seconds(per_seconds) * 1_000_000)
        try:
            wait_us, _ = self._acquire(
                keys=[self.prefix + account, self.prefix + "pause:" + account], args=[calls, window_us, 0, 0]
            )
        except redis.RedisError as exc:
            raise StateUnavailable(f"redis: {exc}") from None
        return float(wait_us) / 1_000_000
