"""Training profile, range checks, outlier detector, drift and custom metrics."""

from .auto_od import AutoOutlierDetector
from .checks import BlockCheck, check_block, check_record
from .drift import (
    DriftMethod,
    DriftReference,
    FeatureDrift,
    build_reference,
    drift_block,
)
from .errors import (
    ArtifactCorruptError,
    ArtifactError,
    ArtifactFormatError,
    ArtifactMissingError,
    ChecksumMismatchError,
    DetectorError,
    EmptyTrainingDataError,
    InfiniteValuesError,
    InvalidKindError,
    MixedTypesError,
    TableReadError,
    TrainingDataError,
    UnknownColumnError,
)
from .explain import Contribution, explain_block
from .forest import ForestScorer
from .halfspace import HalfSpaceScorer
from .metrics import (
    MetricConfigError,
    MetricResults,
    build_metrics,
    load_metric_configs,
    parse_metric_configs,
)
from .model import (
    ModelVersion,
    load_model,
    set_metrics,
    set_target_alert_rate,
    threshold_for_rate,
    train_model,
)
from .profile import FeatureKind, FeatureProfile, Profile, build_profile
from .status import Status
from .tables import read_table
from .tails import TailScorer

__all__ = [
    "ArtifactCorruptError",
    "ArtifactError",
    "ArtifactFormatError",
    "ArtifactMissingError",
    "AutoOutlierDetector",
    "BlockCheck",
    "ChecksumMismatchError",
    "Contribution",
    "DetectorError",
    "DriftMethod",
    "DriftReference",
    "EmptyTrainingDataError",
    "FeatureDrift",
    "FeatureKind",
    "FeatureProfile",
    "ForestScorer",
    "HalfSpaceScorer",
    "InfiniteValuesError",
    "InvalidKindError",
    "MetricConfigError",
    "MetricResults",
    "MixedTypesError",
    "ModelVersion",
    "Profile",
    "Status",
    "TableReadError",
    "TailScorer",
    "TrainingDataError",
    "UnknownColumnError",
    "build_metrics",
    "build_profile",
    "build_reference",
    "check_block",
    "check_record",
    "drift_block",
    "explain_block",
    "load_metric_configs",
    "load_model",
    "parse_metric_configs",
    "read_table",
    "set_metrics",
    "set_target_alert_rate",
    "threshold_for_rate",
    "train_model",
]
