"""ClickHouse tables of oddwatch, as numbered migrations.

Each migration is applied once, in order, and recorded in ``schema_migrations``;
a later release appends migrations and never edits an applied one. Every
statement is idempotent (``IF NOT EXISTS``, or a :class:`Conditional` that
checks first), so a migration interrupted half way can run again.

Replayed Kafka offsets never double a row: every row carries the partition
and offset it came from, and the ``sink_journal`` table records how far each
partition is stored (see :mod:`streams.journal`). The ReplacingMergeTree
sorting keys, which contain the ``request_id`` or ``batch_id``, also collapse
an event a producer sent twice under the same request id, at merge time or
with ``FINAL``.

The worker inserts one row an event into ``events``, with the range checks of
its features as arrays. ``feature_checks`` is a plain view that expands those
arrays, one row an event and feature, when it is read, so the checks are
neither stored nor merged a second time. The view reads ``events FINAL``,
because ClickHouse (26.9) ignores ``FINAL`` on a view, and so it never
returns the checks of a request id twice, also without ``FINAL``. Rows stored
before migration 3 stay in ``feature_checks_stored``, which the view includes.
The Null table ``event_rows`` of migration 2 stays for workers of that release,
and its view writes the same columns, arrays included, to ``events``.

The worker does not insert into ``batches``, ``batch_checks`` or
``batch_drift`` itself. It inserts one row a batch into the Null table
``batch_rows``, and its materialized views write the rows of those tables.
Each ClickHouse insert costs milliseconds however few its rows, so fewer
inserts save time. Each view's target table deduplicates its own block under
the insert's token, so a retried insert stores nothing twice.
"""

from typing import NamedTuple

__all__ = ["MIGRATIONS", "Conditional", "render_schema"]

# Blocks remembered per table for insert deduplication. MergeTree tables keep
# none by default, so a replayed block would be stored twice.
_DEDUP_WINDOW = "non_replicated_deduplication_window = 10000"

# The range checks of an event, one element per feature, in ``event_rows``.
_CHECK_ARRAYS = """check_features Array(LowCardinality(String)),
    check_statuses Array(LowCardinality(String)),
    check_passed Array(UInt8),
    check_numbers Array(Nullable(Float64)),
    check_texts Array(Nullable(String))"""

# The same arrays added to ``events``, which the ``feature_checks`` view expands.
_EVENT_CHECK_COLUMNS = """\
ADD COLUMN IF NOT EXISTS check_features Array(LowCardinality(String))
        COMMENT 'the profiled features, in the order of the other check_ arrays',
    ADD COLUMN IF NOT EXISTS check_statuses Array(LowCardinality(String))
        COMMENT 'range check status of each feature',
    ADD COLUMN IF NOT EXISTS check_passed Array(UInt8),
    ADD COLUMN IF NOT EXISTS check_numbers Array(Nullable(Float64))
        COMMENT 'each feature''s value when it is a number',
    ADD COLUMN IF NOT EXISTS check_texts Array(Nullable(String))
        COMMENT 'each feature''s value as text when it is not a number'"""

# The columns of ``feature_checks``, in both parts of its view.
_FEATURE_CHECK_NAMES = """\
model, version, request_id, event_time, batch_id, feature, status,
       passed, value_number, value_text, kafka_partition, kafka_offset"""


class Conditional(NamedTuple):
    """A migration statement that runs only when ``condition`` counts above 0.

    For statements ClickHouse cannot make idempotent itself, such as a rename.
    """

    condition: str
    statement: str


# The check counts and drift tests of a batch, one element each, in ``batch_rows``.
_BATCH_ARRAYS = """check_features Array(LowCardinality(String)),
    check_names Array(LowCardinality(String)),
    check_checked Array(UInt32),
    check_passed Array(UInt32),
    drift_features Array(LowCardinality(String)),
    drift_methods Array(LowCardinality(String)),
    drift_tested Array(UInt8),
    drift_values Array(UInt32),
    drift_missing Array(UInt32),
    drift_statistics Array(Nullable(Float64)),
    drift_p_values Array(Nullable(Float64)),
    drift_adjusted_p_values Array(Nullable(Float64)),
    drift_drifted Array(UInt8),
    drift_reasons Array(String)"""

MIGRATIONS: list[tuple[int, str, list[str | Conditional]]] = [
    (
        1,
        "events, checks, metrics, batches, drift, alerts, dead letters, journal",
        [
            f"""
CREATE TABLE IF NOT EXISTS events
(
    model LowCardinality(String),
    version UInt32,
    request_id String,
    event_time DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    batch_id String,
    features String COMMENT 'the event''s features as JSON text',
    extra_features Array(String) COMMENT 'features sent that the profile does not know',
    prediction String COMMENT 'the model''s output as JSON text',
    score Float64 COMMENT 'auto_od outlier score, higher is more anomalous',
    threshold Float64,
    is_outlier UInt8,
    failed_checks UInt16 COMMENT 'features whose range check did not pass',
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (model, version, request_id)
SETTINGS {_DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS feature_checks
(
    model LowCardinality(String),
    version UInt32,
    request_id String,
    event_time DateTime64(3, 'UTC'),
    batch_id String,
    feature LowCardinality(String),
    status LowCardinality(String)
        COMMENT 'ok, below_min, above_max, unseen_category, missing or wrong_type',
    passed UInt8
        COMMENT '1 when ok, or missing for a feature that was missing in training too',
    value_number Nullable(Float64),
    value_text Nullable(String),
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (model, version, feature, request_id)
SETTINGS {_DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS batches
(
    model LowCardinality(String),
    version UInt32,
    batch_id String,
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    closed_by LowCardinality(String) COMMENT 'size, time or shutdown',
    events UInt32,
    outliers UInt32,
    late_events UInt32,
    pass_share Float64 COMMENT 'passed checks / checked values, over all checks',
    health LowCardinality(String) COMMENT 'green, yellow, orange or red',
    kafka_partition UInt32,
    kafka_offset UInt64 COMMENT 'last offset of the block that closed the batch'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (model, version, batch_id)
SETTINGS {_DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS batch_checks
(
    model LowCardinality(String),
    version UInt32,
    batch_id String,
    window_start DateTime64(3, 'UTC'),
    feature LowCardinality(String) COMMENT 'empty for checks of the whole event',
    check LowCardinality(String) COMMENT 'range, auto_od or a custom metric name',
    checked UInt32,
    passed UInt32,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (model, version, batch_id, check, feature)
SETTINGS {_DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS alerts
(
    alert_id String,
    kind LowCardinality(String) COMMENT 'outlier or unhealthy_batch',
    model LowCardinality(String),
    version UInt32,
    created_at DateTime64(3, 'UTC'),
    occurred_at DateTime64(3, 'UTC') COMMENT 'event time, or the batch window end',
    batch_id String,
    request_id String COMMENT 'empty for batch alerts',
    score Nullable(Float64),
    threshold Nullable(Float64),
    health LowCardinality(String) COMMENT 'empty for outlier alerts',
    pass_share Nullable(Float64) COMMENT 'empty for outlier alerts',
    reasons String COMMENT 'the reasons as a JSON array',
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(created_at)
ORDER BY (model, version, alert_id)
SETTINGS {_DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS dead_letters
(
    received_at DateTime64(3, 'UTC'),
    topic String,
    partition UInt32,
    offset UInt64,
    reason_code LowCardinality(String),
    reason String,
    field String COMMENT 'the event field at fault, empty for the whole event',
    original String COMMENT 'the original bytes as text, at most 512 KiB',
    original_size UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(received_at)
ORDER BY (topic, partition, offset)
SETTINGS {_DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS metric_checks
(
    model LowCardinality(String),
    version UInt32,
    request_id String,
    event_time DateTime64(3, 'UTC'),
    batch_id String,
    metric LowCardinality(String),
    value Nullable(Float64) COMMENT 'empty when the metric raised for this event',
    threshold Float64,
    operator LowCardinality(String),
    status LowCardinality(String) COMMENT 'passed, failed or error',
    error String COMMENT 'what the metric raised, when status is error',
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (model, version, metric, request_id)
SETTINGS {_DEDUP_WINDOW}
""",
            f"""
CREATE TABLE IF NOT EXISTS batch_drift
(
    model LowCardinality(String),
    version UInt32,
    batch_id String,
    window_start DateTime64(3, 'UTC'),
    feature LowCardinality(String),
    method LowCardinality(String) COMMENT 'ks for numbers, chi_square for categories',
    tested UInt8 COMMENT '0 when too few values to test; see reason',
    values UInt32 COMMENT 'values tested',
    missing UInt32,
    statistic Nullable(Float64),
    p_value Nullable(Float64),
    adjusted_p_value Nullable(Float64) COMMENT 'Benjamini-Hochberg across the batch',
    drifted UInt8 COMMENT '1 when adjusted_p_value < 0.01',
    reason String,
    kafka_partition UInt32,
    kafka_offset UInt64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(window_start)
ORDER BY (model, version, batch_id, feature)
SETTINGS {_DEDUP_WINDOW}
""",
            """
CREATE TABLE IF NOT EXISTS sink_journal
(
    group String COMMENT 'consumer group of the workers',
    topic String,
    partition UInt32,
    last_offset Int64 COMMENT 'every event up to this offset is stored',
    batcher_state String COMMENT 'open batches of the partition, pickled',
    written_at DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (group, topic, partition, last_offset, written_at)
TTL toDateTime(written_at) + INTERVAL 7 DAY
""",
            """
CREATE TABLE IF NOT EXISTS detector_snapshots
(
    group String,
    model LowCardinality(String),
    version UInt32,
    checksum String COMMENT 'manifest checksum of the artifact the state belongs to',
    events_learned UInt64,
    state String COMMENT 'the online detector state, pickled',
    taken_at DateTime64(6, 'UTC')
)
ENGINE = MergeTree
ORDER BY (group, model, version, taken_at)
TTL toDateTime(taken_at) + INTERVAL 7 DAY
""",
        ],
    ),
    (
        2,
        "load events and batches through Null tables, one insert each",
        [
            f"""
CREATE TABLE IF NOT EXISTS event_rows
(
    model LowCardinality(String),
    version UInt32,
    request_id String,
    event_time DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    batch_id String,
    features String,
    extra_features Array(String),
    prediction String,
    score Float64,
    threshold Float64,
    is_outlier UInt8,
    failed_checks UInt16,
    kafka_partition UInt32,
    kafka_offset UInt64,
    {_CHECK_ARRAYS}
)
ENGINE = Null
COMMENT 'keeps no rows: its views write them to events and feature_checks'
""",
            """
CREATE MATERIALIZED VIEW IF NOT EXISTS events_from_event_rows TO events AS
SELECT model, version, request_id, event_time, received_at, batch_id, features,
       extra_features, prediction, score, threshold, is_outlier, failed_checks,
       kafka_partition, kafka_offset
FROM event_rows
""",
            """
CREATE MATERIALIZED VIEW IF NOT EXISTS feature_checks_from_event_rows
TO feature_checks AS
SELECT model, version, request_id, event_time, batch_id, feature, status, passed,
       value_number, value_text, kafka_partition, kafka_offset
FROM event_rows
ARRAY JOIN check_features AS feature, check_statuses AS status,
           check_passed AS passed, check_numbers AS value_number,
           check_texts AS value_text
""",
            f"""
CREATE TABLE IF NOT EXISTS batch_rows
(
    model LowCardinality(String),
    version UInt32,
    batch_id String,
    window_start DateTime64(3, 'UTC'),
    window_end DateTime64(3, 'UTC'),
    closed_by LowCardinality(String),
    events UInt32,
    outliers UInt32,
    late_events UInt32,
    pass_share Float64,
    health LowCardinality(String),
    kafka_partition UInt32,
    kafka_offset UInt64,
    {_BATCH_ARRAYS}
)
ENGINE = Null
COMMENT 'keeps no rows: its views write them to batches, batch_checks, batch_drift'
""",
            """
CREATE MATERIALIZED VIEW IF NOT EXISTS batches_from_batch_rows TO batches AS
SELECT model, version, batch_id, window_start, window_end, closed_by, events,
       outliers, late_events, pass_share, health, kafka_partition, kafka_offset
FROM batch_rows
""",
            """
CREATE MATERIALIZED VIEW IF NOT EXISTS batch_checks_from_batch_rows
TO batch_checks AS
SELECT model, version, batch_id, window_start, feature, `check`, checked, passed,
       kafka_partition, kafka_offset
FROM batch_rows
ARRAY JOIN check_features AS feature, check_names AS `check`,
           check_checked AS checked, check_passed AS passed
""",
            """
CREATE MATERIALIZED VIEW IF NOT EXISTS batch_drift_from_batch_rows
TO batch_drift AS
SELECT model, version, batch_id, window_start, feature, method, tested, `values`,
       missing, statistic, p_value, adjusted_p_value, drifted, reason,
       kafka_partition, kafka_offset
FROM batch_rows
ARRAY JOIN drift_features AS feature, drift_methods AS method,
           drift_tested AS tested, drift_values AS `values`,
           drift_missing AS missing, drift_statistics AS statistic,
           drift_p_values AS p_value, drift_adjusted_p_values AS adjusted_p_value,
           drift_drifted AS drifted, drift_reasons AS reason
""",
        ],
    ),
    (
        3,
        "store range checks in events and read feature_checks through a view",
        [
            "DROP VIEW IF EXISTS feature_checks_from_event_rows",
            f"""
ALTER TABLE events
    {_EVENT_CHECK_COLUMNS}
""",
            # Workers of an older release still insert into event_rows while
            # they are being replaced; their range checks now land in events.
            "DROP VIEW IF EXISTS events_from_event_rows",
            "ALTER TABLE event_rows "
            "MODIFY COMMENT 'keeps no rows: its view writes them to events'",
            """
CREATE MATERIALIZED VIEW IF NOT EXISTS events_from_event_rows TO events AS
SELECT model, version, request_id, event_time, received_at, batch_id, features,
       extra_features, prediction, score, threshold, is_outlier, failed_checks,
       kafka_partition, kafka_offset, check_features, check_statuses,
       check_passed, check_numbers, check_texts
FROM event_rows
""",
            Conditional(
                "SELECT count() FROM system.tables WHERE database = currentDatabase() "
                "AND name = 'feature_checks' AND engine != 'View'",
                "RENAME TABLE feature_checks TO feature_checks_stored",
            ),
            f"""
CREATE VIEW IF NOT EXISTS feature_checks AS
SELECT {_FEATURE_CHECK_NAMES}
FROM events FINAL
ARRAY JOIN check_features AS feature, check_statuses AS status,
           check_passed AS passed, check_numbers AS value_number,
           check_texts AS value_text
UNION ALL
SELECT {_FEATURE_CHECK_NAMES}
FROM feature_checks_stored FINAL
""",
        ],
    ),
]


def render_schema() -> str:
    """Return every migration as one SQL script, as shipped in deploy/clickhouse."""
    parts = [
        "-- oddwatch ClickHouse schema, generated from streams/ddl.py.",
        "-- The worker applies it by itself at start; this file is for reading",
        "-- and for creating the tables by hand on a ClickHouse server.",
        "",
        "CREATE DATABASE IF NOT EXISTS oddwatch;",
        "USE oddwatch;",
        "",
    ]
    for number, title, statements in MIGRATIONS:
        parts.append(f"-- migration {number}: {title}")
        for statement in statements:
            if isinstance(statement, Conditional):
                parts.append(f"-- only when {statement.condition}:")
                statement = statement.statement
            parts.append(statement.strip() + ";\n")
    return "\n".join(parts)


if __name__ == "__main__":
    print(render_schema(), end="")
