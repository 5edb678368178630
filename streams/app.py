"""The Faust application: the worker's services, the scoring agent and the timers.

Prediction events reach :class:`~streams.processor.BlockProcessor`, which
scores, publishes and stores a block, in one of two ways (``reader``
setting):

- ``blocks`` (the default): :class:`~streams.reader.BlockReader`, a
  confluent-kafka consumer that takes whole blocks from librdkafka, runs in a
  thread started by a Faust service. Faust's own Kafka consumer and producer
  are off, and Faust runs the services, the timer and the signals.
- ``faust``: a Faust agent takes messages from ``predictions`` with
  ``take_events`` and hands each block to a worker thread, so the event loop
  keeps heartbeating to Kafka. It costs more CPU per event (see the
  README's performance section).

Either way a block's offsets are committed only after it is stored.
"""

import asyncio
import logging
import os
import threading
from datetime import UTC, datetime
from typing import Any

import faust
from faust.app.base import BootStrategy
from mode import Service

from streams.processor import BlockProcessor
from streams.reader import BlockReader
from streams.records import RawMessage
from streams.records import offset_ranges as deduplication_token
from streams.settings import Settings

__all__ = ["create_app", "deduplication_token"]

log = logging.getLogger(__name__)

IDLE_CHECK_SECONDS = 5.0
"""How often the worker closes batches whose window has passed."""

STOP_CHECK_SECONDS = 0.5
"""How often a retry loop checks whether the worker is stopping."""

EXIT_BLOCK_NOT_STORED = 3
"""Exit status of a worker stopped while a block could not be stored."""

FAUST_MAX_FETCH_BYTES = 4 * 1024 * 1024
"""Bytes Faust's consumer fetches per partition and request. Faust's default
of 1 MiB let ``take_events`` read about 2,700 events/s; 4 MiB about 8,000."""


class _ServicesOnly(BootStrategy):
    """Start Faust without its Kafka consumer and producer.

    The block reader has its own consumer; a Faust consumer in the same
    group would take part in its rebalances.
    """

    enable_kafka_consumer = False
    enable_kafka_producer = False


def create_app(settings: Settings) -> faust.App:
    """Build the Faust app with oddwatch's topics, agent and timer."""
    settings.home.mkdir(parents=True, exist_ok=True)
    processor = BlockProcessor(settings)
    app = _faust_app(settings)
    if settings.reader == "faust":
        _add_agent(app, settings, processor)
    else:
        app.service(_reader_service(settings, processor))

    @app.timer(IDLE_CHECK_SECONDS)
    async def close_idle_batches() -> None:
        await asyncio.to_thread(processor.close_idle_batches)

    app.oddwatch_processor = processor  # type: ignore[attr-defined]
    return app


def _faust_app(settings: Settings) -> faust.App:
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
        consumer_max_fetch_size=FAUST_MAX_FETCH_BYTES,
    )
    if settings.reader != "faust":
        app.boot_strategy = _ServicesOnly(app)
    return app


def _add_agent(app: faust.App, settings: Settings, processor: BlockProcessor) -> None:
    predictions = app.topic(
        settings.topic("predictions"),
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )

    @app.agent(predictions, name="score_predictions")
    async def score_predictions(stream: Any) -> None:
        await asyncio.to_thread(processor.open)
        try:
            async for events in stream.take_events(
                settings.block_size, within=settings.block_timeout
            ):
                messages = [_raw_message(event) for event in events]
                await _process_until_done(app, processor, messages)
        finally:
            processor.stopping.set()
            await asyncio.to_thread(processor.close)

    @app.on_partitions_revoked.connect
    async def forget_revoked(app: Any, revoked: Any, **kwargs: Any) -> None:
        partitions = [(tp.topic, tp.partition) for tp in revoked]
        await asyncio.to_thread(processor.revoke, partitions)


def _reader_service(settings: Settings, processor: BlockProcessor) -> type[Service]:
    """Return a Faust service class that runs the block reader in a thread."""

    class BlockReaderService(Service):
        async def on_start(self) -> None:
            self._failed: BaseException | None = None
            self._reader = BlockReader(settings, processor)
            self._thread = threading.Thread(
                target=self._run, name="oddwatch-block-reader", daemon=True
            )
            self._thread.start()

        def _run(self) -> None:
            try:
                self._reader.run()
            except BaseException as error:
                self._failed = error
                log.critical(
                    "the block reader stopped on an error it cannot retry: %s; "
                    "stopping the worker",
                    error,
                    exc_info=True,
                )
                processor.stopping.set()
            finally:
                processor.close()

        @Service.task
        async def _watch(self) -> None:
            # Stop the worker when the reader thread ends by itself.
            while not self.should_stop:
                if not self._thread.is_alive():
                    if not processor.stopping.is_set() or self._failed is not None:
                        await self.crash(
                            self._failed or RuntimeError("the block reader ended")
                        )
                    return
                await self.sleep(1.0)

        async def on_stop(self) -> None:
            processor.stopping.set()
            await asyncio.to_thread(self._thread.join)

    return BlockReaderService


async def _process_until_done(
    app: faust.App, processor: BlockProcessor, messages: list[RawMessage]
) -> None:
    """Process a block, retrying on any error, so its offsets are never acknowledged
    before it is stored.

    Faust acknowledges a block taken with ``take_events`` even when the body
    raises, so an error must not leave this function. Faust's shutdown also
    waits for the block to be acknowledged. So a worker asked to stop while
    its block still fails exits the process without acknowledging it, and
    the next worker reads the block again.
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
        waited = 0.0
        while waited < delay:
            if app.should_stop or processor.stopping.is_set():
                _exit_without_acknowledging(messages)
            await asyncio.sleep(STOP_CHECK_SECONDS)
            waited += STOP_CHECK_SECONDS
        delay = min(delay * 2, 60.0)


def _exit_without_acknowledging(messages: list[RawMessage]) -> None:
    log.critical(
        "stopping with block %s not stored; exiting without acknowledging it, "
        "so the next worker processes it",
        deduplication_token(messages),
    )
    logging.shutdown()
    os._exit(EXIT_BLOCK_NOT_STORED)


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
