-- Drift test of each feature in each batch of a model version.
--
-- One row per batch and feature, as the worker stored it in batch_drift.
-- FINAL keeps one row per batch and feature when a result was stored twice.
--
-- Parameters:
--   {model:String}                model name
--   {version:UInt32}              model version
--   {since:DateTime64(3, 'UTC')}  earliest window start to return, UTC
--
-- Columns:
--   window_start      start of the batch's event-time window, UTC
--   batch_id          batch id
--   feature           feature name
--   method            ks for numbers, chi_square for categories
--   tested            1 when the batch had enough values to test
--   values            values tested
--   statistic         test statistic, NULL when not tested
--   adjusted_p_value  Benjamini-Hochberg p-value across the batch
--   drifted           1 when adjusted_p_value < 0.01
--   reason            why the feature was not tested, '' when it was
SELECT window_start, batch_id, toString(feature) AS feature,
       toString(method) AS method, tested, values, statistic,
       adjusted_p_value, drifted, reason
FROM batch_drift FINAL
WHERE model = {model:String}
  AND version = {version:UInt32}
  AND window_start >= {since:DateTime64(3, 'UTC')}
ORDER BY window_start, batch_id, feature
