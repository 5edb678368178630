"""Definitions of every record oddwatch reads or writes on Kafka.

Each record is a frozen dataclass with ``to_json`` and ``from_json``, which
validate and raise :class:`InvalidEvent` naming the field at fault. The JSON
Schema of each record ships in ``schemas/json``; ``python -m schemas``
regenerates the files.
"""

from schemas.alert import Alert, AlertKind, Reason, derive_alert_id
from schemas.batch import BatchHealth, BatchSummary, CheckCount, ClosedBy
from schemas.dead_letter import MAX_DEAD_LETTER_ORIGINAL, DeadLetter
from schemas.errors import InvalidEvent
from schemas.metrics import MetricConfig, MetricResult, Operator
from schemas.prediction import MAX_EVENT_BYTES, PredictionEvent, parse_prediction
from schemas.record import Record, format_time
from schemas.registration import ModelRegistration, ModelState
from schemas.scored import FeatureStatus, ScoredEvent

__all__ = [
    "Alert",
    "AlertKind",
    "BatchHealth",
    "BatchSummary",
    "CheckCount",
    "ClosedBy",
    "DeadLetter",
    "FeatureStatus",
    "InvalidEvent",
    "MAX_DEAD_LETTER_ORIGINAL",
    "MAX_EVENT_BYTES",
    "MetricConfig",
    "MetricResult",
    "ModelRegistration",
    "ModelState",
    "Operator",
    "PredictionEvent",
    "Reason",
    "Record",
    "ScoredEvent",
    "derive_alert_id",
    "format_time",
    "parse_prediction",
]
