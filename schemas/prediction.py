"""The prediction event: one model request, as produced to ``predictions``."""

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, ClassVar, Self

import orjson

from schemas.record import (
    LENIENT_TIME_PATTERN,
    NAME,
    VERSION,
    Constraints,
    Record,
    _python_regex,
    codec_of,
    schema_field,
)
from schemas.record import load_object as _load_object

__all__ = ["MAX_EVENT_BYTES", "PredictionEvent", "parse_prediction"]

MAX_EVENT_BYTES = 1_000_000
"""Largest event accepted; larger ones go to the dead-letter topic."""


@dataclass(frozen=True, slots=True)
class PredictionEvent(Record):
    """One request served by a model, as its serving code reports it.

    Producers send it to the ``predictions`` topic, keyed by model name, as a
    JSON object of at most 1000000 bytes. Fields other than those below are
    ignored.

    Attributes
    ----------
    model : str
        Name of the model that served the request.
    version : int
        Version of the model, from 1.
    request_id : str
        Identifier of the request, unique per model version. Storage removes
        duplicates by it after a producer retries.
    event_time : datetime
        When the model served the request; the JSON name is ``timestamp``. A
        time without an offset is read as UTC, and a missing or null
        timestamp means the time oddwatch received the event.
    features : dict
        Feature name to value, as the model received them. Values are kept
        as decoded from JSON.
    prediction : Any
        The model's output, any JSON value, or null when the event has none.
    """

    max_json_bytes: ClassVar[int] = MAX_EVENT_BYTES

    model: str = schema_field(NAME)
    version: int = schema_field(VERSION)
    request_id: str = schema_field(NAME)
    event_time: datetime = schema_field(
        Constraints(naive_time_is_utc=True), wire_name="timestamp", fallback=True
    )
    features: dict[str, Any] = schema_field()
    prediction: Any = schema_field(default=None)

    @classmethod
    def from_json(cls, raw: bytes | str, received_at: datetime | None = None) -> Self:
        """Decode and validate one event; raise InvalidEvent naming the field.

        An event without a timestamp gets ``received_at``, or the current time
        when that is None.
        """
        return cls.from_dict(_load_object(raw, cls.max_json_bytes), received_at)

    @classmethod
    def from_dict(
        cls, document: dict[str, Any], received_at: datetime | None = None
    ) -> Self:
        """Validate a decoded JSON object; see :meth:`from_json`."""
        fallbacks = {"event_time": received_at or datetime.now(UTC)}
        return codec_of(cls).decode(document, "", fallbacks)


def parse_prediction(raw: bytes, received_at: datetime) -> PredictionEvent:
    """Decode and validate one event; raise InvalidEvent naming the field.

    >>> from datetime import datetime, UTC
    >>> now = datetime(2026, 12, 4, tzinfo=UTC)
    >>> event = parse_prediction(
    ...     b'{"model": "census", "version": 1, "request_id": "r1",'
    ...     b' "features": {"age": 39}}', now)
    >>> event.model, event.version, event.features, event.event_time == now
    ('census', 1, {'age': 39}, True)
    >>> parse_prediction(b'{"model": "census"}', now)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    schemas.errors.InvalidEvent: field 'version': expected an integer ..., got nothing
    """
    event = _parse_plain_event(raw, received_at)
    if event is None:
        # The full decoder either accepts the event or raises the error that
        # names the field at fault.
        return PredictionEvent.from_json(raw, received_at)
    return event


# The constraints of the fields, checked inline on the common path.
_NAME_MAX_LENGTH = NAME.max_length
_NON_BLANK = _python_regex(NAME.pattern)
_VERSION_MIN, _VERSION_MAX = VERSION.minimum, VERSION.maximum
_TIME = _python_regex(LENIENT_TIME_PATTERN)


def _parse_plain_event(raw: bytes, received_at: datetime) -> PredictionEvent | None:
    """Build the event when every field has its plain JSON type, or return None.

    This is the common case of :func:`parse_prediction` at a fraction of the
    cost of the general decoder. Anything it does not accept, such as a
    version written ``2.0``, goes to the general decoder, so the two accept
    the same events and build the same records.
    """
    if len(raw) > MAX_EVENT_BYTES:
        return None
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    if type(document) is not dict:
        return None
    model = document.get("model")
    version = document.get("version")
    request_id = document.get("request_id")
    features = document.get("features")
    if not (
        type(model) is str
        and len(model) <= _NAME_MAX_LENGTH
        and _NON_BLANK.search(model) is not None
        and type(request_id) is str
        and len(request_id) <= _NAME_MAX_LENGTH
        and _NON_BLANK.search(request_id) is not None
        and type(version) is int
        and _VERSION_MIN <= version <= _VERSION_MAX
        and type(features) is dict
    ):
        return None
    stamp = document.get("timestamp")
    if stamp is None:
        event_time = received_at or datetime.now(UTC)
    else:
        event_time = _parse_time(stamp)
        if event_time is None:
            return None
    return PredictionEvent(
        model=model,
        version=version,
        request_id=request_id,
        event_time=event_time,
        features=features,
        prediction=document.get("prediction"),
    )


def _parse_time(stamp: Any) -> datetime | None:
    """Return the UTC time of an ISO 8601 string, or None if it is not one."""
    if type(stamp) is not str or _TIME.search(stamp) is None:
        return None
    try:
        moment = datetime.fromisoformat(stamp)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
