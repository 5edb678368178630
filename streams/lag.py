"""How far a consumer group is behind a topic, read from the broker.

The scoring agent commits an offset only after the events before it are
written to ClickHouse, so a group with no lag has stored everything produced
so far.
"""

import time

from confluent_kafka import Consumer, KafkaException, TopicPartition

from streams.errors import KafkaUnavailableError

__all__ = ["LagProbe", "wait_until_consumed"]


class LagProbe:
    """Read a group's committed offsets and a topic's end offsets.

    Holds one consumer configured with the group's id, which never subscribes
    and so never joins the group: it only asks the group coordinator for the
    committed offsets. Repeated reads open no new connections.
    """

    def __init__(self, servers: str, group: str, topic: str) -> None:
        self.servers = servers
        self.group = group
        self.topic = topic
        self._consumer = Consumer(
            {
                "bootstrap.servers": servers,
                "group.id": group,
                "enable.auto.commit": False,
                "log_level": 3,
            }
        )

    def lag(self, timeout: float = 10.0) -> int:
        """Return how many messages of the topic the group has not committed yet.

        Returns -1 while the topic does not exist or the broker cannot tell yet.
        """
        try:
            ends = self._end_offsets(timeout)
            if not ends:
                return -1
            partitions = self._consumer.committed(
                [TopicPartition(self.topic, p) for p in ends], timeout=timeout
            )
        except KafkaException as error:
            if error.args and getattr(error.args[0], "retriable", lambda: False)():
                # A broker that has just started is still loading its group
                # coordinator; the offsets are simply not known yet.
                return -1
            raise KafkaUnavailableError(
                f"reading the offsets of group {self.group!r} on {self.topic!r} "
                f"from {self.servers} failed: {error}"
            ) from error
        committed = {item.partition: item.offset for item in partitions}
        return sum(end - max(committed.get(p, -1), 0) for p, end in ends.items())

    def close(self) -> None:
        self._consumer.close()

    def _end_offsets(self, timeout: float) -> dict[int, int]:
        metadata = self._consumer.list_topics(self.topic, timeout=timeout)
        ends = {}
        for partition in metadata.topics[self.topic].partitions:
            _low, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, partition), timeout=timeout
            )
            ends[partition] = high
        return ends


def wait_until_consumed(
    servers: str, group: str, topic: str, *, timeout: float, interval: float = 0.5
) -> float:
    """Block until ``group`` has committed all of ``topic``; return seconds waited.

    Raises TimeoutError with the remaining lag when ``timeout`` passes first.
    """
    probe = LagProbe(servers, group, topic)
    started = time.monotonic()
    lag = -1
    try:
        while time.monotonic() - started < timeout:
            lag = probe.lag()
            if lag == 0:
                return time.monotonic() - started
            time.sleep(interval)
    finally:
        probe.close()
    raise TimeoutError(
        f"group {group!r} still had {lag} messages of {topic!r} to commit after "
        f"{timeout:.0f} s; check the worker's log"
    )
