"""Fixtures shared by the unit and integration tests."""

import os
import socket
import subprocess
import time
import uuid
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
ADULT_DIR = ROOT / "deploy" / "demo" / "data"
KAFKA_SCRIPT = ROOT / "deploy" / "kafka" / "kafka.sh"


@pytest.fixture(scope="session")
def adult_train():
    """The Adult training file as a DataFrame with named columns."""
    from streams.demo import read_adult

    return read_adult(ADULT_DIR / "adult.data.gz")


@pytest.fixture(scope="session")
def adult_test():
    """The Adult test file as a DataFrame with named columns."""
    from streams.demo import read_adult

    return read_adult(ADULT_DIR / "adult.test.gz")


@pytest.fixture(scope="session")
def kafka_servers(tmp_path_factory):
    """Bootstrap servers of a real Kafka broker.

    ``make test`` starts one and passes it in ODDWATCH_TEST_KAFKA; otherwise a
    broker is started here on a free port and stopped after the session.
    """
    given = os.environ.get("ODDWATCH_TEST_KAFKA")
    if given:
        _wait_for_group_coordinator(given)
        yield given
        return
    port = _free_port_pair()
    env = {
        **os.environ,
        "KAFKA_PORT": str(port),
        "KAFKA_RUN_DIR": str(tmp_path_factory.mktemp("kafka")),
    }
    subprocess.run([str(KAFKA_SCRIPT), "start"], env=env, check=True)
    try:
        _wait_for_group_coordinator(f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}"
    finally:
        subprocess.run([str(KAFKA_SCRIPT), "stop"], env=env, check=False)


@pytest.fixture
def unique_name():
    """A name unique to this test, for topics, groups and tables."""
    return f"t{uuid.uuid4().hex[:10]}"


def _wait_for_group_coordinator(servers: str, timeout: float = 60.0) -> None:
    """Wait until the broker's group coordinator answers.

    A new broker creates its offsets topic on the first group request and
    answers "coordinator load in progress" until it is ready.
    """
    from confluent_kafka import Consumer, KafkaException, TopicPartition

    consumer = Consumer(
        {"bootstrap.servers": servers, "group.id": "oddwatch-test-warmup",
         "log_level": 3}
    )  # fmt: skip
    deadline = time.monotonic() + timeout
    try:
        while True:
            try:
                consumer.committed([TopicPartition("oddwatch-test-warmup", 0)], 5)
                return
            except KafkaException:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        consumer.close()


def _free_port_pair() -> int:
    """Return a free port whose successor is free too (the controller's port)."""
    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    raise RuntimeError("found no two consecutive free ports on 127.0.0.1")
