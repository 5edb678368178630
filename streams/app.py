"""The Faust application: topics, the scoring agent and the batch timer.

The agent takes messages from ``predictions`` in blocks and hands each block
to a worker thread (so the event loop keeps heartbeating to Kafka), which
scores it, writes it to ClickHouse, publishes the results and waits until
Kafka has kept them. Only then does Faust acknowledge the block's offsets. A
crash before that point makes Kafka deliver the block again, and the sink's
deduplication tokens make the second write harmless.
"""

import asyncio
import logging
import threading
from datetime import UTC, datetime
from typing import Any

import faust

from streams.batching import Batcher
from streams.pipeline import BlockOutput, Pipeline
from streams.publisher import Publisher
from streams.records import RawMessage
from streams.registration import RegistrationReader
from streams.registry import ModelRegistry
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.storage import Storage
from streams.topics import ensure_topics

__all__ = ["BlockProcessor", "create_app", "deduplication_token"]

log = logging.getLogger(__name__)

IDLE_CHECK_SECONDS = 5.0
"""How often the worker closes batches whose window has passed."""


class BlockProcessor:
    """Process blocks and write their output; owns storage, Kafka clients and models.

    A lock serialises the agent's blocks and the timer's batch closing,
    which run in worker threads.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._pipeline: Pipeline | None = None
        self._sink: ClickHouseSink | None = None
        self._publisher: Publisher | None = None
        self._reader: RegistrationReader | None = None

    def open(self) -> None:
        """Connect to ClickHouse and Kafka and read the model registrations."""
        with self._lock:
            if self._pipeline is not None:
                return
            ensure_topics(self.settings)
            self._sink = ClickHouseSink(Storage.connect(self.settings.clickhouse))
            self._publisher = Publisher(self.settings)
            self._reader = RegistrationReader(self.settings)
            self._reader.catch_up(timeout=30)
            registry = ModelRegistry(self.settings.store, self._reader)
            batcher = Batcher(
                window_seconds=self.settings.batch_window,
                batch_size=self.settings.batch_size,
            )
            self._pipeline = Pipeline(registry, batcher)
            log.info(
                "worker ready: %d model versions registered",
                len(self._reader.registrations),
            )

    def process(self, messages: list[RawMessage]) -> BlockOutput:
        """Score ``messages``, store and publish the result; runs in a worker thread."""
        self.open()
        with self._lock:
            assert self._pipeline is not None
            output = self._pipeline.process(messages)
            self._deliver(output, deduplication_token(messages))
            return output

    def close_idle_batches(self) -> None:
        """Close the batches whose window ended a window's length ago."""
        with self._lock:
            if self._pipeline is None:
                return
            output = self._pipeline.close_idle(
                datetime.now(UTC), self.settings.batch_window
            )
            self._deliver(output, _batch_token(output))

    def close(self) -> None:
        """Close the open batches, then the connections."""
        with self._lock:
            if self._pipeline is None:
                return
            try:
                output = self._pipeline.close_all()
                self._deliver(output, _batch_token(output))
            finally:
                assert self._sink and self._publisher and self._reader
                self._publisher.close()
                self._reader.close()
                self._sink.storage.close()
                self._pipeline = None
                log.info("worker closed its connections")

    def _deliver(self, output: BlockOutput, token: str) -> None:
        assert self._sink is not None and self._publisher is not None
        self._sink.write(output, token)
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
        self._publisher.flush()
        if output.dead_letters:
            log.warning(
                "sent %d events to %s; see the reasons there or in the "
                "dead_letters table",
                len(output.dead_letters),
                topic("deadletter"),
            )


def deduplication_token(messages: list[RawMessage]) -> str:
    """Name a block by the offset range it covers in each partition."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for message in messages:
        key = (message.topic, message.partition)
        bounds = ranges.setdefault(key, [message.offset, message.offset])
        bounds[0] = min(bounds[0], message.offset)
        bounds[1] = max(bounds[1], message.offset)
    return ";".join(
        f"{topic}/{partition}/{low}-{high}"
        for (topic, partition), (low, high) in sorted(ranges.items())
    )


def _batch_token(output: BlockOutput) -> str:
    return "batches:" + ",".join(output.batches["batch_id"])


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app with oddwatch's topics, agent and timer."""
    settings.home.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        settings.group,
        broker=[f"kafka://{server.strip()}" for server in settings.kafka.split(",")],
        store="memory://",
        datadir=str(settings.home / "faust"),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=settings.partitions,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
    )
    predictions = app.topic(
        settings.topic("predictions"),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    processor = BlockProcessor(settings)

    @app.agent(predictions, name="score_predictions")
    async def score_predictions(stream: Any) -> None:
        await asyncio.to_thread(processor.open)
        try:
            async for events in stream.take_events(
                settings.block_size, within=settings.block_timeout
            ):
                messages = [_raw_message(event) for event in events]
                await asyncio.to_thread(processor.process, messages)
        finally:
            await asyncio.to_thread(processor.close)

    @app.timer(IDLE_CHECK_SECONDS)
    async def close_idle_batches() -> None:
        await asyncio.to_thread(processor.close_idle_batches)

    app.oddwatch_processor = processor  # type: ignore[attr-defined]
    return app


def _raw_message(event: Any) -> RawMessage:
    message = event.message
    value = message.value if message.value is not None else b""
    return RawMessage(
        topic=message.topic,
        partition=message.partition,
        offset=message.offset,
        key=message.key,
        value=value,
        received_at=datetime.fromtimestamp(message.timestamp, tz=UTC),
    )
