"""One valid example of every record, for the schema files and the tests.

The examples tell one story: census version 1 scores a request whose age is
above the training range, which makes it an outlier, and the batch containing
it turns orange.
"""

from datetime import UTC, datetime

from schemas.alert import Alert, Reason
from schemas.batch import BatchHealth, BatchSummary, CheckCount, ClosedBy
from schemas.dead_letter import DeadLetter
from schemas.metrics import MetricConfig, MetricResult, Operator
from schemas.prediction import PredictionEvent
from schemas.record import Record
from schemas.registration import ModelRegistration, ModelState
from schemas.scored import FeatureStatus, ScoredEvent

__all__ = ["EXAMPLES"]

_BATCH_ID = "census/1/2026-12-04T15:00:00Z/000000"

_PREDICTION = PredictionEvent(
    model="census",
    version=1,
    request_id="9f2c41d7",
    event_time=datetime(2026, 12, 4, 15, 0, 0, 123000, tzinfo=UTC),
    features={
        "age": 97,
        "workclass": "State-gov",
        "hours_per_week": 40,
        "region": "north",
    },
    prediction={"income": "<=50K", "score": 0.83},
)

_SCORED = ScoredEvent.from_prediction(
    _PREDICTION,
    received_at=datetime(2026, 12, 4, 15, 0, 0, 250000, tzinfo=UTC),
    batch_id=_BATCH_ID,
    statuses={
        "age": FeatureStatus.ABOVE_MAX,
        "hours_per_week": FeatureStatus.OK,
        "workclass": FeatureStatus.OK,
    },
    score=0.91,
    threshold=0.74,
    is_outlier=True,
    metrics={
        "hours_cap": MetricResult(
            value=40.0, threshold=80.0, operator=Operator.LE, passed=True
        )
    },
)

_BATCH = BatchSummary(
    model="census",
    version=1,
    batch_id=_BATCH_ID,
    window_start=datetime(2026, 12, 4, 15, 0, tzinfo=UTC),
    window_end=datetime(2026, 12, 4, 15, 1, tzinfo=UTC),
    closed_by=ClosedBy.TIME,
    events=40,
    outliers=3,
    late_events=1,
    checks=[
        CheckCount(feature="", check="auto_od", checked=40, passed=37),
        CheckCount(feature="", check="hours_cap", checked=40, passed=40),
        CheckCount(feature="age", check="range", checked=40, passed=38),
        CheckCount(feature="hours_per_week", check="range", checked=40, passed=40),
        CheckCount(feature="workclass", check="range", checked=40, passed=40),
    ],
    pass_share=195 / 200,
    health=BatchHealth.ORANGE,
)

_AGE_REASON = Reason(
    check="range",
    feature="age",
    status=FeatureStatus.ABOVE_MAX,
    value=97,
    expected="[17, 90]",
    contribution=0.62,
)

EXAMPLES: dict[type[Record], Record] = {
    PredictionEvent: _PREDICTION,
    ScoredEvent: _SCORED,
    Alert: Alert.from_scored_event(
        _SCORED,
        [_AGE_REASON],
        created_at=datetime(2026, 12, 4, 15, 0, 0, 300000, tzinfo=UTC),
    ),
    BatchSummary: _BATCH,
    ModelRegistration: ModelRegistration(
        model="census",
        version=1,
        state=ModelState.ACTIVE,
        artifact="/var/lib/oddwatch/models/census/1",
        checksum="5d41402abc4b2a76b9719d911017c592" * 2,
        oddwatch_version="0.1.0",
        created_at=datetime(2026, 12, 1, 9, 30, tzinfo=UTC),
        features=["age", "workclass", "hours_per_week"],
        threshold=0.74,
        target_alert_rate=0.01,
        metrics=[
            MetricConfig(
                name="hours_cap",
                feature="hours_per_week",
                operator=Operator.LE,
                threshold=80.0,
            )
        ],
    ),
    DeadLetter: DeadLetter.from_original(
        b'{"model": "census", "version": "1", "request_id": "a7", "features": {}}',
        reason_code="invalid_event",
        reason="field 'version': expected an integer >= 1, got string '1'",
        field="version",
        topic="oddwatch.predictions",
        partition=3,
        offset=18220,
        received_at=datetime(2026, 12, 4, 15, 0, 1, 5000, tzinfo=UTC),
    ),
}
"""Record class to its example."""
