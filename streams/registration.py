"""Model registrations on the compacted ``models`` topic.

``oddwatch train`` publishes one :class:`~schemas.ModelRegistration` per model
version, keyed ``model:version``. Every worker reads the whole topic (no
consumer group, so each worker sees every registration) and keeps the latest
registration of each version, including those published while it runs.
"""

import hashlib
import logging
import time
from datetime import UTC, datetime
from pathlib import Path

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from detectors import ModelVersion
from detectors.artifacts import MANIFEST
from schemas import InvalidEvent, ModelRegistration, ModelState
from streams.errors import KafkaUnavailableError
from streams.publisher import Publisher
from streams.settings import Settings

__all__ = ["RegistrationReader", "build_registration", "publish_registration"]

log = logging.getLogger(__name__)


def build_registration(
    model_version: ModelVersion, store: Path, state: ModelState = ModelState.ACTIVE
) -> ModelRegistration:
    """Describe a saved model version for the ``models`` topic."""
    directory = (
        Path(store) / model_version.model / str(model_version.version)
    ).resolve()
    checksum = hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()
    return ModelRegistration(
        model=model_version.model,
        version=model_version.version,
        state=state,
        artifact=str(directory),
        checksum=checksum,
        oddwatch_version=model_version.oddwatch_version,
        created_at=datetime.now(UTC),
        features=list(model_version.profile.features),
        threshold=float(model_version.threshold),
        target_alert_rate=float(model_version.target_alert_rate),
        metrics=list(getattr(model_version, "metrics", ()) or ()),
    )


def publish_registration(settings: Settings, registration: ModelRegistration) -> None:
    """Publish ``registration`` and wait until Kafka has kept it."""
    from streams.topics import ensure_topics

    ensure_topics(settings)
    publisher = Publisher(settings, flush_timeout=30)
    publisher.send(settings.topic("models"), registration.key(), registration.to_json())
    publisher.flush()


class RegistrationReader:
    """Follow the ``models`` topic from its start; not thread-safe.

    Call :meth:`poll` often (the worker calls it before every block) to pick
    up new registrations without blocking, and :meth:`catch_up` to read up
    to the current end of the topic.
    """

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic("models")
        self.servers = settings.kafka
        self._consumer = Consumer(
            {
                "bootstrap.servers": settings.kafka,
                "group.id": f"{settings.group}-registrations",
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )
        self._consumer.assign([TopicPartition(self.topic, 0, OFFSET_BEGINNING)])
        self._next_offset = 0
        self.registrations: dict[tuple[str, int], ModelRegistration] = {}

    def poll(self, timeout: float = 0.0) -> int:
        """Read the registrations that have arrived; return how many."""
        try:
            messages = self._consumer.consume(num_messages=1000, timeout=timeout)
        except KafkaException as error:
            log.warning("reading %s failed: %s", self.topic, error)
            return 0
        read = 0
        for message in messages:
            if message.error() is not None:
                # The partition-end notice and an absent topic are normal here.
                continue
            self._next_offset = message.offset() + 1
            read += self._apply(message.value(), message.offset())
        return read

    def catch_up(self, timeout: float = 10.0) -> None:
        """Read until the end of the topic as it was when called."""
        deadline = time.monotonic() + timeout
        try:
            _low, end = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, 0), timeout=timeout
            )
        except KafkaException as error:
            raise KafkaUnavailableError(
                f"reading the end of {self.topic} from {self.servers} failed: {error}"
            ) from error
        while self._next_offset < end and time.monotonic() < deadline:
            self.poll(timeout=0.2)
        if self._next_offset < end:
            log.warning(
                "read %s up to offset %d of %d within %.0f s; the rest follows later",
                self.topic,
                self._next_offset,
                end,
                timeout,
            )

    def close(self) -> None:
        self._consumer.close()

    def _apply(self, value: bytes | None, offset: int) -> int:
        if value is None:
            return 0
        try:
            registration = ModelRegistration.from_json(value)
        except InvalidEvent as error:
            log.warning(
                "skipped invalid registration at %s offset %d: %s",
                self.topic,
                offset,
                error,
            )
            return 0
        key = (registration.model, registration.version)
        self.registrations[key] = registration
        log.info(
            "registration of model %s version %d: %s, threshold %.6g",
            registration.model,
            registration.version,
            registration.state,
            registration.threshold,
        )
        return 1
