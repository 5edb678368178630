"""Run one worker for a whole test module, send events to it, read what it wrote.

The ``worker_process`` fixture gives each test its own worker. The lifecycle,
metrics, drift and explanation tests instead run one scenario per module and
check its results in several small tests, so these helpers build the worker
and its settings for a module-scoped fixture.
"""

import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from confluent_kafka import Consumer, Producer

from detectors import ModelVersion
from streams.lag import wait_until_consumed
from streams.registration import build_registration, publish_registration
from streams.settings import Settings
from tests.conftest import ROOT
from tests.integration.conftest import WorkerProcess

DAY_WINDOW = "86400"
"""Batch window, in seconds, for scenarios whose batches must close by size only.

Events are stamped with today's date (see :func:`today_at`). Their window
ends at the next midnight UTC, and the idle timer closes a batch one window
length after its window ends, so the timer never cuts a batch short
while a test runs."""


def make_worker(
    directory: Path, kafka_servers: str, store: Path, **settings: str
) -> WorkerProcess:
    """Return a stopped worker with its own topics, group and ClickHouse directory.

    ``settings`` are extra ``ODDWATCH_*`` variables without the prefix, such
    as ``BATCH_SIZE="100"``.
    """
    name = f"t{uuid.uuid4().hex[:10]}"
    env = {
        **os.environ,
        "ODDWATCH_KAFKA": kafka_servers,
        "ODDWATCH_STORE": str(store),
        "ODDWATCH_CLICKHOUSE": f"chdb://{directory / 'clickhouse'}",
        "ODDWATCH_HOME": str(directory / "home"),
        "ODDWATCH_TOPIC_PREFIX": f"{name}.",
        "ODDWATCH_GROUP": name,
        "ODDWATCH_BLOCK_SIZE": "1000",
    }
    env.update({f"ODDWATCH_{key}": value for key, value in settings.items()})
    return WorkerProcess(env=env, log_path=directory / "worker.log")


def register(worker: WorkerProcess, model_version: ModelVersion) -> None:
    """Publish a saved version on the worker's models topic."""
    settings = Settings.from_env(worker.env)
    publish_registration(settings, build_registration(model_version, settings.store))


def today_at(offset: timedelta) -> str:
    """Return midnight UTC of today plus ``offset``, as an event timestamp."""
    midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    return (midnight + offset).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def prediction(
    model: str, version: int, request_id: str, features: dict, timestamp: str
) -> bytes:
    """Encode one prediction event."""
    return orjson.dumps(
        {
            "model": model,
            "version": version,
            "request_id": request_id,
            "timestamp": timestamp,
            "features": features,
            "prediction": {"label": 0},
        }
    )


def send(worker: WorkerProcess, servers: str, key: bytes, values: list[bytes]) -> None:
    """Produce ``values`` to the worker's predictions topic, in order."""
    producer = Producer({"bootstrap.servers": servers, "linger.ms": 5})
    for value in values:
        while True:
            try:
                producer.produce(worker.topic("predictions"), key=key, value=value)
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(30) == 0


def drain(worker: WorkerProcess, servers: str, timeout: float = 120) -> None:
    """Wait until the worker has stored every prediction sent so far."""
    try:
        wait_until_consumed(
            servers, worker.group, worker.topic("predictions"), timeout=timeout
        )
    except TimeoutError as error:
        raise AssertionError(f"{error}; worker log:\n{worker.log()}") from error


def read_topic(
    servers: str, topic: str, count: int, timeout: float = 60
) -> list[bytes]:
    """Read a topic from its start until ``count`` messages or ``timeout`` seconds."""
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": f"{topic}-reader-{uuid.uuid4().hex[:6]}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    values: list[bytes] = []
    try:
        for _ in range(int(timeout / 0.5)):
            for message in consumer.consume(num_messages=1000, timeout=0.5):
                if message.error() is None:
                    values.append(message.value())
            if len(values) >= count:
                break
    finally:
        consumer.close()
    return values


def run_cli(worker: WorkerProcess, *arguments: str) -> str:
    """Run ``oddwatch`` with the worker's settings and return its standard output."""
    result = subprocess.run(
        [sys.executable, "-m", "streams", *arguments],
        env=worker.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, (
        f"oddwatch {' '.join(arguments)} exited with {result.returncode}:\n"
        f"{result.stdout}\n{result.stderr}"
    )
    return result.stdout
