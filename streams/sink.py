"""The ClickHouse sink: writes the rows of a processed block."""

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from streams.pipeline import BlockOutput
from streams.storage import Storage

__all__ = ["ClickHouseSink", "batch_rows_table", "events_table"]

log = logging.getLogger(__name__)

_TIME = pa.timestamp("ms", tz="UTC")
_TEXTS = pa.list_(pa.string())

# Arrow types of the columns of ``events`` and of the Null table ``batch_rows``
# (see streams/ddl.py). ClickHouse converts them to the declared column types.
_EVENT_ROW_TYPES: dict[str, pa.DataType] = {
    "model": pa.string(),
    "version": pa.uint32(),
    "request_id": pa.string(),
    "event_time": _TIME,
    "received_at": _TIME,
    "batch_id": pa.string(),
    "features": pa.string(),
    "extra_features": _TEXTS,
    "prediction": pa.string(),
    "score": pa.float64(),
    "threshold": pa.float64(),
    "is_outlier": pa.uint8(),
    "failed_checks": pa.uint16(),
    "kafka_partition": pa.uint32(),
    "kafka_offset": pa.uint64(),
    "check_features": _TEXTS,
    "check_statuses": _TEXTS,
    "check_passed": pa.list_(pa.uint8()),
    "check_numbers": pa.list_(pa.float64()),
    "check_texts": _TEXTS,
}
_BATCH_ROW_TYPES: dict[str, pa.DataType] = {
    "model": pa.string(),
    "version": pa.uint32(),
    "batch_id": pa.string(),
    "window_start": _TIME,
    "window_end": _TIME,
    "closed_by": pa.string(),
    "events": pa.uint32(),
    "outliers": pa.uint32(),
    "late_events": pa.uint32(),
    "pass_share": pa.float64(),
    "health": pa.string(),
    "kafka_partition": pa.uint32(),
    "kafka_offset": pa.uint64(),
    "check_features": _TEXTS,
    "check_names": _TEXTS,
    "check_checked": pa.list_(pa.uint32()),
    "check_passed": pa.list_(pa.uint32()),
    "drift_features": _TEXTS,
    "drift_methods": _TEXTS,
    "drift_tested": pa.list_(pa.uint8()),
    "drift_values": pa.list_(pa.uint32()),
    "drift_missing": pa.list_(pa.uint32()),
    "drift_statistics": pa.list_(pa.float64()),
    "drift_p_values": pa.list_(pa.float64()),
    "drift_adjusted_p_values": pa.list_(pa.float64()),
    "drift_drifted": pa.list_(pa.uint8()),
    "drift_reasons": _TEXTS,
}


class ClickHouseSink:
    """Write the rows of a block to ClickHouse in as few inserts as possible.

    Events go in one insert into ``events``, with their range checks as
    arrays that the ``feature_checks`` view expands when it is read. Batch
    summaries go in one insert into the Null table ``batch_rows``, whose
    materialized views write ``batches``, ``batch_checks`` and
    ``batch_drift``. Each ClickHouse insert costs milliseconds whatever its
    size, so fewer inserts a block matter.

    Every insert carries a deduplication token unique to the block and the
    worker process, so when a write is retried after an error, ClickHouse
    ignores the tables that already have the block, the tables written by
    materialized views included. Rows a crashed worker left behind are
    removed through the journal (:mod:`streams.journal`).
    """

    def __init__(self, storage: Storage) -> None:
        self.storage = storage

    def write(self, output: BlockOutput, token: str) -> None:
        """Insert every table's rows of ``output``."""
        storage = self.storage
        if output.event_count:
            storage.insert_arrow(
                "events", events_table(output), deduplication_token=token
            )
        storage.insert_block(
            "metric_checks", output.metric_checks, deduplication_token=token
        )
        if output.batches["batch_id"]:
            storage.insert_arrow(
                "batch_rows", batch_rows_table(output), deduplication_token=token
            )
        storage.insert_block("alerts", output.alerts, deduplication_token=token)
        storage.insert_block(
            "dead_letters", output.dead_letter_columns(), deduplication_token=token
        )


def events_table(output: BlockOutput) -> pa.Table:
    """Return the events of ``output`` as an Arrow table for ``events``."""
    columns = output.events
    arrays = []
    for name, kind in _EVENT_ROW_TYPES.items():
        values = columns[name]
        if name == "check_numbers":
            arrays.append(_list_array(values, kind, nan_is_null=True))
        elif name.startswith("check_"):
            arrays.append(_list_array(values, kind))
        else:
            arrays.append(pa.array(values, type=kind))
    return pa.Table.from_arrays(arrays, names=list(_EVENT_ROW_TYPES))


def batch_rows_table(output: BlockOutput) -> pa.Table:
    """Return the batch summaries of ``output`` as an Arrow table for ``batch_rows``."""
    columns = output.batches
    arrays = [
        pa.array(columns[name], type=kind) for name, kind in _BATCH_ROW_TYPES.items()
    ]
    return pa.Table.from_arrays(arrays, names=list(_BATCH_ROW_TYPES))


def _list_array(
    rows: Sequence[Any], kind: pa.ListType, *, nan_is_null: bool = False
) -> pa.ListArray:
    """Build a list column from one array a row, flattened in one step."""
    lengths = np.fromiter(map(len, rows), dtype=np.int32, count=len(rows))
    offsets = np.zeros(len(rows) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    value_type = kind.value_type
    if not pa.types.is_string(value_type):
        flat = np.concatenate(rows).astype(value_type.to_pandas_dtype(), copy=False)
        mask = np.isnan(flat) if nan_is_null else None
        values = pa.array(flat, type=value_type, mask=mask)
    else:
        values = pa.array(np.concatenate(rows), type=value_type)
    return pa.ListArray.from_arrays(pa.array(offsets), values)
