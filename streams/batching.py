"""Group the scored events of each model version into batches and summarise them.

This module is pure: it reads no topic and writes no table. The scoring agent
passes it each scored block of one model version, stores the ``batch_id`` it
returns with every event, and publishes the summaries of the batches it closes.

Batches
-------
A batch contains events of one model version from one tumbling window of event
time. Windows are ``window_seconds`` long and start at whole multiples of that
length since 1970-01-01T00:00:00Z. Event times are taken in UTC (a naive time
is read as UTC) and truncated to whole milliseconds, as ClickHouse stores them
in a ``DateTime64(3)`` column. Each model version has at most one open batch,
which closes when

- an event of a later window arrives (``closed_by="time"``),
- it contains ``batch_size`` events (``closed_by="size"``),
- its window ended at least ``idle_seconds`` before the ``now`` given to
  :meth:`Batcher.close_idle` (``closed_by="time"``), or
- :meth:`Batcher.close_all` is called (``closed_by="shutdown"``).

The next event of a model version whose batch is closed opens a new batch in
the current window with the next sequence number. The batch id is
``{model}/{version}/{window start}/{sequence}``, for example
``census/1/2026-12-04T15:00:00Z/000003``. The window start is ISO 8601 in UTC,
with milliseconds only when the window length is not whole seconds. The
sequence counts the batches of that window from 0, in six digits or more. Ids
depend only on the batcher's settings and state and on the order of the
events, so replaying the same events in the same order from the same state
gives the same ids, however the events are cut into blocks.

Late events
-----------
An event is late when its time is before the start of its model version's
current window, which is the latest window that model version has seen. A late
event is never dropped and never reopens an old window: it goes into the open
batch of the current window (a new one when none is open) and is counted in
``late_events``. So within a batch, the late events are exactly those with
``event_time < window_start``.

Checks
------
Every summary counts, per check, how many values were checked and passed:

- ``range``, one per feature: every status value is checked, including
  ``missing``, and only ``ok`` passes. The caller passes the status ``ok``
  for a missing value of a feature that was missing in training too, so
  missing values at the training rate do not make batches unhealthy. The
  ``passed`` column of ``feature_checks`` stores that outcome. The range
  checks give a status for every feature of every event, so ``checked``
  equals ``events`` for every feature as long as the features of a model
  version do not change.
- ``auto_od``, with an empty feature name: every event is checked and passes
  when it is not an outlier.
- custom metrics, with an empty feature name and the metric's name as the
  check: every event is checked, ``True`` passes, and ``False`` fails. A metric
  that could not be evaluated for an event is given as ``None`` and counts as
  checked but not passed, so a broken metric lowers the health instead of
  going unnoticed.

``checks`` is sorted by ``(feature, check)``. ``pass_share`` is passed / checked
summed over all checks. ``health`` comes from the share of the worst single
check, which is never above ``pass_share``, so one failing feature shows even
among many healthy ones. The default cut-offs are green ≥ 0.97, yellow ≥ 0.93,
orange ≥ 0.85 and red below (see :class:`HealthCutoffs`).

The same numbers in SQL
-----------------------
Summaries are defined from per-event rows only, so this ClickHouse query over
the stored rows returns the same values for every batch, except ``closed_by``,
which records why the stream closed the batch. It expects a ``batch_id``
column in ``events``, ``feature_checks`` and ``metric_checks``, and
``metric_checks`` to hold one row per event and custom metric, with ``status``
``passed``, ``failed`` or ``error``. Replace ``60000`` with the window length in
milliseconds and the cut-offs with your own. The worker's health also drops
to orange for a batch with a drifted feature (``batch_drift``), which this
query leaves out; ``deploy/clickhouse/queries/batch_summary_check.sql`` has
it::

    WITH
        checks AS (
            SELECT batch_id, feature, 'range' AS check_name,
                   count() AS checked, sum(passed) AS passed
            FROM feature_checks FINAL
            GROUP BY batch_id, feature
            UNION ALL
            SELECT batch_id, '' AS feature, 'auto_od' AS check_name,
                   count() AS checked, countIf(is_outlier = 0) AS passed
            FROM events FINAL
            GROUP BY batch_id
            UNION ALL
            SELECT batch_id, '' AS feature, metric AS check_name,
                   count() AS checked, countIf(status = 'passed') AS passed
            FROM metric_checks FINAL
            GROUP BY batch_id, metric
        ),
        shares AS (
            SELECT batch_id,
                   arraySort(groupArray((feature, check_name, checked, passed)))
                       AS checks,
                   sum(passed) / sum(checked) AS pass_share,
                   min(passed / checked) AS worst_share
            FROM checks
            GROUP BY batch_id
        ),
        totals AS (
            SELECT model, version, batch_id,
                   parseDateTime64BestEffort(
                       splitByChar('/', batch_id)[-2], 3, 'UTC') AS window_start,
                   window_start + toIntervalMillisecond(60000) AS window_end,
                   count() AS events,
                   countIf(is_outlier = 1) AS outliers,
                   countIf(event_time < window_start) AS late_events
            FROM events FINAL
            GROUP BY model, version, batch_id
        )
    SELECT model, version, batch_id, window_start, window_end,
           events, outliers, late_events, checks, pass_share,
           multiIf(worst_share >= 0.97, 'green',
                   worst_share >= 0.93, 'yellow',
                   worst_share >= 0.85, 'orange', 'red') AS health
    FROM totals
    INNER JOIN shares USING batch_id
    ORDER BY model, version, batch_id

The worker sends an event that repeats a processed ``request_id`` to the
dead-letter topic before batching, so each request is counted once on both
sides.

Examples
--------
>>> from datetime import datetime, UTC
>>> batcher = Batcher(window_seconds=60, batch_size=100)
>>> times = [datetime(2026, 12, 4, 15, 0, 5, tzinfo=UTC),
...          datetime(2026, 12, 4, 15, 1, 2, tzinfo=UTC)]
>>> statuses = pd.DataFrame({"age": ["ok", "above_max"]})
>>> ids, closed = batcher.assign("census", 1, times, statuses, [False, True])
>>> ids
['census/1/2026-12-04T15:00:00Z/000000', 'census/1/2026-12-04T15:01:00Z/000000']
>>> [(s.batch_id, s.closed_by.value, s.events, s.health.value) for s in closed]
[('census/1/2026-12-04T15:00:00Z/000000', 'time', 1, 'green')]
>>> for check in batcher.close_all()[0].checks:
...     print(check)
CheckCount(feature='', check='auto_od', checked=1, passed=0)
CheckCount(feature='age', check='range', checked=1, passed=0)
"""

from __future__ import annotations

import enum
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import pandas as pd

from detectors.status import Status

__all__ = [
    "AUTO_OD",
    "BatchSummary",
    "Batcher",
    "CheckCount",
    "ClosedBy",
    "Health",
    "HealthCutoffs",
    "RANGE",
]

log = logging.getLogger(__name__)

RANGE = "range"
AUTO_OD = "auto_od"

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MS_PER_UNIT = {"s": 1000, "ms": 1}
_UNITS_PER_MS = {"us": 1000, "ns": 1_000_000}


class Health(enum.StrEnum):
    """Health level of a batch, from best to worst."""

    GREEN = "green"
    YELLOW = "yellow"
    ORANGE = "orange"
    RED = "red"


class ClosedBy(enum.StrEnum):
    """Reason a batch was closed."""

    TIME = "time"
    SIZE = "size"
    SHUTDOWN = "shutdown"


@dataclass(frozen=True, slots=True)
class HealthCutoffs:
    """Lowest share passed that reaches each health level.

    A share equal to a cut-off reaches that level, and a share below ``orange``
    is red.

    The defaults leave room for the outliers that ``auto_od`` flags by design.
    With ``auto_od`` calibrated for 1 % outliers, a batch of 100 events turns
    yellow at four outliers. By the binomial distribution, that happens to
    about 1.8 % of batches when the outlier rate is exactly 1 %.

    Examples
    --------
    >>> cutoffs = HealthCutoffs()
    >>> cutoffs.level(0.97), cutoffs.level(0.96), cutoffs.level(0.5)
    (<Health.GREEN: 'green'>, <Health.YELLOW: 'yellow'>, <Health.RED: 'red'>)
    >>> HealthCutoffs(green=0.9, yellow=0.95)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: health cut-offs must satisfy 0 <= orange <= yellow <= green <= 1, ...
    """

    green: float = 0.97
    yellow: float = 0.93
    orange: float = 0.85

    def __post_init__(self) -> None:
        if not 0.0 <= self.orange <= self.yellow <= self.green <= 1.0:
            raise ValueError(
                "health cut-offs must satisfy 0 <= orange <= yellow <= green <= 1, "
                f"got green={self.green}, yellow={self.yellow}, orange={self.orange}"
            )

    def level(self, share: float) -> Health:
        """Return the health level of a share passed between 0 and 1."""
        if share >= self.green:
            return Health.GREEN
        if share >= self.yellow:
            return Health.YELLOW
        if share >= self.orange:
            return Health.ORANGE
        return Health.RED


@dataclass(frozen=True, slots=True)
class CheckCount:
    """Values of one check in one batch: how many were checked and passed.

    ``feature`` is empty for checks of the whole event (``auto_od`` and custom
    metrics).
    """

    feature: str
    check: str
    checked: int
    passed: int


@dataclass(frozen=True, slots=True)
class BatchSummary:
    """Counts and health of one closed batch.

    ``window_start`` and ``window_end`` bound the window the batch belongs to.
    Its late events have earlier times, and no event has a time at or after
    ``window_end``.
    """

    model: str
    version: int
    batch_id: str
    window_start: datetime
    window_end: datetime
    closed_by: ClosedBy
    events: int
    outliers: int
    late_events: int
    checks: list[CheckCount]
    pass_share: float
    health: Health


@dataclass
class _OpenBatch:
    """Running counts of the open batch of one model version."""

    sequence: int
    events: int = 0
    outliers: int = 0
    late_events: int = 0
    checked: dict[tuple[str, str], int] = field(default_factory=dict)
    passed: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass
class _Stream:
    """Batching state of one model version."""

    # Start of the current window, in milliseconds since the epoch.
    window_start: int
    next_sequence: int = 0
    open: _OpenBatch | None = None


@dataclass(frozen=True, slots=True)
class _Segment:
    """Consecutive events of one block that fall into the same batch."""

    start: int
    stop: int
    window_start: int
    sequence: int
    continues_open: bool


class Batcher:
    """Assign scored events to batches per model version and summarise the batches.

    The state is plain Python data, so a pickled batcher resumes with the same
    open batches and gives the same ids and summaries as one never stopped.

    Parameters
    ----------
    window_seconds
        Length of the tumbling event-time window, a positive whole number of
        milliseconds given in seconds.
    batch_size
        Number of events at which a batch closes before its window ends.
    health_cutoffs
        Shares passed that set the health levels.
    partition
        Kafka partition whose events this batcher receives. When given, batch ids
        carry it (``.../p3-000001``), so the batchers of several partitions
        never give two batches the same id.

    NOTE: the state of a model version (its current window and sequence) is
    kept for as long as the batcher lives, because forgetting it would let a
    late event reopen an old window under a batch id already used.
    """

    def __init__(
        self,
        window_seconds: float = 60.0,
        batch_size: int = 100,
        *,
        health_cutoffs: HealthCutoffs | None = None,
        partition: int | None = None,
    ) -> None:
        milliseconds = float(window_seconds) * 1000
        window_ms = round(milliseconds) if math.isfinite(milliseconds) else 0
        if window_ms < 1 or abs(window_ms - milliseconds) > 1e-6:
            raise ValueError(
                "window_seconds must be a positive whole number of milliseconds, "
                f"got {window_seconds!r}"
            )
        if isinstance(batch_size, bool) or not isinstance(batch_size, int):
            raise TypeError(f"batch_size must be an integer, got {batch_size!r}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be at least 1, got {batch_size}")
        self.window_ms = window_ms
        self.batch_size = batch_size
        self.health_cutoffs = health_cutoffs or HealthCutoffs()
        self.partition = partition
        self._streams: dict[tuple[str, int], _Stream] = {}

    def assign(
        self,
        model: str,
        version: int,
        event_times: Sequence[datetime] | pd.DatetimeIndex | np.ndarray,
        statuses: pd.DataFrame,
        outliers: Sequence[bool] | np.ndarray,
        checks: Mapping[str, Sequence[bool | None]] | None = None,
    ) -> tuple[list[str], list[BatchSummary]]:
        """Assign a block of scored events of one model version to batches.

        Parameters
        ----------
        event_times
            Event time of every event, in the order the events are processed.
        statuses
            Range check status per event (rows) and feature (columns), such as
            ``ModelVersion.check_block(...).statuses``, or booleans that
            mark whether each value passed its check.
        outliers
            Whether ``auto_od`` flagged each event.
        checks
            Custom metric name to the per-event result: ``True`` passed,
            ``False`` failed, ``None`` could not be evaluated.

        Returns
        -------
        batch_ids, closed
            The batch id of every event, in order, and the summaries of the
            batches this block closed, in the order they closed.
        """
        times = _epoch_milliseconds(event_times)
        count = len(times)
        passed, check_keys = _passed_matrix(count, statuses, outliers, checks)
        if count == 0:
            return [], []

        # The current window of every event is the latest window seen so far,
        # and an event from an earlier window is late.
        stream = self._streams.get((model, version))
        windows = np.floor_divide(times, self.window_ms) * self.window_ms
        current = np.maximum.accumulate(windows)
        if stream is not None:
            current = np.maximum(current, stream.window_start)
        late = windows < current
        segments = self._segments(current, stream)

        # Segments are contiguous, so one reduceat per array sums them all.
        starts = np.array([segment.start for segment in segments])
        late_counts = np.add.reduceat(late, starts).tolist()
        passed_counts = np.add.reduceat(passed, starts, axis=0).tolist()

        if stream is None:
            stream = _Stream(window_start=segments[0].window_start)
            self._streams[(model, version)] = stream
        batch_ids: list[str] = []
        closed: list[BatchSummary] = []
        for index, segment in enumerate(segments):
            batch = self._open_for(model, version, stream, segment, closed)
            size = segment.stop - segment.start
            batch.events += size
            batch.outliers += size - passed_counts[index][0]
            batch.late_events += late_counts[index]
            for key, passed_count in zip(check_keys, passed_counts[index], strict=True):
                batch.checked[key] = batch.checked.get(key, 0) + size
                batch.passed[key] = batch.passed.get(key, 0) + passed_count
            batch_id = _batch_id(
                model, version, stream.window_start, batch.sequence, self.partition
            )
            batch_ids.extend([batch_id] * size)
            if batch.events >= self.batch_size:
                closed.append(self._close(model, version, stream, ClosedBy.SIZE))
        return batch_ids, closed

    def close_idle(
        self, now: datetime, idle_seconds: float = 0.0
    ) -> list[BatchSummary]:
        """Close every open batch whose window ended ``idle_seconds`` before ``now``.

        Call it on a timer so that batches close when traffic stops. Its
        summaries have ``closed_by="time"``. ``now`` is compared with event
        time, so a naive ``now`` is read as UTC.
        """
        if not math.isfinite(idle_seconds) or idle_seconds < 0:
            raise ValueError(
                f"idle_seconds must be a finite number 0 or more, got {idle_seconds!r}"
            )
        deadline = int(_epoch_milliseconds([now])[0]) - round(idle_seconds * 1000)
        closed = []
        for (model, version), stream in self._streams.items():
            window_end = stream.window_start + self.window_ms
            if stream.open is not None and window_end <= deadline:
                closed.append(self._close(model, version, stream, ClosedBy.TIME))
        return closed

    def open_batch_ids(self) -> list[str]:
        """Return the ids of the batches that are open now."""
        return [
            _batch_id(model, version, stream.window_start, stream.open.sequence,
                      self.partition)
            for (model, version), stream in self._streams.items()
            if stream.open is not None
        ]  # fmt: skip

    def close_all(self) -> list[BatchSummary]:
        """Close every open batch, with ``closed_by="shutdown"``.

        Later events continue the same windows and sequences, so the ids stay
        unique.
        """
        closed = [
            self._close(model, version, stream, ClosedBy.SHUTDOWN)
            for (model, version), stream in self._streams.items()
            if stream.open is not None
        ]
        log.info("closed %d open batches at shutdown", len(closed))
        return closed

    def _segments(self, current: np.ndarray, stream: _Stream | None) -> list[_Segment]:
        """Cut a block into runs of consecutive events that go into one batch each."""
        run_starts = np.flatnonzero(np.diff(current)) + 1
        bounds = [0, *run_starts.tolist(), len(current)]
        segments = []
        for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
            window_start = int(current[start])
            sequence, room, continues_open = self._first_batch(window_start, stream)
            while start < stop:
                end = min(stop, start + room)
                segments.append(
                    _Segment(start, end, window_start, sequence, continues_open)
                )
                start, sequence = end, sequence + 1
                room, continues_open = self.batch_size, False
        return segments

    def _first_batch(
        self, window_start: int, stream: _Stream | None
    ) -> tuple[int, int, bool]:
        """Return the sequence and free room of the window's next batch.

        The flag is true when that batch is the open one.
        """
        if stream is None or window_start != stream.window_start:
            return 0, self.batch_size, False
        if stream.open is None:
            return stream.next_sequence, self.batch_size, False
        return stream.open.sequence, self.batch_size - stream.open.events, True

    def _open_for(
        self,
        model: str,
        version: int,
        stream: _Stream,
        segment: _Segment,
        closed: list[BatchSummary],
    ) -> _OpenBatch:
        """Return the batch a segment goes into, closing the previous window's."""
        if segment.continues_open:
            assert stream.open is not None
            return stream.open
        if segment.window_start != stream.window_start:
            if stream.open is not None:
                closed.append(self._close(model, version, stream, ClosedBy.TIME))
            stream.window_start = segment.window_start
        stream.open = _OpenBatch(sequence=segment.sequence)
        stream.next_sequence = segment.sequence + 1
        return stream.open

    def _close(
        self, model: str, version: int, stream: _Stream, closed_by: ClosedBy
    ) -> BatchSummary:
        batch = stream.open
        assert batch is not None
        stream.open = None
        checks = [
            CheckCount(feature, check, checked, batch.passed[(feature, check)])
            for (feature, check), checked in sorted(batch.checked.items())
        ]
        total_checked = sum(check.checked for check in checks)
        total_passed = sum(check.passed for check in checks)
        worst_share = min(check.passed / check.checked for check in checks)
        batch_id = _batch_id(
            model, version, stream.window_start, batch.sequence, self.partition
        )
        log.debug(
            "closed batch %s by %s with %d events", batch_id, closed_by, batch.events
        )
        return BatchSummary(
            model=model,
            version=version,
            batch_id=batch_id,
            window_start=_from_milliseconds(stream.window_start),
            window_end=_from_milliseconds(stream.window_start + self.window_ms),
            closed_by=closed_by,
            events=batch.events,
            outliers=batch.outliers,
            late_events=batch.late_events,
            checks=checks,
            pass_share=total_passed / total_checked,
            health=self.health_cutoffs.level(worst_share),
        )


def _passed_matrix(
    count: int,
    statuses: pd.DataFrame,
    outliers: Sequence[bool] | np.ndarray,
    checks: Mapping[str, Sequence[bool | None]] | None,
) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Return whether each event passed each check, and the (feature, check) keys.

    Column 0 is ``auto_od``, then come the range checks and custom metrics.
    """
    if len(statuses) != count:
        raise ValueError(
            f"statuses must have one row per event: expected {count} rows, "
            f"got {len(statuses)}"
        )
    features = [str(name) for name in statuses.columns]
    if len(set(features)) != len(features):
        raise ValueError(f"statuses has duplicate feature columns: {features}")
    flagged = _as_flags(outliers, "outliers", count)
    if len(features) and all(map(pd.api.types.is_bool_dtype, statuses.dtypes)):
        range_passed = statuses.to_numpy(dtype=bool)
    else:
        if statuses.isna().to_numpy().any():
            raise ValueError(
                "statuses contains missing values; give a status string such as "
                "'ok' or 'missing' for every feature of every event"
            )
        range_passed = statuses.eq(Status.OK.value).to_numpy(dtype=bool)
    columns = [~flagged, range_passed]
    keys = [("", AUTO_OD)] + [(feature, RANGE) for feature in features]
    for name, values in (checks or {}).items():
        if not isinstance(name, str) or not name or name in (AUTO_OD, RANGE):
            raise ValueError(
                f"custom metric name must be a non-empty string other than "
                f"{AUTO_OD!r} and {RANGE!r}, got {name!r}"
            )
        columns.append(_metric_passed(values, name, count))
        keys.append(("", name))
    matrix = np.column_stack(columns)
    return matrix.astype(np.int64), keys


def _as_flags(values: Sequence[bool] | np.ndarray, name: str, count: int) -> np.ndarray:
    """Return ``values`` as a boolean array of ``count`` flags."""
    array = np.asarray(values)
    if len(array) != count:
        raise ValueError(
            f"{name} must have one value per event: expected {count}, got {len(array)}"
        )
    if count and array.dtype.kind not in "biu":
        raise TypeError(f"{name} must contain booleans, got dtype {array.dtype}")
    return array.astype(bool).reshape(count)


def _metric_passed(values: Sequence[bool | None], name: str, count: int) -> np.ndarray:
    """Return whether each event passed a custom metric, where ``None`` fails."""
    array = np.asarray(values)
    if array.dtype == bool:
        passed = array
    else:
        passed = np.array([_metric_result(value, name) for value in values], dtype=bool)
    if len(passed) != count:
        raise ValueError(
            f"custom metric {name!r} must have one result per event: expected "
            f"{count}, got {len(passed)}"
        )
    return passed


def _metric_result(value: Any, name: str) -> bool:
    if value is None or value is pd.NA:
        return False
    if isinstance(value, bool | np.bool_):
        return bool(value)
    raise TypeError(
        f"custom metric {name!r} results must be True, False or None, got {value!r}"
    )


def _epoch_milliseconds(
    event_times: Sequence[datetime] | pd.DatetimeIndex | np.ndarray,
) -> np.ndarray:
    """Return event times as whole milliseconds since the epoch, truncated."""
    index = pd.DatetimeIndex(pd.to_datetime(event_times, utc=True))
    if index.hasnans:
        raise ValueError(
            "event_times contains missing times (None or NaT); "
            "give a datetime for every event"
        )
    values = index.asi8
    if index.unit in _MS_PER_UNIT:
        return values * _MS_PER_UNIT[index.unit]
    return np.floor_divide(values, _UNITS_PER_MS[index.unit])


def _from_milliseconds(milliseconds: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=milliseconds)


def _batch_id(
    model: str, version: int, window_start: int, sequence: int, partition: int | None
) -> str:
    start = _from_milliseconds(window_start)
    timespec = "seconds" if window_start % 1000 == 0 else "milliseconds"
    text = start.isoformat(timespec=timespec).replace("+00:00", "Z")
    if partition is None:
        return f"{model}/{version}/{text}/{sequence:06d}"
    return f"{model}/{version}/{text}/p{partition}-{sequence:06d}"
