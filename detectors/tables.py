"""Reading training and scoring tables from CSV and Parquet files."""

from __future__ import annotations

import bz2
import gzip
import logging
import lzma
import os
from collections.abc import Sequence

import pandas as pd

from .errors import TableReadError

__all__ = ["read_table"]

logger = logging.getLogger(__name__)

# Cells read as missing in CSV files, besides the empty cell.
CSV_MISSING = ("?",)

_PARQUET_SUFFIXES = (".parquet", ".pq", ".parq")
_OPENERS = {".gz": gzip.open, ".bz2": bz2.open, ".xz": lzma.open}


def read_table(
    path: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    *,
    skip_rows: int = 0,
) -> pd.DataFrame:
    """Read a CSV or Parquet file into a DataFrame.

    Files ending in ``.parquet``, ``.pq`` or ``.parq`` are read as Parquet,
    everything else as CSV (gzip and other compressions are recognised from
    the suffix).

    Parameters
    ----------
    path
        File to read.
    names
        Column names for a CSV file without a header row, such as the UCI
        Adult files. Without ``names`` the first row is the header.
    skip_rows
        Lines to skip at the top of a CSV file before the header or data.

    Notes
    -----
    In CSV files an empty cell and ``?`` are missing values, and spaces after
    a comma are ignored, so ``39, State-gov`` reads as ``39`` and
    ``State-gov``. A first line starting with ``|`` is a comment and skipped,
    as in the UCI Adult test file.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise TableReadError(f"cannot read {path!r}: file not found")
    try:
        if path.lower().endswith(_PARQUET_SUFFIXES):
            frame = _read_parquet(path, names)
        else:
            frame = _read_csv(path, names, skip_rows)
    except (OSError, ValueError, pd.errors.ParserError) as error:
        raise TableReadError(f"cannot read {path!r}: {error}") from error
    logger.info("read %s: %d rows, %d columns", path, len(frame), frame.shape[1])
    return frame


def _read_csv(path: str, names: Sequence[str] | None, skip_rows: int) -> pd.DataFrame:
    if _first_line(path).startswith("|"):
        skip_rows += 1
    return pd.read_csv(
        path,
        header=None if names is not None else "infer",
        names=list(names) if names is not None else None,
        sep=",",
        skipinitialspace=True,
        na_values=list(CSV_MISSING),
        skiprows=skip_rows,
        index_col=False,
    )


def _first_line(path: str) -> str:
    opener = _OPENERS.get(os.path.splitext(path)[1].lower(), open)
    with opener(path, "rt", encoding="utf-8", errors="replace") as stream:
        return stream.readline()


def _read_parquet(path: str, names: Sequence[str] | None) -> pd.DataFrame:
    frame = pd.read_parquet(path)
    if names is not None:
        if len(names) != frame.shape[1]:
            raise TableReadError(
                f"cannot read {path!r}: expected {len(names)} columns from names=, "
                f"the file has {frame.shape[1]}"
            )
        frame.columns = list(names)
    return frame
