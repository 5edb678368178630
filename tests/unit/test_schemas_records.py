"""Encoding, decoding and validation of every record."""

import copy
import dataclasses
import re
from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import orjson
import pytest

import schemas
from schemas import (
    MAX_DEAD_LETTER_ORIGINAL,
    Alert,
    AlertKind,
    BatchSummary,
    DeadLetter,
    FeatureStatus,
    InvalidEvent,
    MetricResult,
    ModelRegistration,
    Operator,
    PredictionEvent,
    Reason,
    ScoredEvent,
    derive_alert_id,
)
from schemas.examples import EXAMPLES
from schemas.record import codec_of

RECORD_TYPES = list(EXAMPLES)


def _document(record_type) -> dict:
    """A fresh JSON document of the record type's example, safe to change."""
    return copy.deepcopy(orjson.loads(EXAMPLES[record_type].to_json()))


def _field_of(record_type, document) -> str:
    with pytest.raises(InvalidEvent) as caught:
        record_type.from_dict(document)
    return caught.value.field


@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda t: t.__name__)
def test_record_json_round_trip(record_type):
    record = EXAMPLES[record_type]
    assert record_type.from_json(record.to_json()) == record


@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda t: t.__name__)
def test_record_dict_round_trip(record_type):
    record = EXAMPLES[record_type]
    assert record_type.from_dict(record.to_dict()) == record


@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda t: t.__name__)
def test_record_ignores_unknown_fields(record_type):
    document = {**_document(record_type), "added_later": [1, 2]}
    assert record_type.from_dict(document) == EXAMPLES[record_type]


@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda t: t.__name__)
def test_record_rejects_non_object(record_type):
    with pytest.raises(InvalidEvent) as caught:
        record_type.from_json(b"[]")
    assert caught.value.field == ""
    assert "array" in caught.value.got


@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda t: t.__name__)
def test_record_rejects_invalid_json(record_type):
    with pytest.raises(InvalidEvent) as caught:
        record_type.from_json(b'{"model": ')
    assert caught.value.field == ""
    assert "invalid JSON" in caught.value.got


@pytest.mark.parametrize("record_type", RECORD_TYPES, ids=lambda t: t.__name__)
def test_record_missing_field_named(record_type):
    required = [
        spec.wire_name for spec in codec_of(record_type).fields if spec.required
    ]
    assert required
    for name in required:
        document = _document(record_type)
        del document[name]
        with pytest.raises(InvalidEvent) as caught:
            record_type.from_dict(document)
        assert caught.value.field == name
        assert caught.value.got == "nothing"


def test_times_written_in_utc_with_milliseconds():
    document = _document(ScoredEvent)
    assert document["timestamp"] == "2026-12-04T15:00:00.123Z"
    assert document["received_at"] == "2026-12-04T15:00:00.250Z"


def test_times_with_offset_read_as_utc():
    document = {**_document(ScoredEvent), "received_at": "2026-12-04T17:00:00+02:00"}
    event = ScoredEvent.from_dict(document)
    assert event.received_at == datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
    assert event.received_at.tzinfo is UTC


def test_times_below_millisecond_dropped():
    event = dataclasses.replace(
        EXAMPLES[ScoredEvent],
        received_at=datetime(2026, 12, 4, 15, 0, 0, 123999, tzinfo=UTC),
    )
    decoded = ScoredEvent.from_json(event.to_json())
    assert decoded.received_at == datetime(2026, 12, 4, 15, 0, 0, 123000, tzinfo=UTC)


def test_time_from_other_zone_encoded_as_utc():
    plus_two = timezone(timedelta(hours=2))
    event = dataclasses.replace(
        EXAMPLES[ScoredEvent], received_at=datetime(2026, 12, 4, 17, 0, tzinfo=plus_two)
    )
    assert event.to_dict()["received_at"] == "2026-12-04T15:00:00.000Z"


def test_naive_time_rejected_on_encode():
    event = dataclasses.replace(
        EXAMPLES[ScoredEvent], received_at=datetime(2026, 12, 4, 15, 0)
    )
    with pytest.raises(InvalidEvent) as caught:
        event.to_json()
    assert caught.value.field == "received_at"
    assert caught.value.expected == "a timezone-aware datetime"


def test_time_without_offset_rejected_in_output_records():
    document = {**_document(ScoredEvent), "received_at": "2026-12-04T15:00:00"}
    assert _field_of(ScoredEvent, document) == "received_at"


def test_integral_float_accepted_as_integer():
    document = {**_document(BatchSummary), "events": 40.0}
    summary = BatchSummary.from_dict(document)
    assert summary.events == 40
    assert type(summary.events) is int


def test_numpy_scalars_encoded_as_python_values():
    event = dataclasses.replace(
        EXAMPLES[ScoredEvent],
        version=np.int64(1),
        score=np.float64(0.91),
        is_outlier=np.float64(0.91) > 0.74,
    )
    document = orjson.loads(event.to_json())
    assert document["version"] == 1
    assert document["score"] == 0.91
    assert document["is_outlier"] is True


def test_nan_score_rejected_on_encode():
    event = dataclasses.replace(EXAMPLES[ScoredEvent], score=float("nan"))
    with pytest.raises(InvalidEvent) as caught:
        event.to_json()
    assert caught.value.field == "score"
    assert caught.value.got == "nan"


def test_unserializable_feature_rejected_on_encode():
    event = dataclasses.replace(EXAMPLES[ScoredEvent], features={"age": object()})
    with pytest.raises(InvalidEvent) as caught:
        event.to_json()
    assert caught.value.field == ""


def test_enum_fields_decoded_as_members():
    event = ScoredEvent.from_dict(_document(ScoredEvent))
    assert event.statuses["age"] is FeatureStatus.ABOVE_MAX
    assert event.metrics["hours_cap"].operator is Operator.LE


def test_feature_status_matches_detectors_status():
    from detectors.status import Status

    assert [status.value for status in FeatureStatus] == [s.value for s in Status]


def test_detectors_status_encodes_as_feature_status():
    from detectors.status import Status

    event = dataclasses.replace(
        EXAMPLES[ScoredEvent],
        statuses={"age": Status.ABOVE_MAX, "hours_per_week": Status.OK},
        failed_features=["age"],
    )
    assert event.to_dict()["statuses"] == {"age": "above_max", "hours_per_week": "ok"}


# Each case changes one field of an example's JSON document to a value the
# validator rejects, and names the field the error must point to.
INVALID_CASES = [
    (PredictionEvent, "model", ""),
    (PredictionEvent, "version", 0),
    (PredictionEvent, "version", 2**32),
    (PredictionEvent, "version", "1"),
    (PredictionEvent, "version", 1.5),
    (PredictionEvent, "request_id", " \t"),
    (PredictionEvent, "timestamp", "2026-12-04"),
    (PredictionEvent, "timestamp", "2026-13-04T15:00:00Z"),
    (PredictionEvent, "features", [1, 2]),
    (ScoredEvent, "timestamp", None),
    (ScoredEvent, "received_at", "yesterday"),
    (ScoredEvent, "batch_id", 7),
    (ScoredEvent, "statuses", {"age": "too_old"}),
    (ScoredEvent, "statuses", []),
    (ScoredEvent, "extra_features", ["region", "region"]),
    (ScoredEvent, "extra_features", "region"),
    (ScoredEvent, "score", "0.9"),
    (ScoredEvent, "score", True),
    (ScoredEvent, "threshold", None),
    (ScoredEvent, "is_outlier", 1),
    (ScoredEvent, "metrics", {"hours_cap": {"value": 1.0}}),
    (Alert, "alert_id", "A1"),
    (Alert, "kind", "spike"),
    (Alert, "created_at", 1765000000),
    (Alert, "reasons", {}),
    (Alert, "pass_share", 1.5),
    (BatchSummary, "closed_by", "manual"),
    (BatchSummary, "events", -1),
    (BatchSummary, "health", "blue"),
    (BatchSummary, "pass_share", -0.1),
    (BatchSummary, "checks", None),
    (ModelRegistration, "state", "deleted"),
    (ModelRegistration, "checksum", "ABC"),
    (ModelRegistration, "checksum", "A" * 64),
    (ModelRegistration, "target_alert_rate", 0),
    (ModelRegistration, "target_alert_rate", 1),
    (ModelRegistration, "features", ["age", "age"]),
    (ModelRegistration, "features", ["age", ""]),
    (ModelRegistration, "artifact", "   "),
    (DeadLetter, "reason_code", "Invalid Event"),
    (DeadLetter, "partition", -1),
    (DeadLetter, "offset", 2.5),
    (DeadLetter, "original_base64", "not base64!"),
    (DeadLetter, "original_truncated", "no"),
]


@pytest.mark.parametrize(
    ("record_type", "name", "value"),
    INVALID_CASES,
    ids=[f"{t.__name__}.{name}={value!r}"[:60] for t, name, value in INVALID_CASES],
)
def test_invalid_field_named(record_type, name, value):
    document = {**_document(record_type), name: value}
    with pytest.raises(InvalidEvent) as caught:
        record_type.from_dict(document)
    assert caught.value.field.split("[")[0].split(".")[0] == name
    assert caught.value.expected
    assert caught.value.got


# Nested fields: a change at a path inside the document and the field the
# error must name.
NESTED_CASES = [
    (ScoredEvent, ("statuses", "age"), "old", "statuses['age']"),
    (ScoredEvent, ("failed_features", 0), "", "failed_features[0]"),
    (
        ScoredEvent,
        ("metrics", "hours_cap", "operator"),
        "=>",
        "metrics['hours_cap'].operator",
    ),
    (
        ScoredEvent,
        ("metrics", "hours_cap", "passed"),
        "yes",
        "metrics['hours_cap'].passed",
    ),
    (Alert, ("reasons", 0, "check"), "", "reasons[0].check"),
    (Alert, ("reasons", 0, "contribution"), "high", "reasons[0].contribution"),
    (BatchSummary, ("checks", 1, "checked"), -3, "checks[1].checked"),
    (BatchSummary, ("checks", 2, "feature"), None, "checks[2].feature"),
    (ModelRegistration, ("metrics", 0, "operator"), "~", "metrics[0].operator"),
    (ModelRegistration, ("metrics", 0, "name"), "range", "metrics[0].name"),
    (ModelRegistration, ("metrics", 0, "scorer"), "no path", "metrics[0].scorer"),
]


@pytest.mark.parametrize(
    ("record_type", "location", "value", "field"),
    NESTED_CASES,
    ids=[case[3] for case in NESTED_CASES],
)
def test_invalid_nested_field_named(record_type, location, value, field):
    document = _document(record_type)
    _set(document, location, value)
    assert _field_of(record_type, document) == field


def _set(document, location, value) -> None:
    *parents, last = location
    for step in parents:
        document = document[step]
    document[last] = value


def test_scored_failed_features_must_match_statuses():
    document = {**_document(ScoredEvent), "failed_features": []}
    assert _field_of(ScoredEvent, document) == "failed_features"


def test_scored_extra_feature_must_lack_status():
    document = {**_document(ScoredEvent), "extra_features": ["region", "workclass"]}
    assert _field_of(ScoredEvent, document) == "extra_features"


def test_scored_from_prediction_derives_lists():
    event = EXAMPLES[ScoredEvent]
    assert event.extra_features == ["region"]
    assert event.failed_features == ["age"]
    assert event.event_time == EXAMPLES[PredictionEvent].event_time
    assert event.features == EXAMPLES[PredictionEvent].features


def test_metric_result_error_requires_null_value():
    document = _document(ScoredEvent)
    document["metrics"]["hours_cap"]["error"] = "ZeroDivisionError"
    assert _field_of(ScoredEvent, document) == "metrics['hours_cap'].error"


def test_metric_result_failed_must_not_pass():
    document = _document(ScoredEvent)
    document["metrics"]["hours_cap"] = {
        "value": None,
        "threshold": 80.0,
        "operator": "<=",
        "passed": True,
        "error": "ZeroDivisionError: division by zero",
    }
    assert _field_of(ScoredEvent, document) == "metrics['hours_cap'].passed"


def test_metric_result_failed_metric_valid():
    result = MetricResult(
        value=None, threshold=1.0, operator=Operator.GT, passed=False, error="boom"
    )
    assert MetricResult.from_json(result.to_json()) == result


def test_metric_config_needs_feature_or_scorer():
    document = _document(ModelRegistration)
    document["metrics"][0]["scorer"] = "census.metrics:hours"
    assert _field_of(ModelRegistration, document) == "metrics[0].scorer"
    document["metrics"][0]["scorer"] = None
    document["metrics"][0]["feature"] = None
    assert _field_of(ModelRegistration, document) == "metrics[0].scorer"


def test_registration_metric_names_unique():
    document = _document(ModelRegistration)
    document["metrics"].append(dict(document["metrics"][0]))
    assert _field_of(ModelRegistration, document) == "metrics[1].name"


def test_registration_metrics_default_empty():
    document = _document(ModelRegistration)
    del document["metrics"]
    assert ModelRegistration.from_dict(document).metrics == []


def test_registration_key_is_model_and_version():
    assert EXAMPLES[ModelRegistration].key() == b"census:1"


def test_batch_outliers_at_most_events():
    document = {**_document(BatchSummary), "outliers": 41}
    assert _field_of(BatchSummary, document) == "outliers"


def test_batch_late_events_at_most_events():
    document = {**_document(BatchSummary), "late_events": 41}
    assert _field_of(BatchSummary, document) == "late_events"


def test_batch_window_must_not_end_before_start():
    document = {**_document(BatchSummary), "window_end": "2026-12-04T14:59:00Z"}
    assert _field_of(BatchSummary, document) == "window_end"


def test_batch_check_passed_at_most_checked():
    document = _document(BatchSummary)
    document["checks"][0]["passed"] = 41
    assert _field_of(BatchSummary, document) == "checks[0].passed"


def test_batch_pass_share_must_match_checks():
    document = {**_document(BatchSummary), "pass_share": 0.5}
    assert _field_of(BatchSummary, document) == "pass_share"


def test_batch_pass_share_one_without_checks():
    document = {**_document(BatchSummary), "checks": [], "pass_share": 1.0}
    assert BatchSummary.from_dict(document).pass_share == 1.0


def test_alert_id_same_on_replay():
    first = derive_alert_id(AlertKind.OUTLIER, "census", 1, "9f2c")
    again = derive_alert_id("outlier", "census", 1, "9f2c")
    assert first == again
    assert re.fullmatch("[0-9a-f]{32}", first)


def test_alert_id_differs_by_each_part():
    base = ("outlier", "census", 1, "9f2c")
    variants = [
        ("unhealthy_batch", "census", 1, "9f2c"),
        ("outlier", "census2", 1, "9f2c"),
        ("outlier", "census", 2, "9f2c"),
        ("outlier", "census", 1, "9f2d"),
    ]
    ids = {derive_alert_id(*parts) for parts in [base, *variants]}
    assert len(ids) == 5


def test_alert_from_scored_event():
    event = EXAMPLES[ScoredEvent]
    alert = Alert.from_scored_event(event, [], datetime(2026, 12, 4, tzinfo=UTC))
    assert alert.kind is AlertKind.OUTLIER
    assert alert.alert_id == derive_alert_id("outlier", "census", 1, event.request_id)
    assert alert.request_id == event.request_id
    assert alert.occurred_at == event.event_time
    assert (alert.score, alert.threshold) == (event.score, event.threshold)
    assert alert.health is None
    assert Alert.from_json(alert.to_json()) == alert


def test_alert_from_batch_summary():
    summary = EXAMPLES[BatchSummary]
    reason = Reason(check="auto_od", status="failed", value=37 / 40, expected=">= 0.99")
    alert = Alert.from_batch_summary(
        summary, [reason], datetime(2026, 12, 4, tzinfo=UTC)
    )
    assert alert.kind is AlertKind.UNHEALTHY_BATCH
    assert alert.alert_id == derive_alert_id(
        "unhealthy_batch", "census", 1, summary.batch_id
    )
    assert alert.health == summary.health
    assert alert.occurred_at == summary.window_end
    assert alert.request_id is None
    assert Alert.from_json(alert.to_json()) == alert


@pytest.mark.parametrize("name", ["request_id", "score", "threshold"])
def test_outlier_alert_requires_event_fields(name):
    document = {**_document(Alert), name: None}
    assert _field_of(Alert, document) == name


@pytest.mark.parametrize(("name", "value"), [("health", "red"), ("pass_share", 0.5)])
def test_outlier_alert_rejects_batch_fields(name, value):
    document = {**_document(Alert), name: value}
    assert _field_of(Alert, document) == name


def test_batch_alert_requires_health():
    document = {**_document(Alert), "kind": "unhealthy_batch", "request_id": None}
    document.update(score=None, threshold=None, pass_share=0.9)
    assert _field_of(Alert, document) == "health"


def test_dead_letter_from_original_keeps_bytes():
    letter = EXAMPLES[DeadLetter]
    assert letter.original.startswith(b'{"model": "census"')
    assert letter.original_size == len(letter.original)
    assert letter.original_truncated is False


def test_dead_letter_truncates_large_original():
    original = b"x" * (MAX_DEAD_LETTER_ORIGINAL + 10)
    letter = DeadLetter.from_original(
        original,
        reason_code="invalid_event",
        reason="too large",
        topic="oddwatch.predictions",
        partition=0,
        offset=1,
        received_at=datetime(2026, 12, 4, tzinfo=UTC),
    )
    assert letter.original_truncated is True
    assert letter.original_size == len(original)
    assert len(letter.original) == MAX_DEAD_LETTER_ORIGINAL
    assert DeadLetter.from_json(letter.to_json()) == letter


def test_dead_letter_size_must_match_original():
    document = {**_document(DeadLetter), "original_size": 3}
    assert _field_of(DeadLetter, document) == "original_base64"


def test_dead_letter_truncated_needs_missing_bytes():
    document = {**_document(DeadLetter), "original_truncated": True}
    assert _field_of(DeadLetter, document) == "original_truncated"


def test_prediction_from_json_defaults_to_now():
    raw = b'{"model": "m", "version": 1, "request_id": "r", "features": {}}'
    before = datetime.now(UTC)
    event = PredictionEvent.from_json(raw)
    assert before <= event.event_time <= datetime.now(UTC)


def test_prediction_naive_timestamp_read_as_utc():
    raw = (
        b'{"model": "m", "version": 1, "request_id": "r", "features": {},'
        b' "timestamp": "2026-12-04 15:00:00.5"}'
    )
    event = PredictionEvent.from_json(raw, datetime(2027, 1, 1, tzinfo=UTC))
    assert event.event_time == datetime(2026, 12, 4, 15, 0, 0, 500000, tzinfo=UTC)


def test_prediction_output_optional():
    raw = b'{"model": "m", "version": 1, "request_id": "r", "features": {}}'
    assert PredictionEvent.from_json(raw).prediction is None


def test_error_message_names_expected_and_got():
    document = {**_document(BatchSummary), "events": -1}
    with pytest.raises(InvalidEvent, match=r"field 'events': expected an integer >= 0"):
        BatchSummary.from_dict(document)


def test_public_names_sorted():
    assert schemas.__all__ == sorted(schemas.__all__)
    for name in schemas.__all__:
        assert hasattr(schemas, name), name
