-- Features with the most failed range checks in the hour before a given time.
--
-- The same query as worst_features_last_hour.sql, but the hour ends at a
-- given time instead of now(), for looking back at an incident or for
-- reproducible results. It counts the feature_checks rows with
-- until - 1 hour <= event_time < until. A value fails when its passed
-- column is 0, so a missing value of a feature that was missing in training
-- too does not count as failed. top_failed_status is the most common status
-- among the failed values, and on a tie the first in alphabetical order.
-- Only features with at least one failed value are returned, most failed
-- first. FINAL keeps one row per request_id and feature, so an event stored
-- twice is counted once.
--
-- Parameters:
--   {model:String}                model name
--   {version:UInt32}              model version
--   {until:DateTime64(3, 'UTC')}  end of the hour, excluded, UTC
--   {limit:UInt32}                maximum number of features to return
--
-- Columns:
--   feature            feature name
--   failed             values that failed their range check
--   checked            values checked
--   failed_share       failed / checked
--   top_failed_status  most common status among the failed values
SELECT
    feature,
    sumIf(value_count, passed = 0) AS failed,
    sum(value_count) AS checked,
    failed / checked AS failed_share,
    tupleElement(
        arraySort(
            pair -> (-tupleElement(pair, 2), tupleElement(pair, 1)),
            groupArrayIf((status, value_count), passed = 0)
        )[1],
        1
    ) AS top_failed_status
FROM
(
    SELECT toString(feature) AS feature, toString(status) AS status, passed,
           count() AS value_count
    FROM feature_checks FINAL
    WHERE model = {model:String}
      AND version = {version:UInt32}
      AND event_time >= {until:DateTime64(3, 'UTC')} - INTERVAL 1 HOUR
      AND event_time < {until:DateTime64(3, 'UTC')}
    GROUP BY feature, status, passed
)
GROUP BY feature
HAVING failed > 0
ORDER BY failed DESC, feature
LIMIT {limit:UInt32}
