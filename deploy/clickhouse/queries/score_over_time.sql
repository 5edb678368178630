-- Outlier score and threshold of every request of a model version over time.
--
-- One row per stored event, oldest first, with its auto_od score and the
-- threshold it was compared with. A request is an outlier when its score is
-- above the threshold. FINAL keeps one row per request_id, so an event
-- stored twice is drawn once.
--
-- Parameters:
--   {model:String}                          model name
--   {version:UInt32}                        model version
--   {since:Nullable(DateTime64(3, 'UTC'))}  earliest event time to return, UTC,
--                                           or NULL for every event
--
-- Columns:
--   event_time  when the model served the request, UTC
--   request_id  request id
--   score       auto_od outlier score, higher is more anomalous
--   threshold   score above which the request is an outlier
--   is_outlier  1 when score > threshold, else 0
--   batch_id    batch the request belongs to
SELECT event_time, request_id, score, threshold, is_outlier, batch_id
FROM events FINAL
WHERE model = {model:String}
  AND version = {version:UInt32}
  AND (
      {since:Nullable(DateTime64(3, 'UTC'))} IS NULL
      OR event_time >= {since:Nullable(DateTime64(3, 'UTC'))}
  )
ORDER BY event_time, request_id
