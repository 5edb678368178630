"""The Faust application: topics and the scoring agent.

The agent takes messages from ``predictions`` in blocks, scores each block in
a worker thread (so the event loop keeps heartbeating to Kafka), writes it to
ClickHouse and sends its dead letters, and only then lets Faust acknowledge
the block's offsets. A crash before that point makes Kafka deliver the block
again; the sink's deduplication tokens make the second write harmless.
"""

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import faust

from streams.records import RawMessage
from streams.registry import ModelRegistry
from streams.scoring import ScoredBlock, score_block
from streams.settings import Settings
from streams.sink import ClickHouseSink
from streams.storage import Storage

__all__ = ["create_app"]

log = logging.getLogger(__name__)


class BlockProcessor:
    """Score a block and write it; owns the storage and the loaded models."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.registry = ModelRegistry(settings.store)
        self._sink: ClickHouseSink | None = None

    def open(self) -> None:
        if self._sink is None:
            self._sink = ClickHouseSink(Storage.connect(self.settings.clickhouse))

    def close(self) -> None:
        if self._sink is not None:
            self._sink.storage.close()
            self._sink = None

    def process(self, messages: list[RawMessage]) -> ScoredBlock:
        """Score ``messages`` and write the result; runs in a worker thread."""
        self.open()
        block = score_block(messages, self.registry)
        assert self._sink is not None
        self._sink.write(block, deduplication_token(messages))
        return block


def deduplication_token(messages: list[RawMessage]) -> str:
    """Name a block by the offset range it covers in each partition."""
    ranges: dict[tuple[str, int], list[int]] = {}
    for message in messages:
        bounds = ranges.setdefault(
            (message.topic, message.partition), [message.offset] * 2
        )
        bounds[0] = min(bounds[0], message.offset)
        bounds[1] = max(bounds[1], message.offset)
    return ";".join(
        f"{topic}/{partition}/{low}-{high}"
        for (topic, partition), (low, high) in sorted(ranges.items())
    )


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app with oddwatch's topics and agents."""
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
        producer_acks=-1,
    )
    predictions = app.topic(
        settings.topic("predictions"),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    deadletter = app.topic(
        settings.topic("deadletter"), key_serializer="raw", value_serializer="raw"
    )
    processor = BlockProcessor(settings)

    @app.agent(predictions, name="score_predictions")
    async def score_predictions(stream: Any) -> None:
        await deadletter.maybe_declare()
        try:
            async for events in stream.take_events(
                settings.block_size, within=settings.block_timeout
            ):
                messages = [_raw_message(event) for event in events]
                block = await asyncio.to_thread(processor.process, messages)
                await _send_dead_letters(deadletter, block)
        finally:
            await asyncio.to_thread(processor.close)

    app.oddwatch_processor = processor  # type: ignore[attr-defined]
    return app


async def _send_dead_letters(topic: Any, block: ScoredBlock) -> None:
    pending = []
    for letter in block.dead_letters:
        pending.append(await topic.send(key=letter.message.key, value=letter.to_json()))
    for future in pending:
        await future
    if block.dead_letters:
        log.warning("sent %d events to the dead-letter topic", len(block.dead_letters))


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
