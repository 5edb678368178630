"""Exceptions raised by the detector layer.

Every message states what was expected, what came instead and what to do.

    DetectorError
    ├── TrainingDataError            the training frame cannot be profiled
    │   ├── EmptyTrainingDataError
    │   ├── UnknownColumnError
    │   ├── InfiniteValuesError
    │   ├── MixedTypesError
    │   └── InvalidKindError
    ├── ArtifactError                a stored model version cannot be used
    │   ├── ArtifactMissingError
    │   ├── ChecksumMismatchError
    │   ├── ArtifactFormatError
    │   └── ArtifactCorruptError
    └── TableReadError               a CSV or Parquet file cannot be read
"""

from __future__ import annotations

__all__ = [
    "ArtifactCorruptError",
    "ArtifactError",
    "ArtifactFormatError",
    "ArtifactMissingError",
    "ChecksumMismatchError",
    "DetectorError",
    "EmptyTrainingDataError",
    "InfiniteValuesError",
    "InvalidKindError",
    "MixedTypesError",
    "TableReadError",
    "TrainingDataError",
    "UnknownColumnError",
]


class DetectorError(Exception):
    """Base class of every error raised by the detector layer."""


class TrainingDataError(DetectorError, ValueError):
    """The training data cannot be profiled or used to fit a detector."""


class EmptyTrainingDataError(TrainingDataError):
    """The training frame has no rows or no feature columns."""


class UnknownColumnError(TrainingDataError, KeyError):
    """A target, excluded or overridden column is not in the training frame."""

    def __str__(self) -> str:
        # KeyError quotes its argument, which would wrap the message in quotes.
        return str(self.args[0])


class InfiniteValuesError(TrainingDataError):
    """A numeric training column contains +inf or -inf."""


class MixedTypesError(TrainingDataError):
    """One training column mixes value types that no feature kind accepts."""


class InvalidKindError(TrainingDataError):
    """A feature kind override names an unknown kind or cannot be applied."""


class ArtifactError(DetectorError):
    """A stored model version is missing, damaged or from another format."""


class ArtifactMissingError(ArtifactError, FileNotFoundError):
    """A file of a stored model version does not exist."""


class ChecksumMismatchError(ArtifactError):
    """A stored file does not have the sha256 checksum its manifest records."""


class ArtifactFormatError(ArtifactError):
    """A stored model version uses an artifact format this code cannot read."""


class ArtifactCorruptError(ArtifactError):
    """A stored file exists and matches its checksum but cannot be decoded."""


class TableReadError(DetectorError, ValueError):
    """A CSV or Parquet file cannot be read into a frame."""
