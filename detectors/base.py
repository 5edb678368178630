"""Common interface of the outlier scorers."""

from __future__ import annotations

from typing import Any, Self

import numpy as np
import pandas as pd

from .checks import BlockCheck, Records, check_block
from .encoding import FeatureEncoder
from .profile import Profile

__all__ = ["Scorer"]

Block = pd.DataFrame | Records | BlockCheck


class Scorer:
    """Outlier scorer over the features of a training profile.

    A higher score means a more anomalous row. Scores are comparable only
    between rows scored by the same fitted scorer. Input blocks may be
    DataFrames, lists of feature mappings, or a :class:`BlockCheck` already
    computed. Features are looked up by name, so column order does not
    matter and extra columns are ignored. An absent feature counts as
    missing.
    """

    def __init__(self, profile: Profile, seed: int = 0):
        self.profile = profile
        self.seed = seed
        self.encoder = FeatureEncoder(profile)

    def fit(self, data: Block) -> Self:
        """Fit the scorer on training rows."""
        self._fit(self.check(data))
        return self

    def score_block(self, data: Block) -> np.ndarray:
        """Return the outlier score of every row, without learning from them."""
        return self._score(self.check(data))

    def learn_block(self, data: Block) -> None:
        """Learn from rows judged normal. Scorers fitted once ignore this."""

    def check(self, data: Block) -> BlockCheck:
        """Return the range check of a block, reusing one already computed."""
        if isinstance(data, BlockCheck):
            return data
        return check_block(self.profile, data)

    def _fit(self, check: BlockCheck) -> None:
        raise NotImplementedError

    def _score(self, check: BlockCheck) -> np.ndarray:
        raise NotImplementedError

    def __getstate__(self) -> dict[str, Any]:
        return dict(self.__dict__)
