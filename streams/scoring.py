"""Turn a block of raw Kafka messages into stored rows and dead letters.

This is the work of the scoring agent without Kafka: decode and validate each
message, group the events by model version, run the range checks and the
outlier detector on each group, and lay the results out as ClickHouse columns.
"""

import logging
import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson

from detectors import ModelVersion, Status
from schemas.errors import InvalidEvent
from schemas.prediction import PredictionEvent, parse_prediction
from streams.records import DeadLetter, RawMessage
from streams.registry import ModelNotFound, ModelRegistry

__all__ = ["ScoredBlock", "score_block"]

log = logging.getLogger(__name__)

EVENT_COLUMNS = (
    "model",
    "version",
    "request_id",
    "event_time",
    "received_at",
    "features",
    "prediction",
    "score",
    "threshold",
    "is_outlier",
    "failed_checks",
    "kafka_partition",
    "kafka_offset",
)
CHECK_COLUMNS = (
    "model",
    "version",
    "request_id",
    "event_time",
    "feature",
    "status",
    "value_number",
    "value_text",
)


@dataclass
class ScoredBlock:
    """The rows one block of messages produces, column by column."""

    events: dict[str, list] = field(
        default_factory=lambda: {name: [] for name in EVENT_COLUMNS}
    )
    feature_checks: dict[str, list] = field(
        default_factory=lambda: {name: [] for name in CHECK_COLUMNS}
    )
    dead_letters: list[DeadLetter] = field(default_factory=list)

    @property
    def event_count(self) -> int:
        return len(self.events["request_id"])


def score_block(messages: list[RawMessage], registry: ModelRegistry) -> ScoredBlock:
    """Validate, check and score ``messages`` in order; learn from the inliers."""
    block = ScoredBlock()
    groups: dict[tuple[str, int], list[tuple[PredictionEvent, RawMessage]]] = (
        defaultdict(list)
    )
    for message in messages:
        try:
            event = parse_prediction(message.value, message.received_at)
        except InvalidEvent as error:
            code = "invalid_json" if error.field == "" else "invalid_event"
            block.dead_letters.append(
                DeadLetter(message, code, str(error), error.field)
            )
            continue
        groups[(event.model, event.version)].append((event, message))

    for (model, version), members in groups.items():
        try:
            model_version = registry.get(model, version)
        except ModelNotFound as error:
            for _, message in members:
                block.dead_letters.append(
                    DeadLetter(message, "model_not_registered", str(error), "version")
                )
            continue
        _score_group(block, model_version, members)
    return block


def _score_group(
    block: ScoredBlock,
    model_version: ModelVersion,
    members: list[tuple[PredictionEvent, RawMessage]],
) -> None:
    records = [event.features for event, _ in members]
    checks = model_version.check_block(records)
    scores = model_version.score_block(records, learn=True)
    threshold = float(model_version.threshold)
    statuses = checks.statuses
    features = list(statuses.columns)
    failed = (statuses.to_numpy() != Status.OK.value).sum(axis=1)

    events = block.events
    for row, (event, message) in enumerate(members):
        score = float(scores[row])
        events["model"].append(event.model)
        events["version"].append(event.version)
        events["request_id"].append(event.request_id)
        events["event_time"].append(event.event_time)
        events["received_at"].append(message.received_at)
        events["features"].append(_json_text(event.features))
        events["prediction"].append(_json_text(event.prediction))
        events["score"].append(score)
        events["threshold"].append(threshold)
        events["is_outlier"].append(int(score > threshold))
        events["failed_checks"].append(int(failed[row]))
        events["kafka_partition"].append(message.partition)
        events["kafka_offset"].append(message.offset)

    checks_out = block.feature_checks
    status_rows = statuses.to_numpy()
    for row, (event, _) in enumerate(members):
        for column, feature in enumerate(features):
            number, text = _split_value(event.features.get(feature))
            checks_out["model"].append(event.model)
            checks_out["version"].append(event.version)
            checks_out["request_id"].append(event.request_id)
            checks_out["event_time"].append(event.event_time)
            checks_out["feature"].append(feature)
            checks_out["status"].append(str(status_rows[row, column]))
            checks_out["value_number"].append(number)
            checks_out["value_text"].append(text)


def _split_value(value: Any) -> tuple[float | None, str | None]:
    """Return the value as (number, None), (None, text) or (None, None)."""
    if value is None or isinstance(value, bool):
        return None, None if value is None else str(value).lower()
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return None, str(value)
        return (number, None) if math.isfinite(number) else (None, str(value))
    if isinstance(value, str):
        return None, value
    return None, _json_text(value)


def _json_text(value: Any) -> str:
    try:
        return orjson.dumps(value, option=orjson.OPT_SERIALIZE_NUMPY).decode()
    except TypeError:
        return orjson.dumps(str(value)).decode()
