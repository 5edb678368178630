"""The ClickHouse sink: writes the rows of a processed block."""

import logging

from streams.pipeline import BlockOutput
from streams.storage import Storage

__all__ = ["ClickHouseSink"]

log = logging.getLogger(__name__)


class ClickHouseSink:
    """Write the rows of a block to ClickHouse, one insert a table.

    Every insert carries a deduplication token unique to the block and the
    worker process, so when a write is retried after an error, ClickHouse
    ignores the tables that already have the block. Rows a crashed worker
    left behind are removed through the journal (:mod:`streams.journal`).
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def write(self, output: BlockOutput, token: str) -> None:
        """Insert every table's rows of ``output``."""
        tables = {
            "events": output.events,
            "feature_checks": output.feature_checks,
            "metric_checks": output.metric_checks,
            "batch_drift": output.batch_drift,
            "batches": output.batches,
            "batch_checks": output.batch_checks,
            "alerts": output.alerts,
            "dead_letters": output.dead_letter_columns(),
        }
        for table, columns in tables.items():
            self.storage.insert_block(table, columns, deduplication_token=token)
