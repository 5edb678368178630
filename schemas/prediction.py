"""The prediction event: one model request, as produced to ``predictions``."""

import math
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from schemas.errors import InvalidEvent

__all__ = ["MAX_EVENT_BYTES", "PredictionEvent", "parse_prediction"]

MAX_EVENT_BYTES = 1_000_000
"""Largest event accepted; larger ones go to the dead-letter topic."""

_MAX_ID_LENGTH = 256


@dataclass(frozen=True, slots=True)
class PredictionEvent:
    """A validated prediction event.

    ``event_time`` is the event's ``timestamp``, or the time it was received
    when the event has none. Feature values are kept as decoded from JSON.
    """

    model: str
    version: int
    request_id: str
    event_time: datetime
    features: dict[str, Any]
    prediction: Any


def parse_prediction(raw: bytes, received_at: datetime) -> PredictionEvent:
    """Decode and validate one event; raise InvalidEvent naming the field.

    >>> from datetime import datetime, UTC
    >>> now = datetime(2026, 12, 4, tzinfo=UTC)
    >>> event = parse_prediction(
    ...     b'{"model": "census", "version": 1, "request_id": "r1",'
    ...     b' "features": {"age": 39}}', now)
    >>> event.model, event.version, event.features, event.event_time == now
    ('census', 1, {'age': 39}, True)
    >>> parse_prediction(b'{"model": "census"}', now)
    Traceback (most recent call last):
    ...
    schemas.errors.InvalidEvent: field 'version': expected an integer >= 1, got nothing
    """
    if len(raw) > MAX_EVENT_BYTES:
        raise InvalidEvent("", f"at most {MAX_EVENT_BYTES} bytes", f"{len(raw)} bytes")
    try:
        document = orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise InvalidEvent(
            "", "a JSON object in UTF-8", f"invalid JSON ({error})"
        ) from None
    if not isinstance(document, dict):
        raise InvalidEvent("", "a JSON object", f"a JSON {_json_kind(document)}")

    model = _require_text(document, "model")
    version = _require_version(document)
    request_id = _require_text(document, "request_id")
    event_time = _parse_time(document.get("timestamp"), received_at)
    features = document.get("features")
    if not isinstance(features, dict):
        raise InvalidEvent(
            "features", "an object of feature name to value", _describe(features)
        )
    return PredictionEvent(
        model=model,
        version=version,
        request_id=request_id,
        event_time=event_time,
        features=features,
        prediction=document.get("prediction"),
    )


def _require_text(document: dict, field: str) -> str:
    value = document.get(field)
    if not isinstance(value, str) or not value.strip():
        raise InvalidEvent(field, "a non-empty string", _describe(value))
    if len(value) > _MAX_ID_LENGTH:
        raise InvalidEvent(
            field, f"at most {_MAX_ID_LENGTH} characters", f"{len(value)} characters"
        )
    return value


def _require_version(document: dict) -> int:
    value = document.get("version")
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value < 2**32:
        raise InvalidEvent("version", "an integer >= 1", _describe(value))
    return value


def _parse_time(value: Any, received_at: datetime) -> datetime:
    if value is None:
        return received_at
    if not isinstance(value, str):
        raise InvalidEvent(
            "timestamp",
            "an ISO 8601 string such as 2026-12-04T15:00:00Z",
            _describe(value),
        )
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise InvalidEvent(
            "timestamp",
            "an ISO 8601 string such as 2026-12-04T15:00:00Z",
            repr(value[:64]),
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _describe(value: Any) -> str:
    if value is None:
        return "nothing"
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    text = repr(value)
    if len(text) > 64:
        text = text[:61] + "..."
    return f"{_json_kind(value)} {text}"


def _json_kind(value: Any) -> str:
    kinds = {
        bool: "boolean",
        int: "number",
        float: "number",
        str: "string",
        list: "array",
        dict: "object",
    }
    return kinds.get(type(value), type(value).__name__)
