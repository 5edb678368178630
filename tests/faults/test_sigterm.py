"""SIGTERM in the middle of a stream: a clean, quick stop that loses nothing.

On SIGTERM the worker must finish the block it is processing, close its open
batches (``closed_by = 'shutdown'``), commit the offsets of everything it
stored and exit with code 0. A second worker then finishes the stream.
"""

import time
from datetime import UTC, datetime

import pytest

from streams.lag import LagProbe, wait_until_consumed
from streams.storage import Storage
from tests.faults.conftest import (
    batch_violations,
    census_events,
    count_delivery,
    produce,
    register,
    wait_for_progress,
)

pytestmark = pytest.mark.integration

EVENTS = 20_000
MAX_EXIT_SECONDS = 15.0


def test_sigterm_flushes_and_commits(worker_process, kafka_servers, adult_test):
    worker = worker_process
    # 300 divides neither a block (1000) nor a window (5000 events), so a
    # batch is open when the signal comes.
    worker.env["ODDWATCH_BATCH_SIZE"] = "300"
    topic = worker.topic("predictions")
    started = time.monotonic()

    # Event times from now on: no window ends early enough for the idle
    # timer to close the open batch before the signal.
    now = datetime.now(UTC).replace(second=0, microsecond=0)
    register(worker)
    produce(kafka_servers, topic, census_events(adult_test, EVENTS, start=now))
    worker.start()
    probe = LagProbe(kafka_servers, worker.group, topic)
    try:
        wait_for_progress(probe, worker, below=EVENTS - 3000, timeout=90)
        signalled = time.monotonic()
        exit_code = worker.stop(timeout=60)
        exit_seconds = time.monotonic() - signalled
        lag_after_exit = probe.lag()
    finally:
        probe.close()
    committed = EVENTS - lag_after_exit

    with Storage.connect(worker.clickhouse) as storage:
        stored_at_exit = storage.query_rows("SELECT count() FROM events")[0][0]
        journal_offset = storage.query_rows(
            "SELECT max(last_offset) FROM sink_journal"
        )[0][0]
        shutdown_batches, shutdown_events = storage.query_rows(
            "SELECT count(), sum(events) FROM batches WHERE closed_by = 'shutdown'"
        )[0]
        batched_at_exit = storage.query_rows("SELECT sum(events) FROM batches")[0][0]

    # A second worker finishes the stream.
    worker.start()
    wait_until_consumed(kafka_servers, worker.group, topic, timeout=180)
    final_code = worker.stop()
    with Storage.connect(worker.clickhouse) as storage:
        delivery = count_delivery(storage, {f"req-{n}" for n in range(EVENTS)})
        batched = storage.query_rows("SELECT sum(events) FROM batches")[0][0]
        violations = batch_violations(storage)
    seconds = time.monotonic() - started

    print(
        f"\nSIGTERM: exit code {exit_code} after {exit_seconds:.1f} s; committed "
        f"{committed}, stored {stored_at_exit}, journal up to offset "
        f"{journal_offset}; {shutdown_batches} batches closed by shutdown "
        f"({shutdown_events} events)"
    )
    print(delivery.line("SIGTERM then restart", seconds))

    assert exit_code == 0, worker.log()
    assert exit_seconds < MAX_EXIT_SECONDS
    assert 0 < stored_at_exit < EVENTS, "the signal did not come mid-stream"
    assert journal_offset + 1 == stored_at_exit
    assert committed == stored_at_exit, "stored events left uncommitted"
    assert shutdown_batches > 0
    assert batched_at_exit == stored_at_exit, "events left in an unsaved batch"
    assert final_code == 0, worker.log()
    assert delivery.lost == 0
    assert delivery.doubled == 0
    assert batched == EVENTS
    assert violations == {}
