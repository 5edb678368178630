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
        "events, per-feature checks and dead letters",
        [
            f"""
CREATE TABLE IF NOT EXISTS events
(
    model LowCardinality(String),
    version UInt32,
    request_id String,
    event_time DateTime64(3, 'UTC'),
    received_at DateTime64(3, 'UTC'),
    features String COMMENT 'the event''s features as JSON text',
    prediction String COMMENT 'the model''s output as JSON text',
    score Float64 COMMENT 'auto_od outlier score, higher is more anomalous',
    threshold Float64,
    is_outlier UInt8,
    failed_checks UInt16 COMMENT 'features whose status is not ok',
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
    feature LowCardinality(String),
    status LowCardinality(String)
        COMMENT 'ok, below_min, above_max, unseen_category, missing or wrong_type',
    value_number Nullable(Float64),
    value_text Nullable(String)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(event_time)
ORDER BY (model, version, feature, request_id)
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
