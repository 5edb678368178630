"""The batch summary: counts of one closed batch of a model version."""

import enum
from dataclasses import dataclass
from datetime import datetime

from schemas.errors import InvalidEvent
from schemas.record import (
    COUNT,
    NAME,
    SHARE,
    VERSION,
    Constraints,
    Record,
    schema_field,
)

__all__ = ["BatchHealth", "BatchSummary", "CheckCount", "ClosedBy"]

# Room for the rounding of a share computed another way, such as in SQL.
_SHARE_TOLERANCE = 1e-9


class ClosedBy(enum.StrEnum):
    """Reason a batch closed."""

    SIZE = "size"
    TIME = "time"
    SHUTDOWN = "shutdown"


class BatchHealth(enum.StrEnum):
    """Health of a batch, from best to worst."""

    GREEN = "green"
    YELLOW = "yellow"
    ORANGE = "orange"
    RED = "red"


@dataclass(frozen=True, slots=True, kw_only=True)
class CheckCount(Record):
    """How many values one check examined in a batch, and how many passed.

    Attributes
    ----------
    feature : str
        Feature the check examined, or empty for a check of the whole event:
        ``auto_od`` and custom metrics.
    check : str
        ``range``, ``auto_od`` or the name of a custom metric.
    checked : int
        Values the check examined.
    passed : int
        Values that passed, at most ``checked``.
    """

    feature: str = schema_field(Constraints(max_length=256))
    check: str = schema_field(NAME)
    checked: int = schema_field(COUNT)
    passed: int = schema_field(COUNT)

    def _check(self, path: str) -> None:
        if self.passed > self.checked:
            raise InvalidEvent(
                f"{path}.passed" if path else "passed",
                f"at most checked ({self.checked})",
                str(self.passed),
            )


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchSummary(Record):
    """Counts of one closed batch of a model version.

    Published to ``batches`` keyed by model name, once per batch. A batch is
    a tumbling window on event time that closes early once it contains the
    configured number of events. Decoding and encoding enforce that
    ``outliers`` and ``late_events`` are at most ``events``, that the window
    does not end before it starts, that no check passed more values than it
    checked and that ``pass_share`` matches the checks.

    Attributes
    ----------
    model : str
        Name of the model.
    version : int
        Version of the model, from 1.
    batch_id : str
        Identifier of the batch, as in the scored events it counts.
    window_start : datetime
        Start of the event-time window, inclusive.
    window_end : datetime
        End of the event-time window, exclusive.
    closed_by : ClosedBy
        What closed the batch: it reached its size, its window passed, or
        the worker shut down.
    events : int
        Scored events in the batch.
    outliers : int
        Events among them that the detector called outliers.
    late_events : int
        Events in the batch whose event time is before ``window_start``,
        because they arrived after their own window had closed.
    checks : list of CheckCount
        One entry per feature and check: the ``range`` check of every profile
        feature, ``auto_od`` and each custom metric.
    pass_share : float
        Share of all checked values that passed: the sum of ``passed`` over
        the sum of ``checked``, or 1 when nothing was checked.
    health : BatchHealth
        Health level the stream gave the batch by its cut-offs.
    """

    model: str = schema_field(NAME)
    version: int = schema_field(VERSION)
    batch_id: str = schema_field(NAME)
    window_start: datetime
    window_end: datetime
    closed_by: ClosedBy
    events: int = schema_field(COUNT)
    outliers: int = schema_field(COUNT)
    late_events: int = schema_field(COUNT)
    checks: list[CheckCount]
    pass_share: float = schema_field(SHARE)
    health: BatchHealth

    def _check(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        for name in ("outliers", "late_events"):
            count = getattr(self, name)
            if count > self.events:
                raise InvalidEvent(
                    prefix + name, f"at most events ({self.events})", str(count)
                )
        checked = sum(summary.checked for summary in self.checks)
        passed = sum(summary.passed for summary in self.checks)
        share = passed / checked if checked else 1.0
        if abs(self.pass_share - share) > _SHARE_TOLERANCE:
            raise InvalidEvent(
                prefix + "pass_share",
                f"passed over checked summed over checks ({passed}/{checked})",
                repr(self.pass_share),
            )
        if self.window_end < self.window_start:
            raise InvalidEvent(
                prefix + "window_end",
                f"a time not before window_start ({self.window_start.isoformat()})",
                self.window_end.isoformat(),
            )
