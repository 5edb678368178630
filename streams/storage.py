"""ClickHouse storage: the connection, the tables and block inserts.

One connection string selects the engine, and the same SQL serves both:

- ``chdb://DIR`` runs the ClickHouse engine inside this process, with its data
  in DIR (relative paths are taken from the current directory). Only one
  process at a time can open a directory, and a running worker keeps it open.
- ``http(s)://[user:password@]host:port[/database]`` talks to a ClickHouse
  server.

Every clickhouse-connect error is re-raised as :class:`StorageError`.
"""

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import clickhouse_connect
import pandas as pd
import pyarrow as pa
from clickhouse_connect.driver.exceptions import ClickHouseError

from streams.ddl import MIGRATIONS, Conditional
from streams.errors import ConfigError, StorageBusyError, StorageError
from streams.settings import mask_url

__all__ = ["Storage"]

log = logging.getLogger(__name__)

DEFAULT_DATABASE = "oddwatch"
_BUSY_MARKERS = ("Cannot lock file", "Unable to open the chdb engine")


class Storage:
    """A ClickHouse connection with oddwatch's tables.

    Calls are serialised by a lock, so one Storage may be shared by threads.

    Examples
    --------
    >>> import tempfile
    >>> with Storage.connect("chdb://" + tempfile.mkdtemp()) as storage:
    ...     _ = storage.insert_block(
    ...         "events",
    ...         {"model": ["m"], "version": [1], "request_id": ["r1"],
    ...          "event_time": [pd.Timestamp("2026-01-01", tz="UTC")],
    ...          "check_features": [["age"]], "check_statuses": [["ok"]],
    ...          "check_passed": [[1]],
    ...          "check_numbers": [[39.0]], "check_texts": [[None]]},
    ...     )
    ...     storage.query_rows("SELECT feature, status FROM feature_checks")
    [('age', 'ok')]
    """

    def __init__(self, client: Any, url: str, database: str) -> None:
        self._client = client
        self._lock = threading.Lock()
        self._types: dict[str, dict[str, str]] = {}
        self.url = url
        self.database = database

    @classmethod
    def connect(cls, url: str, *, migrate: bool = True) -> "Storage":
        """Open the ClickHouse at ``url``; by default create or migrate the tables."""
        database = DEFAULT_DATABASE
        try:
            if url.startswith("chdb://"):
                client = _connect_embedded(url)
            elif url.startswith(("http://", "https://")):
                path = urlsplit(url).path.strip("/")
                database = path or DEFAULT_DATABASE
                client = clickhouse_connect.get_client(dsn=_without_path(url))
            else:
                raise ConfigError(
                    f"ClickHouse URL {mask_url(url)!r} is not supported; expected "
                    "chdb://DIR or http(s)://host:port[/database]"
                )
            client.command(f"CREATE DATABASE IF NOT EXISTS `{database}`")
            client.database = database
        except ClickHouseError as error:
            raise _storage_error(f"connecting to {mask_url(url)}", error) from error
        storage = cls(client, url, database)
        if migrate:
            storage.migrate()
        return storage

    def migrate(self) -> list[int]:
        """Apply the migrations this database has not seen yet; return their numbers."""
        self.command(
            "CREATE TABLE IF NOT EXISTS schema_migrations "
            "(number UInt32, title String, applied_at DateTime DEFAULT now()) "
            "ENGINE = ReplacingMergeTree ORDER BY number"
        )
        applied = {
            row[0] for row in self.query_rows("SELECT number FROM schema_migrations")
        }
        done = []
        for number, title, statements in MIGRATIONS:
            if number in applied:
                continue
            for statement in statements:
                if isinstance(statement, Conditional):
                    if not self.query_rows(statement.condition)[0][0]:
                        continue
                    statement = statement.statement
                self.command(statement)
            self._types.clear()
            self.insert_block(
                "schema_migrations", {"number": [number], "title": [title]}
            )
            log.info("applied ClickHouse migration %d (%s)", number, title)
            done.append(number)
        return done

    def command(self, sql: str, parameters: Mapping[str, Any] | None = None) -> None:
        """Run one statement that returns no rows."""
        with self._lock:
            try:
                self._client.command(sql, parameters=parameters)
            except ClickHouseError as error:
                raise _storage_error(f"running {_first_line(sql)!r}", error) from error

    def query_rows(
        self, sql: str, parameters: Mapping[str, Any] | None = None
    ) -> list[tuple]:
        """Run a query and return its rows as tuples."""
        with self._lock:
            try:
                return list(self._client.query(sql, parameters=parameters).result_rows)
            except ClickHouseError as error:
                raise _storage_error(f"running {_first_line(sql)!r}", error) from error

    def query_frame(
        self, sql: str, parameters: Mapping[str, Any] | None = None
    ) -> pd.DataFrame:
        """Run a query and return a DataFrame."""
        with self._lock:
            try:
                frame = self._client.query_df(sql, parameters=parameters)
                if len(frame.columns) == 0:
                    # The embedded engine returns a frame without columns when
                    # no row matches; name the columns so callers can use them.
                    described = self._client.query(
                        f"DESCRIBE ({sql.strip().rstrip(';')})", parameters=parameters
                    )
                    names = [row[0] for row in described.result_rows]
                    frame = pd.DataFrame(
                        {name: pd.Series(dtype=object) for name in names}
                    )
                return frame
            except ClickHouseError as error:
                raise _storage_error(f"running {_first_line(sql)!r}", error) from error

    def insert_block(
        self,
        table: str,
        columns: Mapping[str, Sequence[Any]],
        *,
        deduplication_token: str | None = None,
        quiet: bool = False,
    ) -> int:
        """Insert one block given as columns; return the number of rows.

        A block inserted again with the same ``deduplication_token`` is
        ignored by ClickHouse, which makes a replay of the same Kafka offsets
        harmless.
        """
        names = list(columns)
        rows = len(columns[names[0]]) if names else 0
        if rows == 0:
            return 0
        started = time.perf_counter()
        with self._lock:
            try:
                types = self._column_types(table)
                self._client.insert(
                    table,
                    [columns[name] for name in names],
                    column_names=names,
                    column_type_names=[types[name] for name in names],
                    column_oriented=True,
                    settings=_insert_settings(deduplication_token),
                )
            except ClickHouseError as error:
                raise _storage_error(
                    f"inserting {rows} rows into {table}", error
                ) from error
        if not quiet:
            _log_insert(table, rows, started)
        return rows

    def insert_arrow(
        self,
        table: str,
        rows: pa.Table,
        *,
        deduplication_token: str | None = None,
    ) -> int:
        """Insert an Arrow table; return the number of rows.

        ClickHouse reads the Arrow columns itself, so no value is converted in
        Python. Columns match by name; an Arrow string fills a LowCardinality
        column and an Arrow timestamp a DateTime64. ``deduplication_token``
        works as in :meth:`insert_block`, and it also applies to the tables
        that materialized views of ``table`` write to.
        """
        if rows.num_rows == 0:
            return 0
        started = time.perf_counter()
        with self._lock:
            try:
                self._client.insert_arrow(
                    table, rows, settings=_insert_settings(deduplication_token)
                )
            except ClickHouseError as error:
                raise _storage_error(
                    f"inserting {rows.num_rows} rows into {table}", error
                ) from error
        _log_insert(table, rows.num_rows, started)
        return rows.num_rows

    def _column_types(self, table: str) -> dict[str, str]:
        """Return the ClickHouse type of each column of ``table``.

        Cached, so an insert does not ask the engine for the table's columns
        each time; :meth:`migrate` clears the cache.
        """
        types = self._types.get(table)
        if types is None:
            described = self._client.query(f"DESCRIBE TABLE `{table}`")
            types = {row[0]: row[1] for row in described.result_rows}
            self._types[table] = types
        return types

    def close(self) -> None:
        """Close the connection; the embedded engine releases its directory."""
        with self._lock:
            self._client.close()

    def __enter__(self) -> "Storage":
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


def _insert_settings(deduplication_token: str | None) -> dict[str, Any]:
    # A block of replayed history can span more months than ClickHouse's
    # default limit of 100 partitions per insert; the limit is lifted.
    # Materialized views deduplicate their own blocks too, so a retried insert
    # into a Null table adds no row to the tables its views write to. That is
    # on by default in chDB 26.9, but older ClickHouse servers have it off.
    settings: dict[str, Any] = {
        "max_partitions_per_insert_block": 0,
        "deduplicate_blocks_in_dependent_materialized_views": 1,
    }
    if deduplication_token is not None:
        settings["insert_deduplication_token"] = deduplication_token
    return settings


def _log_insert(table: str, rows: int, started: float) -> None:
    log.info(
        "wrote %d rows to %s in %.3f s", rows, table, time.perf_counter() - started
    )


def _connect_embedded(url: str) -> Any:
    directory = Path(url.removeprefix("chdb://")).expanduser()
    if not str(directory) or str(directory) == ".":
        raise ConfigError(
            f"ClickHouse URL {url!r} names no directory; expected chdb://DIR, "
            "for example chdb://.oddwatch/clickhouse"
        )
    directory = directory.resolve()
    directory.mkdir(parents=True, exist_ok=True)
    return clickhouse_connect.get_client(interface="chdb", path=str(directory))


def _without_path(url: str) -> str:
    parts = urlsplit(url)
    return parts._replace(path="").geturl()


def _storage_error(action: str, error: ClickHouseError) -> StorageError:
    message = str(error)
    if any(marker in message for marker in _BUSY_MARKERS):
        return StorageBusyError(
            f"{action} failed: the embedded ClickHouse directory is in use by another "
            "process, most likely a running `oddwatch worker`. Stop that worker, or "
            "point ODDWATCH_CLICKHOUSE at a ClickHouse server to query while it runs."
        )
    return StorageError(f"{action} failed: {_first_line(message)}")


def _first_line(text: str) -> str:
    return " ".join(text.strip().split())[:500]
