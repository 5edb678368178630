"""The block reader across a rebalance: partitions leave the worker and come back."""

import time

import orjson
import pytest
from confluent_kafka import Consumer, Producer

from streams.lag import wait_until_consumed
from streams.storage import Storage
from tests.integration.conftest import register

pytestmark = pytest.mark.integration

PER_ROUND = 3000


def _produce(
    servers: str, topic: str, first: int, count: int, partitions: int = 2
) -> None:
    """Send ``count`` census events numbered from ``first``, partitions in turn."""
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 10})
    for number in range(first, first + count):
        event = {
            "model": "census",
            "version": 1,
            "request_id": f"req-{number}",
            "features": {"age": 20 + number % 50, "hours-per-week": 40},
            "prediction": {"income": "<=50K"},
        }
        producer.produce(
            topic,
            key=b"census",
            value=orjson.dumps(event),
            partition=number % partitions,
        )
        if number % 1000 == 0:
            producer.poll(0)
    assert producer.flush(30) == 0


def _wait_for_log(worker, text: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in worker.log():
            return
        time.sleep(0.2)
    raise AssertionError(f"{text!r} not in the worker log:\n{worker.log()}")


def _hold_one_partition(servers: str, group: str, topic: str, seconds: float) -> set:
    """Join the worker's group, keep what it assigns for ``seconds``, commit nothing."""
    assigned: set[int] = set()
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": group,
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 10_000,
        }
    )

    def on_assign(_consumer: Consumer, partitions: list) -> None:
        assigned.update(partition.partition for partition in partitions)

    consumer.subscribe([topic], on_assign=on_assign)
    deadline = time.monotonic() + 60
    while not assigned and time.monotonic() < deadline:
        consumer.poll(0.2)
    held_until = time.monotonic() + seconds
    while time.monotonic() < held_until:
        consumer.poll(0.2)
    consumer.close()
    return assigned


def test_rebalance_keeps_every_event_once(worker_process, kafka_servers):
    worker_process.env["ODDWATCH_PARTITIONS"] = "2"
    topic = worker_process.topic("predictions")
    register(worker_process)
    worker_process.start()
    _wait_for_log(worker_process, "assigned")
    _produce(kafka_servers, topic, 0, PER_ROUND)

    # A second member joins the group: the worker gives up a partition, and
    # events sent meanwhile wait there until the member leaves again.
    _produce(kafka_servers, topic, PER_ROUND, PER_ROUND)
    taken = _hold_one_partition(kafka_servers, worker_process.group, topic, 5.0)
    _produce(kafka_servers, topic, 2 * PER_ROUND, PER_ROUND)
    wait_until_consumed(kafka_servers, worker_process.group, topic, timeout=180)
    assert worker_process.stop() == 0, worker_process.log()

    total = 3 * PER_ROUND
    assert len(taken) == 1
    assert "revoked" in worker_process.log()
    with Storage.connect(worker_process.clickhouse) as storage:
        count = storage.query_rows("SELECT count() FROM events")[0][0]
        ids = storage.query_rows("SELECT uniqExact(request_id) FROM events")[0][0]
        in_batches = storage.query_rows("SELECT sum(events) FROM batches")[0][0]
        per_partition = dict(
            storage.query_rows(
                "SELECT kafka_partition, count() FROM events GROUP BY kafka_partition"
            )
        )
        letters = storage.query_rows("SELECT count() FROM dead_letters")[0][0]
    assert count == total
    assert ids == total
    assert in_batches == total
    assert per_partition == {0: total // 2, 1: total // 2}
    assert letters == 0


def test_quiet_partition_batches_closed_after_kill(worker_process, kafka_servers):
    topic = worker_process.topic("predictions")
    register(worker_process)
    worker_process.start()
    _wait_for_log(worker_process, "assigned")
    # 250 events leave a batch of 50 open (batches close at 100 events).
    _produce(kafka_servers, topic, 0, 250, partitions=1)
    wait_until_consumed(kafka_servers, worker_process.group, topic, timeout=120)
    worker_process.process.kill()
    worker_process.process.wait()
    worker_process.process = None

    # No event arrives after the restart; the open batch is still closed.
    worker_process.start()
    _wait_for_log(worker_process, "1 open batches")
    assert worker_process.stop() == 0, worker_process.log()

    with Storage.connect(worker_process.clickhouse) as storage:
        count = storage.query_rows("SELECT count() FROM events")[0][0]
        in_batches = storage.query_rows("SELECT sum(events) FROM batches FINAL")[0][0]
    assert count == 250
    assert in_batches == 250
