-- Number of alerts per model version, day and kind.
--
-- An alert is counted on the UTC day it occurred: the event time of an
-- outlier alert, or the window end of an unhealthy_batch alert. Days
-- without alerts have no row. FINAL keeps one row per alert_id, so an
-- alert stored twice, which has the same id, is counted once.
--
-- Parameters:
--   {since:Date}  first day to count, UTC
--
-- Columns:
--   day      UTC day the alerts occurred
--   model    model name
--   version  model version
--   kind     outlier or unhealthy_batch
--   alerts   number of alerts
SELECT
    toDate(occurred_at) AS day,
    model,
    version,
    kind,
    count() AS alerts
FROM alerts FINAL
WHERE toDate(occurred_at) >= {since:Date}
GROUP BY day, model, version, kind
ORDER BY day, model, version, kind
