"""The dead letter: a message oddwatch rejected, and why."""

import base64
import binascii
from dataclasses import dataclass
from datetime import datetime
from typing import Self

from schemas.errors import InvalidEvent
from schemas.record import COUNT, NAME, Constraints, Record, schema_field

__all__ = ["MAX_DEAD_LETTER_ORIGINAL", "DeadLetter"]

MAX_DEAD_LETTER_ORIGINAL = 512 * 1024
"""Bytes of the original message a dead letter keeps.

Base64 makes them 4/3 as long, so a dead letter stays under Kafka's default
message limit of 1 MB.
"""

# Base64 with padding, as RFC 4648 section 4 defines it.
_BASE64 = Constraints(
    pattern=r"^([A-Za-z0-9+/]{4})*([A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$",
    pattern_text="padded base64",
)


@dataclass(frozen=True, slots=True, kw_only=True)
class DeadLetter(Record):
    """A message that was rejected, with the reason a person can act on.

    Published to ``deadletter`` with the key of the original message.
    Decoding and encoding enforce that ``original_base64`` decodes to
    ``original_size`` bytes, or to fewer when ``original_truncated`` is true.

    Attributes
    ----------
    reason_code : str
        Stable word for counting, such as ``invalid_json``, ``invalid_event``
        or ``model_not_registered``.
    reason : str
        What was wrong, in a sentence for people.
    field : str
        Event field at fault, empty when the whole message is at fault.
    topic : str
        Topic the message came from.
    partition : int
        Partition the message came from.
    offset : int
        Offset of the message in its partition.
    received_at : datetime
        When oddwatch received the message.
    original_base64 : str
        The message value, base64-encoded, cut to its first
        ``MAX_DEAD_LETTER_ORIGINAL`` bytes.
    original_size : int
        Size of the whole message value in bytes.
    original_truncated : bool
        Whether ``original_base64`` holds only the head of the value.
    """

    reason_code: str = schema_field(
        Constraints(
            max_length=64,
            pattern="^[a-z][a-z0-9_]*$",
            pattern_text="a lowercase word such as invalid_event",
        )
    )
    reason: str = schema_field(NAME)
    field: str = schema_field(Constraints(max_length=256))
    topic: str = schema_field(NAME)
    partition: int = schema_field(COUNT)
    offset: int = schema_field(COUNT)
    received_at: datetime
    original_base64: str = schema_field(_BASE64)
    original_size: int = schema_field(COUNT)
    original_truncated: bool

    @classmethod
    def from_original(
        cls,
        original: bytes,
        *,
        reason_code: str,
        reason: str,
        field: str = "",
        topic: str,
        partition: int,
        offset: int,
        received_at: datetime,
    ) -> Self:
        """Build the dead letter of a message value, keeping at most its head."""
        kept = original[:MAX_DEAD_LETTER_ORIGINAL]
        return cls(
            reason_code=reason_code,
            reason=reason,
            field=field,
            topic=topic,
            partition=partition,
            offset=offset,
            received_at=received_at,
            original_base64=base64.b64encode(kept).decode("ascii"),
            original_size=len(original),
            original_truncated=len(kept) < len(original),
        )

    @property
    def original(self) -> bytes:
        """The kept bytes of the message value."""
        return base64.b64decode(self.original_base64)

    def _check(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        try:
            kept_size = len(base64.b64decode(self.original_base64, validate=True))
        except binascii.Error as error:
            raise InvalidEvent(
                prefix + "original_base64", "padded base64", f"invalid ({error})"
            ) from None
        if self.original_truncated and kept_size >= self.original_size:
            raise InvalidEvent(
                prefix + "original_truncated",
                f"false when all {self.original_size} bytes are kept",
                "true",
            )
        if not self.original_truncated and kept_size != self.original_size:
            raise InvalidEvent(
                prefix + "original_base64",
                f"all {self.original_size} bytes of the original",
                f"{kept_size} bytes",
            )
