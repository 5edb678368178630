"""Kafka messages as oddwatch receives them, and rejected ones."""

from dataclasses import dataclass
from datetime import datetime

from schemas import DeadLetter as DeadLetterRecord

__all__ = ["DeadLetter", "RawMessage", "last_offsets", "offset_ranges"]

MAX_REASON_LENGTH = 256
"""Maximum length of a dead letter's reason and field; longer ones are cut."""


@dataclass(frozen=True, slots=True)
class RawMessage:
    """One message from the ``predictions`` topic, before decoding."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    received_at: datetime


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A message that was rejected, with the reason a person can act on.

    ``reason_code`` is a stable word for counting (``invalid_json``,
    ``invalid_event``, ``model_not_registered``, ...); ``reason`` is the
    sentence for people.
    """

    message: RawMessage
    reason_code: str
    reason: str
    field: str = ""

    def to_record(self) -> DeadLetterRecord:
        """Return the record published to the ``deadletter`` topic."""
        return DeadLetterRecord.from_original(
            self.message.value,
            reason_code=self.reason_code,
            reason=_fit(self.reason, MAX_REASON_LENGTH),
            field=_fit(self.field, MAX_REASON_LENGTH),
            topic=self.message.topic,
            partition=self.message.partition,
            offset=self.message.offset,
            received_at=self.message.received_at,
        )

    def to_json(self) -> bytes:
        """Encode as the value of a ``deadletter`` topic message."""
        return self.to_record().to_json()


def _fit(text: str, limit: int) -> str:
    """Cut ``text`` to ``limit`` characters and mark the cut."""
    if len(text) <= limit:
        return text
    return text[: limit - 3] + "..."


def offset_ranges(messages: list[RawMessage]) -> str:
    """Name a block by the offset range it covers in each partition.

    >>> from datetime import UTC, datetime
    >>> now = datetime.now(UTC)
    >>> offset_ranges([RawMessage("p", 0, offset, None, b"", now) for offset in (7, 5)])
    'p/0/5-7'
    """
    ranges: dict[tuple[str, int], list[int]] = {}
    for message in messages:
        key = (message.topic, message.partition)
        bounds = ranges.setdefault(key, [message.offset, message.offset])
        bounds[0] = min(bounds[0], message.offset)
        bounds[1] = max(bounds[1], message.offset)
    return ";".join(
        f"{topic}/{partition}/{low}-{high}"
        for (topic, partition), (low, high) in sorted(ranges.items())
    )


def last_offsets(messages: list[RawMessage]) -> dict[tuple[str, int], int]:
    """Return the highest offset of ``messages`` in each (topic, partition)."""
    ends: dict[tuple[str, int], int] = {}
    for message in messages:
        key = (message.topic, message.partition)
        ends[key] = max(ends.get(key, -1), message.offset)
    return ends
