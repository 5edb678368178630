-- oddwatch ClickHouse schema, generated from streams/ddl.py.
-- The worker applies it by itself at start; this file is for reading
-- and for creating the tables by hand on a ClickHouse server.

CREATE DATABASE IF NOT EXISTS oddwatch;
USE oddwatch;

-- migration 1: events, per-feature checks and dead letters
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
SETTINGS non_replicated_deduplication_window = 10000;

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
SETTINGS non_replicated_deduplication_window = 10000;

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
SETTINGS non_replicated_deduplication_window = 10000;
