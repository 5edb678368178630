"""Send dead letters back to ``predictions`` once their cause is fixed.

A dead letter keeps the original bytes of the event, so an event rejected for
a reason that has gone away (most often ``model_not_registered``, when events
arrived before ``oddwatch train`` registered the version) can be processed
after all. Progress is kept by a consumer group of its own, so running the
command twice sends each dead letter once.
"""

import logging

import orjson
from confluent_kafka import Consumer, KafkaException

from schemas import DeadLetter, InvalidEvent, ModelState
from streams.errors import KafkaUnavailableError
from streams.publisher import Publisher
from streams.registration import RegistrationReader
from streams.settings import Settings

__all__ = ["redeliver"]

log = logging.getLogger(__name__)


def redeliver(
    settings: Settings, reasons: list[str], *, idle_timeout: float = 5.0
) -> tuple[int, int]:
    """Re-send dead letters whose reason code is in ``reasons`` (all if empty).

    Reads the dead-letter topic until no message arrives for ``idle_timeout``
    seconds. A ``model_not_registered`` letter is re-sent only once its
    version is registered and active. Until then it is skipped, and the
    command's consumer group moves past it, so a later run does not read it
    again: register the version first. Returns (re-sent, skipped).
    """
    consumer = Consumer(
        {
            "bootstrap.servers": settings.kafka,
            "group.id": f"{settings.group}-redeliver",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
            "log_level": 3,
        }
    )
    publisher = Publisher(settings)
    reader = RegistrationReader(settings)
    reader.catch_up(timeout=15)
    registered = {
        key
        for key, item in reader.registrations.items()
        if item.state == ModelState.ACTIVE
    }
    reader.close()
    sent = skipped = 0
    try:
        consumer.subscribe([settings.topic("deadletter")])
        while True:
            messages = consumer.consume(num_messages=500, timeout=idle_timeout)
            if not messages:
                break
            for message in messages:
                if message.error() is not None:
                    continue
                letter = _decode(message.value())
                if letter is None or (reasons and letter.reason_code not in reasons):
                    skipped += 1
                    continue
                if letter.reason_code == "model_not_registered" and (
                    _model_of(letter.original) not in registered
                ):
                    # Sending it back would only bounce it again.
                    skipped += 1
                    continue
                publisher.send(
                    settings.topic("predictions"), message.key(), letter.original
                )
                sent += 1
            publisher.flush()
            consumer.commit(asynchronous=False)
    except KafkaException as error:
        raise KafkaUnavailableError(
            f"re-sending dead letters through {settings.kafka} failed: {error}"
        ) from error
    finally:
        consumer.close()
    return sent, skipped


def _model_of(original: bytes) -> tuple[str, int] | None:
    try:
        document = orjson.loads(original)
        return (document["model"], document["version"])
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return None


def _decode(value: bytes | None) -> DeadLetter | None:
    if value is None:
        return None
    try:
        return DeadLetter.from_json(value)
    except InvalidEvent as error:
        log.warning("skipped a dead letter that does not decode: %s", error)
        return None
