"""Send records to oddwatch's output topics and wait for the broker to keep them."""

import logging
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

from streams.errors import KafkaUnavailableError
from streams.kafka_logs import kafka_logger
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
                "logger": kafka_logger("streams.publisher.librdkafka"),
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
            except KafkaException as error:
                if error.args[0].code() != KafkaError.MSG_SIZE_TOO_LARGE:
                    raise
                self._drop_too_large(topic, key, len(value), error.args[0])
                return

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

    def _on_delivery(self, error: KafkaError | None, message: Any) -> None:
        if error is None:
            return
        if error.code() == KafkaError.MSG_SIZE_TOO_LARGE:
            self._drop_too_large(
                message.topic(), message.key(), len(message.value() or b""), error
            )
            return
        self._errors.append(error)

    def _drop_too_large(
        self, topic: str, key: bytes | str | None, size: int, error: KafkaError
    ) -> None:
        """Log a message Kafka will never accept, instead of retrying it forever.

        The worker dead-letters events whose scored event would be too large
        before publishing, so this is reached only when a broker or topic
        allows less than ``MAX_SCORED_BYTES``. The event stays stored in
        ClickHouse.
        """
        log.error(
            "dropped a %d-byte message for %s (key %r): %s; raise the topic's "
            "max.message.bytes to publish such messages",
            size,
            topic,
            key,
            error.str(),
        )
