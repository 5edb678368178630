"""Range checks of events against the training profile.

One feature value gets one :class:`Status`:

- numeric feature: None and NaN are ``missing``. Anything but an ``int`` or
  ``float`` is ``wrong_type``, including a ``bool`` and a string spelling a
  number such as ``"39"``, because producers should send numbers. A number,
  compared as float64, is ``below_min`` under the training minimum,
  ``above_max`` over the training maximum, and ``ok`` otherwise. ``inf`` and
  ``-inf`` are above and below every training range. A feature without any
  training value has an empty range, so every finite number is
  ``below_min``.
- categorical feature: None and NaN are ``missing``. Lists, dicts and other
  values that are not a string, number or boolean are ``wrong_type``. Any
  other value is ``unseen_category`` when its category key (see
  :func:`detectors.values.category_key`) never occurred in training, and
  ``ok`` otherwise.

:func:`check_block` applies these rules to whole columns at once;
:func:`check_record` applies them to one event, value by value, and is the
reference the block version is tested against.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .profile import FeatureKind, FeatureProfile, Profile
from .status import Status
from .values import (
    BOOL,
    MISSING,
    NUMBER,
    STRING,
    as_object_array,
    category_key,
    category_keys,
    classify_column,
    classify_value,
    is_missing,
    to_float,
)

__all__ = ["BlockCheck", "check_block", "check_record"]

_STATUSES = tuple(Status)
_STATUS_VALUES = np.array([status.value for status in _STATUSES], dtype=object)
_CODE = {status: code for code, status in enumerate(_STATUSES)}
OK, BELOW_MIN, ABOVE_MAX, UNSEEN_CATEGORY, MISSING_VALUE, WRONG_TYPE = (
    _CODE[Status.OK],
    _CODE[Status.BELOW_MIN],
    _CODE[Status.ABOVE_MAX],
    _CODE[Status.UNSEEN_CATEGORY],
    _CODE[Status.MISSING],
    _CODE[Status.WRONG_TYPE],
)

Records = Sequence[Mapping[str, Any]]


@dataclasses.dataclass
class BlockCheck:
    """Statuses of a block of events, and their values cleaned for scoring.

    ``numbers`` holds, per numeric feature, the float64 value of each row and
    NaN where the status is ``missing`` or ``wrong_type``. ``keys`` holds, per
    categorical feature, each row's category key and None where the status is
    ``missing`` or ``wrong_type``.
    """

    profile: Profile
    codes: dict[str, np.ndarray]
    numbers: dict[str, np.ndarray]
    keys: dict[str, np.ndarray]
    extra: list[list[str]]
    encoded: dict[str, np.ndarray] = dataclasses.field(default_factory=dict, repr=False)

    def __len__(self) -> int:
        return len(self.extra)

    def take(self, rows: np.ndarray) -> BlockCheck:
        """Return the check of the given rows (positions or a boolean mask)."""
        positions = np.arange(len(self))[rows]
        return BlockCheck(
            self.profile,
            {name: codes[positions] for name, codes in self.codes.items()},
            {name: values[positions] for name, values in self.numbers.items()},
            {name: keys[positions] for name, keys in self.keys.items()},
            [self.extra[position] for position in positions],
        )

    @property
    def statuses(self) -> pd.DataFrame:
        """One row per event, one column per profile feature, Status values."""
        columns = {
            name: _STATUS_VALUES[self.codes[name]] for name in self.profile.features
        }
        return pd.DataFrame(columns, index=pd.RangeIndex(len(self)), dtype=object)


def check_block(profile: Profile, data: pd.DataFrame | Records) -> BlockCheck:
    """Check every feature of every row of a block against the profile.

    Parameters
    ----------
    data
        A DataFrame, or a list of events' feature mappings as decoded from
        JSON. A feature absent from a row counts as missing. Names that are
        neither features nor the profile's target or excluded columns are
        listed per row in ``extra`` when their value is not missing.

    Examples
    --------
    >>> from detectors.profile import build_profile
    >>> profile = build_profile(pd.DataFrame({"age": [20, 30], "sex": ["F", "M"]}))
    >>> check = check_block(profile, [{"age": 45, "sex": "X", "city": "Oslo"},
    ...                               {"age": "39"}])
    >>> for row in check.statuses.to_dict("records"):
    ...     print(row)
    {'age': 'above_max', 'sex': 'unseen_category'}
    {'age': 'wrong_type', 'sex': 'missing'}
    >>> check.extra
    [['city'], []]
    """
    columns, extra = _read_columns(profile, data)
    codes: dict[str, np.ndarray] = {}
    numbers: dict[str, np.ndarray] = {}
    keys: dict[str, np.ndarray] = {}
    for feature in profile.feature_profiles:
        values = columns[feature.name]
        classes, column_numbers = classify_column(values)
        if feature.kind is FeatureKind.NUMERIC:
            codes[feature.name] = _check_numbers(feature, classes, column_numbers)
            numbers[feature.name] = np.where(classes == NUMBER, column_numbers, np.nan)
        else:
            column_keys = category_keys(as_object_array(values), classes)
            codes[feature.name] = _check_categories(feature, classes, column_keys)
            keys[feature.name] = column_keys
    return BlockCheck(profile, codes, numbers, keys, extra)


def check_record(profile: Profile, record: Mapping[str, Any]) -> dict[str, Status]:
    """Check the features of one event, one value at a time.

    >>> from detectors.profile import build_profile
    >>> profile = build_profile(pd.DataFrame({"age": [20, 30]}))
    >>> check_record(profile, {"age": float("inf")})
    {'age': <Status.ABOVE_MAX: 'above_max'>}
    """
    return {
        feature.name: check_value(feature, record.get(feature.name))
        for feature in profile.feature_profiles
    }


def check_value(feature: FeatureProfile, value: Any) -> Status:
    """Check one value of one feature."""
    found = classify_value(value)
    if found == MISSING:
        return Status.MISSING
    if feature.kind is FeatureKind.NUMERIC:
        if found != NUMBER:
            return Status.WRONG_TYPE
        number = to_float(value)
        low, high = _numeric_range(feature)
        if number < low:
            return Status.BELOW_MIN
        if number > high:
            return Status.ABOVE_MAX
        return Status.OK
    if found not in (NUMBER, BOOL, STRING):
        return Status.WRONG_TYPE
    if category_key(value) in feature.categories:
        return Status.OK
    return Status.UNSEEN_CATEGORY


def _numeric_range(feature: FeatureProfile) -> tuple[float, float]:
    if feature.min is None or feature.max is None:
        return math.inf, -math.inf
    return feature.min, feature.max


def _check_numbers(
    feature: FeatureProfile, classes: np.ndarray, numbers: np.ndarray
) -> np.ndarray:
    codes = np.full(len(classes), WRONG_TYPE, dtype=np.int8)
    codes[classes == MISSING] = MISSING_VALUE
    is_number = classes == NUMBER
    low, high = _numeric_range(feature)
    codes[is_number] = OK
    codes[is_number & (numbers > high)] = ABOVE_MAX
    codes[is_number & (numbers < low)] = BELOW_MIN
    return codes


def _check_categories(
    feature: FeatureProfile, classes: np.ndarray, keys: np.ndarray
) -> np.ndarray:
    codes = np.full(len(classes), WRONG_TYPE, dtype=np.int8)
    codes[classes == MISSING] = MISSING_VALUE
    usable = (classes == NUMBER) | (classes == BOOL) | (classes == STRING)
    known = feature.categories
    seen = np.fromiter(map(known.__contains__, keys[usable]), bool, int(usable.sum()))
    codes[usable] = np.where(seen, OK, UNSEEN_CATEGORY)
    return codes


def _read_columns(
    profile: Profile, data: pd.DataFrame | Records
) -> tuple[dict[str, Any], list[list[str]]]:
    """Return each profile feature's column and each row's extra names."""
    known = {*profile.features, *profile.target, *profile.excluded}
    if isinstance(data, pd.DataFrame):
        return _frame_columns(profile, data, known)
    if isinstance(data, Mapping):
        raise TypeError(
            "expected a DataFrame or a list of events' feature mappings, got a single "
            "mapping; wrap one event in a list"
        )
    records = list(data)
    if not all(type(record) is dict for record in records):
        for position, record in enumerate(records):
            if not isinstance(record, Mapping):
                raise TypeError(
                    f"row {position}: expected a mapping of feature names to values, "
                    f"got {type(record).__name__}"
                )
    columns = {
        name: [record.get(name) for record in records] for name in profile.features
    }
    return columns, [_extra_names(record, known) for record in records]


def _extra_names(record: Mapping[str, Any], known: set[str]) -> list[str]:
    """List the names of a record that are not known, skipping missing values."""
    if record.keys() <= known:
        return []
    return [
        name
        for name, value in record.items()
        if name not in known and not is_missing(value)
    ]


def _frame_columns(
    profile: Profile, frame: pd.DataFrame, known: set[str]
) -> tuple[dict[str, Any], list[list[str]]]:
    frame = frame.set_axis([str(name) for name in frame.columns], axis=1)
    duplicates = sorted(set(frame.columns[frame.columns.duplicated()]))
    if duplicates:
        raise ValueError(
            f"expected unique column names, got duplicates {duplicates}; rename "
            "or drop the repeated columns"
        )
    absent = np.full(len(frame), None, dtype=object)
    columns = {
        name: frame[name] if name in frame.columns else absent
        for name in profile.features
    }
    extra: list[list[str]] = [[] for _ in range(len(frame))]
    for name in frame.columns:
        if name in known:
            continue
        classes, _ = classify_column(frame[name])
        for position in np.flatnonzero(classes != MISSING):
            extra[position].append(name)
    return columns, extra
