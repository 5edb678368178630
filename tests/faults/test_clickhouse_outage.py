"""ClickHouse failing for a while under a worker's block processor.

The embedded engine runs inside the worker process, so nothing outside that
process can make it fail, and no ClickHouse server is available to put a
failing proxy in front of. So this test runs :class:`BlockProcessor` in the
test process, fed by real Kafka messages, with the real engine behind a
subclass of oddwatch's own :class:`Storage` whose inserts raise
StorageError for the tables and seconds the test chooses. Everything else is
the worker's code: scoring, publishing to the real broker, the ClickHouse
sink with its deduplication tokens, the journal and the retry with back-off.

What the Faust agent adds (taking blocks, committing offsets) is not covered
here; the other tests in this package run the whole worker.
"""

import contextlib
import logging
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from detectors import load_model
from streams import processor as processor_module
from streams.errors import StorageError
from streams.processor import BlockProcessor, WorkerStopping
from streams.records import RawMessage
from streams.registration import build_registration, publish_registration
from streams.settings import Settings
from streams.storage import Storage
from tests.faults.conftest import (
    batch_violations,
    census_events,
    count_delivery,
    produce,
)

pytestmark = pytest.mark.integration

EVENTS = 5000
BLOCK = 500


@dataclass
class Fault:
    """Which tables reject inserts, how many more times, and what was rejected.

    The outage is counted in rejected inserts, not in seconds, so the retry
    delays it causes do not depend on how fast the machine scores a block.
    """

    tables: frozenset[str] = frozenset()
    remaining: int = 0
    rejected: list[str] = field(default_factory=list)

    def start(self, tables: set[str], failures: int) -> None:
        self.tables = frozenset(tables)
        self.remaining = failures


class FailingStorage(Storage):
    """Storage whose inserts into the tables of :attr:`fault` fail while it lasts."""

    fault = Fault()

    def insert_block(self, table, columns, **options):
        self._fail(table, len(next(iter(columns.values()), [])))
        return super().insert_block(table, columns, **options)

    def insert_arrow(self, table, rows, **options):
        self._fail(table, rows.num_rows)
        return super().insert_arrow(table, rows, **options)

    def _fail(self, table: str, rows: int) -> None:
        fault = self.fault
        if table in fault.tables and fault.remaining > 0:
            fault.remaining -= 1
            fault.rejected.append(table)
            raise StorageError(
                f"inserting {rows} rows into {table} failed: Connection refused "
                "(injected by the test)"
            )


@pytest.fixture
def settings(processor_settings, census_store):
    return processor_settings(census_store)


def _read(settings: Settings, name: str, count: int, timeout: float) -> list:
    """Read up to ``count`` messages of a topic from its start."""
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": f"{settings.group}-test-reader",
            "enable.auto.commit": False,
        }
    )
    consumer.assign([TopicPartition(settings.topic(name), 0, OFFSET_BEGINNING)])
    messages = []
    deadline = time.monotonic() + timeout
    try:
        while len(messages) < count and time.monotonic() < deadline:
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() is None:
                    messages.append(message)
    finally:
        consumer.close()
    return messages


def _raw(message) -> RawMessage:
    return RawMessage(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        key=message.key(),
        value=message.value(),
        received_at=datetime.fromtimestamp(message.timestamp()[1] / 1000, tz=UTC),
    )


def _scored_ids(settings: Settings, count: int, timeout: float) -> set[str]:
    import orjson

    return {
        orjson.loads(message.value())["request_id"]
        for message in _read(settings, "scored", count, timeout)
    }


def _retry_delays(records, action: str) -> list[float]:
    """Return the delays of the processor's retry warnings about ``action``."""
    return [
        record.args[2]
        for record in records
        if record.name == "streams.processor"
        and record.msg.startswith("%s failed (attempt %d), retrying")
        and record.args[0] == action
    ]


def test_clickhouse_outage_retries(settings, monkeypatch, caplog, adult_test):
    caplog.set_level(logging.WARNING, logger="streams.processor")
    monkeypatch.setattr(processor_module, "Storage", FailingStorage)
    fault = FailingStorage.fault = Fault()
    started = time.monotonic()

    model_version = load_model(settings.store, "census", 1)
    publish_registration(settings, build_registration(model_version, settings.store))
    produce(settings.kafka, settings.topic("predictions"), census_events(
        adult_test, EVENTS))  # fmt: skip
    messages = [_raw(m) for m in _read(settings, "predictions", EVENTS, 60)]
    assert len(messages) == EVENTS
    blocks = [messages[i : i + BLOCK] for i in range(0, EVENTS, BLOCK)]

    processor = BlockProcessor(settings)
    processor.open()
    try:
        processor.process(blocks[0])
        processor.process(blocks[1])

        # Block 2: the events and feature checks are written, then the batch
        # insert fails four times, so every retry writes the events and
        # their checks again under the same token.
        fault.start({"batch_rows"}, failures=4)
        worker = threading.Thread(target=processor.process, args=(blocks[2],))
        worker.start()
        block_ids = {f"req-{n}" for n in range(2 * BLOCK, 3 * BLOCK)}
        published = _scored_ids(settings, 3 * BLOCK, timeout=5)
        published_during_outage = block_ids <= published and worker.is_alive()
        worker.join(timeout=60)
        assert not worker.is_alive(), "the block was not stored after the outage"

        # Block 3: every table is written, then the journal fails twice.
        fault.start({"sink_journal"}, failures=2)
        processor.process(blocks[3])

        # Block 4: the whole database fails three times.
        fault.start({"events", "batch_rows", "alerts", "dead_letters",
                     "sink_journal"}, failures=3)  # fmt: skip
        processor.process(blocks[4])

        for block in blocks[5:]:
            processor.process(block)
    finally:
        processor.stopping.set()
        processor.close()

    # A second processor given every message again, as after a crash before
    # the offsets were committed, must skip them all.
    monkeypatch.setattr(processor_module, "Storage", Storage)
    replay = BlockProcessor(settings)
    try:
        replayed = [replay.process(block) for block in blocks]
    finally:
        replay.stopping.set()
        replay.close()

    with Storage.connect(settings.clickhouse) as storage:
        delivery = count_delivery(storage, {f"req-{n}" for n in range(EVENTS)})
        batched = storage.query_rows("SELECT sum(events) FROM batches")[0][0]
        violations = batch_violations(storage)
    scored = _scored_ids(settings, EVENTS, timeout=30)
    seconds = time.monotonic() - started

    records = caplog.records
    write_delays = _retry_delays(records, "writing to ClickHouse")
    journal_delays = _retry_delays(records, "writing the journal")
    print(
        f"\nrejected inserts: {len(fault.rejected)}; retry delays: writing "
        f"{write_delays}, journal {journal_delays}"
    )
    print(delivery.line("ClickHouse outage", seconds))

    assert published_during_outage, "scored events were not on Kafka during the outage"
    assert "batch_rows" in fault.rejected
    assert "sink_journal" in fault.rejected
    # Back-off doubles from 0.5 s and starts again at the next outage.
    assert write_delays == [0.5, 1.0, 2.0, 4.0, 0.5, 1.0, 2.0]
    assert journal_delays == [0.5, 1.0]
    assert replayed == [None] * len(blocks), "the replay stored events again"
    assert delivery.lost == 0
    assert delivery.doubled == 0
    assert batched == EVENTS
    assert violations == {}
    assert scored == {f"req-{n}" for n in range(EVENTS)}


def test_stop_during_outage_keeps_batches(settings, monkeypatch, adult_test):
    """A stop that comes while ClickHouse fails, which is back by shutdown.

    The block being written when the stop comes is not stored; the next
    processor takes it again from Kafka. The batch summaries written at
    shutdown must not count its events, or they would be counted twice.
    """
    monkeypatch.setattr(processor_module, "Storage", FailingStorage)
    fault = FailingStorage.fault = Fault()
    model_version = load_model(settings.store, "census", 1)
    publish_registration(settings, build_registration(model_version, settings.store))
    # Blocks of 430 events in batches of 100 leave a batch open after the
    # block that fails, holding only events of that block.
    block = 430
    count = 3 * block
    produce(settings.kafka, settings.topic("predictions"), census_events(
        adult_test, count))  # fmt: skip
    messages = [_raw(m) for m in _read(settings, "predictions", count, 60)]
    blocks = [messages[i : i + block] for i in range(0, count, block)]

    processor = BlockProcessor(settings)
    processor.open()
    processor.process(blocks[0])
    fault.start({"events"}, failures=1_000_000)
    worker = threading.Thread(target=_process_until_stopped,
                              args=(processor, blocks[1]))  # fmt: skip
    worker.start()
    deadline = time.monotonic() + 30
    while not fault.rejected and time.monotonic() < deadline:
        time.sleep(0.05)
    processor.stopping.set()
    worker.join(timeout=30)
    fault.start(set(), failures=0)
    processor.close()

    monkeypatch.setattr(processor_module, "Storage", Storage)
    successor = BlockProcessor(settings)
    for block in blocks:
        successor.process(block)
    successor.close()

    with Storage.connect(settings.clickhouse) as storage:
        delivery = count_delivery(storage, {f"req-{n}" for n in range(count)})
        batched = storage.query_rows("SELECT sum(events) FROM batches")[0][0]
        violations = batch_violations(storage)
    print(f"\nstop during outage: batches count {batched} events of {count}")
    print(delivery.line("stop during ClickHouse outage", 0.0))

    assert delivery.lost == 0
    assert delivery.doubled == 0
    assert batched == count
    assert violations == {}


def _process_until_stopped(processor: BlockProcessor, block: list) -> None:
    with contextlib.suppress(WorkerStopping):
        processor.process(block)
