-- Share of checks passed per feature and batch: the feature × batch health grid.
--
-- One row per batch and check. Each feature has a range row, counted from
-- feature_checks, where a value passes when its passed column is 1 (status
-- ok, or missing for a feature that was missing in training too). Each batch
-- also has one auto_od row with an empty feature, counted from events, where
-- an event passes when it is not an outlier. These are the counts the worker
-- stores in batch_checks when it closes a batch, but open batches appear
-- here too, so the newest column of the grid fills as events arrive. The
-- window start is read from the batch id because the batches table has no
-- row for an open batch. Late events count in their batch even when their
-- event time is before the window start.
--
-- FINAL collapses rows with the same sorting key that ClickHouse has not
-- merged yet, such as an event stored twice under one request_id, so no
-- value is counted twice.
--
-- health applies the worker's cut-offs (streams.batching.HealthCutoffs:
-- green >= 0.97, yellow >= 0.93, orange >= 0.85, red below) to this one
-- check. A batch's own health is that of its worst check.
--
-- Parameters:
--   {model:String}                model name
--   {version:UInt32}              model version
--   {since:DateTime64(3, 'UTC')}  earliest window start to return, UTC
--
-- Columns:
--   window_start  start of the batch's event-time window, UTC
--   batch_id      batch id
--   feature       feature name, or '' for auto_od
--   check         'range' or 'auto_od'
--   checked       values checked
--   passed        values that passed
--   pass_share    passed / checked
--   health        green, yellow, orange or red for this check alone
SELECT
    parseDateTime64BestEffort(splitByChar('/', batch_id)[-2], 3, 'UTC')
        AS window_start,
    batch_id,
    feature,
    check_name AS check,
    checked,
    passed,
    passed / checked AS pass_share,
    multiIf(
        pass_share >= 0.97, 'green',
        pass_share >= 0.93, 'yellow',
        pass_share >= 0.85, 'orange',
        'red'
    ) AS health
FROM
(
    SELECT batch_id, toString(feature) AS feature, 'range' AS check_name,
           count() AS checked, sum(passed) AS passed
    FROM feature_checks FINAL
    WHERE model = {model:String} AND version = {version:UInt32}
    GROUP BY batch_id, feature
    UNION ALL
    SELECT batch_id, '' AS feature, 'auto_od' AS check_name,
           count() AS checked, countIf(is_outlier = 0) AS passed
    FROM events FINAL
    WHERE model = {model:String} AND version = {version:UInt32}
    GROUP BY batch_id
)
WHERE window_start >= {since:DateTime64(3, 'UTC')}
ORDER BY window_start, batch_id, check, feature
