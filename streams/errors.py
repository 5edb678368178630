"""Exceptions raised by the streaming side of oddwatch.

Hierarchy::

    OddwatchError
    ├── ConfigError        a setting is invalid (flag or ODDWATCH_* variable)
    ├── StorageError       ClickHouse failed; wraps clickhouse-connect errors
    │   └── StorageBusyError  the embedded engine's directory is used by another process
    └── KafkaUnavailableError  the broker did not answer in time

Every error from clickhouse-connect or the Kafka clients is re-raised as one of
these at the module that calls the library, chained with ``from``.
"""

__all__ = [
    "ConfigError",
    "KafkaUnavailableError",
    "OddwatchError",
    "StorageBusyError",
    "StorageError",
]


class OddwatchError(Exception):
    """Base class of the errors oddwatch raises on purpose."""


class ConfigError(OddwatchError):
    """A setting is invalid; the message names the setting and the value."""


class StorageError(OddwatchError):
    """A ClickHouse call failed; the message names the operation and the table."""


class StorageBusyError(StorageError):
    """The embedded ClickHouse directory is held by another process."""


class KafkaUnavailableError(OddwatchError):
    """The Kafka broker did not respond within the timeout."""
