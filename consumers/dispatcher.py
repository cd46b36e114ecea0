"""The dispatcher consumer: command topic (and retry topic) -> `DeliveryCore` -> providers.

One loop per process, in its main thread (kafka-python consumers are not thread-safe):

1. poll a batch; decode each record (an undecodable one is dead-lettered at once);
2. group by (partition, provider, lead) in record order and coalesce each group into one
   call through the same `DeliveryCore` as the embedded dispatcher, on a worker pool, the
   groups due together shared out in chunks, one per worker (`consumers/chunk.py`,
   `consumers/delivery.py`);
3. per group: claim the lead in PostgreSQL (one group per provider and lead across every
   dispatcher and both topics); per (command, provider): claim in the SQL ledger before
   the call, record after it (the claims of a chunk's groups in one transaction, their
   delivered outcomes in one).
   A rate-limit wait is waited out inside the batch; a transient failure (and any wait
   longer than `kafka.max_in_batch_wait_seconds`) goes to the retry topic with its due
   time, so one failing lead never stalls its partition; a permanent one to the DLQ;
4. commit, per partition, the offset of the first record whose outcome is not durable.

While a batch runs its partitions are paused and `poll` keeps being called, so the
consumer stays in the group however long the provider limit makes the batch. Retry-topic
records that are not due yet are not held in memory: the partition is rewound to them and
paused until they are due.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import threading
import time
import uuid
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait

from kafka import KafkaConsumer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import CommitFailedError, KafkaError
from kafka.structs import OffsetAndMetadata

from consumers.batch import Batch, Group, Item
from consumers.chunk import MAX_CHUNK, ChunkRunner
from consumers.client import (
    H_ATTEMPTS,
    H_DUE_AT,
    H_KIND,
    H_PROVIDER,
    H_RECEIVED_AT,
    H_REQUEST_ID,
    ensure_topics,
    headers_dict,
    make_consumer,
    make_producer,
)
from consumers.delivery import STATE_RETRY_SECONDS
from consumers.outcomes import OutcomePublisher
from consumers.wiring import open_record, redis_client
from service import metrics
from service.config import Config
from service.domain.command import SCHEMA_VERSION, LeadUpdateCommand
from service.domain.state import StateUnavailable
from service.pipeline.budget import BudgetSampler
from service.pipeline.delivery_core import DeliveryCore
from service.state.redis_limiter import RedisRateLimiter
from service.state.retention import RetentionPruner

log = logging.getLogger("leadrelay.kafka.dispatcher")

KEEPALIVE_SECONDS = 1.0


class KafkaDispatcher(AsyncConsumerRebalanceListener):
    def __init__(self, config: Config, owner: str | None = None) -> None:
        self.config = config
        kafka = config["kafka"]
        self.topics = kafka["topics"]
        self.owner = owner or uuid.uuid4().hex[:12]
        # Redis holds only the shared rate limiter; the record is the SQL store (PostgreSQL).
        self.ledger = open_record(config)
        self.redis = redis_client(config)
        self.core = DeliveryCore(config, limiter=RedisRateLimiter(self.redis, config["redis"]["key_prefix"]))
        self.core.counts_polls = True  # the SQL ledger keeps `polls`
        self.core.gate.attach(self.ledger)  # every dispatcher shares one breaker per provider
        self.concurrency = int(config["dispatcher"]["concurrency"])
        self.max_in_batch_wait = float(kafka["max_in_batch_wait_seconds"])
        self.owner_ttl = float(kafka["owner_ttl_seconds"])
        self.poll_timeout_ms = int(kafka["consumer"]["poll_timeout_ms"])
        self.stopping = threading.Event()
        self.producer = make_producer(config)
        self.outcomes = OutcomePublisher(self.producer, self.topics["dlq"], self.topics["retry"])
        self.consumer: KafkaConsumer | None = None
        self.pool = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="kdeliver")
        self.batch: Batch | None = None
        self.resume_at: dict[TopicPartition, float] = {}
        self.runner = ChunkRunner(
            self.core, self.ledger, self.outcomes, self.owner, self.max_in_batch_wait, self.owner_ttl
        )
        self._heartbeat_thread = threading.Thread(target=self._heartbeat, name="owner-heartbeat", daemon=True)
        self.budget = BudgetSampler(self.core, self.ledger)  # sampled from the heartbeat thread
        # Retention runs here too, in small transactions: concurrent pruners only ever delete
        # rows that are prunable for both, and a row already gone is simply not counted.
        self.pruner = RetentionPruner(self.ledger, config["retention"])

    # ---- liveness ---------------------------------------------------------------------

    def _heartbeat(self) -> None:
        """Other dispatchers treat our in-flight claims and our lead claims as live while this
        beats (a claim whose heartbeat is older than `kafka.owner_ttl_seconds` is an orphan)."""
        while not self.stopping.is_set():
            beat = time.monotonic()
            try:
                self.ledger.renew_owner(self.owner, self.runner.held_leads(), time.time(), self.owner_ttl)
            except StateUnavailable as exc:
                log.warning("owner heartbeat failed: %s", exc)
            self.budget.sample_if_due()  # never raises; its time comes out of the wait below
            self.stopping.wait(max(0.0, beat + self.owner_ttl / 3 - time.monotonic()))

    # ---- rebalance listener -----------------------------------------------------------
    # kafka-python runs these on its IO thread: they must not block, so the commit is
    # awaited rather than made with the blocking `commit()`. They only flip flags on the
    # batch that the main thread reads.

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        batch = self.batch
        for tp in revoked:
            self.resume_at.pop(tp, None)
        if batch is None or self.consumer is None:
            return
        mine = set(revoked) & batch.partitions()
        offsets = batch.commit_offsets(mine)
        for tp in mine:
            batch.exclude_partition(tp)
        if mine:
            log.info("partitions revoked mid-batch", extra={"partitions": sorted(map(str, mine))})
        if offsets:
            try:
                await self.consumer.commit_async(
                    {tp: OffsetAndMetadata(o, "", -1) for tp, o in offsets.items()}
                )
            except Exception as exc:  # the next owner re-reads; the ledger stops a second call
                log.warning("commit on revocation failed: %s", exc)

    async def on_partitions_lost(self, lost: set[TopicPartition]) -> None:
        # Evicted: a commit would fail; the next owner re-reads, the ledger stops doubles.
        batch = self.batch
        for tp in lost:
            self.resume_at.pop(tp, None)
        if batch is not None:
            for tp in set(lost) & batch.partitions():
                batch.exclude_partition(tp)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if self.batch is not None and self.consumer is not None and assigned:
            # Mid-batch: keep-alive polls must not fetch; the next batch takes them.
            self.consumer.pause(*assigned)
        log.info("partitions assigned", extra={"partitions": sorted(map(str, assigned))})

    # ---- decoding ---------------------------------------------------------------------

    def decode(self, tp: TopicPartition, record: ConsumerRecord) -> Item:
        headers = headers_dict(record.headers)
        item = Item(tp=tp, record=record)
        item.received_at = float(headers.get(H_RECEIVED_AT) or (record.timestamp or 0) / 1000 or time.time())
        try:
            item.command = LeadUpdateCommand.from_json(record.value or b"")
        except Exception as exc:  # any decoding problem is this record's, not the batch's
            try:
                self.outcomes.dead_letter(record, f"not a valid {SCHEMA_VERSION} command: {exc}", "leadrelay")
            except KafkaError as dlq_error:
                log.warning("dead letter not written; record re-read later: %s", dlq_error)
                item.excluded = True
                return item
            metrics.DEAD_LETTERS.labels(provider="none", stage="leadrelay").inc()
            log.warning("undecodable command dead-lettered", extra={"origin": f"{tp.topic}/{tp.partition}"})
            return item
        if record.topic == self.topics["retry"]:
            provider = headers.get(H_PROVIDER, "")
            item.providers = (provider,) if provider else ()
            item.attempts = int(headers.get(H_ATTEMPTS) or 0)
            item.kind = headers.get(H_KIND, "deliver")
            item.request_id = headers.get(H_REQUEST_ID)
        else:
            item.providers = tuple(item.command.providers)
        item.unresolved = set(item.providers)
        return item

    # ---- the batch loop (main thread) ---------------------------------------------------

    def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        if not offsets or self.consumer is None:
            return
        try:
            self.consumer.commit({tp: OffsetAndMetadata(off, "", -1) for tp, off in offsets.items()})
        except (CommitFailedError, KafkaError) as exc:
            # Not fatal: the records are re-read by whoever owns the partition, and the
            # ledger answers "done" for everything already delivered.
            log.warning("offset commit failed: %s", exc)

    def _keepalive(self) -> None:
        """poll() on paused partitions: heartbeats, rebalances, max_poll_interval."""
        assert self.consumer is not None
        got = self.consumer.poll(timeout_ms=50)
        for tp, records in got.items():  # a partition assigned mid-batch slipped through
            self.consumer.seek(tp, records[0].offset)
            self.consumer.pause(tp)

    def _defer_retry_records(self, batch: Batch) -> None:
        """Retry records not due yet: rewind the partition to the first one, pause it."""
        assert self.consumer is not None
        now = time.time()
        for item in sorted(batch.items, key=lambda i: i.offset):
            if item.excluded or item.tp.topic != self.topics["retry"]:
                continue
            due_at = float(headers_dict(item.record.headers).get(H_DUE_AT) or 0)
            if due_at > now + 0.05:
                batch.exclude_partition(item.tp, item.offset)
                self.consumer.seek(item.tp, item.offset)
                self.resume_at[item.tp] = min(self.resume_at.get(item.tp, due_at), due_at)

    def process(self, records: dict[TopicPartition, list[ConsumerRecord]]) -> None:
        assert self.consumer is not None
        items = [self.decode(tp, r) for tp, recs in records.items() for r in recs]
        batch = Batch(items)
        self.batch = batch
        self.consumer.pause(*self.consumer.assignment())
        try:
            self._defer_retry_records(batch)
            self._register(batch)
            batch.build_groups()
            self._drive(batch)
        finally:
            self._commit(batch.commit_offsets())
            self.batch = None
            assigned = self.consumer.assignment()
            # Records whose outcome is not durable are read again by this consumer.
            for tp, offset in batch.rewind_positions().items():
                if tp in assigned:
                    self.consumer.seek(tp, offset)
            self.consumer.resume(*[tp for tp in assigned if tp not in self.resume_at])
            metrics.observe_consumer_lag(self.consumer)

    def _register(self, batch: Batch) -> None:
        """Event log entries for commands this dispatcher sees first (produced directly)."""
        pending = [
            (item.command, item.received_at)
            for item in batch.items
            if item.command is not None and not item.excluded and item.tp.topic != self.topics["retry"]
        ]
        while pending and not self.stopping.is_set():
            try:
                self.ledger.register(pending)  # one transaction for the batch
                return
            except StateUnavailable as exc:
                log.warning("event log unavailable; waiting: %s", exc)
                self._keepalive()
                self.stopping.wait(STATE_RETRY_SECONDS)

    def _drive(self, batch: Batch) -> None:
        """Run every group of the batch on the pool, each when it is due, in a heap; the groups
        due together are shared out in chunks (`consumers/chunk.py`), one chunk per worker."""
        order = itertools.count()
        due: list[tuple[float, int, Group]] = [(g.next_at, next(order), g) for g in batch.groups]
        heapq.heapify(due)
        running: dict[Future[list[float | None]], list[Group]] = {}
        last_keepalive = time.monotonic()
        while True:
            if self.stopping.is_set():
                batch.abandon_waiting()
                due = []
            now = time.time()
            # Enough groups per chunk to keep every worker busy, and no more than MAX_CHUNK.
            size = max(1, min(MAX_CHUNK, -(-len(due) // self.concurrency)))
            while due and len(running) < self.concurrency and due[0][0] <= now:
                chunk: list[Group] = []
                while due and len(chunk) < size and due[0][0] <= now:
                    _, _, group = heapq.heappop(due)
                    if group.dropped or not group.open_items():
                        continue  # revoked, or resolved by an earlier run
                    group.running = True
                    chunk.append(group)
                if chunk:
                    running[self.pool.submit(self.runner.run_chunk, chunk, self.stopping)] = chunk
            if not running and not due:
                return
            if running and (len(running) >= self.concurrency or not due):
                timeout = 0.2  # wait for a worker to come free, never spin
            else:
                timeout = min(0.2, max(0.001, due[0][0] - time.time())) if due else 0.2
            if running:
                done, _ = wait(list(running), timeout=timeout, return_when=FIRST_COMPLETED)
            else:
                done = set()
                self.stopping.wait(timeout)
            for future in done:
                chunk = running.pop(future)
                try:
                    results = future.result()
                except Exception as exc:  # a bug in one chunk must not stop the others
                    log.exception("delivery failed unexpectedly")
                    results = [30.0 if not isinstance(exc, KafkaError) else STATE_RETRY_SECONDS] * len(chunk)
                for group, again in zip(chunk, results, strict=True):
                    group.running = False
                    if again is not None:
                        group.next_at = time.time() + again
                        heapq.heappush(due, (group.next_at, next(order), group))
            if time.monotonic() - last_keepalive > KEEPALIVE_SECONDS:
                self._keepalive()
                last_keepalive = time.monotonic()

    def _resume_due(self) -> None:
        assert self.consumer is not None
        now = time.time()
        due = [tp for tp, at in self.resume_at.items() if at <= now]
        for tp in due:
            del self.resume_at[tp]
        assigned = self.consumer.assignment()
        ready = [tp for tp in due if tp in assigned]
        if ready:
            self.consumer.resume(*ready)
        # Deferred partitions stay paused (a fresh assignment is unpaused by the client).
        paused = [tp for tp in self.resume_at if tp in assigned]
        if paused:
            self.consumer.pause(*paused)

    def run(self) -> None:
        ensure_topics(self.config, [self.topics["commands"], self.topics["retry"], self.topics["dlq"]])
        self._heartbeat_thread.start()
        self.pruner.start()
        self.consumer = make_consumer(self.config, self.config["kafka"]["groups"]["dispatcher"])
        self.consumer.subscribe([self.topics["commands"], self.topics["retry"]], listener=self)
        log.info("kafka dispatcher started", extra={"owner": self.owner, "concurrency": self.concurrency})
        try:
            while not self.stopping.is_set():
                metrics.heartbeat()  # liveness: the worker port's /healthz fails if this stops
                self._resume_due()
                records = self.consumer.poll(timeout_ms=self.poll_timeout_ms)
                if records:
                    self.process(records)
        finally:
            self.shutdown()

    def stop(self) -> None:
        self.stopping.set()

    def shutdown(self) -> None:
        """Calls in flight have finished (the batch loop waited); offsets are committed.
        Leave the group now so the partitions move at once, not after a session timeout."""
        self.pool.shutdown(wait=True)
        self.pruner.stop()
        if self.consumer is not None:
            try:
                self.consumer.close(autocommit=False, timeout_ms=5000)
            except Exception as exc:  # the broker may be gone; we are leaving anyway
                log.warning("consumer close: %s", exc)
        try:
            self.producer.close(timeout=5)
        except Exception as exc:
            log.warning("producer close: %s", exc)
        try:
            self.ledger.forget_owner(self.owner)
        except StateUnavailable:
            pass  # our lead claims lapse after the owner TTL
        self.ledger.close()
        log.info("kafka dispatcher stopped", extra={"owner": self.owner})
