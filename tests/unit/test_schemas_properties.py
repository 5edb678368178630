"""Property tests: every valid record survives JSON and matches its schema."""

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from schemas import (
    Alert,
    AlertKind,
    BatchHealth,
    BatchSummary,
    CheckCount,
    ClosedBy,
    DeadLetter,
    FeatureStatus,
    MetricConfig,
    MetricResult,
    ModelRegistration,
    ModelState,
    Operator,
    PredictionEvent,
    Reason,
    ScoredEvent,
)
from schemas.export import RECORDS, SCHEMA_DIR
from schemas.metrics import BUILT_IN_CHECKS

names = st.text(min_size=1, max_size=12).filter(str.strip)
versions = st.integers(min_value=1, max_value=2**32 - 1)
counts = st.integers(min_value=0, max_value=2**40)
finite = st.floats(allow_nan=False, allow_infinity=False)
offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Times keep whole milliseconds, the precision of the JSON form.
times = st.builds(
    lambda moment, zone: moment.replace(tzinfo=UTC).astimezone(zone),
    st.datetimes(min_value=datetime(1970, 1, 1), max_value=datetime(2200, 1, 1)).map(
        lambda moment: moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    ),
    offsets,
)
json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | finite
    | st.text(max_size=8),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(st.text(max_size=5), children, max_size=3)
    ),
    max_leaves=8,
)
features = st.dictionaries(st.text(max_size=8), json_values, max_size=6)
statuses = st.dictionaries(names, st.sampled_from(FeatureStatus), max_size=6)

predictions = st.builds(
    PredictionEvent,
    model=names,
    version=versions,
    request_id=names,
    event_time=times,
    features=features,
    prediction=json_values,
)


@st.composite
def metric_results(draw) -> MetricResult:
    error = draw(st.none() | st.text(max_size=20))
    return MetricResult(
        value=None if error is not None else draw(finite),
        threshold=draw(finite),
        operator=draw(st.sampled_from(Operator)),
        passed=False if error is not None else draw(st.booleans()),
        error=error,
    )


@st.composite
def scored_events(draw) -> ScoredEvent:
    return ScoredEvent.from_prediction(
        draw(predictions),
        received_at=draw(times),
        batch_id=draw(names),
        statuses=draw(statuses),
        score=draw(finite),
        threshold=draw(finite),
        is_outlier=draw(st.booleans()),
        metrics=draw(st.dictionaries(names, metric_results(), max_size=3)),
    )


@st.composite
def check_counts(draw) -> CheckCount:
    checked = draw(st.integers(min_value=0, max_value=10_000))
    return CheckCount(
        feature=draw(st.just("") | names),
        check=draw(st.sampled_from(BUILT_IN_CHECKS) | names),
        checked=checked,
        passed=draw(st.integers(min_value=0, max_value=checked)),
    )


@st.composite
def batch_summaries(draw) -> BatchSummary:
    events = draw(st.integers(min_value=0, max_value=10_000))
    checks = draw(st.lists(check_counts(), max_size=5))
    checked = sum(check.checked for check in checks)
    start = draw(times)
    return BatchSummary(
        model=draw(names),
        version=draw(versions),
        batch_id=draw(names),
        window_start=start,
        window_end=start + timedelta(milliseconds=draw(st.integers(0, 86_400_000))),
        closed_by=draw(st.sampled_from(ClosedBy)),
        events=events,
        outliers=draw(st.integers(min_value=0, max_value=events)),
        late_events=draw(st.integers(min_value=0, max_value=events)),
        checks=checks,
        pass_share=sum(check.passed for check in checks) / checked if checked else 1.0,
        health=draw(st.sampled_from(BatchHealth)),
    )


reasons = st.builds(
    Reason,
    check=names,
    feature=st.just("") | names,
    status=names,
    value=json_values,
    expected=st.none() | st.text(max_size=20),
    contribution=st.none() | finite,
)


@st.composite
def alerts(draw) -> Alert:
    found = draw(st.lists(reasons, max_size=3))
    created_at = draw(times)
    if draw(st.sampled_from(AlertKind)) is AlertKind.OUTLIER:
        return Alert.from_scored_event(draw(scored_events()), found, created_at)
    return Alert.from_batch_summary(draw(batch_summaries()), found, created_at)


@st.composite
def metric_configs(draw) -> MetricConfig:
    uses_feature = draw(st.booleans())
    return MetricConfig(
        name=draw(names.filter(lambda name: name not in BUILT_IN_CHECKS)),
        feature=draw(names) if uses_feature else None,
        scorer=None
        if uses_feature
        else draw(
            st.from_regex(
                r"[a-z_][a-z0-9_.]{0,8}:[A-Za-z_][A-Za-z0-9_]{0,8}", fullmatch=True
            )
        ),
        operator=draw(st.sampled_from(Operator)),
        threshold=draw(finite),
    )


registrations = st.builds(
    ModelRegistration,
    model=names,
    version=versions,
    state=st.sampled_from(ModelState),
    artifact=names,
    checksum=st.text(alphabet="0123456789abcdef", min_size=64, max_size=64),
    oddwatch_version=names,
    created_at=times,
    features=st.lists(names, unique=True, max_size=6),
    threshold=finite,
    target_alert_rate=st.floats(
        min_value=0, max_value=1, exclude_min=True, exclude_max=True
    ),
    metrics=st.lists(
        metric_configs(), max_size=3, unique_by=lambda metric: metric.name
    ),
)

dead_letters = st.builds(
    DeadLetter.from_original,
    st.binary(max_size=64),
    reason_code=st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True),
    reason=names,
    field=st.just("") | st.text(max_size=10),
    topic=names,
    partition=st.integers(min_value=0, max_value=2**31 - 1),
    offset=counts,
    received_at=times,
)

STRATEGIES = {
    "prediction_event": predictions,
    "scored_event": scored_events(),
    "alert": alerts(),
    "batch_summary": batch_summaries(),
    "model_registration": registrations,
    "dead_letter": dead_letters,
}


@pytest.mark.parametrize("stem", list(RECORDS))
def test_valid_record_survives_round_trip(stem):
    record_type = RECORDS[stem]

    @settings(max_examples=150, deadline=None)
    @given(STRATEGIES[stem])
    def check(record):
        assert isinstance(record, record_type)
        assert record_type.from_json(record.to_json()) == record

    check()


@pytest.mark.parametrize("stem", list(RECORDS))
def test_valid_record_matches_shipped_schema(stem):
    jsonschema = pytest.importorskip(
        "jsonschema", reason="jsonschema is needed to apply the schemas"
    )
    schema = orjson.loads((SCHEMA_DIR / f"{stem}.schema.json").read_bytes())
    validator = jsonschema.Draft202012Validator(schema)

    @settings(max_examples=100, deadline=None)
    @given(STRATEGIES[stem])
    def check(record):
        document = orjson.loads(record.to_json())
        errors = [error.message for error in validator.iter_errors(document)]
        assert errors == []

    check()
