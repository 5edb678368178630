"""oddwatch's Kafka topics and their creation."""

import logging

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from streams.errors import KafkaUnavailableError
from streams.settings import Settings

__all__ = ["OUTPUT_TOPICS", "ensure_topics"]

log = logging.getLogger(__name__)

OUTPUT_TOPICS = ("scored", "alerts", "batches", "deadletter")


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are.

    ``models`` is compacted, so the latest registration of every model
    version is kept forever. The others keep Kafka's default retention.
    """
    admin = AdminClient({"bootstrap.servers": settings.kafka, "log_level": 3})
    try:
        existing = set(admin.list_topics(timeout=timeout).topics)
    except KafkaException as error:
        raise KafkaUnavailableError(
            f"Kafka at {settings.kafka} did not respond within {timeout:.0f} s "
            f"({error}); start it with `deploy/kafka/kafka.sh start` or set "
            "ODDWATCH_KAFKA"
        ) from error
    wanted = [
        NewTopic(settings.topic("predictions"), settings.partitions),
        NewTopic(settings.topic("models"), 1, config={"cleanup.policy": "compact"}),
        *(
            NewTopic(settings.topic(name), settings.partitions)
            for name in OUTPUT_TOPICS
        ),
    ]
    missing = [topic for topic in wanted if topic.topic not in existing]
    if not missing:
        return
    for name, future in admin.create_topics(missing, request_timeout=timeout).items():
        try:
            future.result()
            log.info("created topic %s", name)
        except KafkaException as error:
            if "TOPIC_ALREADY_EXISTS" not in str(error):
                raise KafkaUnavailableError(
                    f"creating topic {name} on {settings.kafka} failed: {error}"
                ) from error
