"""Decoding and validating prediction events."""

from datetime import UTC, datetime

import orjson
import pytest

from schemas.errors import InvalidEvent
from schemas.prediction import MAX_EVENT_BYTES, parse_prediction

NOW = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
VALID = {
    "model": "census",
    "version": 2,
    "request_id": "9f2c",
    "timestamp": "2026-12-04T14:00:00.123Z",
    "features": {"age": 39, "workclass": "State-gov"},
    "prediction": {"income": "<=50K", "score": 0.83},
}


def _parse(document) -> object:
    return parse_prediction(orjson.dumps(document), NOW)


def test_prediction_valid_event():
    event = _parse(VALID)
    assert event.model == "census"
    assert event.version == 2
    assert event.request_id == "9f2c"
    assert event.event_time == datetime(2026, 12, 4, 14, 0, 0, 123000, tzinfo=UTC)
    assert event.features == VALID["features"]
    assert event.prediction == VALID["prediction"]


def test_prediction_missing_timestamp_uses_received_time():
    event = _parse({k: v for k, v in VALID.items() if k != "timestamp"})
    assert event.event_time == NOW


def test_prediction_timestamp_with_offset_converted_to_utc():
    event = _parse({**VALID, "timestamp": "2026-12-04T16:00:00+02:00"})
    assert event.event_time == datetime(2026, 12, 4, 14, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("raw", "field", "got"),
    [
        (b"not json", "", "invalid JSON"),
        (b"\xff\xfe", "", "invalid JSON"),
        (b"[1, 2]", "", "a JSON array"),
        (b"42", "", "a JSON number"),
        (b'{"version": 1}', "model", "nothing"),
        (orjson.dumps({**VALID, "model": ""}), "model", "string ''"),
        (orjson.dumps({**VALID, "version": "1"}), "version", "string '1'"),
        (orjson.dumps({**VALID, "version": True}), "version", "boolean True"),
        (orjson.dumps({**VALID, "version": 0}), "version", "number 0"),
        (orjson.dumps({**VALID, "request_id": 7}), "request_id", "number 7"),
        (orjson.dumps({**VALID, "request_id": "x" * 300}), "request_id", "300"),
        (orjson.dumps({**VALID, "timestamp": 1700000000}), "timestamp", "number"),
        (orjson.dumps({**VALID, "timestamp": "yesterday"}), "timestamp", "'yesterday'"),
        (orjson.dumps({**VALID, "features": [1, 2]}), "features", "array"),
        (orjson.dumps({**VALID, "features": None}), "features", "nothing"),
    ],
)
def test_prediction_invalid_names_field(raw, field, got):
    with pytest.raises(InvalidEvent) as caught:
        parse_prediction(raw, NOW)
    assert caught.value.field == field
    assert got in str(caught.value)


def test_prediction_oversized_rejected_before_decoding():
    raw = b'{"pad": "' + b"x" * MAX_EVENT_BYTES + b'"}'
    with pytest.raises(InvalidEvent, match="bytes"):
        parse_prediction(raw, NOW)
