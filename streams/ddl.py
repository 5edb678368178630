"""ClickHouse tables of oddwatch, as numbered migrations.

Each migration is applied once, in order, and recorded in ``schema_migrations``;
a later release appends migrations and never edits an applied one. Every
statement is idempotent (``IF NOT EXISTS``), so a migration interrupted half
way can run again.

Duplicate rows from replayed Kafka offsets are removed in two ways:
``insert_deduplication_token`` drops a repeated block at insert time, and the
ReplacingMergeTree sorting key, which contains the ``request_id``, removes
duplicates that a different block cut let through, at merge time or with
``FINAL``.
"""

__all__ = ["MIGRATIONS", "render_schema"]

# Blocks remembered per table for insert deduplication. MergeTree tables keep
# none by default, so a replayed block would be stored twice.
_DEDUP_WINDOW = "non_replicated_deduplication_window = 10000"

MIGRATIONS: list[tuple[int, str, list[str]]] = [
    (
        1,
        "events, checks, batches, alerts and dead letters",
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
    value_text Nullable(String)
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
    health LowCardinality(String) COMMENT 'green, yellow, orange or red'
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
    passed UInt32
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
    reasons String COMMENT 'the reasons as a JSON array'
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
        parts.extend(statement.strip() + ";\n" for statement in statements)
    return "\n".join(parts)


if __name__ == "__main__":
    print(render_schema(), end="")
