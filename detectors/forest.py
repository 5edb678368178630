"""Isolation Forest fitted once on the encoded training rows."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import IsolationForest

from .base import Scorer
from .checks import BlockCheck

__all__ = ["ForestScorer"]


class ForestScorer(Scorer):
    """Outlier score from scikit-learn's IsolationForest on encoded features.

    The score is scikit-learn's anomaly score, ``-score_samples``, which lies
    in (0, 1]; values near 1 mark rows isolated in few splits.

    Known limits: the forest is fitted once and does not learn from the
    stream. Anomalies that cluster together in training (masking) are
    isolated less well.

    Examples
    --------
    >>> import pandas as pd
    >>> from detectors.profile import build_profile
    >>> frame = pd.DataFrame({"x": [float(i % 10) for i in range(200)]})
    >>> scorer = ForestScorer(build_profile(frame), n_trees=20).fit(frame)
    >>> low, high = scorer.score_block([{"x": 4.0}, {"x": 90.0}])
    >>> bool(high > low)
    True
    """

    def __init__(self, profile, seed: int = 0, n_trees: int = 100):
        super().__init__(profile, seed)
        self.n_trees = n_trees

    def _fit(self, check: BlockCheck) -> None:
        self.forest_ = IsolationForest(n_estimators=self.n_trees, random_state=self.seed)
        self.forest_.fit(self.encoder.unit(check))

    def _score(self, check: BlockCheck) -> np.ndarray:
        return -self.forest_.score_samples(self.encoder.unit(check))
