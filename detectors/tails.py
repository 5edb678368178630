"""Per-feature tail probabilities scored against the training distribution.

The score follows ECOD (Li et al., "ECOD: Unsupervised Outlier Detection
Using Empirical Cumulative Distribution Functions", IEEE TKDE 2022). Each
numeric value gets the negative log of its left and right empirical tail
probabilities among the training values. The row score is the largest of
three sums over features: all left tails, all right tails, and for each
feature the tail on the side its training distribution is skewed to.

Two additions make it fit the product. A categorical value contributes
the negative log of the share of training rows whose category is at most
as frequent as its own (an unseen category counts as the rarest). A number
beyond the training minimum or maximum adds ``log1p`` of its distance past
that end, in units of the p1..p99 width, so that values further out score
higher instead of tying.
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from .base import Scorer
from .checks import BlockCheck
from .profile import FeatureKind

__all__ = ["TailScorer"]


class TailScorer(Scorer):
    """Outlier score from per-feature tail probabilities (ECOD-style).

    Known limits: features are scored one at a time, so a row whose every
    value is common but whose combination is rare (a dependence between
    features) scores low.

    Parameters
    ----------
    max_values
        Training values kept per numeric feature; larger training sets are
        reduced to this many evenly spaced order statistics.

    Examples
    --------
    >>> import pandas as pd
    >>> from detectors.profile import build_profile
    >>> frame = pd.DataFrame({"x": range(100), "c": ["a"] * 90 + ["b"] * 10})
    >>> scorer = TailScorer(build_profile(frame)).fit(frame)
    >>> low, high = scorer.score_block([{"x": 50, "c": "a"}, {"x": 500, "c": "z"}])
    >>> bool(high > low)
    True
    """

    def __init__(self, profile, seed: int = 0, max_values: int = 100_000):
        super().__init__(profile, seed)
        self.max_values = max_values

    def _fit(self, check: BlockCheck) -> None:
        self.sorted_values_: dict[str, np.ndarray] = {}
        self.right_skewed_: dict[str, bool] = {}
        self.rarity_: dict[str, dict[str | None, float]] = {}
        self.unseen_rarity_: dict[str, float] = {}
        rows = len(check)
        for feature in self.profile.feature_profiles:
            if feature.kind is FeatureKind.NUMERIC:
                values = check.numbers[feature.name]
                values = np.sort(values[~np.isnan(values)])
                self.sorted_values_[feature.name] = _thin(values, self.max_values)
                self.right_skewed_[feature.name] = _skewness(values) >= 0
            else:
                self.rarity_[feature.name] = _rarity(check.keys[feature.name], rows)
                self.unseen_rarity_[feature.name] = math.log(rows + 1)

    def _score(self, check: BlockCheck) -> np.ndarray:
        rows = len(check)
        left = np.zeros(rows)
        right = np.zeros(rows)
        skewed = np.zeros(rows)
        unit = self.encoder.unit(check)
        for index, name in enumerate(self.profile.features):
            if name in self.rarity_:
                term = self._categorical_term(name, check.keys[name])
                left += term
                right += term
                skewed += term
                continue
            feature_left, feature_right = self._numeric_terms(
                name, check, unit[:, index]
            )
            left += feature_left
            right += feature_right
            skewed += feature_right if self.right_skewed_[name] else feature_left
        return np.maximum(np.maximum(left, right), skewed)

    def _numeric_terms(
        self, name: str, check: BlockCheck, unit: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        values = check.numbers[name]
        reference = self.sorted_values_[name]
        size = len(reference)
        if size == 0:
            neutral = np.full(len(values), math.log(2.0))
            return neutral, neutral
        at_most = np.searchsorted(reference, values, side="right")
        at_least = size - np.searchsorted(reference, values, side="left")
        left = -np.log((at_most + 1) / (size + 1))
        right = -np.log((at_least + 1) / (size + 1))

        # Past the training extremes, grow with the distance in p1..p99 widths.
        low_unit = self.encoder.to_unit(name, reference[0])
        high_unit = self.encoder.to_unit(name, reference[-1])
        left += np.log1p(np.clip(low_unit - unit, 0.0, None))
        right += np.log1p(np.clip(unit - high_unit, 0.0, None))

        missing = np.isnan(values)
        left[missing] = math.log(2.0)
        right[missing] = math.log(2.0)
        return left, right

    def _categorical_term(self, name: str, keys: np.ndarray) -> np.ndarray:
        rarity = self.rarity_[name]
        unseen = self.unseen_rarity_[name]
        # map() with a bound method runs without a Python frame per value.
        values = map(rarity.get, keys, itertools.repeat(unseen, len(keys)))
        return np.fromiter(values, np.float64, len(keys))


def _thin(values: np.ndarray, limit: int) -> np.ndarray:
    if len(values) <= limit:
        return values
    positions = np.linspace(0, len(values) - 1, limit).round().astype(int)
    return values[positions]


def _skewness(values: np.ndarray) -> float:
    if len(values) < 3:
        return 0.0
    centred = values - values.mean()
    spread = np.sqrt(np.mean(centred**2))
    if spread == 0:
        return 0.0
    return float(np.mean(centred**3) / spread**3)


def _rarity(keys: np.ndarray, rows: int) -> dict[str | None, float]:
    """Map each category (None for missing) to -log of its rarity tail."""
    counts: dict[str | None, int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    ordered = sorted(counts.values())
    cumulative = np.cumsum(ordered)
    tail_of = {}
    for count in set(ordered):
        # Rows whose category is at most as frequent as this one.
        position = np.searchsorted(ordered, count, side="right") - 1
        tail_of[count] = cumulative[position]
    return {
        key: float(-math.log((tail_of[count] + 1) / (rows + 1)))
        for key, count in counts.items()
    }
