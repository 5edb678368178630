"""Send records to oddwatch's output topics and wait for the broker to keep them."""

import logging
from typing import Any

from confluent_kafka import KafkaError, Producer

from streams.errors import KafkaUnavailableError
from streams.settings import Settings

__all__ = ["Publisher"]

log = logging.getLogger(__name__)


class Publisher:
    """An idempotent confluent-kafka producer with a delivery check per block.

    :meth:`send` only queues; :meth:`flush` waits until every queued message
    is acknowledged by all in-sync replicas and raises if any was not, so
    the caller can hold back the Kafka offset commit of the input block.
    """

    def __init__(self, settings: Settings, *, flush_timeout: float = 60.0) -> None:
        self.settings = settings
        self.flush_timeout = flush_timeout
        self._producer = Producer(
            {
                "bootstrap.servers": settings.kafka,
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "compression.type": "lz4",
                "queue.buffering.max.messages": 500_000,
                "log_level": 4,
            }
        )
        self._errors: list[KafkaError] = []

    def send(self, topic: str, key: bytes | str | None, value: bytes) -> None:
        """Queue one message for ``topic`` (a full name, prefix included)."""
        while True:
            try:
                self._producer.produce(
                    topic, value=value, key=key, on_delivery=self._on_delivery
                )
                return
            except BufferError:
                self._producer.poll(0.05)

    def flush(self) -> None:
        """Wait for every queued message; raise KafkaUnavailableError on any failure."""
        remaining = self._producer.flush(self.flush_timeout)
        errors, self._errors = self._errors, []
        if remaining or errors:
            first = errors[0].str() if errors else "timed out"
            raise KafkaUnavailableError(
                f"{remaining} messages were not delivered to Kafka at "
                f"{self.settings.kafka} within {self.flush_timeout:.0f} s and "
                f"{len(errors)} failed (first error: {first})"
            )

    def close(self) -> None:
        self._producer.flush(self.flush_timeout)

    def _on_delivery(self, error: KafkaError | None, _message: Any) -> None:
        if error is not None:
            self._errors.append(error)
