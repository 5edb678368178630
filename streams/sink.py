"""The ClickHouse sink: writes scored blocks and dead letters."""

import logging

from streams.records import MAX_DEAD_LETTER_ORIGINAL, DeadLetter
from streams.scoring import ScoredBlock
from streams.storage import Storage

__all__ = ["ClickHouseSink"]

log = logging.getLogger(__name__)


class ClickHouseSink:
    """Write blocks to ClickHouse so that writing the same offsets twice is harmless.

    Each table insert carries a deduplication token made of the Kafka
    topic, partition and offset range of the block, so ClickHouse ignores a
    block that is written again after a crash or a retry.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def write(self, block: ScoredBlock, token: str) -> None:
        """Insert the block's events, feature checks and dead letters."""
        self.storage.insert_block("events", block.events, deduplication_token=token)
        self.storage.insert_block(
            "feature_checks", block.feature_checks, deduplication_token=token
        )
        if block.dead_letters:
            self.storage.insert_block(
                "dead_letters",
                _dead_letter_columns(block.dead_letters),
                deduplication_token=token,
            )


def _dead_letter_columns(letters: list[DeadLetter]) -> dict[str, list]:
    columns: dict[str, list] = {
        "received_at": [],
        "topic": [],
        "partition": [],
        "offset": [],
        "reason_code": [],
        "reason": [],
        "field": [],
        "original": [],
        "original_size": [],
    }
    for letter in letters:
        message = letter.message
        columns["received_at"].append(message.received_at)
        columns["topic"].append(message.topic)
        columns["partition"].append(message.partition)
        columns["offset"].append(message.offset)
        columns["reason_code"].append(letter.reason_code)
        columns["reason"].append(letter.reason)
        columns["field"].append(letter.field)
        columns["original"].append(
            message.value[:MAX_DEAD_LETTER_ORIGINAL].decode("utf-8", "replace")
        )
        columns["original_size"].append(len(message.value))
    return columns
