"""A real worker process between a real broker and the embedded ClickHouse engine."""

import orjson
import pytest
from confluent_kafka import Producer

from detectors import Status, load_model
from streams.lag import wait_until_consumed
from streams.storage import Storage
from tests.integration.conftest import register

pytestmark = pytest.mark.integration

EVENTS = 10_000


def _produce(servers: str, topic: str, events: list[dict]) -> None:
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 10})
    for event in events:
        while True:
            try:
                producer.produce(topic, key=b"census", value=orjson.dumps(event))
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(30) == 0


def _census_events(adult_test, count: int) -> list[dict]:
    rows = adult_test.drop(columns=["income"]).head(count).to_dict(orient="records")
    events = []
    for number, row in enumerate(rows):
        features = {k: (None if v != v else v) for k, v in row.items()}
        events.append(
            {
                "model": "census",
                "version": 1,
                "request_id": f"req-{number}",
                "timestamp": f"2026-12-04T15:{number // 6000 % 60:02d}:"
                f"{number // 100 % 60:02d}.{number % 1000:03d}Z",
                "features": features,
                "prediction": {"income": "<=50K"},
            }
        )
    return events


@pytest.mark.parametrize("reader", ["blocks", "faust"])
def test_worker_stores_every_event_once(
    worker_process, kafka_servers, adult_test, reader
):
    events = _census_events(adult_test, EVENTS)
    worker_process.env["ODDWATCH_READER"] = reader
    register(worker_process)
    worker_process.start()
    _produce(kafka_servers, worker_process.topic("predictions"), events)
    wait_until_consumed(
        kafka_servers,
        worker_process.group,
        worker_process.topic("predictions"),
        timeout=300,
    )
    assert worker_process.stop() == 0, worker_process.log()

    with Storage.connect(worker_process.clickhouse) as storage:
        count = storage.query_rows("SELECT count() FROM events")[0][0]
        ids = storage.query_rows("SELECT uniqExact(request_id) FROM events")[0][0]
        stored = storage.query_frame(
            "SELECT request_id, features, score, threshold, is_outlier, failed_checks "
            "FROM events ORDER BY toUInt32(substring(request_id, 5))"
        )
        checks = storage.query_frame(
            "SELECT request_id, feature, status FROM feature_checks"
        )
    assert count == EVENTS
    assert ids == EVENTS
    assert stored["request_id"].tolist() == [e["request_id"] for e in events]
    sent_features = [e["features"] for e in events]
    assert [orjson.loads(text) for text in stored["features"]] == sent_features

    # The statuses stored must be those the detector gives for the same rows.
    model_version = load_model(worker_process.env["ODDWATCH_STORE"], "census", 1)
    expected = model_version.check_block(sent_features).statuses
    features = list(expected.columns)
    assert len(checks) == EVENTS * len(features)
    got = checks.pivot(index="request_id", columns="feature", values="status")
    got = got.loc[[e["request_id"] for e in events], features]
    assert (got.to_numpy() == expected.astype(str).to_numpy()).all()
    allowed_missing = [
        model_version.profile[name].missing_share > 0 for name in features
    ]
    passed = (expected == Status.OK.value) | (
        (expected == Status.MISSING.value) & allowed_missing
    )
    failed = (~passed.to_numpy()).sum(axis=1)
    assert failed.sum() > 0
    assert stored["failed_checks"].tolist() == failed.tolist()

    assert stored["score"].notna().all()
    assert (stored["threshold"] == model_version.threshold).all()
    outliers = (stored["score"] > stored["threshold"]).astype(int)
    assert stored["is_outlier"].tolist() == outliers.tolist()


def test_worker_dead_letters_bad_events(worker_process, kafka_servers, adult_test):
    good = _census_events(adult_test, 5)
    producer = Producer({"bootstrap.servers": kafka_servers})
    topic = worker_process.topic("predictions")
    bad = [
        b"not json",
        b"[1, 2, 3]",
        orjson.dumps({"model": "census", "version": 1, "features": {}}),
        orjson.dumps({**good[0], "request_id": "other", "version": 99}),
    ]
    # The last one repeats the first good event's request id.
    for value in [*bad, *(orjson.dumps(e) for e in good), orjson.dumps(good[0])]:
        producer.produce(topic, key=b"census", value=value)
    assert producer.flush(30) == 0

    register(worker_process)
    worker_process.start()
    wait_until_consumed(kafka_servers, worker_process.group, topic, timeout=120)
    assert worker_process.stop() == 0, worker_process.log()

    with Storage.connect(worker_process.clickhouse) as storage:
        events = storage.query_rows("SELECT count() FROM events")[0][0]
        letters = storage.query_rows(
            "SELECT offset, reason_code, field FROM dead_letters ORDER BY offset"
        )
    assert events == len(good)
    assert letters == [
        (0, "invalid_json", ""),
        (1, "not_an_object", ""),
        (2, "invalid_event", "request_id"),
        (3, "model_not_registered", "version"),
        (9, "duplicate_request_id", "request_id"),
    ]
