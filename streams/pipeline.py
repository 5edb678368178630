"""Turn blocks of raw Kafka messages into rows, records and dead letters.

This is the scoring agent's work without Kafka or ClickHouse. It decodes and
validates each message and groups the events by model version, keeping their
order within a version. It runs the range checks and ``auto_od``, learns from
the inliers, assigns batches, and lays out what must be stored and published. The
caller writes :class:`BlockOutput` to ClickHouse and Kafka, then commits the
block's offsets.
"""

import logging
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import orjson
import pandas as pd

from detectors import ModelVersion
from detectors.checks import MISSING_VALUE as MISSING_CODE
from detectors.checks import OK as OK_CODE
from detectors.checks import BlockCheck
from schemas import (
    MAX_DEAD_LETTER_ORIGINAL,
    Alert,
    AlertKind,
    BatchHealth,
    ClosedBy,
    InvalidEvent,
    PredictionEvent,
    Reason,
    derive_alert_id,
    parse_prediction,
)
from schemas import BatchSummary as BatchRecord
from schemas import CheckCount as CheckRecord
from schemas.record import format_time
from streams.batching import Batcher, BatchSummary, Health
from streams.records import DeadLetter, RawMessage
from streams.registry import (
    ModelNotFound,
    ModelRegistry,
    ModelRetired,
    ModelUnavailable,
)

__all__ = ["BlockOutput", "Pipeline"]

log = logging.getLogger(__name__)

DRIFT_ALPHA = 0.01
"""Adjusted p-value below which a feature of a batch counts as drifted.

With 14 features and the Benjamini-Hochberg correction, 0.05 marked about
one batch in twenty drawn like the training data as drifted; 0.01 keeps
such false alarms near one in a hundred."""

DRIFT_HEALTH = Health.ORANGE
"""Best health a batch keeps when one of its features has drifted."""

UNHEALTHY = (Health.ORANGE, Health.RED)
"""Health levels that raise an ``unhealthy_batch`` alert."""

MIN_ALERT_EVENTS = 20
"""Minimum number of events for a batch to raise an ``unhealthy_batch`` alert.

In a smaller batch one expected outlier already moves the share passed by
more than the cut-offs allow (one outlier in 12 events is 92 %), so such a
batch gets its health level but raises no alert."""

_MAX_REASONS = 5


@dataclass
class BlockOutput:
    """Everything one block produces, ready to store and publish.

    ``events``, ``batches``, ``alerts``, ``metric_checks`` and ``dead_letters``
    are ClickHouse columns; ``scored``, ``alert_records``, ``batch_records``
    and ``dead_letter_records`` are Kafka messages as (key, value) pairs.

    ``events`` contains the rows of the ``events`` table, with each event's
    range checks as arrays of one element a feature (one NumPy array per event
    and column), which the ``feature_checks`` view expands. ``batches``
    contains the rows of ``batch_rows``: a batch summary with its check counts
    and drift tests as lists, fanned out to ``batches``, ``batch_checks`` and
    ``batch_drift``.
    """

    events: dict[str, list] = field(default_factory=lambda: _columns(EVENT_ROW_COLUMNS))
    batches: dict[str, list] = field(
        default_factory=lambda: _columns(BATCH_ROW_COLUMNS)
    )
    alerts: dict[str, list] = field(default_factory=lambda: _columns(ALERT_COLUMNS))
    metric_checks: dict[str, list] = field(
        default_factory=lambda: _columns(METRIC_COLUMNS)
    )
    dead_letters: list[DeadLetter] = field(default_factory=list)
    scored: list[tuple[bytes, bytes]] = field(default_factory=list)
    alert_records: list[tuple[bytes, bytes]] = field(default_factory=list)
    batch_records: list[tuple[bytes, bytes]] = field(default_factory=list)

    @property
    def event_count(self) -> int:
        return len(self.events["request_id"])

    def extend(self, other: "BlockOutput") -> None:
        """Append the rows and messages of ``other`` to this output."""
        for name in ("events", "batches", "alerts", "metric_checks"):
            columns, more = getattr(self, name), getattr(other, name)
            for column, values in more.items():
                columns[column].extend(values)
        for name in ("dead_letters", "scored", "alert_records", "batch_records"):
            getattr(self, name).extend(getattr(other, name))

    def dead_letter_columns(self) -> dict[str, list]:
        """Return the dead letters as ClickHouse columns."""
        letters = self.dead_letters
        messages = [letter.message for letter in letters]
        return {
            "received_at": [message.received_at for message in messages],
            "topic": [message.topic for message in messages],
            "partition": [message.partition for message in messages],
            "offset": [message.offset for message in messages],
            "reason_code": [letter.reason_code for letter in letters],
            "reason": [letter.reason for letter in letters],
            "field": [letter.field for letter in letters],
            "original": [
                message.value[:MAX_DEAD_LETTER_ORIGINAL].decode("utf-8", "replace")
                for message in messages
            ],
            "original_size": [len(message.value) for message in messages],
        }


EVENT_COLUMNS = (
    "model", "version", "request_id", "event_time", "received_at", "batch_id",
    "features", "extra_features", "prediction", "score", "threshold", "is_outlier",
    "failed_checks", "kafka_partition", "kafka_offset",
)  # fmt: skip
CHECK_ARRAY_COLUMNS = (
    "check_features", "check_statuses", "check_passed", "check_numbers",
    "check_texts",
)  # fmt: skip
"""Per event, one array each, element i for feature i; a NaN in
``check_numbers`` stands for a value that is not a finite number."""
EVENT_ROW_COLUMNS = (*EVENT_COLUMNS, *CHECK_ARRAY_COLUMNS)
BATCH_SUMMARY_COLUMNS = (
    "model", "version", "batch_id", "window_start", "window_end", "closed_by",
    "events", "outliers", "late_events", "pass_share", "health",
)  # fmt: skip
BATCH_COLUMNS = (*BATCH_SUMMARY_COLUMNS, "kafka_partition", "kafka_offset")
BATCH_CHECK_ARRAY_COLUMNS = (
    "check_features", "check_names", "check_checked", "check_passed",
)  # fmt: skip
DRIFT_ARRAY_COLUMNS = (
    "drift_features", "drift_methods", "drift_tested", "drift_values",
    "drift_missing", "drift_statistics", "drift_p_values",
    "drift_adjusted_p_values", "drift_drifted", "drift_reasons",
)  # fmt: skip
BATCH_ROW_COLUMNS = (*BATCH_COLUMNS, *BATCH_CHECK_ARRAY_COLUMNS, *DRIFT_ARRAY_COLUMNS)
ALERT_COLUMNS = (
    "alert_id", "kind", "model", "version", "created_at", "occurred_at", "batch_id",
    "request_id", "score", "threshold", "health", "pass_share", "reasons",
    "kafka_partition", "kafka_offset",
)  # fmt: skip
METRIC_COLUMNS = (
    "model", "version", "request_id", "event_time", "batch_id", "metric", "value",
    "threshold", "operator", "status", "error", "kafka_partition", "kafka_offset",
)  # fmt: skip


@dataclass
class PartitionBatches:
    """The batching state of one Kafka partition, saved in the journal.

    ``values`` keeps the features of the events of every open batch, which
    the drift tests need when the batch closes.
    """

    batcher: Batcher
    values: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def open_batch_ids(self) -> list[str]:
        return self.batcher.open_batch_ids()


class Pipeline:
    """Score blocks of messages with the registry's models and one batcher a partition.

    Each Kafka partition has its own :class:`Batcher`, so the open batches of
    a partition can be saved and restored with its offsets, and a partition
    that moves to another worker takes its batches along.

    Not thread-safe; the worker calls it from one thread at a time.
    """

    def __init__(
        self,
        registry: ModelRegistry,
        make_batcher: Callable[[int], Batcher] | Batcher,
        *,
        stored_request_ids: Callable[[str, int, list[str]], set[str]] | None = None,
    ) -> None:
        self.registry = registry
        self.stored_request_ids = stored_request_ids
        if isinstance(make_batcher, Batcher):
            # One batcher for every partition: fine for a single partition.
            shared = make_batcher
            self.make_batcher: Callable[[int], Batcher] = lambda _partition: shared
        else:
            self.make_batcher = make_batcher
        self.batchers: dict[tuple[str, int], PartitionBatches] = {}

    def batcher(self, topic: str, partition: int) -> PartitionBatches:
        """Return the batching state of a partition, creating it on first use."""
        key = (topic, partition)
        if key not in self.batchers:
            self.batchers[key] = PartitionBatches(self.make_batcher(partition))
        return self.batchers[key]

    def process(self, messages: list[RawMessage]) -> BlockOutput:
        """Validate, check and score ``messages``; learn from the inliers."""
        output = BlockOutput()
        self.registry.refresh()
        partitions: dict[tuple[str, int], list[RawMessage]] = defaultdict(list)
        for message in messages:
            partitions[(message.topic, message.partition)].append(message)
        for (topic, partition), members in partitions.items():
            self._process_partition(output, topic, partition, members)
        return output

    def close_idle(
        self,
        now: datetime,
        idle_seconds: float,
        last_offsets: dict[tuple[str, int], int],
    ) -> BlockOutput:
        """Close batches whose window ended ``idle_seconds`` before ``now``."""
        output = BlockOutput()
        for key, state in self.batchers.items():
            closed = state.batcher.close_idle(now, idle_seconds)
            self._add_batches(output, state, closed, key[1], last_offsets.get(key, 0))
        return output

    def close_all(self, last_offsets: dict[tuple[str, int], int]) -> BlockOutput:
        """Close every open batch, as on shutdown."""
        output = BlockOutput()
        for key, state in self.batchers.items():
            closed = state.batcher.close_all()
            self._add_batches(output, state, closed, key[1], last_offsets.get(key, 0))
        return output

    def _process_partition(
        self,
        output: BlockOutput,
        topic: str,
        partition: int,
        messages: list[RawMessage],
    ) -> None:
        groups: dict[tuple[str, int], list[tuple[PredictionEvent, RawMessage]]] = (
            defaultdict(list)
        )
        for message in messages:
            try:
                event = parse_prediction(message.value, message.received_at)
            except InvalidEvent as error:
                output.dead_letters.append(
                    DeadLetter(message, _reason_code(error), str(error), error.field)
                )
                continue
            problem = _time_problem(event.event_time, message.received_at)
            if problem:
                output.dead_letters.append(
                    DeadLetter(message, "invalid_event", problem, "timestamp")
                )
                continue
            groups[(event.model, event.version)].append((event, message))

        self._reject_duplicates(output, groups)
        state = self.batcher(topic, partition)
        last_offset = max(message.offset for message in messages)
        for (model, version), members in groups.items():
            if not members:
                continue
            try:
                model_version = self.registry.get(model, version)
            except (ModelNotFound, ModelRetired, ModelUnavailable) as error:
                for _, message in members:
                    output.dead_letters.append(
                        DeadLetter(message, error.reason_code, str(error), "version")
                    )
                continue
            members = _reject_oversized(output, model_version, members)
            if not members:
                continue
            closed, checks = self._score_group(output, model_version, state, members)
            self._add_batches(output, state, closed, partition, last_offset, checks)

    def _reject_duplicates(
        self,
        output: BlockOutput,
        groups: dict[tuple[str, int], list[tuple[PredictionEvent, RawMessage]]],
    ) -> None:
        """Send events whose request id was seen before to the dead-letter topic.

        A request id is unique per model version; an event that repeats one,
        in this block or among the stored events, is not counted twice.
        """
        for (model, version), members in groups.items():
            ids = [event.request_id for event, _ in members]
            stored = set()
            if self.stored_request_ids is not None:
                stored = self.stored_request_ids(model, version, ids)
            if not stored and len(set(ids)) == len(ids):
                continue
            seen: set[str] = set()
            kept = []
            for event, message in members:
                if event.request_id in stored or event.request_id in seen:
                    output.dead_letters.append(
                        DeadLetter(
                            message,
                            "duplicate_request_id",
                            f"request_id {event.request_id!r} of model {model!r} "
                            f"version {version} was processed before; send each "
                            "request once, or give a new request a new request_id",
                            "request_id",
                        )
                    )
                    continue
                seen.add(event.request_id)
                kept.append((event, message))
            groups[(model, version)] = kept

    def _score_group(
        self,
        output: BlockOutput,
        model_version: ModelVersion,
        state: PartitionBatches,
        members: list[tuple[PredictionEvent, RawMessage]],
    ) -> tuple[list[BatchSummary], dict[str, BlockCheck]]:
        """Check, score and lay out one model version's events of a block.

        Returns the batches the block closed, and the range checks of those
        closed batches whose events all came in this block, for their drift
        tests.
        """
        # Check and score the block; learning skips the outliers.
        records = [event.features for event, _ in members]
        checks = model_version.check_block(records)
        scores = model_version.score_block(checks, learn=True)
        metrics = {}
        if model_version.metrics:
            metrics = model_version.evaluate_metrics(records)
        threshold = float(model_version.threshold)
        outliers = scores > threshold
        features = model_version.profile.features
        codes = np.column_stack([checks.codes[name] for name in features])
        statuses = checks.statuses
        passed = pd.DataFrame(_passed(codes, model_version), columns=list(features))

        # Assign batches. A metric that raised for an event counts as None.
        metric_passed = {
            name: [
                None if error is not None else bool(ok)
                for ok, error in zip(result.passed, result.errors, strict=True)
            ]
            for name, result in metrics.items()
        }
        batch_ids, closed = state.batcher.assign(
            model_version.model,
            model_version.version,
            [event.event_time for event, _ in members],
            passed,
            outliers,
            checks=metric_passed,
        )
        rows_of: dict[str, list[int]] = {}
        for row, batch_id in enumerate(batch_ids):
            rows_of.setdefault(batch_id, []).append(row)
        for batch_id, rows in rows_of.items():
            state.values.setdefault(batch_id, []).extend(records[row] for row in rows)

        # Explain the outliers, then lay out rows and messages.
        group = _Group(model_version, members, statuses, passed, scores, outliers)
        group.codes = codes
        group.extra = checks.extra
        group.batch_ids = batch_ids
        group.metrics = metrics
        outlier_rows = [int(row) for row in np.flatnonzero(outliers)]
        if outlier_rows:
            explained = model_version.explain_block(checks, rows=outlier_rows, top=3)
            group.contributions = dict(zip(outlier_rows, explained, strict=True))
        _add_events(output, group)
        _add_feature_checks(output, group)
        _add_metric_checks(output, group)
        _add_scored_and_alerts(output, group)
        return closed, _closed_checks(checks, rows_of, closed, state)

    def _add_batches(
        self,
        output: BlockOutput,
        state: PartitionBatches,
        summaries: list[BatchSummary],
        partition: int,
        offset: int,
        checks: dict[str, BlockCheck] | None = None,
    ) -> None:
        """Test the closed batches for drift and lay out their rows and alerts.

        ``checks`` has the range checks of some of the batches, which saves
        checking their stored features again.
        """
        created = datetime.now(UTC)
        # -1 stands for "nothing stored yet"; the columns are unsigned.
        offset = max(offset, 0)
        for summary in summaries:
            records = state.values.pop(summary.batch_id, [])
            check = (checks or {}).get(summary.batch_id)
            drift = self._drift(summary, records if check is None else check)
            if any(item.drifted for item in drift):
                summary = replace(summary, health=_worse(summary.health, DRIFT_HEALTH))
            _add_drift(output, summary, drift, partition, offset)
            _add_batch(output, summary, created, partition, offset, drift)

    def _drift(self, summary: BatchSummary, records: list[dict] | BlockCheck) -> list:
        """Test the batch's features for drift against the training data.

        ``records`` are the batch's features, or their range check.
        """
        if not len(records):
            return []
        try:
            model_version = self.registry.get(summary.model, summary.version)
        except (ModelNotFound, ModelRetired, ModelUnavailable) as error:
            log.warning("no drift test for batch %s: %s", summary.batch_id, error)
            return []
        return model_version.drift_block(records, alpha=DRIFT_ALPHA)


@dataclass
class _Group:
    """The events of one model version within a block, with their results."""

    model_version: ModelVersion
    members: list[tuple[PredictionEvent, RawMessage]]
    statuses: pd.DataFrame
    passed: pd.DataFrame
    scores: np.ndarray
    outliers: np.ndarray
    codes: np.ndarray | None = None
    """The check codes behind ``statuses``, one int8 row per event."""
    extra: list[list[str]] = field(default_factory=list)
    batch_ids: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    contributions: dict[int, list] = field(default_factory=dict)


def _closed_checks(
    checks: BlockCheck,
    rows_of: dict[str, list[int]],
    closed: list[BatchSummary],
    state: PartitionBatches,
) -> dict[str, BlockCheck]:
    """Return the range checks of the closed batches that lie within this block.

    ``rows_of`` maps each batch id of the block to its rows. A batch that
    began in an earlier block is left out, because the block's checks lack
    its first events.
    """
    found = {}
    for summary in closed:
        rows = rows_of.get(summary.batch_id, [])
        if rows and len(rows) == len(state.values.get(summary.batch_id, ())):
            found[summary.batch_id] = checks.take(np.array(rows))
    return found


MAX_SCORED_BYTES = 1_000_000
"""Largest scored event the worker publishes.

Kafka brokers reject messages above about 1 MiB by default
(``message.max.bytes``). A scored event repeats the event's features and
lists the features the profile does not know, so an event under the input
limit can still make a scored event above this one."""


def _reject_oversized(
    output: BlockOutput,
    model_version: ModelVersion,
    members: list[tuple[PredictionEvent, RawMessage]],
) -> list[tuple[PredictionEvent, RawMessage]]:
    """Dead-letter the events whose scored event would be too large for Kafka.

    The size is estimated from the message, the names of its unknown features
    (listed once more in ``extra_features``) and the per-feature statuses.
    """
    known = set(model_version.profile.features)
    fixed = 4096 + 64 * len(known)
    accepted = []
    for event, message in members:
        unknown = []
        if len(event.features) > len(known):
            unknown = [name for name in event.features if name not in known]
        size = len(message.value) + fixed + sum(len(name) + 4 for name in unknown)
        if size <= MAX_SCORED_BYTES:
            accepted.append((event, message))
            continue
        output.dead_letters.append(
            DeadLetter(
                message,
                "too_large",
                f"the scored event would be about {size:,} bytes, above the "
                f"{MAX_SCORED_BYTES:,} a Kafka message may have: "
                f"{len(event.features):,} features, {len(unknown):,} unknown to "
                "the profile; send only the model's features, or shorter values",
                "features",
            )
        )
    return accepted


EARLIEST_EVENT_TIME = datetime(2000, 1, 1, tzinfo=UTC)
"""Events stamped before this are rejected as mistaken clocks or units."""

MAX_CLOCK_SKEW = timedelta(minutes=5)
"""How far ahead of its receipt an event's timestamp may be.

A timestamp far in the future would open a batch window that every later
event then falls into as a late event, so such events are rejected."""


def _time_problem(event_time: datetime, received_at: datetime) -> str:
    """Return why an event's time is not believable, or an empty string."""
    if event_time < EARLIEST_EVENT_TIME:
        return (
            f"field 'timestamp': expected a time after 2000-01-01, got "
            f"{event_time.isoformat()}; check the producer's clock and time unit"
        )
    if event_time > received_at + MAX_CLOCK_SKEW:
        return (
            f"field 'timestamp': expected a time at most 5 minutes after the event "
            f"was received ({received_at.isoformat()}), got {event_time.isoformat()}; "
            "check the producer's clock"
        )
    return ""


def _reason_code(error: InvalidEvent) -> str:
    """Name the kind of validation failure for counting dead letters."""
    if error.field:
        return "invalid_event"
    if error.got.startswith("invalid JSON"):
        return "invalid_json"
    if error.expected.startswith("at most"):
        return "too_large"
    return "not_an_object"


def _passed(codes: np.ndarray, model_version: ModelVersion) -> np.ndarray:
    """Mark the values that pass their range check, one column a feature.

    A value passes when it is ``ok``, or missing for a feature that was
    missing in training too.
    """
    profiles = model_version.profile.feature_profiles
    may_miss = np.array([feature.missing_share > 0 for feature in profiles], dtype=bool)
    return (codes == OK_CODE) | ((codes == MISSING_CODE) & may_miss)


def _add_events(output: BlockOutput, group: _Group) -> None:
    events = output.events
    count = len(group.members)
    records = [event for event, _ in group.members]
    messages = [message for _, message in group.members]
    failed = (~group.passed.to_numpy()).sum(axis=1)
    events["model"].extend([event.model for event in records])
    events["version"].extend([event.version for event in records])
    events["request_id"].extend([event.request_id for event in records])
    events["event_time"].extend([event.event_time for event in records])
    events["received_at"].extend([message.received_at for message in messages])
    events["batch_id"].extend(group.batch_ids)
    events["features"].extend([_json_text(event.features) for event in records])
    events["extra_features"].extend(group.extra)
    events["prediction"].extend([_json_text(event.prediction) for event in records])
    events["score"].extend(np.asarray(group.scores, dtype=np.float64).tolist())
    events["threshold"].extend([float(group.model_version.threshold)] * count)
    events["is_outlier"].extend(np.asarray(group.outliers, dtype=np.uint8).tolist())
    events["failed_checks"].extend(failed.tolist())
    events["kafka_partition"].extend([message.partition for message in messages])
    events["kafka_offset"].extend([message.offset for message in messages])


def _add_feature_checks(output: BlockOutput, group: _Group) -> None:
    """Add each event's range checks as arrays, one element a feature.

    The values are split column by column, so a feature whose values are all
    numbers or all text is converted by NumPy in one step.
    """
    events = output.events
    features = list(group.statuses.columns)
    count = len(group.members)
    records = [event.features for event, _ in group.members]
    numbers = np.full((count, len(features)), np.nan)
    texts = np.full((count, len(features)), None, dtype=object)
    for column, feature in enumerate(features):
        numbers[:, column], texts[:, column] = _split_values(
            [record.get(feature) for record in records]
        )
    names = np.array(features, dtype=object)
    events["check_features"].extend([names] * count)
    events["check_statuses"].extend(group.statuses.to_numpy(dtype=object))
    events["check_passed"].extend(group.passed.to_numpy(dtype=np.uint8))
    events["check_numbers"].extend(numbers)
    events["check_texts"].extend(texts)


def _add_metric_checks(output: BlockOutput, group: _Group) -> None:
    columns = output.metric_checks
    for name, result in group.metrics.items():
        for row, (event, message) in enumerate(group.members):
            error = result.errors[row]
            value = float(result.values[row])
            columns["model"].append(event.model)
            columns["version"].append(event.version)
            columns["request_id"].append(event.request_id)
            columns["event_time"].append(event.event_time)
            columns["batch_id"].append(group.batch_ids[row])
            columns["metric"].append(name)
            columns["value"].append(
                None if error is not None or value != value else value
            )
            columns["threshold"].append(float(result.threshold))
            columns["operator"].append(str(result.operator))
            columns["status"].append(
                "error"
                if error is not None
                else "passed"
                if result.passed[row]
                else "failed"
            )
            columns["error"].append(error or "")
            columns["kafka_partition"].append(message.partition)
            columns["kafka_offset"].append(message.offset)


def _metric_results(group: _Group, row: int) -> dict[str, dict]:
    results = {}
    for name, result in group.metrics.items():
        error = result.errors[row]
        value = float(result.values[row])
        results[name] = {
            "value": None if error is not None or value != value else value,
            "threshold": float(result.threshold),
            "operator": str(result.operator),
            "passed": bool(result.passed[row]) and error is None,
            "error": error,
        }
    return results


def _add_drift(
    output: BlockOutput,
    summary: BatchSummary,
    drift: list,
    partition: int,
    offset: int,
) -> None:
    """Add a batch's drift tests as the lists of its ``batch_rows`` row.

    Called once per closed batch, before :func:`_add_batch` adds the rest of
    the row; the partition and offset are those of that row.
    """
    columns = output.batches
    columns["drift_features"].append([item.feature for item in drift])
    columns["drift_methods"].append([str(item.method) for item in drift])
    columns["drift_tested"].append([int(item.tested) for item in drift])
    columns["drift_values"].append([item.values for item in drift])
    columns["drift_missing"].append([item.missing for item in drift])
    columns["drift_statistics"].append([item.statistic for item in drift])
    columns["drift_p_values"].append([item.p_value for item in drift])
    columns["drift_adjusted_p_values"].append([item.adjusted_p_value for item in drift])
    columns["drift_drifted"].append([int(item.drifted) for item in drift])
    columns["drift_reasons"].append([item.reason or "" for item in drift])


def _worse(first: Health, second: Health) -> Health:
    order = [Health.GREEN, Health.YELLOW, Health.ORANGE, Health.RED]
    return max(first, second, key=order.index)


def _add_scored_and_alerts(output: BlockOutput, group: _Group) -> None:
    model_version = group.model_version
    threshold = float(model_version.threshold)
    scores = np.asarray(group.scores, dtype=np.float64).tolist()
    outliers = np.asarray(group.outliers, dtype=bool).tolist()
    status_sets = _status_sets(group)
    passed_rows = group.passed.to_numpy()
    event_times = _time_texts([event.event_time for event, _ in group.members])
    received_times = _time_texts([message.received_at for _, message in group.members])
    created = datetime.now(UTC)
    for row, (event, message) in enumerate(group.members):
        statuses, failed = status_sets[row]
        metrics = _metric_results(group, row) if group.metrics else {}
        scored = {
            "model": event.model,
            "version": event.version,
            "request_id": event.request_id,
            "timestamp": event_times[row],
            "received_at": received_times[row],
            "batch_id": group.batch_ids[row],
            "features": event.features,
            "prediction": event.prediction,
            "statuses": statuses,
            "extra_features": group.extra[row],
            "failed_features": failed,
            "score": scores[row],
            "threshold": threshold,
            "is_outlier": outliers[row],
            "metrics": metrics,
        }
        output.scored.append((event.model.encode(), _dumps(scored)))
        if outliers[row]:
            alert = _outlier_alert(
                group, row, statuses, passed_rows[row], metrics, created
            )
            _add_alert(output, alert, message.partition, message.offset)


def _outlier_alert(
    group: _Group,
    row: int,
    statuses: dict[str, str],
    passed: np.ndarray,
    metrics: dict[str, dict],
    created: datetime,
) -> Alert:
    """Build the alert of an outlier, with the reasons its score is high.

    ``passed`` marks, per feature, whether the event's value passed its check.
    """
    model_version = group.model_version
    event = group.members[row][0]
    score = float(group.scores[row])
    threshold = float(model_version.threshold)
    failing = {
        feature: statuses[feature]
        for i, feature in enumerate(group.statuses.columns)
        if not passed[i]
    }
    reasons = _outlier_reasons(model_version, event, failing, score, threshold)
    reasons[-1:-1] = _contribution_reasons(group.contributions.get(row, []), failing)
    reasons[-1:-1] = [
        Reason(check=name, status="error" if result["error"] else "failed",
               value=result["value"],
               expected=f"{result['operator']} {result['threshold']:.6g}")
        for name, result in metrics.items()
        if not result["passed"]
    ]  # fmt: skip
    return Alert(
        alert_id=derive_alert_id(
            AlertKind.OUTLIER, event.model, event.version, event.request_id
        ),
        kind=AlertKind.OUTLIER,
        model=event.model,
        version=event.version,
        created_at=created,
        occurred_at=event.event_time,
        batch_id=group.batch_ids[row],
        request_id=event.request_id,
        score=score,
        threshold=threshold,
        reasons=reasons,
    )


def _status_sets(group: _Group) -> list[tuple[dict[str, str], list[str]]]:
    """Return each event's statuses by feature and its features not ``ok``.

    Events mostly share a few combinations of statuses, so each combination
    is built once and its dict and list are shared by the events that have
    it. Callers must not change them.
    """
    features = list(group.statuses.columns)
    codes = np.ascontiguousarray(group.codes, dtype=np.int8)
    width = codes.shape[1]
    packed = codes.tobytes()
    status_rows = group.statuses.to_numpy()
    built: dict[bytes, tuple[dict[str, str], list[str]]] = {}
    sets = []
    for row in range(len(codes)):
        key = packed[row * width : (row + 1) * width]
        found = built.get(key)
        if found is None:
            statuses = dict(zip(features, status_rows[row].tolist(), strict=True))
            failed = [name for name, status in statuses.items() if status != "ok"]
            found = built[key] = (statuses, failed)
        sets.append(found)
    return sets


_PER_MILLISECOND = {"ms": 1, "us": 1000, "ns": 1_000_000}


def _time_texts(moments: list[datetime]) -> list[str]:
    """Format aware times as :func:`schemas.record.format_time` does, at once.

    Naive times, which ``format_time`` reads as local time, and times before
    the year 1000 are formatted one by one.
    """
    if not moments or any(moment.tzinfo is None for moment in moments):
        return [format_time(moment) for moment in moments]
    # A reader may stamp a whole block with one receipt time.
    first = moments[0]
    if all(moment is first for moment in moments):
        return [format_time(first)] * len(moments)
    index = pd.DatetimeIndex(pd.to_datetime(moments, utc=True))
    if index.min().year < 1000:
        return [format_time(moment) for moment in moments]
    # Whole milliseconds, rounded down as format_time drops the microseconds.
    if index.unit == "s":
        values = index.asi8 * 1000
    else:
        values = np.floor_divide(index.asi8, _PER_MILLISECOND[index.unit])
    texts = np.datetime_as_string(values.astype("datetime64[ms]"), unit="ms")
    return [text + "Z" for text in texts.tolist()]


def _outlier_reasons(
    model_version: ModelVersion,
    event: PredictionEvent,
    statuses: dict[str, str],
    score: float,
    threshold: float,
) -> list[Reason]:
    """Explain an outlier: failed range checks first, then the score itself."""
    reasons = []
    for feature, status in statuses.items():
        if len(reasons) >= _MAX_REASONS:
            break
        reasons.append(
            Reason(
                check="range",
                feature=feature,
                status=status,
                value=_plain(event.features.get(feature)),
                expected=_expected(model_version, feature),
            )
        )
    reasons.append(
        Reason(
            check="auto_od",
            status="outlier",
            value=score,
            expected=f"score at most {threshold:.6g}",
        )
    )
    return reasons


def _contribution_reasons(contributions: list, failing: dict[str, str]) -> list[Reason]:
    """Name the features that raised the score most, beyond the failed checks."""
    reasons = []
    for item in contributions:
        if item.feature in failing or item.contribution <= 0:
            continue
        reasons.append(
            Reason(
                check="auto_od",
                feature=item.feature,
                status="contributes",
                value=_plain(item.value),
                expected=_training_text(item),
                contribution=round(float(item.share), 4),
            )
        )
    return reasons


def _training_text(item: Any) -> str:
    """Describe what training saw for a contributing feature, briefly."""
    if item.training_categories:
        top = ", ".join(
            f"{name!r} ({share:.0%})" for name, share in item.training_categories[:3]
        )
        return f"training most often {top}"
    if item.training_p1 is not None and item.training_p99 is not None:
        return (
            f"training p1..p99 {item.training_p1:.6g}..{item.training_p99:.6g}, "
            f"range {item.training_min:.6g}..{item.training_max:.6g}"
        )
    return "a typical training value"


def _expected(model_version: ModelVersion, feature: str) -> str:
    """Describe what training saw for ``feature``: its range or top categories."""
    profile = model_version.profile[feature]
    if profile.categories:
        top = sorted(profile.categories.items(), key=lambda item: -item[1])[:3]
        names = ", ".join(repr(name) for name, _ in top)
        more = len(profile.categories) - len(top)
        return f"one of {len(profile.categories)} training categories, e.g. {names}" + (
            f" and {more} more" if more > 0 else ""
        )
    if profile.min is not None and profile.max is not None:
        return f"[{profile.min:.6g}, {profile.max:.6g}]"
    return "a value seen in training"


def _add_batch(
    output: BlockOutput,
    summary: BatchSummary,
    created: datetime,
    partition: int,
    offset: int,
    drift: list,
) -> None:
    batches = output.batches
    for name in BATCH_SUMMARY_COLUMNS:
        value = getattr(summary, name)
        batches[name].append(str(value) if name in ("closed_by", "health") else value)
    batches["kafka_partition"].append(partition)
    batches["kafka_offset"].append(offset)
    batches["check_features"].append([check.feature for check in summary.checks])
    batches["check_names"].append([check.check for check in summary.checks])
    batches["check_checked"].append([check.checked for check in summary.checks])
    batches["check_passed"].append([check.passed for check in summary.checks])
    record = BatchRecord(
        model=summary.model,
        version=summary.version,
        batch_id=summary.batch_id,
        window_start=summary.window_start,
        window_end=summary.window_end,
        closed_by=ClosedBy(str(summary.closed_by)),
        events=summary.events,
        outliers=summary.outliers,
        late_events=summary.late_events,
        checks=[
            CheckRecord(
                feature=c.feature, check=c.check, checked=c.checked, passed=c.passed
            )
            for c in summary.checks
        ],
        pass_share=summary.pass_share,
        health=BatchHealth(str(summary.health)),
    )
    output.batch_records.append((summary.model.encode(), record.to_json()))
    if summary.health not in UNHEALTHY or summary.events < MIN_ALERT_EVENTS:
        return
    worst = sorted(
        summary.checks, key=lambda c: c.passed / c.checked if c.checked else 1
    )
    reasons = [
        Reason(
            check=check.check,
            feature=check.feature,
            status="failed",
            value=round(check.passed / check.checked, 6),
            expected=f"at least {0.85:.0%} passed for a healthy batch",
        )
        for check in worst[:_MAX_REASONS]
        if check.checked and check.passed < check.checked
    ]
    reasons.extend(
        Reason(
            check="drift",
            feature=item.feature,
            status="drifted",
            value=item.adjusted_p_value,
            expected=f"adjusted p-value of the {item.method} test >= {DRIFT_ALPHA}",
        )
        for item in drift
        if item.drifted
    )
    alert = Alert.from_batch_summary(record, reasons, created)
    _add_alert(output, alert, partition, offset)


def _add_alert(output: BlockOutput, alert: Alert, partition: int, offset: int) -> None:
    alerts = output.alerts
    alerts["alert_id"].append(alert.alert_id)
    alerts["kind"].append(str(alert.kind))
    alerts["model"].append(alert.model)
    alerts["version"].append(alert.version)
    alerts["created_at"].append(alert.created_at)
    alerts["occurred_at"].append(alert.occurred_at)
    alerts["batch_id"].append(alert.batch_id)
    alerts["request_id"].append(alert.request_id or "")
    alerts["score"].append(alert.score)
    alerts["threshold"].append(alert.threshold)
    alerts["health"].append(str(alert.health) if alert.health else "")
    alerts["pass_share"].append(alert.pass_share)
    alerts["reasons"].append(
        orjson.dumps(
            [orjson.loads(reason.to_json()) for reason in alert.reasons]
        ).decode()
    )
    alerts["kafka_partition"].append(partition)
    alerts["kafka_offset"].append(offset)
    output.alert_records.append((alert.model.encode(), alert.to_json()))


def _split_value(value: Any) -> tuple[float | None, str | None]:
    """Return the value as (number, None), (None, text) or (None, None)."""
    if value is None:
        return None, None
    if isinstance(value, bool):
        return None, str(value).lower()
    if isinstance(value, int | float):
        try:
            number = float(value)
        except OverflowError:
            return None, str(value)
        return (number, None) if math.isfinite(number) else (None, str(value))
    if isinstance(value, str):
        return None, value
    return None, _json_text(value)


_NUMBER_TYPES = frozenset({int, float, type(None)})
_TEXT_TYPES = frozenset({str, type(None)})


def _split_values(values: list[Any]) -> tuple[np.ndarray, list[str | None]]:
    """Split one feature's values as :func:`_split_value` does, for a column.

    Return the numbers, with NaN where a value is not a finite number, and the
    texts. Values of a single kind (numbers or text, with None) take a NumPy
    path; anything else goes value by value.
    """
    kinds = set(map(type, values))
    if kinds <= _NUMBER_TYPES:
        try:
            numbers = np.array(values, dtype=np.float64)
        except OverflowError:
            pass
        else:
            # None becomes NaN; an infinite number needs its text instead.
            missing = np.flatnonzero(~np.isfinite(numbers))
            if all(values[row] is None for row in missing):
                return numbers, [None] * len(values)
    elif kinds <= _TEXT_TYPES:
        return np.full(len(values), np.nan), values
    pairs = [_split_value(value) for value in values]
    numbers = np.array([np.nan if number is None else number for number, _ in pairs])
    return numbers, [text for _, text in pairs]


def _plain(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return value


def _dumps(document: Any) -> bytes:
    return orjson.dumps(document, option=orjson.OPT_SERIALIZE_NUMPY)


def _json_text(value: Any) -> str:
    try:
        return _dumps(value).decode()
    except TypeError:
        return orjson.dumps(str(value)).decode()


def _columns(names: tuple[str, ...]) -> dict[str, list]:
    return {name: [] for name in names}
