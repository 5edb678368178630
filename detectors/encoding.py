"""Numeric encoding of checked features for the outlier scorers.

Every feature becomes one float column, using only the training profile:

- numeric: ``(x - p1) / (p99 - p1)``, so the central 98 % of training values
  fall in [0, 1] whatever outliers the training data contains at its extremes.
  A missing or wrong-typed value takes the training median's position.
- categorical: the share of training rows with that category, with
  ``missing`` counted as one more category; a category never seen is 0.

:meth:`FeatureEncoder.bounded` squeezes that into [0, 1] for Half-Space
Trees: the training range p1..p99 maps to [0.25, 0.75] and values beyond
half that width past either end are clipped.
"""

from __future__ import annotations

import itertools

import numpy as np

from .checks import BlockCheck
from .profile import FeatureKind, FeatureProfile, Profile

__all__ = ["FeatureEncoder"]

# Encoded values are capped because scikit-learn rejects inf.
_UNIT_LIMIT = 1e6


class FeatureEncoder:
    """Encoder of a profile's features into a float matrix, one column a feature.

    Examples
    --------
    >>> import pandas as pd
    >>> from detectors.checks import check_block
    >>> from detectors.profile import build_profile
    >>> frame = pd.DataFrame({"x": [0.0, 1.0, 2.0, 1000.0], "c": ["a", "a", "b", None]})
    >>> profile = build_profile(frame)
    >>> encoder = FeatureEncoder(profile)
    >>> check = check_block(profile, [{"x": 1.0, "c": "a"}, {"x": None, "c": "z"}])
    >>> encoder.unit(check).round(3).tolist()
    [[0.001, 0.5], [0.002, 0.0]]
    """

    def __init__(self, profile: Profile):
        self.profile = profile
        self.features = profile.features
        self._numeric = [
            (index, feature.name, *_numeric_scale(feature))
            for index, feature in enumerate(profile.feature_profiles)
            if feature.kind is FeatureKind.NUMERIC
        ]
        self._categorical = [
            (
                index,
                feature.name,
                _category_shares(feature, profile.rows),
                feature.missing_share,
            )
            for index, feature in enumerate(profile.feature_profiles)
            if feature.kind is FeatureKind.CATEGORICAL
        ]
        self.is_numeric = np.array(
            [
                feature.kind is FeatureKind.NUMERIC
                for feature in profile.feature_profiles
            ]
        )

    def to_unit(self, name: str, value: float) -> float:
        """Encode one number of the numeric feature ``name``."""
        for _, feature_name, low, spread, _ in self._numeric:
            if feature_name == name:
                return (value - low) / spread
        raise KeyError(f"{name!r} is not a numeric feature of the profile")

    def unit(self, check: BlockCheck) -> np.ndarray:
        """Encode a checked block: training's central range maps to [0, 1].

        The result is kept on the block, since it depends only on the profile,
        and returned again on later calls; callers must not modify it.
        """
        cached = check.encoded.get("unit")
        if cached is None:
            cached = check.encoded["unit"] = self._unit(check)
            cached.flags.writeable = False
        return cached

    def _unit(self, check: BlockCheck) -> np.ndarray:
        encoded = np.empty((len(check), len(self.features)))
        for index, name, low, spread, median in self._numeric:
            values = (check.numbers[name] - low) / spread
            values = np.where(np.isnan(values), median, values)
            encoded[:, index] = np.clip(values, -_UNIT_LIMIT, _UNIT_LIMIT)
        for index, name, shares, missing in self._categorical:
            keys = check.keys[name]
            # A missing value has the key None, which no category has.
            table = {**shares, None: missing}
            encoded[:, index] = list(map(table.get, keys, itertools.repeat(0.0)))
        return encoded

    def bounded(self, check: BlockCheck) -> np.ndarray:
        """Encode a checked block into [0, 1], clipping far values."""
        encoded = self.unit(check).copy()
        numeric = encoded[:, self.is_numeric]
        encoded[:, self.is_numeric] = np.clip(0.25 + 0.5 * numeric, 0.0, 1.0)
        return encoded


def _numeric_scale(feature: FeatureProfile) -> tuple[float, float, float]:
    """Return the low end, the width and the median position of a numeric feature."""
    if feature.count == 0:
        return 0.0, 1.0, 0.5
    low, high = feature.quantiles["p1"], feature.quantiles["p99"]
    spread = high - low
    if spread <= 0:
        spread = feature.max - feature.min
        low = feature.min
    if spread <= 0:
        # A constant column: every other value lands at least one unit away.
        spread = max(abs(feature.min), 1.0)
        low = feature.min - 0.5 * spread
    median = (feature.quantiles["p50"] - low) / spread
    return low, spread, median


def _category_shares(feature: FeatureProfile, rows: int) -> dict[str, float]:
    """Return each category's share of all training rows, missing ones included."""
    return {key: count / rows for key, count in feature.categories.items()}
