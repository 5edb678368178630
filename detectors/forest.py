"""Isolation Forest fitted once on the encoded training rows."""

from __future__ import annotations

import math

import numpy as np
from sklearn.ensemble import IsolationForest

from .base import Scorer
from .checks import BlockCheck

__all__ = ["ForestScorer"]

_EULER_GAMMA = 0.5772156649015329


class ForestScorer(Scorer):
    """Outlier score from scikit-learn's IsolationForest on encoded features.

    The score is scikit-learn's anomaly score, ``-score_samples``, which lies
    in (0, 1]; values near 1 mark rows isolated in few splits. Scoring walks
    all trees at once over arrays copied from the fitted forest, because
    scikit-learn's ``score_samples`` spends milliseconds per call on
    per-tree overhead, which dominates when a block holds a few events.

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
        self.forest_ = IsolationForest(
            n_estimators=self.n_trees, random_state=self.seed
        )
        self.forest_.fit(self.encoder.unit(check))
        self._compile()

    def _score(self, check: BlockCheck) -> np.ndarray:
        return self.score_encoded(self.encoder.unit(check))

    def score_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Score encoded rows as ``-forest_.score_samples`` would."""
        # The trees compare float32 copies of the features, as scikit-learn does.
        values = encoded.astype(np.float32)
        width = values.shape[1]
        flat_values = values.ravel()
        row_offset = (np.arange(len(values), dtype=np.int32) * width)[:, None]
        # Node ids index the trees' arrays flattened together, starting at each root.
        node = np.broadcast_to(self._roots, (len(values), len(self._roots))).copy()
        for _ in range(self._max_depth):
            feature_values = flat_values.take(row_offset + self._feature.take(node))
            goes_left = feature_values <= self._threshold.take(node)
            node = self._children.take(2 * node + goes_left)
        path_lengths = self._leaf_value.take(node).sum(axis=1)
        denominator = len(self._roots) * _average_path_length(self.forest_.max_samples_)
        if denominator == 0:
            return np.ones(len(values))
        return 2.0 ** (-path_lengths / denominator)

    def _compile(self) -> None:
        """Copy all trees into flat arrays; a leaf points to itself.

        ``_children`` contains each node's right child, then its left child, so
        a row moves to ``_children[2 * node + goes_left]``. Node and feature
        ids are int32, which halves the memory the walk reads.
        """
        trees = [estimator.tree_ for estimator in self.forest_.estimators_]
        counts = [tree.node_count for tree in trees]
        self._roots = np.cumsum([0, *counts[:-1]]).astype(np.int32)
        total = sum(counts)
        self._left = np.arange(total)
        self._right = np.arange(total)
        self._feature = np.zeros(total, dtype=np.int32)
        self._threshold = np.full(total, np.inf)
        self._leaf_value = np.zeros(total)
        self._max_depth = 0
        for root, tree in zip(self._roots, trees, strict=True):
            nodes = slice(root, root + tree.node_count)
            is_leaf = tree.children_left == -1
            branch = ~is_leaf
            self._left[nodes][branch] = root + tree.children_left[branch]
            self._right[nodes][branch] = root + tree.children_right[branch]
            self._feature[nodes][branch] = tree.feature[branch]
            self._threshold[nodes][branch] = tree.threshold[branch]
            depth = _node_depths(tree.children_left, tree.children_right)
            self._max_depth = max(self._max_depth, int(depth.max()))
            samples = tree.n_node_samples[is_leaf]
            self._leaf_value[nodes][is_leaf] = depth[is_leaf] + np.array(
                [_average_path_length(int(n)) for n in samples]
            )
        self._children = np.empty(2 * total, dtype=np.int32)
        self._children[0::2] = self._right
        self._children[1::2] = self._left

    def __getstate__(self):
        state = dict(self.__dict__)
        for name in (
            "_roots",
            "_left",
            "_right",
            "_feature",
            "_threshold",
            "_leaf_value",
            "_children",
        ):
            state.pop(name, None)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        if "forest_" in state:
            self._compile()


def _node_depths(left: np.ndarray, right: np.ndarray) -> np.ndarray:
    depth = np.zeros(len(left), dtype=np.int64)
    for node in range(len(left)):
        if left[node] != -1:
            depth[left[node]] = depth[node] + 1
            depth[right[node]] = depth[node] + 1
    return depth


def _average_path_length(samples: int) -> float:
    """Average path length of an unsuccessful search in a binary search tree.

    The normalising term ``c(n)`` of Liu, Ting and Zhou, "Isolation Forest"
    (ICDM 2008): ``2 H(n - 1) - 2 (n - 1) / n`` with ``H(i) ≈ ln(i) + γ``.
    """
    if samples <= 1:
        return 0.0
    if samples == 2:
        return 1.0
    return (
        2.0 * (math.log(samples - 1.0) + _EULER_GAMMA) - 2.0 * (samples - 1.0) / samples
    )
