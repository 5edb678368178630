"""Custom metrics: one number per event from a rule, a callable or a model.

A :class:`schemas.MetricConfig` sets where the metric value comes from:

- ``feature``: the value of that profile feature. A numeric feature takes
  every operator, and an event whose value is missing, not a number, or
  infinite gets an error. A categorical feature takes only ``==`` and
  ``!=``, because its categories have no order. Its value is the number the
  category spells (``"3"`` and ``3`` are 3.0, ``true`` and ``false`` are
  1.0 and 0.0), since thresholds are numbers, and a category that spells no
  number is an error for that event.
- ``scorer`` ``package.module:name``: an object imported from Python. A
  function is called with a DataFrame of the block, one row per event. Its
  columns are the profile features and then the other fields of the events,
  all of object dtype with the values as received, and None where a field
  is absent. It returns one number per row, as a list, array or Series. An
  object with ``predict`` is used as a fitted model, as below.
- ``scorer`` ``file:PATH``: a fitted scikit-learn model saved with pickle
  or joblib. Its input is the profile's features in training order, numeric
  features as float64 with NaN for missing or wrong-typed values and
  categorical features as received. A model fitted on a DataFrame (one
  with ``feature_names_in_``) gets a DataFrame of the columns it was fitted
  on, taken from the events by name; any other model gets an array of the
  profile features in training order. Its value is ``decision_function``
  when the model has one, else column 1 of ``predict_proba``, else
  ``predict``. Loading a pickle runs code, so the file must come from a
  trusted source. A relative path is read from the working directory.

An event passes when ``value <operator> threshold`` holds. Evaluation never
raises: when a scorer raises for a block, it is called again on each half
of the block, down to single rows, so only the rows that fail alone get an
error (value None, passed false, the exception's type and message). For a
scorer that computes each row on its own, this marks the same rows as
calling it on every row separately, with far fewer calls when few rows
fail. A value that is NaN or infinite is an error for its row.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import math
import os
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from schemas.metrics import BUILT_IN_CHECKS, MetricConfig, MetricResult, Operator
from schemas.record import describe

from .checks import BlockCheck, Records
from .errors import DetectorError
from .profile import FeatureKind, Profile
from .values import (
    BOOL,
    MISSING,
    NUMBER,
    STRING,
    as_object_array,
    category_key,
    classify_column,
)

__all__ = [
    "FILE_SCORER_PREFIX",
    "EventBlock",
    "Metric",
    "MetricConfigError",
    "MetricResults",
    "block_frame",
    "build_metrics",
    "dump_metric_configs",
    "evaluate_metrics",
    "load_metric_configs",
    "parse_metric_configs",
]

logger = logging.getLogger(__name__)

FILE_SCORER_PREFIX = "file:"

# Maximum length of the error message kept per event, below the 4096
# characters that MetricResult allows.
MAX_ERROR_LENGTH = 500

# A scorer that fails on a chunk this small is retried row by row.
_ROW_BY_ROW = 8

# Seconds between two warnings about the same failing metric.
_WARNING_INTERVAL = 60.0

_CONFIG_FIELDS = ("name", "feature", "scorer", "operator", "threshold")
_IMPORT_PATH = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*:[A-Za-z_][A-Za-z0-9_.]*\Z")
_EQUALITY = (Operator.EQ, Operator.NE)
_COMPARE = {
    Operator.LT: np.less,
    Operator.LE: np.less_equal,
    Operator.GT: np.greater,
    Operator.GE: np.greater_equal,
    Operator.EQ: np.equal,
    Operator.NE: np.not_equal,
}
_MODEL_METHODS = ("decision_function", "predict_proba", "predict")


class MetricConfigError(DetectorError, ValueError):
    """A custom metric configuration is invalid or its scorer cannot be loaded."""


@dataclasses.dataclass(frozen=True)
class MetricResults:
    """The outcome of one custom metric on every event of a block.

    ``values`` is float64 with NaN where the metric failed, ``passed`` is
    boolean and false where it failed, and ``errors`` contains None or the
    reason for each event.
    """

    name: str
    operator: Operator
    threshold: float
    values: np.ndarray
    passed: np.ndarray
    errors: np.ndarray

    def __len__(self) -> int:
        return len(self.values)

    @property
    def failed(self) -> np.ndarray:
        """Boolean mask of the events the metric could not compute."""
        return np.array([error is not None for error in self.errors], dtype=bool)

    def result(self, row: int) -> MetricResult:
        """Return the result of one event as the record the stream publishes."""
        error = self.errors[row]
        return MetricResult(
            value=None if error is not None else float(self.values[row]),
            threshold=self.threshold,
            operator=self.operator,
            passed=bool(self.passed[row]),
            error=error,
        )

    def results(self) -> list[MetricResult]:
        """Return the result of every event, in block order."""
        return [self.result(row) for row in range(len(self))]


class Metric:
    """A custom metric ready to evaluate blocks of events.

    Build metrics with :func:`build_metrics`. :meth:`evaluate` catches every
    ``Exception`` that a scorer raises and marks the rows it fails on, so
    only a ``BaseException`` such as ``KeyboardInterrupt`` propagates.
    """

    def __init__(
        self,
        config: MetricConfig,
        profile: Profile,
        compute: Callable[[EventBlock], tuple[np.ndarray, np.ndarray]],
    ):
        self.config = config
        self.profile = profile
        self._compute = compute
        self._warned_at = -math.inf
        self._unreported = 0

    @property
    def name(self) -> str:
        """Name of the metric, unique within its model version."""
        return self.config.name

    def evaluate(self, data: pd.DataFrame | Records | EventBlock) -> MetricResults:
        """Compute the metric on every event of a block.

        ``data`` is a DataFrame or a list of events' feature mappings with the
        values as received, or an :class:`EventBlock` of them.
        """
        block = data if isinstance(data, EventBlock) else EventBlock(self.profile, data)
        values, errors = self._compute(block)
        failed = np.array([error is not None for error in errors], dtype=bool)
        passed = np.zeros(len(values), dtype=bool)
        compare = _COMPARE[Operator(self.config.operator)]
        passed[~failed] = compare(values[~failed], self.config.threshold)
        values = np.where(failed, np.nan, values)
        if failed.any():
            self._warn(int(failed.sum()), len(values), errors[failed][0])
        return MetricResults(
            name=self.name,
            operator=Operator(self.config.operator),
            threshold=float(self.config.threshold),
            values=values,
            passed=passed,
            errors=errors,
        )

    def _warn(self, failed: int, rows: int, example: str) -> None:
        """Log failed events at most once a minute per metric, with a count."""
        self._unreported += failed
        now = time.monotonic()
        if now - self._warned_at < _WARNING_INTERVAL:
            return
        logger.warning(
            "metric %r failed on %d events since the last warning (%d of the last "
            "block of %d), for example: %s",
            self.name,
            self._unreported,
            failed,
            rows,
            example,
        )
        self._warned_at = now
        self._unreported = 0


def build_metrics(
    configs: Iterable[MetricConfig], profile: Profile, strict: bool = True
) -> list[Metric]:
    """Check metric configurations against the profile and load their scorers.

    With ``strict``, any problem raises :class:`MetricConfigError`. Without
    it, a metric whose feature or scorer is unusable is still built, and it
    marks every event with the error, so that a model version keeps being
    scored when, for example, the module of one scorer is not installed.
    """
    configs = parse_metric_configs([_config_document(c) for c in configs])
    metrics = []
    for config in configs:
        try:
            metrics.append(Metric(config, profile, _computation(config, profile)))
        except MetricConfigError as error:
            if strict:
                raise
            logger.warning("metric %r cannot be used: %s", config.name, error)
            metrics.append(Metric(config, profile, _always_failing(str(error))))
    return metrics


def evaluate_metrics(
    metrics: Sequence[Metric], profile: Profile, data: pd.DataFrame | Records
) -> dict[str, MetricResults]:
    """Evaluate every metric on a block of events, keyed by metric name."""
    if not metrics:
        return {}
    block = EventBlock(profile, data)
    return {metric.name: metric.evaluate(block) for metric in metrics}


class EventBlock:
    """The events of a block with their values as received, for the metrics.

    Columns and the frame given to scorers are built on first use, so a
    block evaluated only by feature rules never builds the whole frame.
    """

    def __init__(self, profile: Profile, data: pd.DataFrame | Records):
        if isinstance(data, BlockCheck):
            raise TypeError(
                "metrics need the events' values as received, got a BlockCheck; "
                "pass the DataFrame or the list of feature mappings that was checked"
            )
        if isinstance(data, Mapping):
            raise TypeError(
                "expected a DataFrame or a list of events' feature mappings, got a "
                "single mapping; wrap one event in a list"
            )
        self.profile = profile
        self._records: list[Mapping[str, Any]] | None = None
        self._source: pd.DataFrame | None = None
        if isinstance(data, pd.DataFrame):
            self._source = _with_unique_names(data)
            self._size = len(data)
        else:
            self._records = list(data)
            self._size = len(self._records)
        self._frame: pd.DataFrame | None = None

    def __len__(self) -> int:
        return self._size

    def column(self, name: str) -> np.ndarray:
        """Return one field of every event as an object array, None if absent."""
        if self._source is not None:
            if name not in self._source.columns:
                return np.full(self._size, None, dtype=object)
            return as_object_array(self._source[name])
        return as_object_array([record.get(name) for record in self._records])

    def frame(self) -> pd.DataFrame:
        """Return the frame scorers get: features first, object dtype, as received.

        The frame is built once per block and shared by the scorers, which
        must not modify it.
        """
        if self._frame is None:
            self._frame = self._build_frame()
        return self._frame

    def _build_frame(self) -> pd.DataFrame:
        features = self.profile.features
        if self._source is not None:
            extra = [name for name in self._source.columns if name not in features]
        else:
            names = dict.fromkeys(features)
            for record in self._records:
                names.update(dict.fromkeys(record))
            extra = [name for name in names if name not in features]
        columns = {str(name): self.column(name) for name in (*features, *extra)}
        return pd.DataFrame(columns, index=pd.RangeIndex(self._size), dtype=object)


def block_frame(profile: Profile, data: pd.DataFrame | Records) -> pd.DataFrame:
    """Return the frame scorers get: features first, object dtype, as received."""
    return EventBlock(profile, data).frame()


def _with_unique_names(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.set_axis([str(name) for name in frame.columns], axis=1)
    duplicates = sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicates:
        raise ValueError(
            f"expected unique column names, got duplicates {duplicates}; rename "
            "or drop the repeated columns"
        )
    return frame


def parse_metric_configs(document: Any, source: str = "metrics") -> list[MetricConfig]:
    """Validate decoded JSON holding a list of metric objects.

    Each object has ``name``, exactly one of ``feature`` and ``scorer``,
    ``operator`` and ``threshold``. Errors name the metric and the field,
    and state what was expected and what came.

    >>> parse_metric_configs([{"name": "adult", "feature": "age",
    ...                        "operator": ">=", "threshold": 18}])[0].operator
    <Operator.GE: '>='>
    >>> parse_metric_configs([{"name": "adult", "feature": "age",
    ...                        "operator": "=>", "threshold": 18}])
    Traceback (most recent call last):
    ...
    detectors.metrics.MetricConfigError: metrics[0] 'adult', field 'operator': \
expected one of '<', '<=', '>', '>=', '==', '!=', got string '=>'
    """
    if not isinstance(document, list):
        raise MetricConfigError(
            f"{source}: expected a JSON array of metric objects, got "
            f"{_describe(document)}"
        )
    configs = []
    names: set[str] = set()
    for index, item in enumerate(document):
        config = _parse_config(item, f"{source}[{index}]")
        if config.name in names:
            raise MetricConfigError(
                f"{source}[{index}], field 'name': expected a name no other metric "
                f"has, got {config.name!r} a second time; rename one of them"
            )
        names.add(config.name)
        configs.append(config)
    return configs


def load_metric_configs(path: str | os.PathLike[str]) -> list[MetricConfig]:
    """Read metric configurations from a JSON file holding a list of objects.

    The objects are those :func:`parse_metric_configs` accepts, for example
    ``[{"name": "adult", "feature": "age", "operator": ">=", "threshold": 18}]``.
    """
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as stream:
            document = json.load(stream)
    except FileNotFoundError:
        raise MetricConfigError(f"metrics file {path!r} not found") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise MetricConfigError(
            f"{path}: expected a JSON array of metric objects, got a file that fails "
            f"to read ({error})"
        ) from error
    return parse_metric_configs(document, source=path)


def dump_metric_configs(configs: Iterable[MetricConfig]) -> str:
    """Serialise metric configurations as JSON that the loaders read back."""
    documents = [_config_document(config) for config in configs]
    parse_metric_configs(documents)
    return json.dumps(documents, indent=2, allow_nan=False) + "\n"


def _config_document(config: MetricConfig) -> dict[str, Any]:
    if not isinstance(config, MetricConfig):
        raise MetricConfigError(
            f"expected MetricConfig records, got {type(config).__name__}; build them "
            "with parse_metric_configs or load_metric_configs"
        )
    document: dict[str, Any] = {"name": config.name}
    if config.feature is not None:
        document["feature"] = config.feature
    if config.scorer is not None:
        document["scorer"] = config.scorer
    # Operator is a StrEnum, so str() gives its symbol, and a plain string stays.
    document["operator"] = str(config.operator)
    document["threshold"] = config.threshold
    return document


def _parse_config(item: Any, where: str) -> MetricConfig:
    if not isinstance(item, dict):
        raise MetricConfigError(
            f"{where}: expected a JSON object with {', '.join(_CONFIG_FIELDS)}, got "
            f"{_describe(item)}"
        )
    name = _parse_name(item, where)
    where = f"{where} {name!r}"
    unknown = [key for key in item if key not in _CONFIG_FIELDS]
    if unknown:
        raise MetricConfigError(
            f"{where}: expected only the fields {', '.join(_CONFIG_FIELDS)}, got "
            f"{unknown}; check the spelling"
        )

    feature = item.get("feature")
    scorer = item.get("scorer")
    if (feature is None) == (scorer is None):
        got = "both" if feature is not None else "neither"
        raise MetricConfigError(
            f"{where}: expected exactly one of the fields 'feature' and 'scorer', "
            f"got {got}"
        )
    if feature is not None:
        _require_text(feature, where, "feature", "a feature name", 256)
    else:
        _require_text(scorer, where, "scorer", "a scorer", 1024)
        if not _is_scorer_spec(scorer):
            raise _field_error(
                where,
                "scorer",
                "an import path such as package.module:name, or file: and the path "
                "of a pickled model",
                scorer,
            )

    operator = item.get("operator")
    if operator not in {member.value for member in Operator}:
        expected = ", ".join(repr(member.value) for member in Operator)
        raise _field_error(where, "operator", f"one of {expected}", operator)
    threshold = item.get("threshold")
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, int | float)
        or not math.isfinite(threshold)
    ):
        raise _field_error(where, "threshold", "a finite number", threshold)
    return MetricConfig(
        name=name,
        feature=feature,
        scorer=scorer,
        operator=Operator(operator),
        threshold=float(threshold),
    )


def _parse_name(item: dict[str, Any], where: str) -> str:
    name = item.get("name")
    _require_text(name, where, "name", "a non-blank metric name", 256)
    if name in BUILT_IN_CHECKS:
        raise _field_error(
            where, "name", f"a name other than {', '.join(BUILT_IN_CHECKS)}", name
        )
    return name


def _require_text(value: Any, where: str, field: str, expected: str, limit: int):
    if not isinstance(value, str) or not value.strip():
        raise _field_error(where, field, expected, value)
    if len(value) > limit:
        raise _field_error(
            where, field, f"{expected} of at most {limit} characters", value
        )


def _is_scorer_spec(scorer: str) -> bool:
    if scorer.startswith(FILE_SCORER_PREFIX):
        return bool(scorer[len(FILE_SCORER_PREFIX) :].strip())
    return _IMPORT_PATH.match(scorer) is not None


def _field_error(where: str, field: str, expected: str, got: Any) -> MetricConfigError:
    return MetricConfigError(
        f"{where}, field {field!r}: expected {expected}, got {_describe(got)}"
    )


def _describe(value: Any) -> str:
    return "null" if value is None else describe(value)


def _computation(
    config: MetricConfig, profile: Profile
) -> Callable[[EventBlock], tuple[np.ndarray, np.ndarray]]:
    """Return the function computing the values and errors of a block."""
    where = f"metric {config.name!r}"
    if config.feature is not None:
        if config.feature not in profile.features:
            raise MetricConfigError(
                f"{where}: expected a feature of the profile {list(profile.features)}, "
                f"got {config.feature!r}"
            )
        feature = profile[config.feature]
        if feature.kind is FeatureKind.CATEGORICAL:
            if Operator(config.operator) not in _EQUALITY:
                raise MetricConfigError(
                    f"{where}: feature {feature.name!r} is categorical, so expected "
                    f"operator '==' or '!=', got {str(config.operator)!r}"
                )
            return _FeatureRule(feature.name, categorical=True)
        return _FeatureRule(feature.name, categorical=False)
    scorer = _load_scorer(config.scorer, where)
    return _Retried(_scorer_function(scorer, profile, where))


def _always_failing(
    message: str,
) -> Callable[[EventBlock], tuple[np.ndarray, np.ndarray]]:
    text = _truncated(message)

    def compute(block: EventBlock) -> tuple[np.ndarray, np.ndarray]:
        return np.full(len(block), np.nan), np.full(len(block), text, dtype=object)

    return compute


def _load_scorer(spec: str, where: str) -> Any:
    if spec.startswith(FILE_SCORER_PREFIX):
        return _load_model_file(spec[len(FILE_SCORER_PREFIX) :], where)
    module_name, _, attributes = spec.partition(":")
    try:
        found: Any = importlib.import_module(module_name)
    except ImportError as error:
        raise MetricConfigError(
            f"{where}: scorer {spec!r}: importing module {module_name!r} failed "
            f"({error}); install the package that provides it or fix the import path"
        ) from error
    for attribute in attributes.split("."):
        try:
            found = getattr(found, attribute)
        except AttributeError:
            raise MetricConfigError(
                f"{where}: scorer {spec!r}: expected {attribute!r} in "
                f"{module_name!r}, got no such name; fix the import path"
            ) from None
    return found


def _load_model_file(path: str, where: str) -> Any:
    import joblib

    if not os.path.isfile(path):
        raise MetricConfigError(
            f"{where}: model file {path!r} not found; give an absolute path or one "
            "relative to the working directory"
        )
    try:
        return joblib.load(path)
    except Exception as error:
        # Unpickling runs arbitrary code, so any exception can come out of it.
        raise MetricConfigError(
            f"{where}: model file {path!r} fails to load ({type(error).__name__}: "
            f"{error}); save the fitted model with pickle or joblib"
        ) from error


def _scorer_function(
    scorer: Any, profile: Profile, where: str
) -> Callable[[pd.DataFrame], Any]:
    if any(hasattr(scorer, method) for method in _MODEL_METHODS):
        return _ModelScorer(scorer, profile)
    if callable(scorer):
        return scorer
    raise MetricConfigError(
        f"{where}: expected a callable or a fitted model with predict, got "
        f"{type(scorer).__name__}"
    )


class _FeatureRule:
    """Values of one feature as metric values, with an error per unusable row."""

    def __init__(self, name: str, categorical: bool):
        self.name = name
        self.categorical = categorical

    def __call__(self, block: EventBlock) -> tuple[np.ndarray, np.ndarray]:
        raw = block.column(self.name)
        classes, numbers = classify_column(raw)
        errors = np.full(len(raw), None, dtype=object)
        if self.categorical:
            numbers = np.full(len(raw), np.nan)
            for row in np.flatnonzero(np.isin(classes, (NUMBER, BOOL, STRING))):
                numbers[row] = _category_number(category_key(raw[row]))
            usable = np.isin(classes, (NUMBER, BOOL, STRING)) & ~np.isnan(numbers)
        else:
            usable = (classes == NUMBER) & np.isfinite(numbers)
        for row in np.flatnonzero(~usable):
            errors[row] = self._error(raw[row], classes[row])
        return numbers, errors

    def _error(self, value: Any, found: int) -> str:
        if found == MISSING:
            return f"feature {self.name!r} is missing"
        if self.categorical and found in (NUMBER, BOOL, STRING):
            return (
                f"feature {self.name!r}: category {category_key(value)!r} is not a "
                "number, so it cannot be compared with the threshold"
            )
        if found == NUMBER:
            return _truncated(
                f"feature {self.name!r}: expected a finite number, got {value!r}"
            )
        expected = "a number, string or boolean" if self.categorical else "a number"
        return _truncated(
            f"feature {self.name!r}: expected {expected}, got {describe(value)}"
        )


def _category_number(key: str) -> float:
    if key in ("True", "False"):
        return float(key == "True")
    try:
        number = float(key)
    except ValueError:
        return math.nan
    return number if math.isfinite(number) else math.nan


class _Retried:
    """A scorer called on a whole block, and on smaller parts when it raises."""

    def __init__(self, scorer: Callable[[pd.DataFrame], Any]):
        self.scorer = scorer

    def __call__(self, block: EventBlock) -> tuple[np.ndarray, np.ndarray]:
        frame = block.frame()
        values = np.full(len(frame), np.nan)
        errors = np.full(len(frame), None, dtype=object)
        pending = [np.arange(len(frame))]
        while pending:
            rows = pending.pop()
            if len(rows) == 0:
                continue
            part = frame if len(rows) == len(frame) else frame.iloc[rows]
            try:
                values[rows] = self._values(part.reset_index(drop=True))
            except Exception as error:
                # A scorer is user code, so any exception marks its rows.
                if len(rows) == 1:
                    errors[rows[0]] = _truncated(f"{type(error).__name__}: {error}")
                elif len(rows) <= _ROW_BY_ROW:
                    pending.extend(rows[i : i + 1] for i in range(len(rows)))
                else:
                    half = len(rows) // 2
                    pending.extend([rows[half:], rows[:half]])

        not_finite = ~np.isfinite(values) & np.array([e is None for e in errors])
        for row in np.flatnonzero(not_finite):
            errors[row] = (
                f"scorer returned {float(values[row])!r}, expected a finite number"
            )
        return values, errors

    def _values(self, frame: pd.DataFrame) -> np.ndarray:
        output = self.scorer(frame)
        values = np.asarray(output, dtype=np.float64)
        if values.ndim == 2 and values.shape[1] == 1:
            values = values[:, 0]
        if values.shape != (len(frame),):
            raise ValueError(
                f"expected one number per row, {len(frame)} in all, got an output of "
                f"shape {values.shape}"
            )
        return values


class _ModelScorer:
    """A fitted scikit-learn model applied to the profile's features."""

    def __init__(self, model: Any, profile: Profile):
        self.model = model
        self.profile = profile
        self.method = next(m for m in _MODEL_METHODS if hasattr(model, m))
        names = getattr(model, "feature_names_in_", None)
        self.columns = None if names is None else [str(name) for name in names]

    def __call__(self, frame: pd.DataFrame) -> np.ndarray:
        inputs = self._inputs(frame)
        output = getattr(self.model, self.method)(inputs)
        if self.method == "predict_proba":
            output = np.asarray(output)[:, 1]
        return output

    def _inputs(self, frame: pd.DataFrame) -> pd.DataFrame | np.ndarray:
        names = self.columns or list(self.profile.features)
        columns = {}
        for name in names:
            raw = frame[name] if name in frame.columns else [None] * len(frame)
            numeric = (
                name in self.profile.features
                and self.profile[name].kind is FeatureKind.NUMERIC
            )
            if numeric:
                classes, numbers = classify_column(as_object_array(raw))
                columns[name] = np.where(classes == NUMBER, numbers, np.nan)
            else:
                columns[name] = as_object_array(raw)
        inputs = pd.DataFrame(columns, index=frame.index)
        if self.columns is not None:
            return inputs
        if all(self.profile[name].kind is FeatureKind.NUMERIC for name in names):
            return inputs.to_numpy(dtype=np.float64)
        return inputs.to_numpy(dtype=object)


def _truncated(text: str) -> str:
    if len(text) <= MAX_ERROR_LENGTH:
        return text
    return text[: MAX_ERROR_LENGTH - 3] + "..."
