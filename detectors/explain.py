"""Per-feature explanations of ``auto_od`` scores.

The contribution of a feature to an event's score is how much the combined
``auto_od`` score falls when that one feature is replaced by a typical
training value. The typical value is the median of a numeric feature and
the most common category of a categorical one. The replaced rows are
scored by the same detector, with all three scorers, so a contribution is a
change of the combined score and not of one scorer.

This follows the per-feature decomposition of the tail scorer
(:mod:`detectors.tails`), which adds one term per feature. While the same
tail side gives the row's tail score before and after the replacement, the
tail part of a contribution is exactly the difference between the
feature's term for its value and for the typical value, scaled as the
detector scales the tail score. The Isolation Forest and Half-Space Trees
parts do not split per feature, and the replacement measures what each
feature adds to them in the same unit.

``share`` is a contribution divided by the sum of the row's positive
contributions. The shares of the features that raise the score add up to
1, and a feature whose typical value would raise the score gets a negative
contribution and a share of 0.

Known limits: the contributions do not add up to the score. When two
features are unusual only in combination, replacing either one removes the
oddity, so both get the full drop. When two features are each far out,
the row stays isolated with either one replaced, so the Isolation Forest
and Half-Space Trees parts of both contributions shrink and the tail part
dominates.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from .auto_od import AutoOutlierDetector
from .base import Block
from .checks import MISSING_VALUE, OK, BlockCheck
from .profile import FeatureKind, FeatureProfile, Profile
from .status import Status

__all__ = ["Contribution", "explain_block"]

# Categories listed per categorical feature as what training saw.
TRAINING_CATEGORIES = 3

# Status of each check code, in the order detectors.checks numbers them.
_STATUSES = tuple(Status)

# Requested rows are scored in chunks of this many, because each one becomes
# one row per feature plus one.
_CHUNK_ROWS = 256


@dataclasses.dataclass(frozen=True)
class Contribution:
    """What one feature adds to the ``auto_od`` score of one event.

    ``contribution`` is the fall of the combined score when the feature is
    replaced by its typical training value, in score units (the threshold
    is in the same units). ``share`` is the contribution over the sum of the
    row's positive contributions, in [0, 1]. ``value`` is the number (for a
    numeric feature) or category key (for a categorical one) that was
    scored, or None when the value is missing or of the wrong type.

    The training fields describe what training saw. A numeric feature has
    the range ``training_min``..``training_max`` and the central range
    ``training_p1``..``training_p99``. A categorical feature has its most
    common categories with their share of the non-missing training values.
    """

    feature: str
    kind: FeatureKind
    status: Status
    value: float | str | None
    contribution: float
    share: float
    training_min: float | None = None
    training_max: float | None = None
    training_p1: float | None = None
    training_p99: float | None = None
    training_categories: tuple[tuple[str, float], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """Return the contribution as plain JSON-ready values."""
        data = dataclasses.asdict(self)
        data["kind"] = str(self.kind)
        data["status"] = str(self.status)
        data["training_categories"] = [list(pair) for pair in self.training_categories]
        return data

    def describe(self) -> str:
        """Return one line for a person: value, status, share and training values.

        >>> print(Contribution("age", FeatureKind.NUMERIC, Status.ABOVE_MAX, 130.0,
        ...                    2.5, 0.8, 18.0, 90.0, 19.0, 80.0).describe())
        age = 130 (above_max): +2.5, 80 % of the raise; training 18..90, p1..p99 19..80
        """
        value = "missing" if self.value is None else _format_value(self.value)
        text = (
            f"{self.feature} = {value} ({self.status}): {self.contribution:+.3g}, "
            f"{_percent(self.share)} of the raise"
        )
        if self.kind is FeatureKind.NUMERIC and self.training_min is not None:
            low, high = self.training_min, self.training_max
            p1, p99 = self.training_p1, self.training_p99
            return (
                f"{text}; training {_format_value(low)}..{_format_value(high)}, "
                f"p1..p99 {_format_value(p1)}..{_format_value(p99)}"
            )
        if self.training_categories:
            common = ", ".join(
                f"{key} ({_percent(share)})" for key, share in self.training_categories
            )
            return f"{text}; training most often {common}"
        return f"{text}; no training values"


def explain_block(
    detector: AutoOutlierDetector,
    data: Block,
    rows: Sequence[int] | None = None,
    top: int = 3,
) -> list[list[Contribution]]:
    """Explain the ``auto_od`` scores of rows by the features that raise them.

    Parameters
    ----------
    detector
        The fitted detector whose current state scored the rows. Scoring
        with ``learn=True`` changes it, so explain a block before or right
        after scoring it to get contributions of the scores reported.
    data
        A DataFrame, a list of feature mappings or a :class:`BlockCheck`.
    rows
        Positions of the rows to explain, all rows when None.
    top
        Contributions returned per row, the largest first; ties keep
        training column order.

    Returns
    -------
    list of list of Contribution
        One list per requested row, in the order of ``rows``.

    Examples
    --------
    >>> import pandas as pd
    >>> from detectors.profile import build_profile
    >>> frame = pd.DataFrame({"x": [float(i % 50) for i in range(1000)],
    ...                       "c": ["a", "b"] * 500})
    >>> detector = AutoOutlierDetector(build_profile(frame)).fit(frame)
    >>> [first] = explain_block(detector, [{"x": 20.0, "c": "zzz"}], top=1)
    >>> first[0].feature, str(first[0].status), first[0].training_categories
    ('c', 'unseen_category', (('a', 0.5), ('b', 0.5)))
    """
    if isinstance(top, bool) or not isinstance(top, int) or top < 1:
        raise ValueError(f"top: expected a whole number from 1, got {top!r}")
    check = detector.check(data)
    positions = _positions(rows, len(check))
    profile = detector.profile
    typical = [_typical_value(feature) for feature in profile.feature_profiles]

    explained: list[list[Contribution]] = []
    for start in range(0, len(positions), _CHUNK_ROWS):
        chunk = check.take(positions[start : start + _CHUNK_ROWS])
        drops = _score_drops(detector, chunk, typical)
        explained.extend(
            _row_contributions(profile, chunk, row, drops[row], top)
            for row in range(len(chunk))
        )
    return explained


def _positions(rows: Sequence[int] | None, size: int) -> np.ndarray:
    if rows is None:
        return np.arange(size)
    positions = np.asarray(rows)
    if positions.ndim != 1 or (positions.size and positions.dtype.kind not in "iu"):
        raise TypeError(f"rows: expected a sequence of row positions, got {rows!r}")
    outside = positions[(positions < 0) | (positions >= size)]
    if outside.size:
        raise IndexError(
            f"rows: expected positions from 0 to {size - 1}, got {outside.tolist()}"
        )
    return positions.astype(np.int64)


def _typical_value(feature: FeatureProfile) -> float | str | None:
    """Return the median or most common category, None without training values."""
    if feature.kind is FeatureKind.NUMERIC:
        return feature.quantiles.get("p50")
    return next(iter(feature.categories), None)


def _score_drops(
    detector: AutoOutlierDetector, check: BlockCheck, typical: list[Any]
) -> np.ndarray:
    """Return, per row and feature, the score minus the score with it typical."""
    rows = len(check)
    features = detector.profile.feature_profiles
    trial = _with_typical_values(check, features, typical)
    scores = detector.score_block(trial)
    base = scores[:rows]
    replaced = scores[rows:].reshape(len(features), rows).T
    return base[:, None] - replaced


def _with_typical_values(
    check: BlockCheck, features: tuple[FeatureProfile, ...], typical: list[Any]
) -> BlockCheck:
    """Stack the rows once as they are and once per feature made typical."""
    rows = len(check)
    copies = len(features) + 1
    codes = {name: np.tile(values, copies) for name, values in check.codes.items()}
    numbers = {name: np.tile(values, copies) for name, values in check.numbers.items()}
    keys = {name: np.tile(values, copies) for name, values in check.keys.items()}
    for index, (feature, value) in enumerate(zip(features, typical, strict=True)):
        block = slice((index + 1) * rows, (index + 2) * rows)
        codes[feature.name][block] = MISSING_VALUE if value is None else OK
        if feature.kind is FeatureKind.NUMERIC:
            numbers[feature.name][block] = np.nan if value is None else value
        else:
            keys[feature.name][block] = value
    return BlockCheck(
        check.profile, codes, numbers, keys, [[] for _ in range(rows * copies)]
    )


def _row_contributions(
    profile: Profile, check: BlockCheck, row: int, drops: np.ndarray, top: int
) -> list[Contribution]:
    positive = float(np.clip(drops, 0.0, None).sum())
    # A stable sort keeps training column order among equal contributions.
    order = np.argsort(-drops, kind="stable")[:top]
    contributions = []
    for index in order:
        feature = profile.feature_profiles[index]
        drop = float(drops[index])
        share = max(drop, 0.0) / positive if positive > 0 else 0.0
        contributions.append(
            Contribution(
                feature=feature.name,
                kind=feature.kind,
                status=_STATUSES[check.codes[feature.name][row]],
                value=_scored_value(check, feature, row),
                contribution=drop,
                share=share,
                **_training_view(feature),
            )
        )
    return contributions


def _scored_value(check: BlockCheck, feature: FeatureProfile, row: int) -> Any:
    if feature.kind is FeatureKind.NUMERIC:
        number = float(check.numbers[feature.name][row])
        return None if np.isnan(number) else number
    return check.keys[feature.name][row]


def _training_view(feature: FeatureProfile) -> dict[str, Any]:
    if feature.kind is FeatureKind.NUMERIC:
        return {
            "training_min": feature.min,
            "training_max": feature.max,
            "training_p1": feature.quantiles.get("p1"),
            "training_p99": feature.quantiles.get("p99"),
        }
    common = list(feature.categories)[:TRAINING_CATEGORIES]
    return {
        "training_categories": tuple(
            (key, feature.category_share(key)) for key in common
        )
    }


def _format_value(value: float | str | None) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


def _percent(share: float) -> str:
    return f"{share * 100:.0f} %"
