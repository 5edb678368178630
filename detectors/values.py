"""Classification of raw feature values into numbers, categories and the rest.

Events arrive as JSON, so one column of a block may hold any mix of ``int``,
``float``, ``str``, ``bool``, ``None``, lists and dicts. Every value is put in
one of five classes, the same way for a whole block (vectorised) and for a
single value (:func:`classify_value`):

- ``MISSING``: ``None``, ``NaN``, ``pandas.NA`` and ``NaT``.
- ``NUMBER``: ``int`` and ``float`` (and numpy integers and floats), but not
  ``bool``. Numbers are compared as float64, so an ``int`` beyond the float64
  range becomes ``inf`` or ``-inf``.
- ``BOOL``: ``bool`` and ``numpy.bool_``.
- ``STRING``: ``str``, including strings that spell a number such as ``"39"``.
- ``OTHER``: anything else (lists, dicts, timestamps, bytes).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "BOOL",
    "MISSING",
    "NUMBER",
    "OTHER",
    "STRING",
    "as_object_array",
    "category_key",
    "category_keys",
    "classify_column",
    "classify_value",
    "is_missing",
    "to_float",
]

MISSING = 0
NUMBER = 1
BOOL = 2
STRING = 3
OTHER = 4

CLASS_NAMES = {MISSING: "missing", NUMBER: "number", BOOL: "bool", STRING: "str"}

# Class of each Python type met so far; float is refined to MISSING for NaN.
_TYPE_CLASSES: dict[type, int] = {
    type(None): MISSING,
    type(pd.NA): MISSING,
    type(pd.NaT): MISSING,
    bool: BOOL,
    np.bool_: BOOL,
    int: NUMBER,
    float: NUMBER,
    str: STRING,
}


def _class_of_type(kind: type) -> int:
    cached = _TYPE_CLASSES.get(kind)
    if cached is not None:
        return cached
    if issubclass(kind, bool | np.bool_):
        found = BOOL
    elif issubclass(kind, numbers.Real):
        found = NUMBER
    elif issubclass(kind, str):
        found = STRING
    else:
        found = OTHER
    _TYPE_CLASSES[kind] = found
    return found


def to_float(value: Any) -> float:
    """Convert a number to float64, mapping ints beyond its range to ±inf.

    >>> to_float(10**400), to_float(-(10**400)), to_float(3)
    (inf, -inf, 3.0)
    """
    try:
        return float(value)
    except OverflowError:
        return math.inf if value > 0 else -math.inf


def classify_value(value: Any) -> int:
    """Return the class of one value (``MISSING``, ``NUMBER``, ...).

    >>> [classify_value(v) for v in (None, float("nan"), 3, True, "39", [1])]
    [0, 0, 1, 2, 3, 4]
    """
    found = _class_of_type(type(value))
    if found == NUMBER and math.isnan(to_float(value)):
        return MISSING
    return found


def is_missing(value: Any) -> bool:
    """Tell whether a value counts as missing (``None``, ``NaN``, ``NA``)."""
    return classify_value(value) == MISSING


def category_key(value: Any) -> str:
    """Return the string under which a categorical value is stored.

    Strings stand for themselves; numbers and booleans are written in a
    canonical form so that ``1``, ``1.0`` and ``"1"`` are the same category.

    >>> category_key("Private"), category_key(1), category_key(1.0), category_key(0.5)
    ('Private', '1', '1', '0.5')
    >>> category_key(True)
    'True'
    """
    if isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, numbers.Integral):
        return str(int(value))
    number = float(value)
    if number.is_integer():
        return str(int(number))
    return repr(number)


def as_object_array(values: Iterable[Any]) -> np.ndarray:
    """Return a 1-d object array, even when the values are lists of equal length."""
    if isinstance(values, np.ndarray) and values.dtype == object and values.ndim == 1:
        return values
    if isinstance(values, pd.Series):
        return values.to_numpy(dtype=object)
    values = list(values)
    return np.fromiter(values, dtype=object, count=len(values))


def classify_column(
    values: pd.Series | np.ndarray | list,
) -> tuple[np.ndarray, np.ndarray]:
    """Classify every value of one column.

    Returns
    -------
    classes
        int8 array, one class per value.
    numbers
        float64 array with the value of every ``NUMBER`` and NaN elsewhere.
    """
    if isinstance(values, list):
        plain = _classify_plain_list(values)
        if plain is not None:
            return plain
    if isinstance(values, np.ndarray) and values.dtype != object:
        values = pd.Series(values)
    if isinstance(values, pd.Series):
        typed = _classify_typed_series(values)
        if typed is not None:
            return typed
    return _classify_objects(as_object_array(values))


def _classify_typed_series(series: pd.Series) -> tuple[np.ndarray, np.ndarray] | None:
    """Classify a column with one numpy or pandas dtype, or return None."""
    dtype = series.dtype
    size = len(series)
    if pd.api.types.is_bool_dtype(dtype) and not series.hasnans:
        return np.full(size, BOOL, np.int8), np.full(size, np.nan)
    if isinstance(dtype, np.dtype) and dtype.kind in "iuf":
        numbers_ = series.to_numpy(dtype=np.float64)
        classes = np.where(np.isnan(numbers_), MISSING, NUMBER).astype(np.int8)
        return classes, numbers_
    if pd.api.types.is_string_dtype(dtype) and not pd.api.types.is_object_dtype(dtype):
        classes = np.where(series.isna().to_numpy(), MISSING, STRING).astype(np.int8)
        return classes, np.full(size, np.nan)
    return None


_NUMBER_OR_NONE = frozenset({int, float, type(None)})
_STRING_OR_NONE = frozenset({str, type(None)})


def _classify_plain_list(values: list) -> tuple[np.ndarray, np.ndarray] | None:
    """Classify a list of only numbers and None, or only strings and None.

    These are the columns JSON events usually give. Returns None for any
    other mix, and for an int beyond the float64 range, which the general
    path maps to an infinity.
    """
    kinds = set(map(type, values))
    size = len(values)
    if kinds <= _NUMBER_OR_NONE:
        try:
            numbers_ = np.array(values, dtype=np.float64)
        except OverflowError:
            return None
        classes = np.where(np.isnan(numbers_), MISSING, NUMBER).astype(np.int8)
        return classes, numbers_
    if kinds <= _STRING_OR_NONE:
        classes = np.full(size, STRING, np.int8)
        if type(None) in kinds:
            classes[as_object_array(values) == None] = MISSING  # noqa: E711
        return classes, np.full(size, np.nan)
    return None


def _classify_objects(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    classes = np.fromiter(
        (_class_of_type(kind) for kind in map(type, values)), np.int8, len(values)
    )
    numbers_ = np.full(len(values), np.nan)
    is_number = classes == NUMBER
    if is_number.any():
        picked = values[is_number]
        try:
            converted = picked.astype(np.float64)
        except OverflowError:
            converted = np.fromiter(map(to_float, picked), np.float64, len(picked))
        numbers_[is_number] = converted
        classes[is_number & np.isnan(numbers_)] = MISSING
    return classes, numbers_


def category_keys(values: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Return the category key of every number, bool or string, None elsewhere."""
    values = as_object_array(values)
    if (classes == STRING).all():
        return values.copy()
    if not ((classes == NUMBER) | (classes == BOOL)).any():
        # Strings are their own keys, so only the other values need clearing.
        keys = values.copy()
        keys[classes != STRING] = None
        return keys
    keys = np.full(len(values), None, dtype=object)
    usable = (classes == NUMBER) | (classes == BOOL) | (classes == STRING)
    keys[usable] = [category_key(value) for value in values[usable]]
    return keys
