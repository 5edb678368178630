"""Events of a version registered too late are not lost: they come back."""

import orjson
import pytest
from confluent_kafka import Producer

from streams.lag import wait_until_consumed
from streams.redeliver import redeliver
from streams.settings import Settings
from streams.storage import Storage
from tests.integration.conftest import register

pytestmark = pytest.mark.integration


def test_redeliver_after_late_registration(worker_process, kafka_servers, adult_test):
    worker = worker_process
    settings = Settings.from_env(worker.env)
    rows = adult_test.drop(columns=["income"]).head(20).to_dict(orient="records")
    producer = Producer({"bootstrap.servers": kafka_servers})
    for number, row in enumerate(rows):
        features = {k: (None if v != v else v) for k, v in row.items()}
        event = {"model": "census", "version": 1, "request_id": f"late-{number}",
                 "features": features}  # fmt: skip
        producer.produce(worker.topic("predictions"), orjson.dumps(event), b"census")
    producer.produce(worker.topic("predictions"), b"not json", b"census")
    assert producer.flush(30) == 0

    # The worker starts before the version is registered: all go to dead letter.
    worker.start()
    topic = worker.topic("predictions")
    wait_until_consumed(kafka_servers, worker.group, topic, timeout=120)

    register(worker)
    sent, skipped = redeliver(settings, ["model_not_registered"], idle_timeout=3)
    assert (sent, skipped) == (20, 1)
    wait_until_consumed(kafka_servers, worker.group, topic, timeout=120)
    assert redeliver(settings, ["model_not_registered"], idle_timeout=3) == (0, 0)
    assert worker.stop() == 0, worker.log()

    with Storage.connect(worker.clickhouse) as storage:
        stored = storage.query_rows("SELECT count(), uniqExact(request_id) FROM events")
        letters = storage.query_rows(
            "SELECT reason_code, count() FROM dead_letters GROUP BY reason_code "
            "ORDER BY reason_code"
        )
    assert stored == [(20, 20)]
    assert letters == [("invalid_json", 1), ("model_not_registered", 20)]
