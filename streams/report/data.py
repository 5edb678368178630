"""Read what the report shows from ClickHouse, for one model version.

Every query goes through :class:`streams.storage.Storage` and reads with
``FINAL``, so rows that a replayed Kafka block stored twice count once. Times
come back as UTC timestamps.

Batches that the worker has not closed yet have no row in ``batches`` or
``batch_checks``. The report finds them in ``events`` and counts their checks
from the per-event rows, so the newest column of the grid fills as events
arrive on a ClickHouse server that a running worker writes to.

``batch_drift`` and ``metric_checks`` are read only when they exist. Their
columns are found with ``DESCRIBE TABLE``, so that the report does not fail on
a database created by an older or newer worker.
"""

import logging
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime

import pandas as pd

from streams.errors import OddwatchError
from streams.storage import Storage

__all__ = ["ReportData", "load_report_data"]

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

MAX_SCORE_INLIERS = 20_000
"""Requests below the threshold drawn in the score plot; more are sampled."""

MAX_SCORE_OUTLIERS = 10_000
"""Outliers drawn in the score plot, the most recent first."""

MAX_ALERTS = 500
"""Alerts listed on the page, the most recent first."""

DRIFT_VALUE_COLUMNS = ("drift", "score", "distance", "statistic", "value")
"""Columns of ``batch_drift`` read as the drift of a feature, the first found."""

DRIFT_FLAG_COLUMNS = ("drifted", "is_drift")
"""Columns of ``batch_drift`` read as the verdict, the first found."""


@dataclass
class ReportData:
    """Everything the report of one model version shows, as DataFrames.

    ``batches`` has one row per batch in time order, open batches included
    (``is_open``, with an empty ``health``). ``grid`` has one row per batch and
    check: ``batch_id``, ``check``, ``feature``, ``checked`` and ``passed``.
    ``detail_events``, ``detail_checks`` and ``detail_metrics`` hold the
    requests of the ``detail_batch_ids``, the most recent batches.
    """

    model: str
    version: int
    since: datetime | None
    generated_at: datetime
    events: int = 0
    outliers: int = 0
    first_event: pd.Timestamp | None = None
    last_event: pd.Timestamp | None = None
    batches: pd.DataFrame = field(default_factory=pd.DataFrame)
    grid: pd.DataFrame = field(default_factory=pd.DataFrame)
    scores: pd.DataFrame = field(default_factory=pd.DataFrame)
    score_sample_step: int = 1
    score_outliers_shown: int = 0
    detail_limit: int = 0
    detail_batch_ids: list[str] = field(default_factory=list)
    detail_events: pd.DataFrame = field(default_factory=pd.DataFrame)
    detail_checks: pd.DataFrame = field(default_factory=pd.DataFrame)
    detail_metrics: pd.DataFrame | None = None
    alerts: pd.DataFrame = field(default_factory=pd.DataFrame)
    alert_count: int = 0
    dead_letters: pd.DataFrame = field(default_factory=pd.DataFrame)
    drift: pd.DataFrame | None = None
    drift_note: str = ""

    @property
    def dead_letter_count(self) -> int:
        if self.dead_letters.empty:
            return 0
        return int(self.dead_letters["count"].sum())


def load_report_data(
    storage: Storage,
    model: str,
    version: int,
    *,
    since: datetime | None = None,
    detail_batches: int = 50,
) -> ReportData:
    """Query everything the report of ``model`` ``version`` shows.

    Raises OddwatchError when the database has no oddwatch tables, or no
    event of this model version at any time.
    """
    if detail_batches < 0:
        raise ValueError(f"detail_batches must be 0 or more, got {detail_batches}")
    _require_version(storage, model, version)
    reader = _Reader(storage, model, version, since)
    data = ReportData(
        model=model,
        version=version,
        since=since,
        generated_at=datetime.now(UTC),
        detail_limit=detail_batches,
    )
    reader.read_totals(data)
    data.batches = reader.read_batches()
    data.grid = reader.read_grid(data.batches)
    _fill_open_pass_share(data.batches, data.grid)
    reader.read_scores(data)
    reader.read_details(data)
    reader.read_alerts(data)
    data.dead_letters = reader.read_dead_letters()
    data.drift, data.drift_note = reader.read_drift(data.batches)
    return data


def _fill_open_pass_share(batches: pd.DataFrame, grid: pd.DataFrame) -> None:
    """Set the pass share of open batches from their check counts so far."""
    if batches.empty or grid.empty or not batches["is_open"].any():
        return
    sums = grid.groupby("batch_id")[["checked", "passed"]].sum()
    shares = sums["passed"] / sums["checked"]
    is_open = batches["is_open"]
    batches.loc[is_open, "pass_share"] = batches.loc[is_open, "batch_id"].map(shares)


def _require_version(storage: Storage, model: str, version: int) -> None:
    if not _table_exists(storage, "events"):
        raise OddwatchError(
            f"the ClickHouse database {storage.database!r} has no events table; "
            "run `oddwatch worker` against it first, or pass the --clickhouse URL "
            "the worker writes to"
        )
    found = storage.query_rows(
        "SELECT count() FROM events WHERE model = {model:String} "
        "AND version = {version:UInt32}",
        parameters={"model": model, "version": version},
    )[0][0]
    if found:
        return
    known = storage.query_rows(
        "SELECT model, version FROM events GROUP BY model, version "
        "ORDER BY model, version LIMIT 20"
    )
    listing = ", ".join(f"{name} version {number}" for name, number in known)
    raise OddwatchError(
        f"no events of model {model!r} version {version} are stored; "
        + (f"stored versions: {listing}" if listing else "no events are stored yet")
    )


def _table_exists(storage: Storage, table: str) -> bool:
    return bool(storage.query_rows(f"EXISTS TABLE {table}")[0][0])


def _utc(column: pd.Series) -> pd.Series:
    """Return timestamps in UTC; naive ones, as the embedded engine returns, are UTC."""
    times = pd.to_datetime(column)
    if times.dt.tz is None:
        return times.dt.tz_localize(UTC)
    return times.dt.tz_convert(UTC)


class _Reader:
    """The report's queries, all bound to one model version and start time."""

    def __init__(
        self, storage: Storage, model: str, version: int, since: datetime | None
    ) -> None:
        self.storage = storage
        self.parameters = {
            "model": model,
            "version": version,
            "since": (since or EPOCH).astimezone(UTC),
        }

    def frame(self, sql: str, **parameters: object) -> pd.DataFrame:
        """Run a query; an empty result still has the query's columns."""
        parameters = {**self.parameters, **parameters}
        frame = self.storage.query_frame(sql, parameters=parameters)
        if len(frame.columns) == 0:
            # The embedded engine returns an empty result without columns.
            described = self.storage.query_frame(
                f"DESCRIBE ({sql})", parameters=parameters
            )
            frame = pd.DataFrame(columns=list(described["name"]))
        return frame

    def read_totals(self, data: ReportData) -> None:
        totals = self.frame(
            "SELECT count() AS events, countIf(is_outlier = 1) AS outliers, "
            "min(event_time) AS first_event, max(event_time) AS last_event "
            f"FROM events FINAL WHERE {_VERSION} AND event_time >= {_SINCE}"
        ).iloc[0]
        data.events = int(totals["events"])
        data.outliers = int(totals["outliers"])
        if data.events:
            times = _utc(pd.Series([totals["first_event"], totals["last_event"]]))
            data.first_event, data.last_event = times.iloc[0], times.iloc[1]

    def read_batches(self) -> pd.DataFrame:
        closed = self.frame(
            "SELECT batch_id, window_start, window_end, closed_by, events, outliers, "
            "late_events, pass_share, toString(health) AS health "
            f"FROM batches FINAL WHERE {_VERSION} AND window_start >= {_SINCE}"
        )
        closed["is_open"] = False
        opened = self.frame(_OPEN_BATCHES_SQL)
        opened["is_open"] = True
        parts = [part for part in (closed, opened) if not part.empty]
        if not parts:
            return closed
        batches = pd.concat(parts, ignore_index=True)
        batches["window_start"] = _utc(batches["window_start"])
        batches["window_end"] = _utc(batches["window_end"])
        batches = batches.sort_values(["window_start", "batch_id"], ignore_index=True)
        return batches

    def read_grid(self, batches: pd.DataFrame) -> pd.DataFrame:
        closed_ids = batches.loc[~batches["is_open"], "batch_id"].tolist()
        open_ids = batches.loc[batches["is_open"], "batch_id"].tolist()
        parts = []
        if closed_ids:
            parts.append(
                self.frame(
                    "SELECT batch_id, toString(check) AS check, "
                    "toString(feature) AS feature, checked, passed "
                    f"FROM batch_checks FINAL WHERE {_VERSION} AND {_IN_BATCHES}",
                    ids=closed_ids,
                )
            )
        if open_ids:
            parts.append(self.frame(self._open_checks_sql(), ids=open_ids))
        parts = [part for part in parts if not part.empty]
        if not parts:
            return pd.DataFrame(
                columns=["batch_id", "check", "feature", "checked", "passed"]
            )
        return pd.concat(parts, ignore_index=True)

    def _open_checks_sql(self) -> str:
        # The same counts the worker stores in batch_checks when it closes a
        # batch, computed from the per-event rows.
        parts = [
            "SELECT batch_id, 'range' AS check, toString(feature) AS feature, "
            "count() AS checked, sum(passed) AS passed FROM feature_checks FINAL "
            f"WHERE {_VERSION} AND {_IN_BATCHES} GROUP BY batch_id, feature",
            "SELECT batch_id, 'auto_od' AS check, '' AS feature, count() AS checked, "
            "countIf(is_outlier = 0) AS passed FROM events FINAL "
            f"WHERE {_VERSION} AND {_IN_BATCHES} GROUP BY batch_id",
        ]
        if {"metric", "status"} <= self.columns("metric_checks"):
            parts.append(
                "SELECT batch_id, toString(metric) AS check, '' AS feature, "
                "count() AS checked, countIf(status = 'passed') AS passed "
                f"FROM metric_checks FINAL WHERE {_VERSION} AND {_IN_BATCHES} "
                "GROUP BY batch_id, metric"
            )
        return "\nUNION ALL\n".join(parts)

    def columns(self, table: str) -> set[str]:
        """Return the column names of ``table``, or an empty set when it is absent."""
        if not _table_exists(self.storage, table):
            return set()
        described = self.storage.query_frame(f"DESCRIBE TABLE {table}")
        return set(described["name"])

    def read_scores(self, data: ReportData) -> None:
        inliers = data.events - data.outliers
        step = max(1, math.ceil(inliers / MAX_SCORE_INLIERS))
        columns = "event_time, request_id, score, threshold, is_outlier, batch_id"
        sampled = self.frame(
            f"SELECT {columns} FROM events FINAL WHERE {_VERSION} "
            f"AND event_time >= {_SINCE} AND is_outlier = 0 "
            "AND cityHash64(request_id) % {step:UInt64} = 0",
            step=step,
        )
        outliers = self.frame(
            f"SELECT {columns} FROM events FINAL WHERE {_VERSION} "
            f"AND event_time >= {_SINCE} AND is_outlier = 1 "
            "ORDER BY event_time DESC LIMIT {limit:UInt32}",
            limit=MAX_SCORE_OUTLIERS,
        )
        scores = pd.concat(
            [part for part in (sampled, outliers) if not part.empty] or [sampled],
            ignore_index=True,
        )
        scores["event_time"] = _utc(scores["event_time"])
        data.scores = scores.sort_values(
            ["event_time", "request_id"], ignore_index=True
        )
        data.score_sample_step = step
        data.score_outliers_shown = len(outliers)

    def read_details(self, data: ReportData) -> None:
        if data.detail_limit == 0 or data.batches.empty:
            data.detail_events = pd.DataFrame()
            data.detail_checks = pd.DataFrame()
            return
        ids = data.batches["batch_id"].tail(data.detail_limit).tolist()
        data.detail_batch_ids = ids
        events = self.frame(
            "SELECT batch_id, event_time, request_id, features, extra_features, "
            "prediction, score, threshold, is_outlier FROM events FINAL "
            f"WHERE {_VERSION} AND {_IN_BATCHES} ORDER BY event_time, request_id",
            ids=ids,
        )
        events["event_time"] = _utc(events["event_time"])
        data.detail_events = events
        data.detail_checks = self.frame(
            "SELECT request_id, toString(feature) AS feature, "
            "toString(status) AS status, passed FROM feature_checks FINAL "
            f"WHERE {_VERSION} AND {_IN_BATCHES}",
            ids=ids,
        )
        data.detail_metrics = self._read_metric_details(ids)

    def _read_metric_details(self, ids: list[str]) -> pd.DataFrame | None:
        columns = self.columns("metric_checks")
        if not {"model", "version", "batch_id", "request_id", "metric"} <= columns:
            return None
        wanted = ["request_id", "metric"] + [
            name for name in ("score", "threshold", "status") if name in columns
        ]
        if "score" not in columns and "value" in columns:
            wanted.append("value AS score")
        metrics = self.frame(
            f"SELECT {', '.join(wanted)} FROM metric_checks FINAL "
            f"WHERE {_VERSION} AND {_IN_BATCHES}",
            ids=ids,
        )
        return metrics if not metrics.empty else None

    def read_alerts(self, data: ReportData) -> None:
        where = f"WHERE {_VERSION} AND occurred_at >= {_SINCE}"
        data.alert_count = int(
            self.frame(f"SELECT count() AS alerts FROM alerts FINAL {where}").iloc[0, 0]
        )
        alerts = self.frame(
            "SELECT alert_id, toString(kind) AS kind, occurred_at, batch_id, "
            "request_id, score, threshold, toString(health) AS health, pass_share, "
            f"reasons FROM alerts FINAL {where} "
            "ORDER BY occurred_at DESC, alert_id LIMIT {limit:UInt32}",
            limit=MAX_ALERTS,
        )
        alerts["occurred_at"] = _utc(alerts["occurred_at"])
        data.alerts = alerts

    def read_dead_letters(self) -> pd.DataFrame:
        # Dead letters have no trustworthy model: most could not be parsed.
        return self.frame(
            "SELECT toString(reason_code) AS reason_code, count() AS count "
            f"FROM dead_letters FINAL WHERE received_at >= {_SINCE} "
            "GROUP BY reason_code ORDER BY count DESC, reason_code"
        )

    def read_drift(self, batches: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
        """Return drift rows with a ``value`` column, or None and the reason."""
        columns = self.columns("batch_drift")
        if not columns:
            return None, "no drift data yet"
        value = next((name for name in DRIFT_VALUE_COLUMNS if name in columns), None)
        needed = {"model", "version", "batch_id", "feature"}
        if value is None or not needed <= columns:
            log.warning(
                "batch_drift has columns %s; the report needs %s and one of %s",
                sorted(columns),
                sorted(needed),
                DRIFT_VALUE_COLUMNS,
            )
            return None, "no drift data the report can read yet"

        flag = next((name for name in DRIFT_FLAG_COLUMNS if name in columns), None)
        extra = [name for name in ("threshold", "method") if name in columns]
        selected = [f"{value} AS value"] + [
            f"toString({name}) AS {name}" if name == "method" else name
            for name in extra
        ]
        if flag:
            selected.append(f"{flag} AS drifted")

        drift = self.frame(
            f"SELECT batch_id, toString(feature) AS feature, {', '.join(selected)} "
            f"FROM batch_drift WHERE {_VERSION} AND {_IN_BATCHES}",
            ids=batches["batch_id"].tolist(),
        )
        if drift.empty:
            return None, "no drift data yet"
        return drift, ""


_VERSION = "model = {model:String} AND version = {version:UInt32}"
_SINCE = "{since:DateTime64(3, 'UTC')}"
_IN_BATCHES = "batch_id IN {ids:Array(String)}"

# Batches that have events but no summary yet. Their window start is read
# from the batch id, model/version/window start/sequence.
_OPEN_BATCHES_SQL = f"""
SELECT
    batch_id,
    parseDateTime64BestEffort(splitByChar('/', batch_id)[-2], 3, 'UTC')
        AS window_start,
    CAST(NULL AS Nullable(DateTime64(3, 'UTC'))) AS window_end,
    'open' AS closed_by,
    count() AS events,
    countIf(is_outlier = 1) AS outliers,
    countIf(event_time < window_start) AS late_events,
    nan AS pass_share,
    '' AS health
FROM events FINAL
WHERE {_VERSION}
  AND batch_id NOT IN (SELECT batch_id FROM batches FINAL WHERE {_VERSION})
GROUP BY batch_id
HAVING window_start >= {_SINCE}
"""
