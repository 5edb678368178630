-- Summary of one closed batch, one row per check, as the worker stored it.
--
-- The batch columns come from batches and repeat on every row. The check
-- columns come from batch_checks: one range row per feature and one auto_od
-- row with an empty feature. An open batch has no summary yet, so it
-- returns no rows, but feature_pass_share.sql counts open batches too.
-- FINAL keeps one row per batch and check when a summary was stored twice.
--
-- Parameters:
--   {batch_id:String}  batch id, such as census/1/2026-12-04T15:00:00Z/000003
--
-- Columns:
--   model               model name
--   version             model version
--   batch_id            batch id
--   window_start        start of the batch's event-time window, UTC
--   window_end          end of the window, UTC
--   closed_by           size, time or shutdown
--   events              events in the batch
--   outliers            events flagged by auto_od
--   late_events         events with a time before window_start
--   batch_pass_share    passed / checked over every check of the batch
--   batch_health        green, yellow, orange or red, from the worst check
--   check               'range', 'auto_od' or a custom metric name
--   feature             feature name, or '' for checks of the whole event
--   checked             values checked
--   passed              values that passed
--   pass_share          passed / checked of this check
SELECT
    b.model AS model,
    b.version AS version,
    b.batch_id AS batch_id,
    b.window_start AS window_start,
    b.window_end AS window_end,
    b.closed_by AS closed_by,
    b.events AS events,
    b.outliers AS outliers,
    b.late_events AS late_events,
    b.pass_share AS batch_pass_share,
    b.health AS batch_health,
    c.check AS check,
    c.feature AS feature,
    c.checked AS checked,
    c.passed AS passed,
    c.passed / c.checked AS pass_share
FROM
(
    SELECT *
    FROM batches FINAL
    WHERE batch_id = {batch_id:String}
) AS b
INNER JOIN
(
    SELECT *
    FROM batch_checks FINAL
    WHERE batch_id = {batch_id:String}
) AS c
ON b.model = c.model AND b.version = c.version AND b.batch_id = c.batch_id
ORDER BY check, feature
