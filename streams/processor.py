"""The worker's block processor: score, publish, store, journal.

For every block the agent takes from Kafka, in a worker thread:

1. On the first block of a partition, recover it from the journal: delete
   rows an earlier worker left unfinished, restore its open batches and learn
   which offsets are stored already.
2. Skip the events already stored; score the rest (:class:`Pipeline`).
3. Queue scored events, alerts, batch summaries and dead letters for Kafka.
   The producer sends them in the background while the next step runs.
4. Write the rows to ClickHouse, retrying with back-off while it fails.
5. Wait until the broker has acknowledged every queued message, sending
   them again if any failed.
6. Append the journal rows; only then is the block's offset committed.

Delivery is at least once from Kafka and exactly once in ClickHouse, by a
plain ``count()``. The output topics get at least once: a crash can repeat
the messages of the last unfinished block, so consumers deduplicate by
``request_id``, ``alert_id`` and ``batch_id``.
"""

import logging
import pickle
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TypeVar

from streams.batching import Batcher
from streams.errors import KafkaUnavailableError, StorageError
from streams.journal import Journal
from streams.pipeline import BlockOutput, Pipeline
from streams.publisher import Publisher
from streams.records import DeadLetter, RawMessage, last_offsets
from streams.registration import RegistrationReader
from streams.registry import ModelRegistry
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.storage import Storage
from streams.topics import ensure_topics

__all__ = ["BlockProcessor"]

log = logging.getLogger(__name__)

T = TypeVar("T")

RETRY_FIRST_DELAY = 0.5
RETRY_MAX_DELAY = 30.0


class WorkerStopping(Exception):
    """Raised inside a retry loop when the worker is asked to stop."""


class BlockProcessor:
    """Process blocks and write their output; owns storage, Kafka clients and models.

    A lock serialises the agent's blocks and the timer's work, which run in
    worker threads.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._run_id = uuid.uuid4().hex[:8]
        self._pipeline: Pipeline | None = None
        self._storage: Storage | None = None
        self._sink: ClickHouseSink | None = None
        self._journal: Journal | None = None
        self._publisher: Publisher | None = None
        self._reader: RegistrationReader | None = None
        self._stored_up_to: dict[tuple[str, int], int] = {}
        self._last_snapshot = time.monotonic()
        self._deliveries = 0

    def open(self) -> None:
        """Connect to ClickHouse and Kafka and read the model registrations."""
        with self._lock:
            if self._pipeline is not None:
                return
            self._retry(lambda: ensure_topics(self.settings), "creating topics")
            self._storage = self._retry(
                lambda: Storage.connect(self.settings.clickhouse), "connecting"
            )
            self._sink = ClickHouseSink(self._storage)
            self._journal = Journal(self._storage, self.settings.group)
            self._publisher = Publisher(self.settings)
            self._reader = RegistrationReader(self.settings)
            self._reader.catch_up(timeout=30)
            registry = ModelRegistry(
                self.settings.store, self._reader, snapshots=self._load_snapshot
            )
            self._pipeline = Pipeline(
                registry, self._make_batcher, stored_request_ids=self._stored_ids
            )
            log.info(
                "worker ready: %d model versions registered",
                len(self._reader.registrations),
            )

    def process(self, messages: list[RawMessage]) -> BlockOutput | None:
        """Score, publish and store ``messages``; runs in a worker thread."""
        self.open()
        with self._lock:
            assert self._pipeline is not None
            fresh = [m for m in messages if self._is_new(m)]
            if len(fresh) < len(messages):
                log.info(
                    "skipped %d events stored before, by an earlier worker",
                    len(messages) - len(fresh),
                )
            if not fresh:
                return None
            saved = pickle.dumps(self._pipeline.batchers)
            output = self._process_isolated(fresh)
            ends = last_offsets(fresh)
            try:
                self._deliver(output, ends)
            except BaseException:
                # The block is not stored, so Kafka delivers it again; its
                # events must not stay counted in the open batches.
                self._pipeline.batchers = pickle.loads(saved)
                raise
            self._snapshot_if_due()
            return output

    def _process_isolated(self, messages: list[RawMessage]) -> BlockOutput:
        """Process a block; if it raises, find the events that cause it.

        An unexpected error (a bug, or a custom metric's scorer that breaks
        the block in a way oddwatch does not catch) must not stop the worker
        nor lose the block. The batching state is put back as it was, the
        events are processed one at a time, and those that still raise go to
        the dead-letter topic with the error as the reason.
        """
        assert self._pipeline is not None
        saved = pickle.dumps(self._pipeline.batchers)
        try:
            return self._pipeline.process(messages)
        except Exception:
            log.exception(
                "processing a block of %d events failed; retrying them one by one",
                len(messages),
            )
        output = BlockOutput()
        for message in messages:
            self._pipeline.batchers = pickle.loads(saved)
            try:
                single = self._pipeline.process([message])
            except Exception as error:
                output.dead_letters.append(
                    DeadLetter(
                        message,
                        "internal_error",
                        f"processing this event raised {type(error).__name__}: "
                        f"{error}; the worker log has the traceback",
                    )
                )
                continue
            saved = pickle.dumps(self._pipeline.batchers)
            output.extend(single)
        self._pipeline.batchers = pickle.loads(saved)
        return output

    def close_idle_batches(self) -> None:
        """Close the batches whose window ended a window's length ago."""
        with self._lock:
            if self._pipeline is None:
                return
            offsets = dict(self._stored_up_to)
            output = self._pipeline.close_idle(
                datetime.now(UTC), self.settings.batch_window, offsets
            )
            if output.batch_records:
                self._deliver(output, offsets)

    def take_over(self, partitions: list[tuple[str, int]]) -> None:
        """Recover newly assigned partitions from the journal now.

        Without this a partition is recovered with its first block, so the
        open batches of a quiet partition would stay open, neither closed by
        the timer nor on shutdown, until an event arrives.
        """
        self.open()
        with self._lock:
            for key in partitions:
                if key not in self._stored_up_to:
                    self._recover(*key)

    def revoke(self, partitions: list[tuple[str, int]]) -> None:
        """Forget partitions assigned away; the next owner recovers them."""
        with self._lock:
            if self._pipeline is None:
                return
            for key in partitions:
                self._stored_up_to.pop(key, None)
                self._pipeline.batchers.pop(key, None)

    def close(self) -> None:
        """Close the open batches, save the detectors, then close the connections."""
        with self._lock:
            if self._pipeline is None:
                return
            try:
                offsets = dict(self._stored_up_to)
                output = self._pipeline.close_all(offsets)
                if output.batch_records:
                    self._deliver(output, offsets)
                self._snapshot()
            except WorkerStopping as error:
                log.warning(
                    "stopped without closing the open batches (%s); the next "
                    "worker resumes them from the journal",
                    error,
                )
            finally:
                assert self._storage is not None
                assert self._publisher is not None
                assert self._reader is not None
                self._publisher.close()
                self._reader.close()
                self._storage.close()
                self._pipeline = None
                log.info("worker closed its connections")

    def _is_new(self, message: RawMessage) -> bool:
        key = (message.topic, message.partition)
        if key not in self._stored_up_to:
            self._recover(*key)
        return message.offset > self._stored_up_to[key]

    def _recover(self, topic: str, partition: int) -> None:
        assert self._journal is not None and self._pipeline is not None
        journal = self._journal
        state = self._retry(lambda: journal.recover(topic, partition), "recovering")
        self._stored_up_to[(topic, partition)] = state.last_offset
        if state.batcher is not None:
            self._pipeline.batchers[(topic, partition)] = state.batcher
        log.info(
            "took over %s partition %d: stored up to offset %d, %d open batches",
            topic,
            partition,
            state.last_offset,
            len(state.batcher.open_batch_ids()) if state.batcher else 0,
        )

    def _deliver(self, output: BlockOutput, ends: dict[tuple[str, int], int]) -> None:
        assert self._sink is not None
        assert self._publisher is not None
        assert self._journal is not None
        assert self._pipeline is not None
        self._send(output)
        # Unique per delivery: a retry of this delivery reuses it, so ClickHouse
        # drops tables written before the failure, while a later delivery at
        # the same offsets (batches closed by the timer) is never dropped.
        self._deliveries += 1
        token = f"{self._run_id}:{self._deliveries}:" + ";".join(
            f"{topic}/{partition}/{offset}"
            for (topic, partition), offset in ends.items()
        )
        sink, journal, pipeline = self._sink, self._journal, self._pipeline
        self._retry(lambda: sink.write(output, token), "writing to ClickHouse")
        self._retry(lambda: self._confirm_sent(output), "publishing to Kafka")
        entries = {
            key: (offset, pipeline.batcher(*key)) for key, offset in ends.items()
        }
        self._retry(lambda: journal.append(entries), "writing the journal")
        self._stored_up_to.update(ends)

    def _confirm_sent(self, output: BlockOutput) -> None:
        """Wait for the broker to acknowledge the block's messages.

        A message that failed has left the producer's queue, so on failure
        every message of the block is queued again before the error goes to
        the retry loop. Messages delivered the first time are then sent twice,
        which the output topics' at-least-once contract allows.
        """
        assert self._publisher is not None
        try:
            self._publisher.flush()
        except KafkaUnavailableError:
            self._send(output)
            raise

    def _send(self, output: BlockOutput) -> None:
        assert self._publisher is not None
        topic = self.settings.topic
        for name, messages in [
            ("scored", output.scored),
            ("alerts", output.alert_records),
            ("batches", output.batch_records),
        ]:
            for key, value in messages:
                self._publisher.send(topic(name), key, value)
        for letter in output.dead_letters:
            self._publisher.send(
                topic("deadletter"), letter.message.key, letter.to_json()
            )
        if output.dead_letters:
            log.warning(
                "sent %d events to %s; see the reasons there or in the "
                "dead_letters table",
                len(output.dead_letters),
                topic("deadletter"),
            )

    def _retry(self, action: Callable[[], T], what: str) -> T:
        """Run ``action`` until it succeeds, backing off while storage or Kafka fail."""
        delay = RETRY_FIRST_DELAY
        attempt = 1
        while True:
            try:
                return action()
            except (StorageError, KafkaUnavailableError) as error:
                if self.stopping.is_set():
                    raise WorkerStopping(
                        f"{what} failed while stopping: {error}"
                    ) from error
                log.warning(
                    "%s failed (attempt %d), retrying in %.1f s; events wait in "
                    "Kafka meanwhile: %s",
                    what,
                    attempt,
                    delay,
                    error,
                )
                self.stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
                attempt += 1

    def _stored_ids(self, model: str, version: int, ids: list[str]) -> set[str]:
        """Return which of ``ids`` are stored already for this model version."""
        assert self._storage is not None
        storage = self._storage
        rows = self._retry(
            lambda: storage.query_rows(
                "SELECT request_id FROM events WHERE model = {model:String} "
                "AND version = {version:UInt32} AND request_id IN {ids:Array(String)}",
                {"model": model, "version": version, "ids": ids},
            ),
            "looking up request ids",
        )
        return {row[0] for row in rows}

    def _make_batcher(self, partition: int) -> Batcher:
        return Batcher(
            window_seconds=self.settings.batch_window,
            batch_size=self.settings.batch_size,
            partition=partition,
        )

    def _snapshot_if_due(self) -> None:
        if time.monotonic() - self._last_snapshot >= self.settings.snapshot_interval:
            self._snapshot()

    def _snapshot(self) -> None:
        """Save the online state of every loaded detector to ClickHouse."""
        assert self._pipeline is not None and self._storage is not None
        self._last_snapshot = time.monotonic()
        loaded = self._pipeline.registry.loaded_with_checksums()
        if not loaded:
            return
        columns: dict[str, list] = {
            "group": [], "model": [], "version": [], "checksum": [],
            "events_learned": [], "state": [], "taken_at": [],
        }  # fmt: skip
        now = datetime.now(UTC)
        for checksum, model_version in loaded:
            columns["group"].append(self.settings.group)
            columns["model"].append(model_version.model)
            columns["version"].append(model_version.version)
            columns["checksum"].append(checksum)
            columns["events_learned"].append(0)
            columns["state"].append(model_version.detector_state().hex())
            columns["taken_at"].append(now)
        try:
            self._storage.insert_block("detector_snapshots", columns, quiet=True)
        except StorageError as error:
            log.warning(
                "saving detector snapshots failed, trying again later: %s", error
            )

    def _load_snapshot(self, model: str, version: int, checksum: str) -> bytes | None:
        assert self._storage is not None
        rows = self._storage.query_rows(
            "SELECT state FROM detector_snapshots WHERE group = {group:String} "
            "AND model = {model:String} AND version = {version:UInt32} "
            "AND checksum = {checksum:String} ORDER BY taken_at DESC LIMIT 1",
            {"group": self.settings.group, "model": model, "version": version,
             "checksum": checksum},
        )  # fmt: skip
        return bytes.fromhex(rows[0][0]) if rows else None
