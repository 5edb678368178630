"""Training profile: per-feature kind, range, quantiles and categories."""

from __future__ import annotations

import dataclasses
import enum
import json
import logging
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import (
    EmptyTrainingDataError,
    InfiniteValuesError,
    InvalidKindError,
    MixedTypesError,
    TrainingDataError,
    UnknownColumnError,
)
from .values import (
    BOOL,
    CLASS_NAMES,
    MISSING,
    NUMBER,
    OTHER,
    STRING,
    category_keys,
    classify_column,
)

__all__ = [
    "FeatureKind",
    "FeatureProfile",
    "Profile",
    "QUANTILE_LEVELS",
    "build_profile",
]

logger = logging.getLogger(__name__)

PROFILE_FORMAT = 1

# Percent levels of the quantiles stored for every numeric feature.
QUANTILE_LEVELS = (1, 5, 10, 25, 50, 75, 90, 95, 99)


class FeatureKind(enum.StrEnum):
    """Kind of a feature, which sets the rules its values are checked by."""

    NUMERIC = "numeric"
    CATEGORICAL = "categorical"


class Flag(enum.StrEnum):
    """Remarks on a training column that the user should know about."""

    ALL_MISSING = "all_missing"
    CONSTANT = "constant"


@dataclasses.dataclass(frozen=True)
class FeatureProfile:
    """Statistics of one feature over the training rows.

    Numeric statistics (``min`` to ``quantiles``) are None or empty for a
    categorical feature and for a numeric feature without any value.
    ``categories`` maps each category seen to its number of rows, the most
    frequent first.
    """

    name: str
    kind: FeatureKind
    count: int
    missing_share: float
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    quantiles: dict[str, float] = dataclasses.field(default_factory=dict)
    categories: dict[str, int] = dataclasses.field(default_factory=dict)
    flags: tuple[Flag, ...] = ()

    def category_share(self, key: str) -> float:
        """Return the share of non-missing training values equal to ``key``."""
        if self.count == 0:
            return 0.0
        return self.categories.get(key, 0) / self.count

    def to_dict(self) -> dict[str, Any]:
        """Return the profile as plain JSON-ready values."""
        return {
            "name": self.name,
            "kind": str(self.kind),
            "count": self.count,
            "missing_share": self.missing_share,
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "std": self.std,
            "quantiles": dict(self.quantiles),
            "categories": dict(self.categories),
            "flags": [str(flag) for flag in self.flags],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureProfile:
        """Build a feature profile from the output of :meth:`to_dict`."""
        return cls(
            name=data["name"],
            kind=FeatureKind(data["kind"]),
            count=data["count"],
            missing_share=data["missing_share"],
            min=data["min"],
            max=data["max"],
            mean=data["mean"],
            std=data["std"],
            quantiles=dict(data["quantiles"]),
            categories=dict(data["categories"]),
            flags=tuple(Flag(flag) for flag in data["flags"]),
        )


@dataclasses.dataclass(frozen=True)
class Profile:
    """Training profile of a model version: one :class:`FeatureProfile` per feature.

    Examples
    --------
    >>> frame = pd.DataFrame({"age": [25, 40, 61], "sex": ["F", "M", "F"]})
    >>> profile = build_profile(frame)
    >>> profile.features
    ('age', 'sex')
    >>> profile["age"].min, profile["age"].max
    (25.0, 61.0)
    >>> profile["sex"].categories
    {'F': 2, 'M': 1}
    >>> Profile.from_json(profile.to_json()) == profile
    True
    """

    feature_profiles: tuple[FeatureProfile, ...]
    rows: int
    target: tuple[str, ...] = ()
    excluded: tuple[str, ...] = ()

    @property
    def features(self) -> tuple[str, ...]:
        """Feature names in training column order."""
        return tuple(feature.name for feature in self.feature_profiles)

    def __getitem__(self, name: str) -> FeatureProfile:
        for feature in self.feature_profiles:
            if feature.name == name:
                return feature
        raise KeyError(f"feature {name!r} is not in the profile {list(self.features)}")

    def to_json(self) -> str:
        """Serialise the profile as indented JSON that :meth:`from_json` reads back."""
        data = {
            "profile_format": PROFILE_FORMAT,
            "rows": self.rows,
            "target": list(self.target),
            "excluded": list(self.excluded),
            "features": [feature.to_dict() for feature in self.feature_profiles],
        }
        return json.dumps(data, indent=2, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str) -> Profile:
        """Parse a profile written by :meth:`to_json`."""
        data = json.loads(text)
        return cls(
            feature_profiles=tuple(
                FeatureProfile.from_dict(feature) for feature in data["features"]
            ),
            rows=data["rows"],
            target=tuple(data["target"]),
            excluded=tuple(data["excluded"]),
        )


def build_profile(
    frame: pd.DataFrame,
    target: Iterable[str] = (),
    exclude: Iterable[str] = (),
    kinds: Mapping[str, str] | None = None,
) -> Profile:
    """Profile every feature column of a training frame.

    Parameters
    ----------
    frame
        Training rows. Column names become feature names (as strings).
    target
        Columns holding the model's output; they are not features.
    exclude
        Other columns that are not features, such as ids.
    kinds
        Feature kind per column (``"numeric"`` or ``"categorical"``) for the
        columns whose inferred kind is wrong. A column of numbers is inferred
        numeric; a column of strings or of booleans categorical.

    Raises
    ------
    EmptyTrainingDataError
        The frame has no rows, or no columns are left once the target and
        excluded columns are removed.
    UnknownColumnError
        A target, excluded or ``kinds`` column is not in the frame.
    InfiniteValuesError
        A numeric column contains +inf or -inf. Training rejects them because
        they would make the training range unbounded.
    MixedTypesError
        One column mixes numbers with strings or booleans, or contains
        values such as lists that no feature kind accepts.
    InvalidKindError
        A ``kinds`` entry names an unknown kind or does not fit the column.

    Notes
    -----
    A column without any value is kept and flagged ``all_missing``; a column
    with a single distinct value is kept and flagged ``constant``. Both are
    logged as warnings.
    """
    if not isinstance(frame, pd.DataFrame):
        raise TypeError(f"expected a pandas DataFrame, got {type(frame).__name__}")
    frame = _with_string_columns(frame)
    target = _as_names(target)
    exclude = _as_names(exclude)
    kinds = {str(name): kind for name, kind in (kinds or {}).items()}
    _check_known(frame, "target", target)
    _check_known(frame, "excluded", exclude)
    _check_known(frame, "kinds", list(kinds))

    feature_names = [name for name in frame.columns if name not in {*target, *exclude}]
    if len(frame) == 0:
        raise EmptyTrainingDataError(
            f"expected at least one training row, got an empty frame with columns "
            f"{list(frame.columns)}; check the file or the filter that produced it"
        )
    if not feature_names:
        raise EmptyTrainingDataError(
            f"expected at least one feature column, got none after removing target "
            f"{target} and excluded {exclude} from {list(frame.columns)}"
        )

    features = tuple(
        _profile_column(name, frame[name], kinds.get(name)) for name in feature_names
    )
    return Profile(
        feature_profiles=features,
        rows=len(frame),
        target=tuple(target),
        excluded=tuple(exclude),
    )


def _as_names(names: Iterable[str] | str) -> list[str]:
    if isinstance(names, str):
        return [names]
    return [str(name) for name in names]


def _with_string_columns(frame: pd.DataFrame) -> pd.DataFrame:
    names = [str(name) for name in frame.columns]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise TrainingDataError(
            f"expected unique column names, got duplicates {duplicates}; "
            "rename the columns before training"
        )
    if names == list(frame.columns):
        return frame
    return frame.set_axis(names, axis=1)


def _check_known(frame: pd.DataFrame, role: str, names: Sequence[str]) -> None:
    unknown = [name for name in names if name not in frame.columns]
    if unknown:
        raise UnknownColumnError(
            f"{role} column(s) {unknown} not found in the training data; "
            f"available columns are {list(frame.columns)}"
        )


def _profile_column(name: str, column: pd.Series, kind: str | None) -> FeatureProfile:
    classes, numbers = classify_column(column)
    present = classes != MISSING
    feature_kind = _feature_kind(name, column, classes, kind)
    count = int(present.sum())
    missing_share = (len(column) - count) / len(column)

    if feature_kind is FeatureKind.NUMERIC:
        feature = _numeric_profile(name, numbers[present], missing_share)
    else:
        keys = category_keys(column.to_numpy(dtype=object), classes)[present]
        feature = _categorical_profile(name, keys, missing_share)

    for flag in feature.flags:
        logger.warning(
            "training column %r is %s; it is kept in the profile", name, flag
        )
    return feature


def _feature_kind(
    name: str, column: pd.Series, classes: np.ndarray, kind: str | None
) -> FeatureKind:
    found = set(np.unique(classes[classes != MISSING]).tolist())
    if OTHER in found:
        raise MixedTypesError(
            f"column {name!r}: expected numbers, strings or booleans, got "
            f"{_describe_mix(column, classes)}; exclude the column or convert its "
            "values"
        )
    if kind is not None:
        return _checked_override(name, column, classes, found, kind)
    if not found:
        numeric = pd.api.types.is_numeric_dtype(column.dtype)
        return FeatureKind.NUMERIC if numeric else FeatureKind.CATEGORICAL
    if found == {NUMBER}:
        return FeatureKind.NUMERIC
    if found in ({STRING}, {BOOL}):
        return FeatureKind.CATEGORICAL
    raise MixedTypesError(
        f"column {name!r}: expected one type of value, got "
        f"{_describe_mix(column, classes)}; clean the column, or declare its kind "
        f"with kinds={{{name!r}: 'categorical'}} to compare every value as a category"
    )


def _describe_mix(column: pd.Series, classes: np.ndarray) -> str:
    """Describe each value type present with its row count and a first example."""
    values = column.to_numpy(dtype=object)
    parts = []
    for found in np.unique(classes[classes != MISSING]).tolist():
        positions = np.flatnonzero(classes == found)
        example = values[positions[0]]
        type_name = CLASS_NAMES.get(found, type(example).__name__)
        rows = f"{len(positions)} row" + ("s" if len(positions) != 1 else "")
        parts.append(f"{type_name} ({rows}, e.g. {example!r})")
    return ", ".join(parts)


def _checked_override(
    name: str, column: pd.Series, classes: np.ndarray, found: set[int], kind: str
) -> FeatureKind:
    try:
        feature_kind = FeatureKind(kind)
    except ValueError:
        raise InvalidKindError(
            f"kinds[{name!r}]: expected one of {[str(k) for k in FeatureKind]}, "
            f"got {kind!r}"
        ) from None
    if feature_kind is FeatureKind.NUMERIC and not found <= {NUMBER}:
        raise InvalidKindError(
            f"column {name!r} cannot be numeric: expected numbers, got "
            f"{_describe_mix(column, classes)}; convert the column to numbers or "
            "declare it categorical"
        )
    return feature_kind


def _numeric_profile(
    name: str, values: np.ndarray, missing_share: float
) -> FeatureProfile:
    infinite = np.isinf(values)
    if infinite.any():
        positive = int((values[infinite] > 0).sum())
        raise InfiniteValuesError(
            f"column {name!r}: expected finite numbers, got {positive} +inf and "
            f"{int(infinite.sum()) - positive} -inf values; replace them with a "
            "finite value or leave the cell empty so it counts as missing"
        )
    if len(values) == 0:
        return FeatureProfile(
            name=name,
            kind=FeatureKind.NUMERIC,
            count=0,
            missing_share=missing_share,
            flags=(Flag.ALL_MISSING,),
        )

    levels = np.array(QUANTILE_LEVELS) / 100.0
    quantiles = np.quantile(values, levels)
    minimum, maximum = float(values.min()), float(values.max())
    std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
    return FeatureProfile(
        name=name,
        kind=FeatureKind.NUMERIC,
        count=len(values),
        missing_share=missing_share,
        min=minimum,
        max=maximum,
        mean=float(values.mean()),
        std=std if math.isfinite(std) else None,
        quantiles={
            f"p{level}": float(value)
            for level, value in zip(QUANTILE_LEVELS, quantiles, strict=True)
        },
        flags=(Flag.CONSTANT,) if minimum == maximum else (),
    )


def _categorical_profile(
    name: str, keys: np.ndarray, missing_share: float
) -> FeatureProfile:
    counts = pd.Series(keys, dtype=object).value_counts(sort=False)
    ordered = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    if not ordered:
        flags: tuple[Flag, ...] = (Flag.ALL_MISSING,)
    elif len(ordered) == 1:
        flags = (Flag.CONSTANT,)
    else:
        flags = ()
    return FeatureProfile(
        name=name,
        kind=FeatureKind.CATEGORICAL,
        count=len(keys),
        missing_share=missing_share,
        categories={str(key): int(count) for key, count in ordered},
        flags=flags,
    )
