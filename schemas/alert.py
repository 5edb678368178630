"""Alerts: an outlier event or an unhealthy batch, with the reasons."""

import enum
import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Self

from schemas.batch import BatchHealth, BatchSummary
from schemas.errors import InvalidEvent
from schemas.record import NAME, SHARE, VERSION, Constraints, Record, schema_field
from schemas.scored import ScoredEvent

__all__ = ["Alert", "AlertKind", "Reason", "derive_alert_id"]


class AlertKind(enum.StrEnum):
    """Kind of alert: one outlier event or one unhealthy batch."""

    OUTLIER = "outlier"
    UNHEALTHY_BATCH = "unhealthy_batch"


# Fields that an alert of each kind must set. An alert leaves the fields of the
# other kind null.
_KIND_FIELDS = {
    AlertKind.OUTLIER: ("request_id", "score", "threshold"),
    AlertKind.UNHEALTHY_BATCH: ("health", "pass_share"),
}
_KIND_FIELD_TYPES = {
    "request_id": "string",
    "score": "number",
    "threshold": "number",
    "health": "string",
    "pass_share": "number",
}


def derive_alert_id(kind: str, model: str, version: int, subject: str) -> str:
    """Derive the id of an alert, the same on every replay of the same input.

    ``subject`` is the request id of an outlier alert or the batch id of a
    batch alert. The id is the first 32 hexadecimal digits of a SHA-256 hash.

    >>> derive_alert_id("outlier", "census", 1, "9f2c")
    '00228cc5ef8b36c707f979ca3fba6655'
    """
    text = "\x1f".join((str(kind), model, str(version), subject))
    return hashlib.sha256(text.encode()).hexdigest()[:32]


@dataclass(frozen=True, slots=True, kw_only=True)
class Reason(Record):
    """One reason behind an alert, for the person who reads it.

    Attributes
    ----------
    check : str
        ``range``, ``auto_od`` or the name of a custom metric.
    feature : str
        Feature the reason is about, or empty for the whole event.
    status : str
        Outcome in one word: the feature status of a range check, such as
        ``above_max``, ``outlier`` for ``auto_od`` or ``failed`` for a custom
        metric or a batch check.
    value : Any
        What was observed: the feature value, the metric value, or for a
        batch the share of checked values that passed.
    expected : str or None
        What training or the configuration expected, in words, such as the
        training range ``[17, 90]`` or the most frequent categories. Null when
        there is nothing to compare with.
    contribution : float or None
        Share of the outlier score owed to this feature, when the detector
        can tell.
    """

    check: str = schema_field(NAME)
    feature: str = schema_field(Constraints(max_length=256), default="")
    status: str = schema_field(NAME)
    value: Any = None
    expected: str | None = schema_field(Constraints(max_length=4096), default=None)
    contribution: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Alert(Record):
    """An alert: one outlier event or one unhealthy batch, with the reasons.

    Published to ``alerts`` keyed by model name. An outlier alert sets
    ``request_id``, ``score`` and ``threshold``, and a batch alert sets
    ``health`` and ``pass_share``. The fields of the other kind are null, and
    decoding and encoding enforce this. Build alerts with
    :meth:`from_scored_event` and :meth:`from_batch_summary`, which derive
    ``alert_id`` so that replaying the same events gives the same ids.

    Attributes
    ----------
    alert_id : str
        Identifier of the alert, 32 hexadecimal digits, derived from the kind,
        model, version and request or batch id by :func:`derive_alert_id`.
    kind : AlertKind
        ``outlier`` for one event, ``unhealthy_batch`` for one batch.
    model : str
        Name of the model.
    version : int
        Version of the model, from 1.
    created_at : datetime
        When oddwatch raised the alert.
    occurred_at : datetime
        Event time of the outlier event, or the end of the batch window.
    batch_id : str
        Batch of the outlier event, or the unhealthy batch.
    request_id : str or None
        Request of the outlier event; null for a batch alert.
    score : float or None
        Outlier score of the event; null for a batch alert.
    threshold : float or None
        Score above which an event is an outlier; null for a batch alert.
    health : BatchHealth or None
        Health of the batch; null for an outlier alert.
    pass_share : float or None
        Share of the batch's checked values that passed; null for an outlier
        alert.
    reasons : list of Reason
        Why the alert was raised, the weightiest first.
    """

    alert_id: str = schema_field(
        Constraints(pattern="^[0-9a-f]{32}$", pattern_text="32 hexadecimal digits")
    )
    kind: AlertKind
    model: str = schema_field(NAME)
    version: int = schema_field(VERSION)
    created_at: datetime
    occurred_at: datetime
    batch_id: str = schema_field(NAME)
    request_id: str | None = schema_field(NAME, default=None)
    score: float | None = None
    threshold: float | None = None
    health: BatchHealth | None = None
    pass_share: float | None = schema_field(SHARE, default=None)
    reasons: list[Reason]

    @classmethod
    def from_scored_event(
        cls, event: ScoredEvent, reasons: Sequence[Reason], created_at: datetime
    ) -> Self:
        """Build the outlier alert of a scored event."""
        return cls(
            alert_id=derive_alert_id(
                AlertKind.OUTLIER, event.model, event.version, event.request_id
            ),
            kind=AlertKind.OUTLIER,
            model=event.model,
            version=event.version,
            created_at=created_at,
            occurred_at=event.event_time,
            batch_id=event.batch_id,
            request_id=event.request_id,
            score=event.score,
            threshold=event.threshold,
            reasons=list(reasons),
        )

    @classmethod
    def from_batch_summary(
        cls, summary: BatchSummary, reasons: Sequence[Reason], created_at: datetime
    ) -> Self:
        """Build the unhealthy batch alert of a batch summary."""
        return cls(
            alert_id=derive_alert_id(
                AlertKind.UNHEALTHY_BATCH,
                summary.model,
                summary.version,
                summary.batch_id,
            ),
            kind=AlertKind.UNHEALTHY_BATCH,
            model=summary.model,
            version=summary.version,
            created_at=created_at,
            occurred_at=summary.window_end,
            batch_id=summary.batch_id,
            health=summary.health,
            pass_share=summary.pass_share,
            reasons=list(reasons),
        )

    def _check(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        for kind, names in _KIND_FIELDS.items():
            for name in names:
                value = getattr(self, name)
                if kind == self.kind and value is None:
                    raise InvalidEvent(
                        prefix + name, f"a value for an alert of kind {kind}", "nothing"
                    )
                if kind != self.kind and value is not None:
                    raise InvalidEvent(
                        prefix + name,
                        f"null for an alert of kind {self.kind}",
                        repr(value),
                    )

    @classmethod
    def _schema_rules(cls) -> list[dict]:
        rules = []
        for kind, names in _KIND_FIELDS.items():
            others = [name for other in _KIND_FIELDS.values() for name in other]
            properties = {name: {"type": "null"} for name in others}
            for name in names:
                properties[name] = {"type": _KIND_FIELD_TYPES[name]}
            rules.append(
                {
                    "if": {
                        "required": ["kind"],
                        "properties": {"kind": {"const": kind.value}},
                    },
                    "then": {"required": list(names), "properties": properties},
                }
            )
        return rules
