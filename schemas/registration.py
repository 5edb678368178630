"""The model registration: one trained model version, as workers find it."""

import enum
from dataclasses import dataclass, field
from datetime import datetime

from schemas.errors import InvalidEvent
from schemas.metrics import MetricConfig
from schemas.record import NAME, VERSION, Constraints, Record, schema_field

__all__ = ["ModelRegistration", "ModelState"]


class ModelState(enum.StrEnum):
    """Whether workers score the events of a model version."""

    ACTIVE = "active"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True, kw_only=True)
class ModelRegistration(Record):
    """One trained model version, as published to the compacted ``models`` topic.

    The message key is ``model:version`` (see :meth:`key`), so compaction
    keeps the latest registration of each version. Decoding and encoding
    enforce that custom metric names are unique.

    Attributes
    ----------
    model : str
        Name of the model.
    version : int
        Version of the model, from 1.
    state : ModelState
        ``active`` while workers score its events, ``retired`` after.
    artifact : str
        Path or URI of the model version's directory in the model store.
    checksum : str
        SHA-256 of the directory's manifest, 64 lowercase hexadecimal digits.
        Workers compare it with the manifest they load.
    oddwatch_version : str
        Version of oddwatch that trained the model version.
    created_at : datetime
        When the model version was trained.
    features : list of str
        Features of the training profile, in training order.
    threshold : float
        Outlier score above which ``auto_od`` calls an event an outlier.
    target_alert_rate : float
        Share of training rows above the threshold that calibration aimed
        for, between 0 and 1.
    metrics : list of MetricConfig
        Custom metrics of the version; empty when it has none.
    """

    model: str = schema_field(NAME)
    version: int = schema_field(VERSION)
    state: ModelState
    artifact: str = schema_field(
        Constraints(max_length=4096, pattern=r"\S", pattern_text="a non-blank string")
    )
    checksum: str = schema_field(
        Constraints(
            pattern="^[0-9a-f]{64}$",
            pattern_text="64 lowercase hexadecimal digits",
        )
    )
    oddwatch_version: str = schema_field(NAME)
    created_at: datetime
    features: list[str] = schema_field(Constraints(unique_items=True), items=NAME)
    threshold: float
    target_alert_rate: float = schema_field(
        Constraints(exclusive_minimum=0, exclusive_maximum=1)
    )
    metrics: list[MetricConfig] = field(default_factory=list)

    def key(self) -> bytes:
        """Return the Kafka message key, ``model:version`` in UTF-8."""
        return f"{self.model}:{self.version}".encode()

    def _check(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        seen = set()
        for i, metric in enumerate(self.metrics):
            if metric.name in seen:
                raise InvalidEvent(
                    f"{prefix}metrics[{i}].name",
                    "a name no other metric of the version has",
                    repr(metric.name),
                )
            seen.add(metric.name)
