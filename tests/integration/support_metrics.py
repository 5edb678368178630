"""A custom metric scorer that the worker imports by path, as a user's would be."""

import pandas as pd


def ratio(frame: pd.DataFrame) -> list[float]:
    """Return ``x / y`` of each event.

    Raises ZeroDivisionError when some event has ``y`` equal to 0, and
    TypeError when ``x`` or ``y`` is missing, so the stream must mark those
    events as errors and keep scoring the others.
    """
    return [float(x) / float(y) for x, y in zip(frame["x"], frame["y"], strict=True)]
