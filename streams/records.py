"""Kafka messages as oddwatch receives them, and dead letters."""

import base64
from dataclasses import dataclass
from datetime import datetime

import orjson

__all__ = ["DeadLetter", "RawMessage"]

# Dead letters carry the original bytes base64-encoded; beyond this size they
# keep only the head, so the dead letter still fits under Kafka's default
# 1 MB message limit. ``original_size`` tells the full size.
MAX_DEAD_LETTER_ORIGINAL = 512 * 1024


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

    def to_json(self) -> bytes:
        """Encode as the value of a ``deadletter`` topic message."""
        original = self.message.value
        truncated = len(original) > MAX_DEAD_LETTER_ORIGINAL
        kept = original[:MAX_DEAD_LETTER_ORIGINAL]
        return orjson.dumps(
            {
                "reason_code": self.reason_code,
                "reason": self.reason,
                "field": self.field,
                "topic": self.message.topic,
                "partition": self.message.partition,
                "offset": self.message.offset,
                "received_at": self.message.received_at.isoformat(),
                "original_base64": base64.b64encode(kept).decode("ascii"),
                "original_size": len(original),
                "original_truncated": truncated,
            }
        )
