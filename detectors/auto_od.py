"""The automatic outlier detector, ``auto_od``: three scorers, one threshold.

Two scorers are fitted once on the training rows: a per-feature tail scorer
(:class:`TailScorer`) and an Isolation Forest (:class:`ForestScorer`). The
third, river's Half-Space Trees (:class:`HalfSpaceScorer`), keeps learning
from the stream.

Every training row is scored by scorers fitted on the other folds. On those
held-out scores each scorer's median maps to 0 and its 99th percentile to
1, and the combined score is the weighted mean of the scaled scores, so a
higher score means a more anomalous event. Half-Space Trees get half the
weight of the others because alone they rank anomalies worst of the three:
mean ROC AUC 0.91 against 0.93 (tails) and 0.94 (forest) over seven ADBench
sets, measured with ``python -m benchmarks.detection --components`` on a
2-core machine. An event is an outlier when its score is above the
threshold, the held-out scores' quantile at ``1 - target_alert_rate``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from .base import Block, Scorer
from .checks import BlockCheck
from .forest import ForestScorer
from .halfspace import HalfSpaceScorer
from .profile import Profile
from .tails import TailScorer

__all__ = ["AutoOutlierDetector"]

logger = logging.getLogger(__name__)

SCORER_NAMES = ("tails", "forest", "halfspace")
DEFAULT_WEIGHTS = {"tails": 1.0, "forest": 1.0, "halfspace": 0.5}


class AutoOutlierDetector(Scorer):
    """Combined outlier detector with a threshold calibrated on held-out scores.

    Parameters
    ----------
    target_alert_rate
        Share of normal events expected above the threshold.
    folds
        Number of cross-fitting folds. Each training row is scored by
        scorers fitted on the other folds; those held-out scores set the
        scales and the threshold. The scorers used afterwards are fitted on
        all training rows.
    weights
        Weight of each scorer in the combined score.
    halfspace_options
        Keyword arguments of :class:`HalfSpaceScorer`, such as ``window_size``.
    contamination
        Share of anomalies expected among the training rows. With the
        default 0 the threshold flags ``target_alert_rate`` of all training
        rows, so anomalies in the training data raise it and normal events
        are flagged less often than the target.

    Known limits: the threshold is a quantile over the training rows, so with
    fewer than ``1 / target_alert_rate`` rows it is about the largest
    held-out score and the alert rate is not controlled. Anomalies in the
    training data lower the alert rate on normal events unless
    ``contamination`` is set.

    Examples
    --------
    >>> import pandas as pd
    >>> from detectors.profile import build_profile
    >>> frame = pd.DataFrame({"x": [float(i % 50) for i in range(1000)]})
    >>> detector = AutoOutlierDetector(build_profile(frame)).fit(frame)
    >>> scores = detector.score_block([{"x": 20.0}, {"x": 500.0}])
    >>> bool(scores[0] <= detector.threshold_ < scores[1])
    True
    """

    def __init__(
        self,
        profile: Profile,
        seed: int = 0,
        target_alert_rate: float = 0.01,
        folds: int = 5,
        weights: Mapping[str, float] | None = None,
        halfspace_options: Mapping[str, Any] | None = None,
        contamination: float = 0.0,
    ):
        super().__init__(profile, seed)
        if not 0 < target_alert_rate < 1:
            raise ValueError(
                f"target_alert_rate: expected a share between 0 and 1, got "
                f"{target_alert_rate!r}"
            )
        if not 0 <= contamination < 1:
            raise ValueError(
                f"contamination: expected a share from 0 up to 1, got {contamination!r}"
            )
        self.target_alert_rate = target_alert_rate
        self.contamination = contamination
        self.folds = folds
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.halfspace_options = dict(halfspace_options or {})

    @property
    def halfspace(self) -> HalfSpaceScorer:
        """The online part of the detector."""
        return self.scorers_["halfspace"]

    def _fit(self, check: BlockCheck) -> None:
        # Out-of-fold scores stand in for scores of unseen rows drawn like training.
        held_out = {name: np.empty(len(check)) for name in SCORER_NAMES}
        for fit_rows, held_rows in self._folds(len(check)):
            scorers = self._new_scorers()
            for name, scorer in scorers.items():
                scorer.fit(check.take(fit_rows))
                held_out[name][held_rows] = scorer.score_block(check.take(held_rows))

        self.scorers_ = self._new_scorers()
        for scorer in self.scorers_.values():
            scorer.fit(check)

        self.scales_ = {}
        for name, raw in held_out.items():
            median, high = np.quantile(raw, [0.5, 0.99])
            self.scales_[name] = (float(median), float(high - median) or 1.0)
        self.calibration_scores_ = self._combine(held_out)
        # The top ``contamination`` of training rows are taken as anomalies; the
        # threshold leaves ``target_alert_rate`` of the other rows above it.
        level = (1.0 - self.contamination) * (1.0 - self.target_alert_rate)
        self.threshold_ = float(np.quantile(self.calibration_scores_, level))
        if len(check) < 1.0 / self.target_alert_rate:
            logger.warning(
                "only %d training rows calibrate a %.2g alert rate; train on more "
                "rows for a reliable threshold",
                len(check),
                self.target_alert_rate,
            )

    def _new_scorers(self) -> dict[str, Scorer]:
        return {
            "tails": TailScorer(self.profile, self.seed),
            "forest": ForestScorer(self.profile, self.seed),
            "halfspace": HalfSpaceScorer(
                self.profile, self.seed, **self.halfspace_options
            ),
        }

    def _folds(self, rows: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """Split row positions into ``folds`` pairs of (fit rows, held-out rows)."""
        order = np.random.default_rng(self.seed).permutation(rows)
        if rows < 2:
            return [(order, order)]
        parts = np.array_split(order, min(self.folds, rows))
        return [
            (np.sort(np.concatenate(parts[:index] + parts[index + 1 :])), np.sort(part))
            for index, part in enumerate(parts)
        ]

    def _scaled(self, name: str, raw: np.ndarray) -> np.ndarray:
        median, width = self.scales_[name]
        return self.weights[name] * (raw - median) / width

    def _static_scores(self, check: BlockCheck) -> np.ndarray:
        total = np.zeros(len(check))
        for name, scorer in self.scorers_.items():
            if name != "halfspace" and self.weights.get(name, 0.0):
                total += self._scaled(name, scorer.score_block(check))
        return total / sum(self.weights.values())

    def _online_scores(self, encoded: np.ndarray) -> np.ndarray:
        raw = self.halfspace.score_encoded(encoded)
        return self._scaled("halfspace", raw) / sum(self.weights.values())

    def _score(self, check: BlockCheck) -> np.ndarray:
        encoded = self.halfspace.encoder.bounded(check)
        return self._static_scores(check) + self._online_scores(encoded)

    def _combine(self, raw: Mapping[str, np.ndarray]) -> np.ndarray:
        total = sum(self._scaled(name, scores) for name, scores in raw.items())
        return total / sum(self.weights.values())

    def score_and_learn(self, data: Block, learn: bool = True) -> np.ndarray:
        """Score rows in order, learning each normal row before the next is scored.

        Rows whose score is above the threshold are not learned. Within one
        window of the online scorer learning leaves scores unchanged, so the
        block is scored window by window and the result equals scoring and
        learning one row at a time.
        """
        check = self.check(data)
        if not learn:
            return self._score(check)
        static = self._static_scores(check)
        encoded = self.halfspace.encoder.bounded(check)
        scores = np.empty(len(check))
        start = 0
        while start < len(check):
            start = self._score_window(static, encoded, scores, start)
        return scores

    def _score_window(
        self, static: np.ndarray, encoded: np.ndarray, scores: np.ndarray, start: int
    ) -> int:
        """Score rows from ``start`` to the end of the online window.

        Returns the position of the first row not scored yet.
        """
        needed = self.halfspace.rows_to_window_end
        # Guess how many rows contain ``needed`` normal ones. A short guess
        # costs one more pass of the caller's loop.
        stop = min(len(static), start + needed + needed // 8 + 16)
        chunk = static[start:stop] + self._online_scores(encoded[start:stop])
        normal = chunk <= self.threshold_
        learned = np.cumsum(normal)
        if learned[-1] >= needed:
            stop = start + int(np.searchsorted(learned, needed)) + 1
        scored = stop - start
        scores[start:stop] = chunk[:scored]
        self.halfspace.learn_encoded(encoded[start:stop][normal[:scored]])
        return stop

    def learn_block(self, data: Block) -> None:
        """Learn the rows judged normal, in order, without returning scores."""
        self.score_and_learn(data, learn=True)
