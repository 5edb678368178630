"""One frozen settings object, read from flags and ``ODDWATCH_*`` variables.

The environment is read here and nowhere else. Flags given on the command line
win over environment variables, which win over the defaults.
"""

import dataclasses
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from streams.errors import ConfigError

__all__ = ["Settings", "mask_url"]

ENV_PREFIX = "ODDWATCH_"
READERS = ("blocks", "faust")
MAX_BLOCK_SIZE = 100_000
"""Largest block_size accepted; a block's rows are all held in memory."""
_TOPIC_PREFIX_PATTERN = re.compile(r"^[A-Za-z0-9._-]*$")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where oddwatch finds Kafka, ClickHouse and the model store, and how it batches.

    Each field can be set by the environment variable ``ODDWATCH_<FIELD>``
    (upper case), for example ``ODDWATCH_KAFKA=broker:9092``.
    """

    kafka: str = "127.0.0.1:9092"
    """Kafka bootstrap servers, ``host:port`` separated by commas."""

    clickhouse: str = "chdb://.oddwatch/clickhouse"
    """``chdb://DIR`` for the embedded engine, or ``http(s)://[user:pass@]host:port[/db]``."""

    store: Path = Path(".oddwatch/models")
    """Directory of model artifacts written by ``oddwatch train``."""

    home: Path = Path(".oddwatch")
    """Directory for the worker's local state (Faust data, detector snapshots)."""

    topic_prefix: str = "oddwatch."
    group: str = "oddwatch"
    """Kafka consumer group and Faust application id of the workers."""

    partitions: int = 1
    """Partitions of the topics the workers create."""

    reader: str = "blocks"
    """Reader of ``predictions``: ``blocks`` (confluent-kafka, whole blocks per
    call) or ``faust`` (a Faust agent, one message at a time)."""

    block_size: int = 10_000
    """Largest number of events taken from Kafka and written to ClickHouse at once.

    Every block costs a fixed 40 to 50 ms of ClickHouse inserts, so a backlog
    is worked off fastest in large blocks. A stream slower than the worker
    still gets small blocks, cut by ``block_timeout``."""

    block_timeout: float = 0.25
    """Seconds to wait for a block to fill before processing what has arrived."""

    batch_window: float = 60.0
    """Seconds of event time covered by one batch window."""

    batch_size: int = 100
    """Events after which a batch closes before its window ends."""

    snapshot_interval: float = 30.0
    """Seconds between saves of the online detectors' state to ClickHouse."""

    log_level: str = "info"
    """Logging level: debug, info, warning or error."""

    @classmethod
    def from_env(
        cls, environ: Mapping[str, str] | None = None, **overrides: object
    ) -> "Settings":
        """Build settings from ``environ`` (default ``os.environ``) and overrides.

        Overrides whose value is ``None`` are ignored, so unset command-line
        flags fall through to the environment.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for spec in dataclasses.fields(cls):
            raw = environ.get(ENV_PREFIX + spec.name.upper())
            if raw is not None and raw != "":
                values[spec.name] = _convert(spec.name, spec.type, raw)
        for name, value in overrides.items():
            if value is not None:
                values[name] = value
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigError naming the first invalid setting."""
        if not self.kafka.strip():
            raise ConfigError("ODDWATCH_KAFKA is empty; expected host:port[,host:port]")
        if not _TOPIC_PREFIX_PATTERN.match(self.topic_prefix):
            raise ConfigError(
                f"topic prefix {self.topic_prefix!r} is invalid; Kafka topic names "
                "allow only letters, digits, '.', '_' and '-'"
            )
        if self.reader not in READERS:
            raise ConfigError(
                f"ODDWATCH_READER={self.reader!r} is invalid; expected one of "
                + ", ".join(READERS)
            )
        if not 1 <= self.block_size <= MAX_BLOCK_SIZE:
            raise ConfigError(
                f"block_size must be between 1 and {MAX_BLOCK_SIZE:,}, "
                f"got {self.block_size}"
            )
        if self.partitions < 1:
            raise ConfigError(f"partitions must be at least 1, got {self.partitions}")
        if self.batch_size < 1:
            raise ConfigError(f"batch_size must be at least 1, got {self.batch_size}")
        if self.batch_window <= 0:
            raise ConfigError(
                f"batch_window must be more than 0 seconds, got {self.batch_window}"
            )
        if self.block_timeout <= 0:
            raise ConfigError(
                f"block_timeout must be more than 0 seconds, got {self.block_timeout}"
            )
        if self.log_level.lower() not in ("debug", "info", "warning", "error"):
            raise ConfigError(
                f"log level {self.log_level!r} is invalid; expected debug, info, "
                "warning or error"
            )
        if not self.clickhouse.startswith(("chdb://", "http://", "https://")):
            raise ConfigError(
                f"ODDWATCH_CLICKHOUSE {mask_url(self.clickhouse)!r} is not supported; "
                "expected chdb://DIR or http(s)://host:port"
            )

    def topic(self, name: str) -> str:
        """Return the full name of one of oddwatch's topics, e.g. ``predictions``."""
        return self.topic_prefix + name

    def describe(self) -> str:
        """Return the settings as one line, with passwords masked."""
        return (
            f"kafka={self.kafka} clickhouse={mask_url(self.clickhouse)} "
            f"store={self.store} group={self.group} topic_prefix={self.topic_prefix} "
            f"reader={self.reader} block_size={self.block_size}"
        )


def mask_url(url: str) -> str:
    """Replace the password in a URL with ``***``.

    >>> mask_url("http://alice:secret@db:8123/oddwatch")
    'http://alice:***@db:8123/oddwatch'
    >>> mask_url("chdb://.oddwatch/clickhouse")
    'chdb://.oddwatch/clickhouse'
    """
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}"
    if parts.port is not None:
        netloc += f":{parts.port}"
    return urlunsplit(parts._replace(netloc=netloc))


def _convert(name: str, annotation: object, raw: str) -> object:
    variable = ENV_PREFIX + name.upper()
    try:
        if annotation in (int, "int"):
            return int(raw)
        if annotation in (float, "float"):
            return float(raw)
    except ValueError:
        raise ConfigError(f"{variable}={raw!r} is invalid; expected a number") from None
    if annotation in (Path, "Path"):
        return Path(raw)
    return raw
