"""How far a consumer group is behind a topic, read from the broker.

The scoring agent commits an offset only after the events before it are
written to ClickHouse, so a group with no lag has stored everything produced
so far.
"""

import time

from confluent_kafka import (
    Consumer,
    ConsumerGroupTopicPartitions,
    KafkaException,
    TopicPartition,
)
from confluent_kafka.admin import AdminClient

from streams.errors import KafkaUnavailableError

__all__ = ["group_lag", "wait_until_consumed"]


def group_lag(servers: str, group: str, topic: str, timeout: float = 10.0) -> int:
    """Return how many messages of ``topic`` ``group`` has not committed yet."""
    try:
        ends = _end_offsets(servers, topic, timeout)
        admin = AdminClient({"bootstrap.servers": servers})
        request = ConsumerGroupTopicPartitions(
            group, [TopicPartition(topic, partition) for partition in ends]
        )
        future = admin.list_consumer_group_offsets([request])[group]
        committed = {
            item.partition: item.offset
            for item in future.result(timeout).topic_partitions
        }
    except KafkaException as error:
        raise KafkaUnavailableError(
            f"reading the offsets of group {group!r} on {topic!r} from {servers} "
            f"failed: {error}"
        ) from error
    lag = 0
    for partition, end in ends.items():
        done = committed.get(partition, -1)
        lag += end - max(done, 0)
    return lag


def wait_until_consumed(
    servers: str, group: str, topic: str, *, timeout: float, interval: float = 0.5
) -> float:
    """Block until ``group`` has committed all of ``topic``; return seconds waited.

    Raises TimeoutError with the remaining lag when ``timeout`` passes first.
    """
    started = time.monotonic()
    lag = -1
    while time.monotonic() - started < timeout:
        lag = group_lag(servers, group, topic)
        if lag == 0:
            return time.monotonic() - started
        time.sleep(interval)
    raise TimeoutError(
        f"group {group!r} still had {lag} messages of {topic!r} to commit after "
        f"{timeout:.0f} s; check the worker's log"
    )


def _end_offsets(servers: str, topic: str, timeout: float) -> dict[int, int]:
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": "oddwatch-lag-probe",
            "enable.auto.commit": False,
        }
    )
    try:
        metadata = consumer.list_topics(topic, timeout=timeout)
        partitions = metadata.topics[topic].partitions
        ends = {}
        for partition in partitions:
            _low, high = consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=timeout
            )
            ends[partition] = high
        return ends
    finally:
        consumer.close()
