"""river's Half-Space Trees as the online part of the outlier detector.

river's ``HalfSpaceTrees`` (river 0.26) scores a row from the reference
masses (``r_mass``) of the nodes on its path. Those change only when a
window of ``window_size`` learned rows is complete: then the masses counted
in that window (``l_mass``) replace them. Three consequences shape this
module:

- Within a window, learning does not change any score. So a block can be
  scored at once, vectorised over rows and trees from arrays copied out of
  the river trees. The scores equal those of score-then-learn one row at a
  time, because the copy is refreshed at each window change.
- After learning the training rows one by one, river would keep only the
  last window's masses. The warm start instead sets every reference mass to
  the node's count over all training rows, scaled to one window.
- river builds its trees from the keys of the first row it learns, and
  returns 0 until its first window is complete. Rows are therefore always
  given with every feature, and the warm start completes the first window.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from river.anomaly import HalfSpaceTrees

from .base import Scorer
from .checks import BlockCheck

__all__ = ["HalfSpaceScorer"]


class HalfSpaceScorer(Scorer):
    """Outlier score from river's HalfSpaceTrees on features encoded into [0, 1].

    The score is river's: 1 minus the path mass over its maximum, in [0, 1],
    higher for rows in sparse regions of the reference window.
    :meth:`learn_block` updates the river trees exactly as river's
    ``learn_one`` would, one window at a time.

    Known limits: after the first completed window of the stream, the
    reference is that window alone (``window_size`` rows), so scores get
    noisier than right after the warm start. Like every Half-Space Trees,
    it is weak when anomalies arrive packed together within one window.

    Examples
    --------
    >>> import pandas as pd
    >>> from detectors.profile import build_profile
    >>> frame = pd.DataFrame({"x": [float(i % 10) for i in range(500)]})
    >>> scorer = HalfSpaceScorer(build_profile(frame), window_size=100).fit(frame)
    >>> low, high = scorer.score_block([{"x": 4.0}, {"x": 90.0}])
    >>> bool(high > low)
    True
    """

    def __init__(
        self,
        profile,
        seed: int = 0,
        n_trees: int = 10,
        height: int = 8,
        window_size: int = 250,
    ):
        super().__init__(profile, seed)
        self.n_trees = n_trees
        self.height = height
        self.window_size = window_size

    @property
    def model_(self) -> HalfSpaceTrees:
        """The river model, with the masses learned so far.

        The masses live in arrays while the stream is scored and are copied
        into the river nodes here. A caller may change the returned model,
        so the arrays are read again from it before the next use.
        """
        self._store_masses()
        self._arrays_stale = True
        return self._river

    @property
    def rows_to_window_end(self) -> int:
        """Rows still to learn before the reference masses change."""
        return self.window_size - self._river.counter

    def _fit(self, check: BlockCheck) -> None:
        encoded = self.encoder.bounded(check)
        self._river = HalfSpaceTrees(
            n_trees=self.n_trees,
            height=self.height,
            window_size=self.window_size,
            seed=self.seed,
        )
        # The first learned row fixes the tree structure; the masses are set below.
        self._river.learn_one(self._as_dict(encoded[0]))
        self._compile()

        counts = self._path_counts(encoded)
        scale = self.window_size / len(encoded)
        for tree_nodes, tree_counts in zip(self._nodes, counts, strict=True):
            for node, count in zip(tree_nodes, tree_counts, strict=True):
                node.r_mass = float(count) * scale
                node.l_mass = 0
        self._river.counter = 0
        self._river._first_window = False
        self._load_masses()

    def _score(self, check: BlockCheck) -> np.ndarray:
        return self.score_encoded(self.encoder.bounded(check))

    def learn_block(self, data: Any) -> None:
        """Learn rows in order, as river's ``learn_one`` would one at a time."""
        encoded = self.encoder.bounded(self.check(data))
        start = 0
        while start < len(encoded):
            stop = start + self.rows_to_window_end
            self.learn_encoded(encoded[start:stop])
            start = stop

    def learn_encoded(self, encoded: np.ndarray) -> None:
        """Learn encoded rows that fit in the current window, all at once.

        The node masses and the window counter end up exactly as after
        river's ``learn_one`` on each row in turn, including the change of
        reference masses when the window completes.
        """
        if len(encoded) > self.rows_to_window_end:
            raise ValueError(
                f"expected at most {self.rows_to_window_end} rows, the rest of the "
                f"current window, got {len(encoded)}; split the block at window ends"
            )
        if len(encoded) == 0:
            return
        self._load_masses_if_stale()
        self._learned += self._path_counts(encoded)
        self._nodes_stale = True
        model = self._river
        model.counter += len(encoded)
        if model.counter == self.window_size:
            self._reference = self._learned.astype(np.float64)
            self._reference_is_count = True
            self._learned = np.zeros_like(self._learned)
            model._first_window = False
            model.counter = 0

    def score_encoded(self, encoded: np.ndarray) -> np.ndarray:
        """Score encoded rows as river's ``score_one`` would, all at once."""
        self._load_masses_if_stale()
        rows = len(encoded)
        reference = self._reference.ravel()
        node = np.zeros((rows, self.n_trees), dtype=np.int64)
        active = np.ones((rows, self.n_trees), dtype=bool)
        total = np.zeros((rows, self.n_trees))
        size_limit = 0.1 * self.window_size
        for depth in range(self.height + 1):
            at = node + self._tree_offsets
            mass = reference.take(at)
            total += np.where(active, mass * float(2**depth), 0.0)
            if depth == self.height:
                break
            active &= mass >= size_limit
            node = self._children(encoded, node, at)
        max_score = self.n_trees * self.window_size * (2 ** (self.height + 1) - 1)
        return 1.0 - total.sum(axis=1) / max_score

    def restore_model(self, model: HalfSpaceTrees) -> None:
        """Replace the river model, for instance with one from a snapshot."""
        if (model.n_trees, model.height, model.window_size) != (
            self.n_trees,
            self.height,
            self.window_size,
        ):
            raise ValueError(
                f"expected HalfSpaceTrees with n_trees={self.n_trees}, "
                f"height={self.height}, window_size={self.window_size}, got "
                f"{model.n_trees}, {model.height}, {model.window_size}"
            )
        self._river = model
        self._compile()
        self._load_masses()

    def _as_dict(self, row: np.ndarray) -> dict[str, float]:
        return dict(zip(self.profile.features, row.tolist(), strict=True))

    def _compile(self) -> None:
        """Copy each tree's splits into arrays indexed in heap order."""
        size = 2 ** (self.height + 1) - 1
        index_of = {
            name: position for position, name in enumerate(self.profile.features)
        }
        self._nodes = [[None] * size for _ in range(self.n_trees)]
        self._feature = np.zeros((self.n_trees, size), dtype=np.int64)
        self._threshold = np.zeros((self.n_trees, size))
        self._tree_offsets = np.arange(self.n_trees) * size
        for tree_index, root in enumerate(self._river.trees):
            stack = [(root, 0)]
            while stack:
                node, position = stack.pop()
                self._nodes[tree_index][position] = node
                if hasattr(node, "feature"):
                    self._feature[tree_index, position] = index_of[node.feature]
                    self._threshold[tree_index, position] = node.threshold
                    left, right = node.children
                    stack.append((left, 2 * position + 1))
                    stack.append((right, 2 * position + 2))

    def _load_masses(self) -> None:
        """Read the reference and learned masses of every node into arrays."""
        self._reference = np.array(
            [[node.r_mass for node in tree_nodes] for tree_nodes in self._nodes],
            dtype=np.float64,
        )
        self._reference_is_count = all(
            type(node.r_mass) is int
            for tree_nodes in self._nodes
            for node in tree_nodes
        )
        self._learned = np.array(
            [[node.l_mass for node in tree_nodes] for tree_nodes in self._nodes],
            dtype=np.int64,
        )
        self._arrays_stale = False
        self._nodes_stale = False

    def _load_masses_if_stale(self) -> None:
        if self._arrays_stale:
            self._load_masses()

    def _store_masses(self) -> None:
        """Write the masses learned in the arrays back into the river nodes.

        Masses are stored as river's ``learn_one`` leaves them: learned
        masses as counts, and reference masses as counts once a window has
        completed, or as the scaled floats of the warm start before that.
        """
        if not self._nodes_stale:
            return
        references = self._reference.tolist()
        if self._reference_is_count:
            references = self._reference.astype(np.int64).tolist()
        learned = self._learned.tolist()
        for tree_nodes, tree_references, tree_learned in zip(
            self._nodes, references, learned, strict=True
        ):
            for node, reference, count in zip(
                tree_nodes, tree_references, tree_learned, strict=True
            ):
                node.r_mass = reference
                node.l_mass = count
        self._nodes_stale = False

    def _path_counts(self, encoded: np.ndarray) -> np.ndarray:
        """Count, per tree and node, the rows whose path passes through it."""
        size = 2 ** (self.height + 1) - 1
        counts = np.zeros((self.n_trees, size), dtype=np.int64)
        node = np.zeros((len(encoded), self.n_trees), dtype=np.int64)
        for depth in range(self.height + 1):
            at = node + self._tree_offsets
            counts += np.bincount(at.ravel(), minlength=self.n_trees * size).reshape(
                counts.shape
            )
            if depth == self.height:
                break
            node = self._children(encoded, node, at)
        return counts

    def _children(
        self, encoded: np.ndarray, node: np.ndarray, at: np.ndarray
    ) -> np.ndarray:
        """Return the child each row moves to from ``node`` in every tree.

        ``at`` is ``node`` as a position in the flattened split arrays. Flat
        ``take`` calls gather faster than indexing with two index arrays.
        """
        width = encoded.shape[1]
        flat_values = np.ascontiguousarray(encoded).ravel()
        row_offset = (np.arange(len(encoded)) * width)[:, None]
        values = flat_values.take(row_offset + self._feature.ravel().take(at))
        return 2 * node + 1 + (values >= self._threshold.ravel().take(at))

    def __getstate__(self) -> dict[str, Any]:
        # The pickled form is the river model under ``model_``, no arrays.
        state = dict(self.__dict__)
        if "_river" in state:
            self._store_masses()
            state["model_"] = state.pop("_river")
        for name in _ARRAYS:
            state.pop(name, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        state = dict(state)
        river = state.pop("model_", None)
        self.__dict__.update(state)
        if river is not None:
            self._river = river
            self._compile()
            self._load_masses()


# Attributes derived from the river model, left out of the pickled form.
_ARRAYS = (
    "_nodes",
    "_feature",
    "_threshold",
    "_tree_offsets",
    "_reference",
    "_reference_is_count",
    "_learned",
    "_arrays_stale",
    "_nodes_stale",
)
