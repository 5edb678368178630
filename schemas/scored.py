"""The scored event: a prediction event with its checks, score and verdict."""

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Self

from schemas.errors import InvalidEvent
from schemas.metrics import MetricResult
from schemas.prediction import PredictionEvent
from schemas.record import NAME, VERSION, Constraints, Record, schema_field

__all__ = ["FeatureStatus", "ScoredEvent"]


class FeatureStatus(enum.StrEnum):
    """Outcome of the range check of one feature value against the profile."""

    OK = "ok"
    BELOW_MIN = "below_min"
    ABOVE_MAX = "above_max"
    UNSEEN_CATEGORY = "unseen_category"
    MISSING = "missing"
    WRONG_TYPE = "wrong_type"


@dataclass(frozen=True, slots=True, kw_only=True)
class ScoredEvent(Record):
    """A prediction event after the range checks and the outlier detector.

    Published to ``scored`` keyed by model name. ``failed_features`` lists
    exactly the features of ``statuses`` whose status is not ``ok``, and
    ``extra_features`` shares no name with ``statuses``; decoding and
    encoding enforce both.

    Attributes
    ----------
    model : str
        Name of the model that served the request.
    version : int
        Version of the model, from 1.
    request_id : str
        Identifier of the request, unique per model version.
    event_time : datetime
        When the model served the request; the JSON name is ``timestamp``,
        as in the prediction event. It is the event's timestamp, or the time
        oddwatch received an event that had none.
    received_at : datetime
        When oddwatch received the prediction event.
    batch_id : str
        Batch of the model version that counts this event.
    features : dict
        Feature name to value, as received.
    prediction : Any
        The model's output as received, null when the event had none.
    statuses : dict
        Feature name to the status of its range check, for every feature of
        the training profile.
    extra_features : list of str
        Features of the event that the training profile does not have. They
        are not checked.
    score : float
        Outlier score of the ``auto_od`` detector; higher is more anomalous.
    threshold : float
        Score above which the detector calls an event an outlier.
    is_outlier : bool
        The detector's verdict on this event.
    failed_features : list of str
        Features whose status is not ``ok``.
    metrics : dict
        Custom metric name to its result on this event; empty when the model
        version has no custom metrics.
    """

    model: str = schema_field(NAME)
    version: int = schema_field(VERSION)
    request_id: str = schema_field(NAME)
    event_time: datetime = schema_field(wire_name="timestamp")
    received_at: datetime
    batch_id: str = schema_field(NAME)
    features: dict[str, Any]
    prediction: Any
    statuses: dict[str, FeatureStatus]
    extra_features: list[str] = schema_field(Constraints(unique_items=True))
    score: float
    threshold: float
    is_outlier: bool
    failed_features: list[str] = schema_field(
        Constraints(unique_items=True), items=NAME
    )
    metrics: dict[str, MetricResult] = field(default_factory=dict)

    @classmethod
    def from_prediction(
        cls,
        event: PredictionEvent,
        *,
        received_at: datetime,
        batch_id: str,
        statuses: Mapping[str, str],
        score: float,
        threshold: float,
        is_outlier: bool,
        metrics: Mapping[str, MetricResult] | None = None,
    ) -> Self:
        """Build the scored event of ``event`` from the results of its checks.

        ``extra_features`` and ``failed_features`` are derived from the event's
        features and ``statuses``; both keep the order of their source.
        """
        return cls(
            model=event.model,
            version=event.version,
            request_id=event.request_id,
            event_time=event.event_time,
            received_at=received_at,
            batch_id=batch_id,
            features=event.features,
            prediction=event.prediction,
            statuses=dict(statuses),
            extra_features=[name for name in event.features if name not in statuses],
            score=score,
            threshold=threshold,
            is_outlier=is_outlier,
            failed_features=[
                name for name, status in statuses.items() if status != FeatureStatus.OK
            ],
            metrics=dict(metrics or {}),
        )

    def _check(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        failed = {name for name, status in self.statuses.items() if status != "ok"}
        if set(self.failed_features) != failed:
            raise InvalidEvent(
                f"{prefix}failed_features",
                f"the features whose status is not ok, {sorted(failed)}",
                repr(self.failed_features),
            )
        checked_and_extra = sorted(set(self.extra_features) & self.statuses.keys())
        if checked_and_extra:
            raise InvalidEvent(
                f"{prefix}extra_features",
                "only features without a status",
                f"{checked_and_extra} with a status",
            )
