"""Drift of one batch against the training distribution, feature by feature.

Each feature of a batch gets one goodness-of-fit test against training:

- numeric: the two-sample Kolmogorov-Smirnov test of the batch's numbers
  against a reference sample of training values stored with the model
  version (:class:`DriftReference`, up to 2,000 values per feature drawn
  with the training seed). The p-value is the asymptotic Kolmogorov
  distribution at ``(sqrt(n_e) + 0.12 + 0.11 / sqrt(n_e)) * D``, with
  ``n_e = n m / (n + m)`` for ``n`` batch and ``m`` reference values. For 20
  to 200 values against 2,000 the unit tests hold it within 5 % of scipy's
  exact ``ks_2samp`` p-value, at a fraction of its cost. With ties, as in
  integer features, the test is conservative, so it flags drift less often
  than ``alpha``.
- categorical: Pearson's chi-square goodness of fit of the batch's category
  counts against the training shares of the profile. Categories expected
  fewer than 5 times in the batch are merged, rarest first, into bins
  expected at least 5 times. Categories never seen in training go to the bin
  of the rarest categories, or to the least common category's bin when
  every category has its own bin. A feature whose categories leave fewer
  than two bins is not tested.

Missing and wrong-typed values are left out of the tests and counted
separately. A feature with fewer than ``min_values`` values left is
reported as not tested, without a p-value. The p-values of the features
tested in the batch are then adjusted for multiple testing with the
Benjamini-Hochberg procedure. It keeps the expected share of false alarms
among the drifted features at ``alpha`` or below when the features are
independent. A feature has drifted when its adjusted p-value is at most
``alpha``.
"""

from __future__ import annotations

import collections
import dataclasses
import enum
import functools
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from scipy import special

from .checks import MISSING_VALUE, WRONG_TYPE, BlockCheck, check_block
from .profile import FeatureKind, FeatureProfile, Profile

__all__ = [
    "DEFAULT_ALPHA",
    "MIN_VALUES",
    "REFERENCE_SIZE",
    "DriftMethod",
    "DriftReference",
    "FeatureDrift",
    "benjamini_hochberg",
    "build_reference",
    "drift_block",
]

DEFAULT_ALPHA = 0.05
MIN_VALUES = 20
REFERENCE_SIZE = 2000
REFERENCE_FORMAT = 1

# Chi-square is trusted only when every bin is expected this many times.
MIN_EXPECTED = 5.0


class DriftMethod(enum.StrEnum):
    """Test that compares a feature of a batch with training."""

    KS = "ks"
    CHI_SQUARE = "chi_square"


@dataclasses.dataclass(frozen=True)
class DriftReference:
    """Training values that numeric features of a batch are compared with.

    ``samples`` maps each numeric feature to a sorted float64 array of at
    most ``size`` training values, drawn without replacement with ``seed``.
    A feature without any training value maps to an empty array.

    Examples
    --------
    >>> import pandas as pd
    >>> from detectors.profile import build_profile
    >>> frame = pd.DataFrame({"x": [3.0, 1.0, 2.0], "c": ["a", "b", "a"]})
    >>> reference = build_reference(check_block(build_profile(frame), frame))
    >>> reference.samples["x"].tolist()
    [1.0, 2.0, 3.0]
    >>> DriftReference.from_json(reference.to_json()) == reference
    True
    """

    samples: Mapping[str, np.ndarray]
    seed: int = 0
    size: int = REFERENCE_SIZE

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, DriftReference):
            return NotImplemented
        return (
            (self.seed, self.size) == (other.seed, other.size)
            and self.samples.keys() == other.samples.keys()
            and all(
                np.array_equal(values, other.samples[name])
                for name, values in self.samples.items()
            )
        )

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        sizes = {name: len(values) for name, values in self.samples.items()}
        return f"DriftReference(sizes={sizes}, seed={self.seed}, size={self.size})"

    def to_json(self) -> str:
        """Serialise the reference as JSON that :meth:`from_json` reads back."""
        data = {
            "reference_format": REFERENCE_FORMAT,
            "seed": self.seed,
            "size": self.size,
            "features": {
                name: values.tolist() for name, values in self.samples.items()
            },
        }
        return json.dumps(data, allow_nan=False) + "\n"

    @classmethod
    def from_json(cls, text: str | bytes) -> DriftReference:
        """Parse a reference written by :meth:`to_json`.

        Raises ValueError when the text is not such a reference.
        """
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("features"), dict):
            raise ValueError(
                "expected a JSON object with a 'features' mapping, got "
                f"{type(data).__name__}"
            )
        found = data.get("reference_format")
        if found != REFERENCE_FORMAT:
            raise ValueError(
                f"expected reference format {REFERENCE_FORMAT}, got {found!r}"
            )
        samples = {
            str(name): np.sort(np.asarray(values, dtype=np.float64))
            for name, values in data["features"].items()
        }
        return cls(samples=samples, seed=int(data["seed"]), size=int(data["size"]))


def build_reference(
    check: BlockCheck, seed: int = 0, size: int = REFERENCE_SIZE
) -> DriftReference:
    """Draw the reference sample of every numeric feature from training rows.

    ``check`` is the range check of the training frame. Missing values are
    left out, and a feature with more than ``size`` values keeps ``size`` of
    them drawn without replacement.
    """
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size: expected a whole number from 1, got {size!r}")
    generator = np.random.default_rng(seed)
    samples = {}
    for feature in check.profile.feature_profiles:
        if feature.kind is not FeatureKind.NUMERIC:
            continue
        values = check.numbers[feature.name]
        values = values[~np.isnan(values)]
        if len(values) > size:
            values = generator.choice(values, size, replace=False)
        samples[feature.name] = np.sort(values)
    return DriftReference(samples=samples, seed=seed, size=size)


@dataclasses.dataclass(frozen=True)
class FeatureDrift:
    """Drift test of one feature of one batch.

    ``values`` counts the values tested, and ``missing`` and ``wrong_type``
    the values left out. ``statistic`` is the Kolmogorov-Smirnov distance
    or the chi-square statistic. When ``tested`` is false, ``reason`` gives
    the cause, the statistic and p-values are None and ``drifted`` is false.
    ``adjusted_p_value`` is the Benjamini-Hochberg adjusted p-value among
    the features tested in the same batch.
    """

    feature: str
    method: DriftMethod
    values: int
    missing: int
    wrong_type: int
    tested: bool
    statistic: float | None = None
    p_value: float | None = None
    adjusted_p_value: float | None = None
    drifted: bool = False
    reason: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Return the result as plain JSON-ready values."""
        data = dataclasses.asdict(self)
        data["method"] = str(self.method)
        return data


def drift_block(
    profile: Profile,
    reference: DriftReference,
    data: Any,
    *,
    alpha: float = DEFAULT_ALPHA,
    min_values: int = MIN_VALUES,
) -> list[FeatureDrift]:
    """Test every feature of one batch for drift against training.

    Parameters
    ----------
    profile
        Training profile; its category counts are the expected shares.
    reference
        Reference sample of the numeric features.
    data
        The batch's events: a DataFrame, a list of feature mappings or a
        :class:`BlockCheck`.
    alpha
        Level that adjusted p-values are compared with.
    min_values
        Minimum number of values, missing ones left out, that a feature needs
        to be tested.

    Returns
    -------
    list of FeatureDrift
        One result per profile feature, in training column order.

    Examples
    --------
    >>> import pandas as pd
    >>> from detectors.profile import build_profile
    >>> frame = pd.DataFrame({"x": [float(i % 100) for i in range(1000)]})
    >>> profile = build_profile(frame)
    >>> reference = build_reference(check_block(profile, frame))
    >>> batch = [{"x": float(50 + i % 50)} for i in range(100)]
    >>> [result] = drift_block(profile, reference, batch)
    >>> result.method, result.values, result.drifted
    (<DriftMethod.KS: 'ks'>, 100, True)
    """
    _check_level(alpha)
    if isinstance(min_values, bool) or not isinstance(min_values, int):
        raise ValueError(f"min_values: expected a whole number, got {min_values!r}")
    if min_values < 1:
        raise ValueError(f"min_values: expected at least 1, got {min_values!r}")
    check = data if isinstance(data, BlockCheck) else check_block(profile, data)
    missing_reference = [
        feature.name
        for feature in profile.feature_profiles
        if feature.kind is FeatureKind.NUMERIC and feature.name not in reference.samples
    ]
    if missing_reference:
        raise ValueError(
            f"reference: expected a sample of every numeric feature, got none for "
            f"{missing_reference}; build the reference from the same training frame "
            "as the profile"
        )

    tests = [
        _test_feature(feature, check, reference, min_values)
        for feature in profile.feature_profiles
    ]
    return _adjusted(tests, alpha)


def benjamini_hochberg(p_values: np.ndarray) -> np.ndarray:
    """Return Benjamini-Hochberg adjusted p-values, in the order given.

    The adjusted p-value of the ``i``-th smallest of ``m`` p-values is the
    smallest ``p_(j) * m / j`` over ``j >= i``, capped at 1.

    >>> benjamini_hochberg(np.array([0.01, 0.04, 0.02, 0.6])).round(4).tolist()
    [0.04, 0.0533, 0.04, 0.6]
    """
    p_values = np.asarray(p_values, dtype=np.float64)
    count = len(p_values)
    if count == 0:
        return p_values.copy()
    order = np.argsort(p_values, kind="stable")
    scaled = p_values[order] * count / np.arange(1, count + 1)
    adjusted_sorted = np.minimum.accumulate(scaled[::-1])[::-1]
    adjusted = np.empty(count)
    adjusted[order] = np.minimum(adjusted_sorted, 1.0)
    return adjusted


def _check_level(alpha: float) -> None:
    if isinstance(alpha, bool) or not isinstance(alpha, int | float):
        raise ValueError(f"alpha: expected a number between 0 and 1, got {alpha!r}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha: expected a number between 0 and 1, got {alpha!r}")


def _test_feature(
    feature: FeatureProfile,
    check: BlockCheck,
    reference: DriftReference,
    min_values: int,
) -> _Tested:
    """Compute a feature's statistic; its p-value comes later, with the others."""
    codes = check.codes[feature.name]
    counts = np.bincount(codes, minlength=max(MISSING_VALUE, WRONG_TYPE) + 1)
    missing, wrong_type = int(counts[MISSING_VALUE]), int(counts[WRONG_TYPE])
    if feature.kind is FeatureKind.NUMERIC:
        values = check.numbers[feature.name]
        values = values[~np.isnan(values)]
        method = DriftMethod.KS
    else:
        keys = check.keys[feature.name]
        values = keys[keys != None]  # noqa: E711 (elementwise comparison)
        method = DriftMethod.CHI_SQUARE

    tested = _Tested(feature.name, method, len(values), missing, wrong_type)
    if len(values) < min_values:
        tested.reason = f"expected at least {min_values} values, got {len(values)}"
    elif method is DriftMethod.KS:
        tested.outcome = _kolmogorov_smirnov(values, reference.samples[feature.name])
    else:
        tested.outcome = _chi_square(values, feature)
    if isinstance(tested.outcome, str):
        tested.reason, tested.outcome = tested.outcome, None
    return tested


@dataclasses.dataclass
class _Tested:
    """A feature's counts and statistic, before its p-value is computed.

    ``outcome`` is the statistic and the argument of the p-value function
    (the scaled distance for KS, the degrees of freedom for chi-square), or
    None when the feature is not tested, and then ``reason`` gives the cause.
    """

    feature: str
    method: DriftMethod
    values: int
    missing: int
    wrong_type: int
    outcome: tuple[float, float] | str | None = None
    reason: str | None = None


def _kolmogorov_smirnov(
    values: np.ndarray, reference: np.ndarray
) -> tuple[float, float] | str:
    """Return the KS distance and the argument of its p-value, or why not tested.

    The two empirical distribution functions are step functions, so their
    largest gap lies at a batch value or just below one. Counting the batch
    and reference values at most and below each batch value finds it from
    the batch values alone, and gives the same distance as comparing the two
    functions at every pooled value.
    """
    if len(reference) == 0:
        return "training has no values of this feature"
    values = np.sort(values)
    size, reference_size = len(values), len(reference)
    # Array methods in place of numpy functions skip a wrapper call each.
    at_most = values.searchsorted(values, side="right") / size
    reference_at_most = reference.searchsorted(values, side="right")
    below = values.searchsorted(values, side="left") / size
    reference_below = reference.searchsorted(values, side="left")
    distance = max(
        float(abs(at_most - reference_at_most / reference_size).max()),
        float(abs(below - reference_below / reference_size).max()),
    )
    effective = size * reference_size / (size + reference_size)
    root = math.sqrt(effective)
    return distance, (root + 0.12 + 0.11 / root) * distance


def _chi_square(keys: np.ndarray, feature: FeatureProfile) -> tuple[float, int] | str:
    """Return the chi-square statistic and degrees of freedom, or why not tested."""
    if feature.count == 0:
        return "training has no values of this feature"
    bin_of, other, expected_shares = _bins_of_categories(
        tuple(feature.categories.items()), feature.count, len(keys)
    )
    if len(expected_shares) < 2:
        return "training categories leave fewer than two bins of 5 expected values"
    observed = np.zeros(len(expected_shares))
    for key, count in collections.Counter(keys.tolist()).items():
        observed[bin_of.get(key, other)] += count
    expected = len(keys) * np.asarray(expected_shares)
    statistic = float(np.sum((observed - expected) ** 2 / expected))
    return statistic, len(expected_shares) - 1


@functools.lru_cache(maxsize=1024)
def _bins_of_categories(
    categories: tuple[tuple[str, int], ...], total: int, size: int
) -> tuple[dict[str, int], int, list[float]]:
    """Group training categories into bins expected at least 5 times in ``size``.

    ``categories`` are the training counts, most frequent first, and
    ``total`` their sum. Returns the bin of each category, the bin of unseen
    categories and the training share of each bin. Batches mostly have the
    same size, so the bins are cached, and callers must not change them.
    """
    shares = {key: count / total for key, count in categories}
    # The profile lists categories most frequent first; walk them rarest first.
    ascending = list(reversed(shares))
    rare = [key for key in ascending if size * shares[key] < MIN_EXPECTED]
    common = [key for key in ascending if size * shares[key] >= MIN_EXPECTED]

    rare_groups: list[list[str]] = []
    current: list[str] = []
    for key in rare:
        current.append(key)
        if size * sum(shares[member] for member in current) >= MIN_EXPECTED:
            rare_groups.append(current)
            current = []
    common_groups = [[key] for key in common]
    if current:
        # Rare categories left over join the bin nearest to them in share.
        if rare_groups:
            rare_groups[-1].extend(current)
        elif common_groups:
            common_groups[0] = current + common_groups[0]
        else:
            rare_groups.append(current)
    # Bin 0 contains the rarest category, and unseen categories go there too.
    groups = rare_groups + common_groups

    bin_of = {key: index for index, group in enumerate(groups) for key in group}
    expected_shares = [sum(shares[key] for key in group) for group in groups]
    return bin_of, 0, expected_shares


def _adjusted(tests: list[_Tested], alpha: float) -> list[FeatureDrift]:
    """Compute the p-values, one call per method, adjust them and build results."""
    p_values: list[float | None] = [None] * len(tests)
    for method, function in (
        (DriftMethod.KS, _kolmogorov_p_values),
        (DriftMethod.CHI_SQUARE, _chi_square_p_values),
    ):
        positions = [
            index
            for index, test in enumerate(tests)
            if test.method is method and test.outcome is not None
        ]
        if not positions:
            continue
        arguments = np.array([tests[index].outcome for index in positions])
        for index, value in zip(positions, function(arguments).tolist(), strict=True):
            p_values[index] = value

    tested = [index for index, value in enumerate(p_values) if value is not None]
    adjusted_values = benjamini_hochberg(np.array([p_values[i] for i in tested]))
    adjusted = dict(zip(tested, adjusted_values.tolist(), strict=True))
    return [
        FeatureDrift(
            test.feature,
            test.method,
            test.values,
            test.missing,
            test.wrong_type,
            tested=index in adjusted,
            statistic=None if test.outcome is None else test.outcome[0],
            p_value=p_values[index],
            adjusted_p_value=adjusted.get(index),
            drifted=index in adjusted and adjusted[index] <= alpha,
            reason=test.reason,
        )
        for index, test in enumerate(tests)
    ]


def _kolmogorov_p_values(outcomes: np.ndarray) -> np.ndarray:
    """Return the Kolmogorov distribution's upper tail at each scaled distance."""
    return special.kolmogorov(outcomes[:, 1])


def _chi_square_p_values(outcomes: np.ndarray) -> np.ndarray:
    """Return the upper tail of each (statistic, degrees of freedom) pair."""
    return special.chdtrc(outcomes[:, 1], outcomes[:, 0])
