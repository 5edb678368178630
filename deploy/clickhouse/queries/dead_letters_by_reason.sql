-- Number of dead letters per reason code, with the first one as an example.
--
-- A dead letter is a message from the predictions topic that the worker
-- rejected. reason_code is a stable word such as invalid_json,
-- invalid_event or model_not_registered. The example is the earliest
-- received dead letter of that code, and its topic, partition and offset
-- locate the original message in Kafka. FINAL keeps one row per topic,
-- partition and offset, so a message rejected twice is counted once.
--
-- Parameters:
--   {since:DateTime64(3, 'UTC')}  earliest receive time to count, UTC
--
-- Columns:
--   reason_code        stable reason word
--   dead_letters       number of dead letters with this code
--   first_received_at  receive time of the earliest one, UTC
--   last_received_at   receive time of the latest one, UTC
--   example_reason     human-readable reason of the earliest one
--   example_field      event field at fault in it, '' for the whole event
--   example_topic      Kafka topic of the earliest one
--   example_partition  its Kafka partition
--   example_offset     its Kafka offset
SELECT
    toString(reason_code) AS reason_code,
    count() AS dead_letters,
    min(received_at) AS first_received_at,
    max(received_at) AS last_received_at,
    argMin(reason, (received_at, topic, partition, offset)) AS example_reason,
    argMin(field, (received_at, topic, partition, offset)) AS example_field,
    argMin(topic, (received_at, topic, partition, offset)) AS example_topic,
    argMin(partition, (received_at, topic, partition, offset)) AS example_partition,
    argMin(offset, (received_at, topic, partition, offset)) AS example_offset
FROM dead_letters FINAL
WHERE received_at >= {since:DateTime64(3, 'UTC')}
GROUP BY reason_code
ORDER BY dead_letters DESC, reason_code
