"""The HTTP load generator of the benchmarks: wrk with pre-signed requests, else processes.

Every request is a unique, correctly signed generic event (Standard Webhooks), built and
signed before the run so the client spends nothing on signing while it measures. With
`wrk` on PATH (Debian package `wrk`) a Lua script replays the prepared raw requests, one
file per wrk thread; without it, one Python process per connection sends them over a raw
keep-alive socket. Either way the run is bounded in time (`duration`) and in count (the
prepared requests); a connection that runs out stops early and the result says so.
"""

from __future__ import annotations

import json
import math
import multiprocessing
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from service.cli.simulators import sign_standard_webhook

WRK_SCRIPT = r"""
local threads = {}
local counter = 0

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)
  local f = assert(io.open(args[1] .. "/requests-" .. id .. ".bin", "rb"))
  local data = f:read("*a")
  f:close()
  prepared = {}
  local pos = 1
  while pos <= #data do
    local nl = data:find("\n", pos, true)
    local len = tonumber(data:sub(pos, nl - 1))
    prepared[#prepared + 1] = data:sub(nl + 1, nl + len)
    pos = nl + 1 + len
  end
  sent = 0
  exhausted = 0
end

function request()
  sent = sent + 1
  if sent > #prepared then
    -- Out of unique events: stop this thread rather than resend one (a duplicate).
    exhausted = 1
    wrk.thread:stop()
    sent = #prepared
  end
  return prepared[sent]
end

function done(summary, latency, requests)
  local out_of_requests = 0
  for _, thread in ipairs(threads) do
    out_of_requests = out_of_requests + (thread:get("exhausted") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests": %d, "duration_us": %d, "non_2xx": %d, "socket_errors": %d,'
    .. ' "p50_us": %d, "p99_us": %d, "max_us": %d, "exhausted_threads": %d}\n',
    summary.requests, summary.duration, e.status, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, out_of_requests))
end
"""


@dataclass
class LoadResult:
    client: str
    requests: int
    seconds: float
    non_2xx: int
    socket_errors: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    exhausted: bool = False
    notes: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        ok = self.requests - self.non_2xx - self.socket_errors
        return max(0, ok) / self.seconds if self.seconds else 0.0


def signed_event_requests(
    host: str, count: int, id_prefix: str, secret: str, leads: int = 500
) -> list[bytes]:
    """`count` raw HTTP/1.1 requests, each a unique generic event signed with `secret`."""
    prepared = []
    timestamp = int(time.time())
    for i in range(count):
        event = {"lead": {"email": f"lead{i % leads}@example.com"}, "changes": {"city": f"City {i}"}}
        body = json.dumps(event).encode()
        msg_id = f"{id_prefix}-{i}"
        head = (
            f"POST /webhooks/generic HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nwebhook-id: {msg_id}\r\nwebhook-timestamp: {timestamp}\r\n"
            f"webhook-signature: {sign_standard_webhook(secret, msg_id, timestamp, body)}\r\n\r\n"
        )
        prepared.append(head.encode() + body)
    return prepared


def run_load(
    url_base: str, prepared: list[bytes], connections: int, duration: float, wrk_threads: int = 2
) -> LoadResult:
    """Send `prepared` to the server at `url_base` (http://host:port) with `connections`
    keep-alive connections for at most `duration` seconds."""
    if shutil.which("wrk"):
        return _run_wrk(url_base, prepared, connections, duration, wrk_threads)
    return _run_processes(url_base, prepared, connections, duration)


def _run_wrk(
    url_base: str, prepared: list[bytes], connections: int, duration: float, threads: int
) -> LoadResult:
    threads = max(1, min(threads, connections))
    # wrk takes whole seconds only ("0.5s" is a usage error): a fraction is rounded up. The
    # rate is computed from the duration wrk reports, so it stays exact.
    duration = max(1, math.ceil(duration))
    with tempfile.TemporaryDirectory(prefix="leadrelay-wrk-") as tmp:
        folder = Path(tmp)
        for thread in range(threads):
            with (folder / f"requests-{thread}.bin").open("wb") as out:
                for raw in prepared[thread::threads]:
                    out.write(b"%d\n" % len(raw) + raw)
        script = folder / "signed.lua"
        script.write_text(WRK_SCRIPT)
        command = ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{duration:g}s",
                   "--timeout", "10s", "-s", str(script), url_base + "/webhooks/generic", "--", str(folder)]  # fmt: skip
        done = subprocess.run(command, capture_output=True, text=True, timeout=duration + 60, check=False)
    line = next((ln for ln in done.stdout.splitlines() if ln.startswith("WRK_RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stdout[-2000:]} {done.stderr[-2000:]}")
    found = json.loads(line.removeprefix("WRK_RESULT "))
    return LoadResult(
        client=f"wrk ({threads} threads, {connections} connections)",
        requests=found["requests"],
        seconds=found["duration_us"] / 1e6,
        non_2xx=found["non_2xx"],
        socket_errors=found["socket_errors"],
        p50_ms=found["p50_us"] / 1000,
        p99_ms=found["p99_us"] / 1000,
        max_ms=found["max_us"] / 1000,
        exhausted=found["exhausted_threads"] > 0,
    )


# ---- fallback: one Python process per connection ------------------------------------------


def _read_response(sock: socket.socket, pending: bytearray) -> int:
    """Read one HTTP response from a keep-alive socket; return its status code."""
    while b"\r\n\r\n" not in pending:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        pending += chunk
    head, _, rest = bytes(pending).partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    length = 0
    for header in head.split(b"\r\n")[1:]:
        name, _, value = header.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("server closed the connection")
        rest += chunk
    pending[:] = rest[length:]
    return status


def _connection_worker(
    host: str, port: int, prepared: list[bytes], deadline: float, out: multiprocessing.Queue
) -> None:
    latencies: list[float] = []
    non_2xx = errors = 0
    pending = bytearray()
    sock = socket.create_connection((host, port), timeout=10)
    for raw in prepared:
        if time.monotonic() >= deadline:
            break
        started = time.perf_counter()
        try:
            sock.sendall(raw)
            status = _read_response(sock, pending)
        except OSError:
            errors += 1
            sock.close()
            pending.clear()
            sock = socket.create_connection((host, port), timeout=10)
            continue
        latencies.append(time.perf_counter() - started)
        if not 200 <= status < 300:
            non_2xx += 1
    sock.close()
    out.put((latencies, non_2xx, errors, time.monotonic() < deadline))


def _run_processes(url_base: str, prepared: list[bytes], connections: int, duration: float) -> LoadResult:
    host, port = url_base.removeprefix("http://").rsplit(":", 1)
    results: multiprocessing.Queue = multiprocessing.Queue()
    started = time.monotonic()
    deadline = started + duration
    workers = [
        multiprocessing.Process(
            target=_connection_worker, args=(host, int(port), prepared[i::connections], deadline, results)
        )
        for i in range(connections)
    ]
    for worker in workers:
        worker.start()
    gathered = [results.get(timeout=duration + 60) for _ in workers]
    elapsed = time.monotonic() - started
    for worker in workers:
        worker.join()
    latencies = sorted(x for found in gathered for x in found[0])
    if not latencies:
        raise RuntimeError("no request was answered")
    return LoadResult(
        client=f"{connections} Python processes (wrk is not installed: apt-get install wrk)",
        requests=len(latencies) + sum(g[2] for g in gathered),
        seconds=elapsed,
        non_2xx=sum(g[1] for g in gathered),
        socket_errors=sum(g[2] for g in gathered),
        p50_ms=latencies[len(latencies) // 2] * 1000,
        p99_ms=latencies[max(0, int(len(latencies) * 0.99) - 1)] * 1000,
        max_ms=latencies[-1] * 1000,
        exhausted=any(g[3] for g in gathered),
    )
