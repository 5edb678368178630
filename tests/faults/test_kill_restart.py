"""kill -9 of the worker at random moments during a stream of 50,000 events.

The worker is killed five times. Each kill comes a random moment after the
group's lag has dropped to a random share of its lag at the start, so events
are still waiting at every kill, however fast the worker is. Kills land
anywhere in the delivery protocol: while scoring, between queueing the
output and the ClickHouse write, between two table inserts, or before the
journal row. A sixth worker finishes the stream and stops cleanly.
ClickHouse must then hold every event exactly once by a plain ``count()``,
and batch summaries that equal SQL over the stored events.
"""

import random
import time

import pytest

from detectors import load_model
from streams.lag import LagProbe, wait_until_consumed
from streams.storage import Storage
from tests.faults.conftest import (
    batch_violations,
    census_events,
    count_delivery,
    kill_worker,
    produce,
    register,
    wait_for_progress,
)

pytestmark = pytest.mark.integration

EVENTS = 50_000
KILLS = 5
MAX_KILL_DELAY = 0.3
"""Longest delay in seconds between seeing progress and the kill."""

KILL_AT_SHARE = (0.5, 0.95)
"""Range of the share of the start's lag at which a kill is due."""

RESUMED = "resumed from its last snapshot"


def test_kill_restart_stores_once(worker_process, kafka_servers, adult_test):
    worker = worker_process
    worker.env["ODDWATCH_SNAPSHOT_INTERVAL"] = "2"
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    topic = worker.topic("predictions")
    started = time.monotonic()

    register(worker)
    produce(kafka_servers, topic, census_events(adult_test, EVENTS))
    sent_ids = {f"req-{number}" for number in range(EVENTS)}

    # Each start is recorded with the log size at that moment and whether a
    # detector snapshot was stored before it, so the log of that start can be
    # searched for the resume line.
    starts: list[tuple[int, int]] = []
    kills: list[dict] = []
    probe = LagProbe(kafka_servers, worker.group, topic)
    try:
        snapshots = 0
        for _ in range(KILLS):
            starts.append((_log_size(worker), snapshots))
            worker.start()
            lag_at_start = probe.lag()
            due = int(lag_at_start * rng.uniform(*KILL_AT_SHARE))
            wait_for_progress(probe, worker, below=max(due, 1), timeout=90)
            time.sleep(rng.uniform(0, MAX_KILL_DELAY))
            kill_worker(worker)
            with Storage.connect(worker.clickhouse) as storage:
                snapshots = _count(storage, "detector_snapshots")
                stored = _count(storage, "events")
            kills.append({"lag": probe.lag(), "stored": stored, "snapshots": snapshots})
    finally:
        probe.close()

    starts.append((_log_size(worker), snapshots))
    worker.start()
    wait_until_consumed(kafka_servers, worker.group, topic, timeout=300)
    exit_code = worker.stop()
    seconds = time.monotonic() - started

    model_version = load_model(worker.env["ODDWATCH_STORE"], "census", 1)
    features = len(model_version.profile.features)
    with Storage.connect(worker.clickhouse) as storage:
        delivery = count_delivery(storage, sent_ids)
        checks = _count(storage, "feature_checks")
        events_short_of_checks = storage.query_rows(
            "SELECT count() FROM (SELECT request_id, count() AS checks "
            "FROM feature_checks GROUP BY request_id "
            "HAVING checks != {features:UInt32})",
            {"features": features},
        )[0][0]
        batch_rows, batch_ids, batch_events = storage.query_rows(
            "SELECT count(), uniqExact(batch_id), sum(events) FROM batches"
        )[0]
        closed_by = dict(storage.query_rows(
            "SELECT closed_by, count() FROM batches GROUP BY closed_by"))  # fmt: skip
        alert_rows, alert_ids = storage.query_rows(
            "SELECT count(), uniqExact(alert_id) FROM alerts"
        )[0]
        dead_letters = _count(storage, "dead_letters")
        violations = batch_violations(storage)

    print(f"\nkill seed {seed}; at each kill: {kills}")
    print(f"batches {batch_rows} ({closed_by}), feature_checks {checks}")
    print(delivery.line(f"kill -9 x{KILLS}", seconds))

    assert worker.exit_codes[:KILLS] == [-9] * KILLS
    assert exit_code == 0, worker.log()
    assert all(kill["lag"] > 0 for kill in kills), "a kill came after the stream ended"
    assert delivery.lost == 0
    assert delivery.doubled == 0
    assert delivery.stored == EVENTS
    assert checks == EVENTS * features
    assert events_short_of_checks == 0
    assert batch_rows == batch_ids
    assert batch_events == EVENTS
    assert alert_rows == alert_ids
    assert dead_letters == 0
    assert violations == {}

    # Every start after a stored snapshot must resume the detector from it.
    log = worker.log_path.read_bytes()
    ends = [offset for offset, _ in starts[1:]] + [len(log)]
    after_snapshot = [
        log[offset:end].decode(errors="replace")
        for (offset, snapshots), end in zip(starts, ends, strict=True)
        if snapshots > 0
    ]
    assert after_snapshot, "no detector snapshot was stored before a restart"
    resumed = [RESUMED in text for text in after_snapshot]
    assert all(resumed), (
        f"{resumed.count(False)} of {len(resumed)} starts after a snapshot did not "
        f"log {RESUMED!r}"
    )


def _count(storage: Storage, table: str) -> int:
    return storage.query_rows(f"SELECT count() FROM {table}")[0][0]


def _log_size(worker) -> int:
    return worker.log_path.stat().st_size if worker.log_path.exists() else 0
