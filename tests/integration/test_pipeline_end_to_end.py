"""The whole service on a known input: every status, alert, dead letter and batch."""

import numpy as np
import orjson
import pandas as pd
import pytest
from confluent_kafka import Consumer, Producer

from detectors import train_model
from schemas import Alert, BatchSummary, DeadLetter, ScoredEvent
from streams.lag import wait_until_consumed
from streams.registration import build_registration, publish_registration
from streams.settings import Settings
from streams.storage import Storage

pytestmark = pytest.mark.integration

MINUTE = "2026-12-04T15:00"


def _training_frame(seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = 3000
    return pd.DataFrame(
        {
            "x": rng.uniform(0, 10, rows),
            "y": rng.normal(50, 10, rows).clip(0, 100),
            "color": rng.choice(["red", "green", "blue"], rows),
        }
    )


def _event(number: int, second: int, features: dict, version: int = 1) -> bytes:
    return orjson.dumps(
        {
            "model": "shapes",
            "version": version,
            "request_id": f"r{number:03d}",
            "timestamp": f"{MINUTE}:{second:02d}.000Z",
            "features": features,
            "prediction": {"label": number % 2},
        }
    )


NORMAL = {"x": 5.0, "y": 50.0, "color": "red"}

# (features, expected status per feature) for the crafted events.
CRAFTED = [
    ({"x": -5.0, "y": 50.0, "color": "red"}, {"x": "below_min"}),
    ({"x": 5.0, "y": 500.0, "color": "red"}, {"y": "above_max"}),
    ({"x": 5.0, "y": 50.0, "color": "purple"}, {"color": "unseen_category"}),
    ({"y": 50.0, "color": "red"}, {"x": "missing"}),
    ({"x": "ten", "y": 50.0, "color": "red"}, {"x": "wrong_type"}),
    ({"x": 5.0, "y": 50.0, "color": "red", "size": 3}, {}),
    ({"x": 1e6, "y": -1e6, "color": "purple"}, {
        "x": "above_max", "y": "below_min", "color": "unseen_category"}),
]  # fmt: skip

INVALID = [
    (b"{not json", "invalid_json", ""),
    (b"[1, 2]", "not_an_object", ""),
    (orjson.dumps({"model": "shapes", "version": 1, "features": {}}),
     "invalid_event", "request_id"),
    (orjson.dumps({"model": "shapes", "version": 9, "request_id": "v9",
                   "features": NORMAL}), "model_not_registered", "version"),
]  # fmt: skip


def _consume_all(servers: str, topic: str, count: int, timeout: float = 60) -> list:
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"{topic}-reader",
            "auto.offset.reset": "earliest",
        }
    )
    consumer.subscribe([topic])
    values = []
    try:
        for _ in range(int(timeout / 0.5)):
            for message in consumer.consume(num_messages=500, timeout=0.5):
                if message.error() is None:
                    values.append(message.value())
            if len(values) >= count:
                break
    finally:
        consumer.close()
    return values


@pytest.fixture
def shapes_worker(worker_process, tmp_path):
    """A worker with batches of 10 and a store holding shapes versions 1 and 2."""
    store = tmp_path / "shapes-store"
    for version in (1, 2):
        train_model(_training_frame(version), model="shapes", version=version).save(
            store
        )
    worker_process.env.update(
        {"ODDWATCH_STORE": str(store), "ODDWATCH_BATCH_SIZE": "10"}
    )
    return worker_process


def test_service_on_known_input(shapes_worker, kafka_servers):
    worker = shapes_worker
    settings = Settings.from_env(worker.env)
    model_version = train_model(_training_frame(1), model="shapes", version=1)
    publish_registration(settings, build_registration(model_version, settings.store))

    # 25 normal events and the crafted ones in minute 15:00, then one event
    # of the next minute, which closes the first window by time.
    values, expected_status = [], {}
    number = 0
    for _ in range(25):
        values.append(_event(number, number % 60, NORMAL))
        expected_status[f"r{number:03d}"] = {}
        number += 1
    for features, statuses in CRAFTED:
        values.append(_event(number, 30, features))
        expected_status[f"r{number:03d}"] = statuses
        number += 1
    invalid_offsets = {}
    for raw, code, field in INVALID:
        invalid_offsets[len(values)] = (code, field)
        values.append(raw)
    values.append(orjson.dumps({**orjson.loads(_event(number, 5, NORMAL)),
                                "timestamp": "2026-12-04T15:01:05.000Z"}))  # fmt: skip
    expected_status[f"r{number:03d}"] = {}

    producer = Producer({"bootstrap.servers": kafka_servers})
    for value in values:
        producer.produce(worker.topic("predictions"), key=b"shapes", value=value)
    assert producer.flush(30) == 0
    worker.start()
    wait_until_consumed(
        kafka_servers, worker.group, worker.topic("predictions"), timeout=120
    )

    # Version 2, registered while the worker runs, is scored too.
    version_2 = train_model(_training_frame(2), model="shapes", version=2)
    publish_registration(settings, build_registration(version_2, settings.store))
    producer.produce(
        worker.topic("predictions"),
        key=b"shapes",
        value=_event(900, 10, NORMAL, version=2),
    )
    assert producer.flush(30) == 0
    wait_until_consumed(
        kafka_servers, worker.group, worker.topic("predictions"), timeout=60
    )
    assert worker.stop() == 0, worker.log()

    with Storage.connect(worker.clickhouse) as storage:
        checks = storage.query_frame(
            "SELECT request_id, feature, status FROM feature_checks WHERE version = 1"
        )
        events = storage.query_frame(
            "SELECT request_id, version, batch_id, score, threshold, is_outlier, "
            "extra_features FROM events ORDER BY request_id"
        )
        alerts = storage.query_frame("SELECT * FROM alerts ORDER BY alert_id")
        letters = storage.query_rows(
            "SELECT offset, reason_code, field FROM dead_letters ORDER BY offset"
        )
        batches = storage.query_frame("SELECT * FROM batches ORDER BY batch_id")
        batch_checks = storage.query_frame(
            "SELECT batch_id, feature, check, checked, passed FROM batch_checks "
            "ORDER BY batch_id, feature, check"
        )
        recomputed = storage.query_frame(_SUMMARY_SQL)

    # Every status of every event.
    got = {(r.request_id, r.feature): r.status for r in checks.itertuples()}
    for request_id, statuses in expected_status.items():
        for feature in ("x", "y", "color"):
            want = statuses.get(feature, "ok")
            assert got[(request_id, feature)] == want, (request_id, feature)
    extra = dict(zip(events["request_id"], events["extra_features"], strict=True))
    assert list(extra["r030"]) == ["size"]

    # Every dead letter, with its reason.
    assert letters == [
        (offset, code, field) for offset, (code, field) in invalid_offsets.items()
    ]

    # Every outlier has exactly one alert; the extreme event is one.
    outliers = events[events["is_outlier"] == 1]
    assert "r031" in set(outliers["request_id"])
    outlier_alerts = alerts[alerts["kind"] == "outlier"]
    assert sorted(outlier_alerts["request_id"]) == sorted(outliers["request_id"])
    extreme = outlier_alerts[outlier_alerts["request_id"] == "r031"].iloc[0]
    reasons = orjson.loads(extreme["reasons"])
    assert [(r["feature"], r["status"]) for r in reasons[:3]] == [
        ("x", "above_max"),
        ("y", "below_min"),
        ("color", "unseen_category"),
    ]
    assert reasons[-1]["check"] == "auto_od"
    assert extreme["score"] > extreme["threshold"]

    # Batches: 32 accepted events of version 1 in minute 15:00 make batches
    # of 10, 10, 10 and 2 (closed by the next minute's event). The last batch
    # of each version is closed by the idle timer (its window ended long
    # ago) or at shutdown, whichever comes first.
    v1 = batches[batches["version"] == 1]
    assert v1["events"].tolist() == [10, 10, 10, 2, 1]
    assert v1["closed_by"].tolist()[:4] == ["size", "size", "size", "time"]
    assert v1["closed_by"].tolist()[4] in ("time", "shutdown")
    assert batches[batches["version"] == 2]["events"].tolist() == [1]
    assert (
        events.groupby("batch_id").size() == batches.set_index("batch_id")["events"]
    ).all()

    # The stream's summaries equal the same aggregation in SQL.
    stream = batch_checks.merge(
        batches[["batch_id", "pass_share", "health", "events", "outliers"]],
        on="batch_id",
    )
    merged = stream.merge(
        recomputed, on=["batch_id", "feature", "check"], suffixes=("", "_sql"),
        how="outer", indicator=True,
    )  # fmt: skip
    assert (merged["_merge"] == "both").all()
    for column in ("checked", "passed", "events", "outliers", "pass_share", "health"):
        assert (merged[column] == merged[f"{column}_sql"]).all(), column

    # What was published to Kafka matches what was stored.
    accepted = len(events)
    scored = [ScoredEvent.from_json(v) for v in _consume_all(
        kafka_servers, worker.topic("scored"), accepted)]  # fmt: skip
    assert sorted(e.request_id for e in scored) == sorted(events["request_id"])
    published_alerts = [Alert.from_json(v) for v in _consume_all(
        kafka_servers, worker.topic("alerts"), len(alerts))]  # fmt: skip
    assert sorted(a.alert_id for a in published_alerts) == sorted(alerts["alert_id"])
    summaries = [BatchSummary.from_json(v) for v in _consume_all(
        kafka_servers, worker.topic("batches"), len(batches))]  # fmt: skip
    assert sorted(s.batch_id for s in summaries) == sorted(batches["batch_id"])
    dead = [DeadLetter.from_json(v) for v in _consume_all(
        kafka_servers, worker.topic("deadletter"), len(letters))]  # fmt: skip
    assert sorted(d.offset for d in dead) == [offset for offset, _, _ in letters]


_SUMMARY_SQL = """
WITH
    per_check AS (
        SELECT batch_id, feature, 'range' AS check, count() AS checked,
               sum(passed) AS passed
        FROM feature_checks GROUP BY batch_id, feature
        UNION ALL
        SELECT batch_id, '' AS feature, 'auto_od' AS check, count() AS checked,
               countIf(is_outlier = 0) AS passed
        FROM events GROUP BY batch_id
    ),
    per_batch AS (
        SELECT batch_id, sum(passed) / sum(checked) AS pass_share,
               min(passed / checked) AS worst
        FROM per_check GROUP BY batch_id
    ),
    counts AS (
        SELECT batch_id, count() AS events, countIf(is_outlier = 1) AS outliers
        FROM events GROUP BY batch_id
    )
SELECT per_check.batch_id AS batch_id, feature, check, checked, passed,
       pass_share, events, outliers,
       multiIf(worst >= 0.97, 'green', worst >= 0.93, 'yellow',
               worst >= 0.85, 'orange', 'red') AS health
FROM per_check
JOIN per_batch USING batch_id
JOIN counts USING batch_id
"""
