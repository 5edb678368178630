"""The ClickHouse sink on the embedded engine: events, their feature_checks view
and the batch tables written by views."""

from datetime import UTC, datetime, timedelta

import numpy as np
import orjson
import pandas as pd
import pytest

from detectors import train_model
from streams.batching import Batcher
from streams.ddl import MIGRATIONS
from streams.journal import Journal
from streams.pipeline import Pipeline, _split_value
from streams.records import RawMessage
from streams.registry import ModelRegistry
from streams.sink import ClickHouseSink, events_table
from streams.storage import Storage

T0 = datetime(2026, 12, 4, 15, 0, 0, 123456, tzinfo=UTC)

# Values of every kind a feature can carry, so each branch of the split into
# value_number and value_text is stored.
ODD_FEATURES = [
    {"age": "forty"},
    {"income": None},
    {"sector": 5},
    {"age": True},
    {"sector": ["a", 1]},
    {"sector": {"k": 1}},
    {"age": 2**62},
    {"income": -0.0},
]

TABLES = ("events", "feature_checks", "batches", "batch_checks", "batch_drift")


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {
            "age": rng.integers(18, 80, 500).astype(float),
            "income": rng.normal(50.0, 10.0, 500),
            "sector": rng.choice(["private", "public", "self"], 500),
        }
    )
    path = tmp_path_factory.mktemp("store")
    train_model(frame, model="census", version=1).save(path)
    return path


def _messages(count: int, start: int = 0) -> list[RawMessage]:
    messages = []
    for number in range(start, start + count):
        features = {"age": 20 + number % 50, "income": 40.5, "sector": "public"}
        if number % 3 == 0:
            del features["income"]
        features.update(ODD_FEATURES[number % len(ODD_FEATURES)])
        moment = T0 + timedelta(milliseconds=250 * number)
        document = {
            "model": "census",
            "version": 1,
            "request_id": f"r{number:03d}",
            "timestamp": moment.isoformat(),
            "features": features,
        }
        messages.append(
            RawMessage(
                "predictions", 0, number, b"census", orjson.dumps(document), moment
            )
        )
    return messages


@pytest.fixture
def output(store):
    pipeline = Pipeline(ModelRegistry(store), Batcher(batch_size=10))
    output = pipeline.process(_messages(45))
    assert output.event_count == 45
    assert len(output.batches["batch_id"]) == 4
    return output


def _stored_time(moment: datetime) -> datetime:
    """Return a time as ClickHouse returns a DateTime64(3, 'UTC'): naive, in ms."""
    moment = moment.astimezone(UTC).replace(tzinfo=None)
    return moment.replace(microsecond=moment.microsecond // 1000 * 1000)


def _counts(storage: Storage) -> dict[str, int]:
    return {
        table: storage.query_rows(f"SELECT count() FROM {table}")[0][0]
        for table in TABLES
    }


def test_feature_checks_one_row_per_event_and_feature(tmp_path, output):
    events = output.events
    expected = []
    for row, request_id in enumerate(events["request_id"]):
        features = orjson.loads(events["features"][row])
        for column, feature in enumerate(events["check_features"][row]):
            number, text = _split_value(features.get(feature))
            expected.append(
                (
                    request_id,
                    feature,
                    str(events["check_statuses"][row][column]),
                    int(events["check_passed"][row][column]),
                    number,
                    text,
                    events["batch_id"][row],
                    _stored_time(events["event_time"][row]),
                    events["kafka_offset"][row],
                )
            )

    with Storage.connect(f"chdb://{tmp_path}") as storage:
        ClickHouseSink(storage).write(output, "block-1")
        rows = storage.query_rows(
            "SELECT request_id, toString(feature), toString(status), passed, "
            "value_number, value_text, batch_id, event_time, kafka_offset "
            "FROM feature_checks ORDER BY request_id, feature"
        )

    assert len(rows) == 45 * 3
    assert rows == sorted(expected)
    texts = {row[5] for row in rows}
    assert {"forty", "true", '["a",1]', '{"k":1}'} <= texts


def test_events_and_batch_tables_filled(tmp_path, output):
    with Storage.connect(f"chdb://{tmp_path}") as storage:
        ClickHouseSink(storage).write(output, "block-1")
        counts = _counts(storage)
        checks = storage.query_rows(
            "SELECT batch_id, toString(check), toString(feature), checked, passed "
            "FROM batch_checks ORDER BY batch_id, check, feature"
        )
        drift = storage.query_rows(
            "SELECT batch_id, toString(feature) FROM batch_drift "
            "ORDER BY batch_id, feature"
        )

    batches = output.batches
    assert counts["events"] == 45
    assert counts["batches"] == 4
    expected_checks = sorted(
        (batch_id, name, feature, checked, passed)
        for row, batch_id in enumerate(batches["batch_id"])
        for feature, name, checked, passed in zip(
            batches["check_features"][row],
            batches["check_names"][row],
            batches["check_checked"][row],
            batches["check_passed"][row],
            strict=True,
        )
    )
    assert checks == expected_checks
    expected_drift = sorted(
        (batch_id, feature)
        for row, batch_id in enumerate(batches["batch_id"])
        for feature in batches["drift_features"][row]
    )
    assert drift == expected_drift
    assert len(drift) == 4 * 3


def test_retried_write_adds_no_rows(tmp_path, output):
    with Storage.connect(f"chdb://{tmp_path}") as storage:
        sink = ClickHouseSink(storage)
        # A write that failed after the events and their checks were stored.
        storage.insert_arrow(
            "events", events_table(output), deduplication_token="block-1"
        )
        sink.write(output, "block-1")
        once = _counts(storage)
        sink.write(output, "block-1")
        retried = _counts(storage)
        sink.write(output, "block-2")
        other_token = _counts(storage)

    assert once == {
        "events": 45,
        "feature_checks": 45 * 3,
        "batches": 4,
        "batch_checks": once["batch_checks"],
        "batch_drift": 4 * 3,
    }
    assert once["batch_checks"] > 0
    assert retried == once
    # A new token stores the rows again: the deduplication is the token's. The
    # feature_checks view reads events FINAL, so it lists each event's checks
    # once even before ClickHouse merges the two copies.
    assert other_token == {
        table: count if table == "feature_checks" else 2 * count
        for table, count in once.items()
    }


def _feature_check_rows(storage: Storage, final: str = "") -> list[tuple]:
    return storage.query_rows(
        "SELECT request_id, toString(feature), toString(status), passed, "
        "value_number, value_text, batch_id, event_time, kafka_partition, "
        f"kafka_offset FROM feature_checks {final} ORDER BY request_id, feature"
    )


def test_migration_keeps_stored_feature_checks(tmp_path, store, monkeypatch):
    pipeline = Pipeline(ModelRegistry(store), Batcher(batch_size=10))
    old = pipeline.process(_messages(45))
    new = pipeline.process(_messages(45, start=45))
    legacy = pipeline.process(_messages(45, start=90))
    url = f"chdb://{tmp_path}"

    # A database of migrations 1 and 2, whose views stored the checks of the
    # first block as rows of feature_checks.
    monkeypatch.setattr("streams.storage.MIGRATIONS", MIGRATIONS[:2])
    with Storage.connect(url) as storage:
        storage.insert_arrow("event_rows", events_table(old))
        old_rows = _feature_check_rows(storage)
    monkeypatch.undo()
    assert len(old_rows) == 45 * 3

    with Storage.connect(url) as storage:
        tables = dict(
            storage.query_rows(
                "SELECT name, engine FROM system.tables "
                "WHERE database = currentDatabase() AND name LIKE 'feature_checks%'"
            )
        )
        migrated_rows = _feature_check_rows(storage)
        ClickHouseSink(storage).write(new, "block-2")
        # A worker of the previous release, still running, writes event_rows.
        storage.insert_arrow("event_rows", events_table(legacy))
        every = _feature_check_rows(storage)
        every_final = _feature_check_rows(storage, "FINAL")
        stored = storage.query_rows("SELECT count() FROM feature_checks_stored")[0][0]
        journal = Journal(storage, "workers")
        journal.append({("predictions", 0): (30, None)})
        journal.recover("predictions", 0)
        kept_offsets = storage.query_rows(
            "SELECT DISTINCT kafka_offset FROM feature_checks ORDER BY kafka_offset"
        )

    with Storage.connect(url) as storage:
        reopened = storage.migrate()

    assert tables == {
        "feature_checks": "View",
        "feature_checks_stored": "ReplacingMergeTree",
    }
    assert migrated_rows == old_rows
    assert stored == 45 * 3
    with Storage.connect(f"chdb://{tmp_path / 'fresh'}") as fresh:
        ClickHouseSink(fresh).write(new, "block-2")
        ClickHouseSink(fresh).write(legacy, "block-3")
        new_rows = _feature_check_rows(fresh)
    assert len(new_rows) == 2 * 45 * 3
    assert every == sorted(old_rows + new_rows)
    assert every_final == every
    # Recovery deletes the checks past the journal's offset in both parts.
    assert kept_offsets == [(offset,) for offset in range(31)]
    assert reopened == []


def test_fresh_database_stores_no_feature_check_rows(tmp_path, output):
    with Storage.connect(f"chdb://{tmp_path}") as storage:
        ClickHouseSink(storage).write(output, "block-1")
        stored = storage.query_rows("SELECT count() FROM feature_checks_stored")[0][0]
        checks = storage.query_rows("SELECT count() FROM feature_checks")[0][0]
        engines = dict(
            storage.query_rows(
                "SELECT name, engine FROM system.tables "
                "WHERE database = currentDatabase()"
            )
        )

    assert stored == 0
    assert checks == 45 * 3
    assert engines["feature_checks"] == "View"
    assert engines["event_rows"] == "Null"
