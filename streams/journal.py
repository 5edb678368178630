"""The worker journal: how far each partition is stored, and its open batches.

After writing a block's rows to every table, the worker appends one journal
row per partition of the block: the last offset now stored and the pickled
state of that partition's batcher. A worker that takes over a partition (after
a crash, a restart or a rebalance) reads the newest row, deletes the rows a
crashed predecessor wrote past that offset, restores the open batches and
skips the events already stored. So replaying Kafka offsets never doubles a
row, by a plain ``count()`` and without ``FINAL``.
"""

import logging
import pickle
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from streams.storage import Storage

__all__ = ["Journal", "PartitionState"]

log = logging.getLogger(__name__)

# Tables whose rows carry the Kafka partition and offset they came from. Range
# checks are stored in ``events``, and those written before migration 3 in
# ``feature_checks_stored``. The ``feature_checks`` view reads both.
_OFFSET_TABLES = (
    "events", "feature_checks_stored", "metric_checks", "batches",
    "batch_checks", "batch_drift", "alerts",
)  # fmt: skip
_BATCH_TABLES = ("batches", "batch_checks", "batch_drift", "alerts")


@dataclass
class PartitionState:
    """The journal's record of one partition."""

    last_offset: int
    """Every event up to this offset is stored; -1 when nothing is."""

    batcher: Any
    """The partition's batching state (:class:`streams.pipeline.PartitionBatches`)
    as of ``last_offset``; None when nothing is stored."""


class Journal:
    """Read and append journal rows of one consumer group."""

    def __init__(self, storage: Storage, group: str) -> None:
        self.storage = storage
        self.group = group

    def recover(self, topic: str, partition: int) -> PartitionState:
        """Return the partition's stored state, after deleting unfinished rows."""
        rows = self.storage.query_rows(
            "SELECT last_offset, batcher_state FROM sink_journal "
            "WHERE group = {group:String} AND topic = {topic:String} "
            "AND partition = {partition:UInt32} "
            "ORDER BY last_offset DESC, written_at DESC LIMIT 1",
            {"group": self.group, "topic": topic, "partition": partition},
        )
        if rows:
            last_offset, blob = rows[0]
            batcher = pickle.loads(bytes.fromhex(blob)) if blob else None
        else:
            last_offset, batcher = -1, None
        self._delete_unfinished(topic, partition, last_offset, batcher)
        return PartitionState(last_offset=last_offset, batcher=batcher)

    def append(self, entries: dict[tuple[str, int], tuple[int, Any]]) -> None:
        """Record that each partition is stored up to its offset, with its batches."""
        columns: dict[str, list] = {
            "group": [], "topic": [], "partition": [], "last_offset": [],
            "batcher_state": [], "written_at": [],
        }  # fmt: skip
        now = datetime.now(UTC)
        for (topic, partition), (offset, batcher) in entries.items():
            columns["group"].append(self.group)
            columns["topic"].append(topic)
            columns["partition"].append(partition)
            columns["last_offset"].append(offset)
            columns["batcher_state"].append(pickle.dumps(batcher).hex())
            columns["written_at"].append(now)
        self.storage.insert_block("sink_journal", columns, quiet=True)

    def _delete_unfinished(
        self, topic: str, partition: int, last_offset: int, batcher: Any
    ) -> None:
        where = "kafka_partition = {partition:UInt32} AND kafka_offset > {offset:Int64}"
        parameters = {"partition": partition, "offset": last_offset, "topic": topic}
        open_batches = batcher.open_batch_ids() if batcher is not None else []
        deleted = 0
        for table in _OFFSET_TABLES:
            condition = where
            if table in _BATCH_TABLES and open_batches:
                condition = f"({where}) OR batch_id IN {{open:Array(String)}}"
                parameters["open"] = open_batches
            deleted += self._delete(table, condition, parameters)
        deleted += self._delete(
            "dead_letters",
            "topic = {topic:String} AND partition = {partition:UInt32} "
            "AND offset > {offset:Int64}",
            parameters,
        )
        if deleted:
            log.warning(
                "removed %d rows of %s partition %d written after offset %d by a "
                "worker that stopped before finishing its block; they are written "
                "again now",
                deleted,
                topic,
                partition,
                last_offset,
            )

    def _delete(self, table: str, condition: str, parameters: dict) -> int:
        count = self.storage.query_rows(
            f"SELECT count() FROM {table} WHERE {condition}", parameters
        )[0][0]
        if count:
            self.storage.command(f"DELETE FROM {table} WHERE {condition}", parameters)
        return count
