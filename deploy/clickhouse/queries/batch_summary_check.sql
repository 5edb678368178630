-- Batch summaries recomputed from the stored events, to verify the batches table.
--
-- The worker counts each batch as events arrive and stores the summary in
-- batches and batch_checks when the batch closes. This query counts the same
-- numbers again from events and feature_checks with the rules of
-- streams.batching, and stored_summary compares them with what the worker
-- stored. Both must agree for every closed batch.
--
-- Rules: every event is checked by auto_od and passes when it is not an
-- outlier. Every feature of every event is checked by its range check and
-- passes when feature_checks.passed is 1. Every custom metric of every
-- event is checked and passes when metric_checks.status is 'passed'.
-- pass_share is passed / checked over all checks of the batch. health comes
-- from the worst single check, with the worker's cut-offs
-- (streams.batching.HealthCutoffs: green >= 0.97, yellow >= 0.93, orange >=
-- 0.85, red below), and is at best orange when batch_drift marks a feature
-- of the batch as drifted. An event is late when its time is before its
-- batch's window start.
--
-- FINAL keeps one row per request_id, so an event stored twice is counted
-- once. The worker sends an event that repeats a processed request_id to
-- the dead-letter topic, so it is counted neither there nor here.
--
-- Parameters:
--   {model:String}                model name
--   {version:UInt32}              model version
--   {batch_window:Float64}        the worker's batch window in seconds
--                                 (ODDWATCH_BATCH_WINDOW, 60 by default)
--   {since:DateTime64(3, 'UTC')}  earliest window start to return, UTC
--
-- Columns:
--   model           model name
--   version         model version
--   batch_id        batch id
--   window_start    start of the batch's event-time window, UTC
--   window_end      window_start + batch_window, UTC
--   events          events in the batch
--   outliers        events flagged by auto_od
--   late_events     events with a time before window_start
--   checks          array of (feature, check, checked, passed), sorted
--   pass_share      passed / checked over all checks
--   health          green, yellow, orange or red, from the worst check
--   closed_by       size, time or shutdown as stored, '' for an open batch
--   stored_summary  'match' when batches and batch_checks contain these
--                   values, 'differs' when they contain other values, and
--                   'missing' when the batch is open or has no summary yet
WITH
    checks AS
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
        UNION ALL
        SELECT batch_id, '' AS feature, toString(metric) AS check_name,
               count() AS checked, countIf(status = 'passed') AS passed
        FROM metric_checks FINAL
        WHERE model = {model:String} AND version = {version:UInt32}
        GROUP BY batch_id, metric
    ),
    drift AS
    (
        SELECT batch_id, max(drifted) AS drifted
        FROM batch_drift FINAL
        WHERE model = {model:String} AND version = {version:UInt32}
        GROUP BY batch_id
    ),
    shares AS
    (
        SELECT batch_id,
               arraySort(groupArray((feature, check_name, checked, passed)))
                   AS checks,
               sum(passed) / sum(checked) AS pass_share,
               min(passed / checked) AS worst_share
        FROM checks
        GROUP BY batch_id
    ),
    totals AS
    (
        SELECT model, version, batch_id,
               parseDateTime64BestEffort(splitByChar('/', batch_id)[-2], 3, 'UTC')
                   AS window_start,
               window_start
                   + toIntervalMillisecond(
                       toInt64(round({batch_window:Float64} * 1000)))
                   AS window_end,
               count() AS events,
               countIf(is_outlier = 1) AS outliers,
               countIf(event_time < window_start) AS late_events
        FROM events FINAL
        WHERE model = {model:String} AND version = {version:UInt32}
        GROUP BY model, version, batch_id
    ),
    stored_checks AS
    (
        SELECT batch_id,
               arraySort(groupArray((toString(feature), toString(check),
                                     toUInt64(checked), toUInt64(passed))))
                   AS checks
        FROM batch_checks FINAL
        WHERE model = {model:String} AND version = {version:UInt32}
        GROUP BY batch_id
    ),
    stored AS
    (
        SELECT b.batch_id AS batch_id, 1 AS found,
               b.window_start AS window_start, b.window_end AS window_end,
               toString(b.closed_by) AS closed_by, b.events AS events,
               b.outliers AS outliers, b.late_events AS late_events,
               c.checks AS checks, b.pass_share AS pass_share,
               toString(b.health) AS health
        FROM
        (
            SELECT *
            FROM batches FINAL
            WHERE model = {model:String} AND version = {version:UInt32}
        ) AS b
        LEFT JOIN stored_checks AS c ON b.batch_id = c.batch_id
    )
SELECT
    t.model AS model,
    t.version AS version,
    t.batch_id AS batch_id,
    t.window_start AS window_start,
    t.window_end AS window_end,
    t.events AS events,
    t.outliers AS outliers,
    t.late_events AS late_events,
    s.checks AS checks,
    s.pass_share AS pass_share,
    multiIf(
        s.worst_share >= 0.97 AND d.drifted = 0, 'green',
        s.worst_share >= 0.93 AND d.drifted = 0, 'yellow',
        s.worst_share >= 0.85, 'orange',
        'red'
    ) AS health,
    stored.closed_by AS closed_by,
    multiIf(
        stored.found = 0, 'missing',
        stored.window_start = t.window_start
            AND stored.window_end = t.window_end
            AND stored.events = t.events
            AND stored.outliers = t.outliers
            AND stored.late_events = t.late_events
            AND stored.checks = s.checks
            AND stored.pass_share = s.pass_share
            AND stored.health = health,
        'match',
        'differs'
    ) AS stored_summary
FROM totals AS t
INNER JOIN shares AS s ON t.batch_id = s.batch_id
LEFT JOIN drift AS d ON t.batch_id = d.batch_id
LEFT JOIN stored ON t.batch_id = stored.batch_id
WHERE t.window_start >= {since:DateTime64(3, 'UTC')}
ORDER BY window_start, batch_id
