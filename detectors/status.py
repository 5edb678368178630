"""Per-feature status of one value against the training profile."""

from __future__ import annotations

import enum

__all__ = ["Status"]


class Status(enum.StrEnum):
    """Outcome of the range check of one feature value.

    Examples
    --------
    >>> Status.BELOW_MIN
    <Status.BELOW_MIN: 'below_min'>
    >>> Status("unseen_category") is Status.UNSEEN_CATEGORY
    True
    """

    OK = "ok"
    BELOW_MIN = "below_min"
    ABOVE_MAX = "above_max"
    UNSEEN_CATEGORY = "unseen_category"
    MISSING = "missing"
    WRONG_TYPE = "wrong_type"
