"""The Faust application: topics, the scoring agent and the timers.

The agent takes messages from ``predictions`` in blocks and hands each block
to a worker thread (so the event loop keeps heartbeating to Kafka), where
:class:`~streams.processor.BlockProcessor` scores, publishes and stores it.
Only when that returns does Faust acknowledge the block's offsets.
"""

import asyncio
import logging
from datetime import UTC, datetime
from typing import Any

import faust

from streams.processor import BlockProcessor
from streams.records import RawMessage
from streams.settings import Settings

__all__ = ["create_app", "deduplication_token"]

log = logging.getLogger(__name__)

IDLE_CHECK_SECONDS = 5.0
"""How often the worker closes batches whose window has passed."""


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
        # A worker killed without leaving the group keeps its partitions until
        # its session times out, so 10 s lets a restarted worker resume sooner.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
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
                await _process_until_done(processor, messages)
        finally:
            processor.stopping.set()
            await asyncio.to_thread(processor.close)

    @app.timer(IDLE_CHECK_SECONDS)
    async def close_idle_batches() -> None:
        await asyncio.to_thread(processor.close_idle_batches)

    @app.on_partitions_revoked.connect
    async def forget_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        partitions = [(tp.topic, tp.partition) for tp in revoked]
        await asyncio.to_thread(processor.revoke, partitions)

    app.oddwatch_processor = processor  # type: ignore[attr-defined]
    return app


async def _process_until_done(
    processor: BlockProcessor, messages: list[RawMessage]
) -> None:
    """Process a block, retrying on any error, so its offsets are never acknowledged
    before it is stored.

    Faust acknowledges a block taken with ``take_events`` even when the body
    raises, so an error must not leave this function.
    """
    delay = 1.0
    while True:
        try:
            await asyncio.to_thread(processor.process, messages)
            return
        except Exception:
            log.exception(
                "processing a block at %s failed; retrying in %.0f s, and its "
                "offsets stay uncommitted until it succeeds",
                deduplication_token(messages),
                delay,
            )
            await asyncio.sleep(delay)
            delay = min(delay * 2, 60.0)


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
