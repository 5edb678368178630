"""The ClickHouse sink: writes the rows of a processed block."""

import logging

from streams.pipeline import BlockOutput
from streams.storage import Storage

__all__ = ["ClickHouseSink"]

log = logging.getLogger(__name__)


class ClickHouseSink:
    """Write blocks to ClickHouse so that writing the same offsets twice is harmless.

    Every insert carries a deduplication token made of the block's Kafka
    offset range (or, for batches closed by the clock, their batch ids), so
    ClickHouse ignores a block that is written again after a retry.
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def write(self, output: BlockOutput, token: str) -> None:
        """Insert every table's rows of ``output``."""
        tables = {
            "events": output.events,
            "feature_checks": output.feature_checks,
            "batches": output.batches,
            "batch_checks": output.batch_checks,
            "alerts": output.alerts,
            "dead_letters": output.dead_letter_columns(),
        }
        for table, columns in tables.items():
            self.storage.insert_block(table, columns, deduplication_token=token)
