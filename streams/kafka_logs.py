"""Rate-limited logging of librdkafka's own log lines.

While a broker is unreachable, librdkafka logs every failed connection
attempt, hundreds of lines a minute. The worker passes those lines through
Python logging with :func:`kafka_logger`, which keeps one line per kind
every ``interval`` seconds and reports how many it left out.
"""

import logging
import threading
import time

__all__ = ["RepeatFilter", "kafka_logger"]


class RepeatFilter(logging.Filter):
    """Let through one record per kind every ``interval`` seconds.

    The kind is the level and the first word of the message, which for
    librdkafka is its facility (``FAIL``, ``REQTMOUT``, ...). The next record
    let through reports how many of its kind were left out.
    """

    def __init__(self, interval: float = 10.0) -> None:
        super().__init__()
        self.interval = interval
        self._last: dict[tuple[int, str], float] = {}
        self._skipped: dict[tuple[int, str], int] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        kind = (record.levelno, message.split(" ", 1)[0])
        now = time.monotonic()
        with self._lock:
            if now - self._last.get(kind, -self.interval) < self.interval:
                self._skipped[kind] = self._skipped.get(kind, 0) + 1
                return False
            self._last[kind] = now
            skipped = self._skipped.pop(kind, 0)
        if skipped:
            record.msg = f"{message} ({skipped} similar lines left out)"
            record.args = None
        return True


def kafka_logger(name: str, interval: float = 10.0) -> logging.Logger:
    """Return the logger ``name`` with a :class:`RepeatFilter`, for librdkafka."""
    logger = logging.getLogger(name)
    if not any(isinstance(item, RepeatFilter) for item in logger.filters):
        logger.addFilter(RepeatFilter(interval))
    return logger
