"""Decoding and validating prediction events."""

from datetime import UTC, datetime

import orjson
import pytest

from schemas.errors import InvalidEvent
from schemas.prediction import (
    MAX_EVENT_BYTES,
    PredictionEvent,
    _parse_plain_event,
    parse_prediction,
)

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


# Events on both sides of every limit the common path checks inline. Each
# must give what the general decoder gives: the same record or the same error.
EDGE_CASES = [
    VALID,
    {**VALID, "version": 2.0},
    {**VALID, "version": 1},
    {**VALID, "version": 2**32 - 1},
    {**VALID, "version": 2**32},
    {**VALID, "version": -1},
    {**VALID, "version": None},
    {**VALID, "model": "x" * 256},
    {**VALID, "model": "x" * 257},
    {**VALID, "model": " \t"},
    {**VALID, "model": "\u00a0\u2003"},
    {**VALID, "model": " a "},
    {**VALID, "model": None},
    {**VALID, "request_id": ""},
    {**VALID, "request_id": ["r1"]},
    {**VALID, "timestamp": None},
    {**VALID, "timestamp": "2026-12-04 14:00:00"},
    {**VALID, "timestamp": "2026-12-04T14:00:00+05:30"},
    {**VALID, "timestamp": "2026-12-04T14:00:00.123456789Z"},
    {**VALID, "timestamp": "2026-12-04T14:00:00Z\n"},
    {**VALID, "timestamp": "2026-12-04"},
    {**VALID, "timestamp": "2026-13-04T14:00:00Z"},
    {**VALID, "timestamp": "0001-01-01T00:00:00+01:00"},
    {**VALID, "features": {}},
    {**VALID, "features": {"age": None, "tags": [1, {"a": 2}]}},
    {**VALID, "features": "age=39"},
    {**VALID, "prediction": None},
    {key: value for key, value in VALID.items() if key != "prediction"},
    {key: value for key, value in VALID.items() if key != "features"},
    {**VALID, "extra": 1},
]


def _outcome(parse, raw):
    try:
        return parse(raw)
    except InvalidEvent as error:
        return ("error", error.field, str(error))


@pytest.mark.parametrize("document", EDGE_CASES)
def test_prediction_common_path_equals_decoder(document):
    raw = orjson.dumps(document)
    general = _outcome(lambda data: PredictionEvent.from_json(data, NOW), raw)
    assert _outcome(lambda data: parse_prediction(data, NOW), raw) == general


def test_prediction_common_path_skips_invalid_bytes():
    for raw in (b"", b"{", b"\xff", b"[]", b"null", b'{"model": "census"}'):
        assert _parse_plain_event(raw, NOW) is None


def test_prediction_common_path_taken_for_plain_event():
    raw = orjson.dumps(VALID)
    assert _parse_plain_event(raw, NOW) == PredictionEvent.from_json(raw, NOW)


def test_empty_message_named_as_tombstone():
    from datetime import UTC, datetime

    from schemas import InvalidEvent, parse_prediction

    with pytest.raises(InvalidEvent) as caught:
        parse_prediction(b"", datetime.now(UTC))
    assert caught.value.got == "invalid JSON (an empty message or tombstone)"
    assert caught.value.field == ""
