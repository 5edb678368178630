"""Custom metrics: their configuration and their result on one event."""

import enum
from dataclasses import dataclass

from schemas.errors import InvalidEvent
from schemas.record import NAME, Constraints, Record, schema_field

__all__ = ["BUILT_IN_CHECKS", "MetricConfig", "MetricResult", "Operator"]

BUILT_IN_CHECKS = ("range", "auto_od")
"""Check names oddwatch uses itself, so no custom metric may take them."""

_IMPORT_PATH = Constraints(
    max_length=1024,
    pattern=r"^([A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*|file:.+)$",
    pattern_text="an import path such as package.module:name, or file:PATH",
)


class Operator(enum.StrEnum):
    """Comparison of a metric value with its threshold, passed when true."""

    LT = "<"
    LE = "<="
    GT = ">"
    GE = ">="
    EQ = "=="
    NE = "!="


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricConfig(Record):
    """A custom metric of a model version.

    The metric computes one number per event, from one feature or from a
    Python callable, and the event passes when ``value <operator> threshold``
    holds. Exactly one of ``feature`` and ``scorer`` is set.

    Attributes
    ----------
    name : str
        Name of the metric, unique within the model version. It names the
        check in batch summaries, so ``range`` and ``auto_od`` are taken.
    feature : str or None
        Feature whose value is the metric value, or null when ``scorer`` is
        set.
    scorer : str or None
        Import path, ``package.module:name``, of a callable or a fitted
        scikit-learn model that returns the metric value of an event, or
        ``file:PATH`` of a pickled scikit-learn model; null when ``feature``
        is set.
    operator : Operator
        Comparison of the value with the threshold.
    threshold : float
        Value the metric is compared with.
    """

    name: str = schema_field(
        Constraints(
            max_length=256,
            pattern=r"\S",
            pattern_text="a non-blank string",
            excluded=BUILT_IN_CHECKS,
        )
    )
    feature: str | None = schema_field(NAME, default=None)
    scorer: str | None = schema_field(_IMPORT_PATH, default=None)
    operator: Operator
    threshold: float

    def _check(self, path: str) -> None:
        if (self.feature is None) == (self.scorer is None):
            where = f"{path}.scorer" if path else "scorer"
            got = "both" if self.feature is not None else "neither"
            raise InvalidEvent(where, "exactly one of feature and scorer", got)

    @classmethod
    def _schema_rules(cls) -> list[dict]:
        return [
            {
                "oneOf": [
                    {"required": ["feature"], "properties": {"feature": _STRING}},
                    {"required": ["scorer"], "properties": {"scorer": _STRING}},
                ]
            }
        ]


_STRING = {"type": "string"}


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricResult(Record):
    """The outcome of one custom metric on one event.

    ``value`` is null exactly when the metric failed, and then ``error`` gives
    the reason and ``passed`` is false.

    Attributes
    ----------
    value : float or None
        The metric value, or null when the metric failed.
    threshold : float
        Value the metric was compared with.
    operator : Operator
        Comparison of the value with the threshold.
    passed : bool
        Whether ``value <operator> threshold`` holds.
    error : str or None
        Why the metric failed, such as the exception its scorer raised, or
        null when it did not.
    """

    value: float | None
    threshold: float
    operator: Operator
    passed: bool
    error: str | None = schema_field(Constraints(max_length=4096), default=None)

    def _check(self, path: str) -> None:
        prefix = f"{path}." if path else ""
        if (self.value is None) != (self.error is not None):
            raise InvalidEvent(
                f"{prefix}error",
                "an error message exactly when value is null",
                f"value {self.value!r} and error {self.error!r}",
            )
        if self.error is not None and self.passed:
            raise InvalidEvent(f"{prefix}passed", "false for a failed metric", "true")

    @classmethod
    def _schema_rules(cls) -> list[dict]:
        return [
            {
                "oneOf": [
                    {
                        "properties": {
                            "value": {"type": "number"},
                            "error": {"type": "null"},
                        }
                    },
                    {
                        "required": ["error"],
                        "properties": {
                            "value": {"type": "null"},
                            "error": _STRING,
                            "passed": {"const": False},
                        },
                    },
                ]
            }
        ]
