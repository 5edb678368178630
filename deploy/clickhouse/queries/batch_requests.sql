-- Every request of one batch: its values, prediction, statuses and score.
--
-- One row per stored event of the batch, oldest first, open batches
-- included. statuses maps each profiled feature to its range check status.
-- failed_features lists the features whose check did not pass, which
-- leaves out a missing value of a feature that was missing in training too.
-- Features the profile does not know are in features and extra_features
-- but have no status. FINAL keeps one row per request_id and feature, so an
-- event stored twice is listed once.
--
-- The model and version are read from the batch id so that ClickHouse can
-- use the tables' sorting keys, which start with (model, version).
--
-- Parameters:
--   {batch_id:String}  batch id, such as census/1/2026-12-04T15:00:00Z/000003
--
-- Columns:
--   event_time       when the model served the request, UTC
--   request_id       request id
--   features         the event's features as JSON text, as sent
--   extra_features   features sent that the profile does not know
--   prediction       the model's output as JSON text, 'null' when absent
--   statuses         map of feature name to range check status
--   failed_features  features whose range check did not pass, sorted
--   score            auto_od outlier score
--   threshold        score above which the request is an outlier
--   is_outlier       1 when score > threshold, else 0
WITH
    splitByChar('/', {batch_id:String}) AS id_parts,
    arrayStringConcat(arraySlice(id_parts, 1, length(id_parts) - 3), '/')
        AS batch_model,
    toUInt32OrZero(id_parts[-3]) AS batch_version
SELECT
    e.event_time AS event_time,
    e.request_id AS request_id,
    e.features AS features,
    e.extra_features AS extra_features,
    e.prediction AS prediction,
    c.statuses AS statuses,
    c.failed_features AS failed_features,
    e.score AS score,
    e.threshold AS threshold,
    e.is_outlier AS is_outlier
FROM
(
    SELECT request_id, event_time, features, extra_features, prediction,
           score, threshold, is_outlier
    FROM events FINAL
    WHERE model = batch_model
      AND version = batch_version
      AND batch_id = {batch_id:String}
) AS e
LEFT JOIN
(
    SELECT
        request_id,
        mapFromArrays(
            groupArray(toString(feature)), groupArray(toString(status))
        ) AS statuses,
        arraySort(groupArrayIf(toString(feature), passed = 0)) AS failed_features
    FROM feature_checks FINAL
    WHERE model = batch_model
      AND version = batch_version
      AND batch_id = {batch_id:String}
    GROUP BY request_id
) AS c
ON e.request_id = c.request_id
ORDER BY event_time, request_id
