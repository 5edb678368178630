"""The block reader: take prediction events from Kafka in blocks, with librdkafka.

Faust's stream hands the agent one message at a time, through asyncio
queues, and that costs more CPU per event than checking and scoring it. The
block reader instead calls confluent-kafka's ``Consumer.consume``, which
returns up to ``block_size`` messages per call from librdkafka's C fetch
queue. It runs in a thread of its own, inside the Faust worker, and keeps
the agent's delivery rules:

- a block's offsets are committed only after
  :meth:`~streams.processor.BlockProcessor.process` returned, so after its
  rows are in ClickHouse, its output is on Kafka and its journal row is
  written;
- a block that fails is retried until it succeeds or the worker stops, and
  is never skipped;
- partitions revoked or lost in a rebalance are forgotten, and their next
  owner recovers them from the journal.

A block is cut when ``block_size`` messages have arrived or
``block_timeout`` seconds have passed, whichever comes first. So a backlog
is read in full blocks, and a quiet stream waits at most ``block_timeout``.
"""

import gc
import logging
import time
from datetime import UTC, datetime

from confluent_kafka import (
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    TopicPartition,
)

from streams.kafka_logs import kafka_logger
from streams.processor import BlockProcessor, WorkerStopping
from streams.records import RawMessage, last_offsets, offset_ranges
from streams.settings import Settings

__all__ = ["BlockReader", "consumer_config"]

log = logging.getLogger(__name__)

RETRY_FIRST_DELAY = 1.0
RETRY_MAX_DELAY = 60.0
ERROR_LOG_INTERVAL = 10.0
"""Seconds between two log lines about the same Kafka error code."""

MAX_PARTITION_FETCH_BYTES = 8 * 1024 * 1024
"""Bytes fetched per partition and request; 8 MiB is about 19,000 events of
440 bytes, so one fetch fills a block of the largest usual size."""


def consumer_config(settings: Settings) -> dict[str, object]:
    """Return the librdkafka configuration of the worker's consumer."""
    return {
        "bootstrap.servers": settings.kafka,
        "group.id": settings.group,
        "client.id": f"oddwatch-worker-{settings.group}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # A worker killed without leaving the group keeps its partitions until
        # its session times out, so 10 s lets a restarted worker resume sooner.
        "session.timeout.ms": 10_000,
        "heartbeat.interval.ms": 3_000,
        # While a block that cannot be stored is retried, consume is not
        # called. After this long the group gives the partitions to another
        # worker, which recovers them from the journal.
        "max.poll.interval.ms": 300_000,
        "max.partition.fetch.bytes": MAX_PARTITION_FETCH_BYTES,
        "fetch.max.bytes": 4 * MAX_PARTITION_FETCH_BYTES,
        "logger": kafka_logger("streams.reader.librdkafka"),
    }


class BlockReader:
    """Consume ``predictions`` in blocks and hand each to the block processor.

    :meth:`run` blocks until :attr:`BlockProcessor.stopping` is set; the
    worker runs it in a thread.
    """

    def __init__(self, settings: Settings, processor: BlockProcessor) -> None:
        self.settings = settings
        self.processor = processor
        self.topic = settings.topic("predictions")
        self.blocks = 0
        self.events = 0
        self._consumer: Consumer | None = None
        self._processed: dict[tuple[str, int], int] = {}
        self._error_logged: dict[int, float] = {}

    def run(self) -> None:
        """Read, process and commit blocks until the worker stops."""
        stopping = self.processor.stopping
        self.processor.open()
        consumer = Consumer(consumer_config(self.settings))
        self._consumer = consumer
        consumer.subscribe(
            [self.topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_lost,
        )
        log.info(
            "reading %s in blocks of at most %d events or %.2f s",
            self.topic,
            self.settings.block_size,
            self.settings.block_timeout,
        )
        try:
            while not stopping.is_set():
                messages = consumer.consume(
                    num_messages=self.settings.block_size,
                    timeout=self.settings.block_timeout,
                )
                block = self._raw_messages(messages)
                if not block:
                    continue
                ends = self._process_until_done(block)
                if ends is None:
                    break
                self._commit_offsets(ends, asynchronous=True)
                if self.blocks == 1:
                    # The first block loaded the models. Moving them out of the
                    # collected generations saves the collector rescanning
                    # their objects (river's trees are many small ones).
                    gc.freeze()
        finally:
            self._commit_processed()
            try:
                # Close the open batches while the partitions are still
                # assigned: leaving the group revokes them, and a revoked
                # partition's batches are left to its next owner.
                self.processor.close()
            finally:
                consumer.close()
                self._consumer = None
            log.info(
                "block reader stopped after %d blocks, %d events",
                self.blocks,
                self.events,
            )

    def _raw_messages(self, messages: list[Message]) -> list[RawMessage]:
        block = []
        for message in messages:
            error = message.error()
            if error is not None:
                self._on_error(error)
                continue
            _kind, milliseconds = message.timestamp()
            received_at = (
                datetime.fromtimestamp(milliseconds / 1000, tz=UTC)
                if milliseconds > 0
                else datetime.now(UTC)
            )
            value = message.value()
            block.append(
                RawMessage(
                    topic=message.topic(),
                    partition=message.partition(),
                    offset=message.offset(),
                    key=message.key(),
                    value=value if value is not None else b"",
                    received_at=received_at,
                )
            )
        return block

    def _process_until_done(
        self, block: list[RawMessage]
    ) -> dict[tuple[str, int], int] | None:
        """Process a block, retrying on any error, and return its last offsets.

        Returns None if the worker stops first. The processor already retries
        storage and Kafka failures. What reaches this loop is anything else,
        and the block is kept, because its offsets are not committed and
        skipping it would lose its events.
        """
        delay = RETRY_FIRST_DELAY
        while True:
            try:
                self.processor.process(block)
            except WorkerStopping as error:
                log.warning(
                    "stopped before block %s was stored (%s); the next worker "
                    "reads it again",
                    offset_ranges(block),
                    error,
                )
                return None
            except Exception:
                if self.processor.stopping.is_set():
                    return None
                log.exception(
                    "processing block %s failed; retrying in %.0f s, and its "
                    "offsets stay uncommitted until it succeeds",
                    offset_ranges(block),
                    delay,
                )
                self.processor.stopping.wait(delay)
                delay = min(delay * 2, RETRY_MAX_DELAY)
                continue
            self.blocks += 1
            self.events += len(block)
            ends = last_offsets(block)
            self._processed.update(ends)
            return ends

    def _commit_processed(self, partitions: list[TopicPartition] | None = None) -> None:
        """Commit, and wait for, the offsets of every processed block."""
        if partitions is None:
            ends = dict(self._processed)
        else:
            revoked = {(tp.topic, tp.partition) for tp in partitions}
            ends = {
                key: offset for key, offset in self._processed.items() if key in revoked
            }
        self._commit_offsets(ends, asynchronous=False)

    def _commit_offsets(
        self, ends: dict[tuple[str, int], int], *, asynchronous: bool
    ) -> None:
        """Commit the offset after each partition's last processed message.

        A commit that fails is only logged, because the events are stored and
        journaled already: a worker that reads them again skips them. The next
        block's commit covers these offsets too.
        """
        if not ends or self._consumer is None:
            return
        offsets = [
            TopicPartition(topic, partition, offset + 1)
            for (topic, partition), offset in ends.items()
        ]
        try:
            self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except KafkaException as error:
            log.warning(
                "committing offsets %s failed: %s; the events are stored, and a "
                "worker that reads them again skips them",
                ", ".join(f"{tp.topic}/{tp.partition}@{tp.offset}" for tp in offsets),
                error.args[0] if error.args else error,
            )

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.info("assigned %s", _partition_names(partitions))
        self.processor.take_over([(tp.topic, tp.partition) for tp in partitions])

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        # Callbacks run inside consume(), between blocks, so no block of these
        # partitions is in flight.
        log.info("revoked %s", _partition_names(partitions))
        self._commit_processed(partitions)
        self._forget(partitions)

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        log.warning(
            "lost %s without a rebalance (the group timed this worker out); "
            "their next owner recovers them from the journal",
            _partition_names(partitions),
        )
        self._forget(partitions)

    def _forget(self, partitions: list[TopicPartition]) -> None:
        keys = [(tp.topic, tp.partition) for tp in partitions]
        for key in keys:
            self._processed.pop(key, None)
        self.processor.revoke(keys)

    def _on_error(self, error: KafkaError) -> None:
        if error.code() == KafkaError._PARTITION_EOF:
            return
        if error.fatal():
            raise KafkaException(error)
        now = time.monotonic()
        if now - self._error_logged.get(error.code(), 0.0) >= ERROR_LOG_INTERVAL:
            self._error_logged[error.code()] = now
            log.warning(
                "Kafka reported %s while reading %s; the consumer retries by "
                "itself (this message repeats at most every %.0f s)",
                error.str(),
                self.topic,
                ERROR_LOG_INTERVAL,
            )


def _partition_names(partitions: list[TopicPartition]) -> str:
    if not partitions:
        return "no partitions"
    return ", ".join(f"{tp.topic}/{tp.partition}" for tp in partitions)
