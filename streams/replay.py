"""Produce the rows of a table to Kafka as prediction events."""

import logging
import math
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import orjson
import pandas as pd
import typer
from confluent_kafka import KafkaException, Producer

from streams.errors import ConfigError, KafkaUnavailableError
from streams.settings import Settings

__all__ = ["event_from_row", "replay_frame", "replay_lines"]

log = logging.getLogger(__name__)


def event_from_row(
    row: dict[str, Any],
    *,
    model: str,
    version: int,
    request_id: str,
    prediction_columns: Sequence[str] = (),
    timestamp: datetime | None = None,
) -> dict[str, Any]:
    """Build a prediction event from one row; NaN becomes null.

    >>> event_from_row({"age": 39, "income": ">50K", "hours": float("nan")},
    ...                model="census", version=1, request_id="r1",
    ...                prediction_columns=["income"],
    ...                timestamp=datetime(2026, 12, 4, tzinfo=UTC))
    ... # doctest: +NORMALIZE_WHITESPACE
    {'model': 'census', 'version': 1, 'request_id': 'r1',
     'timestamp': '2026-12-04T00:00:00.000Z',
     'features': {'age': 39, 'hours': None}, 'prediction': {'income': '>50K'}}
    """
    features = {k: _plain(v) for k, v in row.items() if k not in prediction_columns}
    event: dict[str, Any] = {
        "model": model,
        "version": version,
        "request_id": request_id,
        "timestamp": _iso(timestamp or datetime.now(UTC)),
        "features": features,
    }
    if prediction_columns:
        event["prediction"] = {name: _plain(row[name]) for name in prediction_columns}
    return event


def replay_frame(
    frame: pd.DataFrame,
    settings: Settings,
    *,
    model: str,
    version: int,
    exclude: Sequence[str] = (),
    prediction_columns: Sequence[str] = (),
    rate: float | None = None,
    progress: bool = True,
) -> int:
    """Send every row of ``frame`` as an event; return the number sent.

    Each call is a new run: request ids are ``<run id>-<row number>``, so
    replaying a file twice sends two sets of events.
    """
    missing = [c for c in [*exclude, *prediction_columns] if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"columns {missing} are not in the file; it has {list(frame.columns)}"
        )
    frame = frame.drop(columns=list(exclude))
    run_id = uuid.uuid4().hex[:12]
    topic = settings.topic("predictions")
    sender = _Sender(settings, rate)
    records = frame.to_dict(orient="records")
    with typer.progressbar(
        length=len(records),
        label=f"replay to {topic}",
        file=None if progress else _Null(),
    ) as bar:
        for number, row in enumerate(records):
            event = event_from_row(
                row,
                model=model,
                version=version,
                request_id=f"{run_id}-{number}",
                prediction_columns=prediction_columns,
            )
            sender.send(model.encode(), orjson.dumps(event))
            if number % 1000 == 999:
                bar.update(1000)
        bar.update(len(records) % 1000)
    sender.finish()
    log.info("replay run %s sent %d events to %s", run_id, len(records), topic)
    return len(records)


def replay_lines(
    path: Any,
    settings: Settings,
    *,
    rate: float | None = None,
    limit: int | None = None,
) -> int:
    """Send every line of a JSON-lines file to ``predictions`` as it is.

    The lines are not validated: an invalid one reaches the worker, which
    sends it to the dead-letter topic with the reason, as it would any
    producer's. Each event's model name is its key when the line is a JSON
    object with a ``model`` string, so its events share a partition.
    """
    sender = _Sender(settings, rate)
    with open(path, "rb") as lines:
        for line in lines:
            value = line.rstrip(b"\r\n")
            if not value:
                continue
            if limit is not None and sender.sent >= limit:
                break
            sender.send(_model_key(value), value)
    sender.finish()
    return sender.sent


class _Sender:
    """Produce to ``predictions`` at an optional rate; check delivery at the end."""

    def __init__(self, settings: Settings, rate: float | None) -> None:
        self.settings = settings
        self.topic = settings.topic("predictions")
        self.rate = rate
        self.sent = 0
        self.failures: list[str] = []
        self.producer = Producer(
            {"bootstrap.servers": settings.kafka, "linger.ms": 20, "acks": "all"}
        )
        _wait_for_broker(self.producer, settings.kafka)
        self.started = time.monotonic()

    def send(self, key: bytes | None, value: bytes) -> None:
        _produce(self.producer, self.topic, key, value, self._on_delivery)
        self.sent += 1
        if self.rate is not None:
            delay = self.started + self.sent / self.rate - time.monotonic()
            if delay > 0:
                time.sleep(delay)

    def finish(self) -> None:
        """Wait for every event to be delivered; raise if any was not."""
        remaining = self.producer.flush(60)
        if remaining or self.failures:
            first = self.failures[0] if self.failures else "timed out"
            raise KafkaUnavailableError(
                f"{remaining} events were not delivered and {len(self.failures)} "
                f"failed (first error: {first}); check that Kafka at "
                f"{self.settings.kafka} is running"
            )

    def _on_delivery(self, error: Any, _message: Any) -> None:
        if error is not None:
            self.failures.append(str(error))


def _model_key(value: bytes) -> bytes | None:
    try:
        document = orjson.loads(value)
    except orjson.JSONDecodeError:
        return None
    if isinstance(document, dict) and isinstance(document.get("model"), str):
        return document["model"].encode()
    return None


def _produce(
    producer: Producer, topic: str, key: bytes, value: bytes, callback
) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=callback)
            producer.poll(0)
            return
        except BufferError:
            producer.poll(0.1)


def _wait_for_broker(producer: Producer, servers: str) -> None:
    try:
        producer.list_topics(timeout=15)
    except KafkaException as error:
        raise KafkaUnavailableError(
            f"Kafka at {servers} did not respond within 15 s ({error}); start it "
            "with `deploy/kafka/kafka.sh start` or set ODDWATCH_KAFKA"
        ) from error


def _plain(value: Any) -> Any:
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if value is pd.NA or value is pd.NaT:
        return None
    return value


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class _Null:
    def write(self, _text: str) -> None:
        pass

    def flush(self) -> None:
        pass
