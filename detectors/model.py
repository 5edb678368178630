"""Model versions: training, scoring, explaining, saving and loading.

Besides training and loading, two functions change a stored version without
refitting it: :func:`set_metrics` replaces its custom metrics and
:func:`set_target_alert_rate` moves its threshold along the stored
calibration scores. Both rewrite the files and the manifest together (see
:func:`detectors.artifacts.rewrite_version`), which changes the manifest's
checksum, so a registration of the version must be published again.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import pickle
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from schemas.metrics import MetricConfig

from .artifacts import (
    MANIFEST,
    load_json,
    load_pickle,
    oddwatch_version,
    read_verified,
    rewrite_version,
    version_dir,
    write_version,
)
from .auto_od import AutoOutlierDetector
from .base import Block
from .checks import BlockCheck, Records, check_block
from .drift import (
    DEFAULT_ALPHA,
    MIN_VALUES,
    REFERENCE_SIZE,
    DriftReference,
    FeatureDrift,
    build_reference,
    drift_block,
)
from .errors import ArtifactCorruptError, ArtifactFormatError
from .explain import Contribution, explain_block
from .metrics import (
    Metric,
    MetricConfigError,
    MetricResults,
    build_metrics,
    dump_metric_configs,
    evaluate_metrics,
    parse_metric_configs,
)
from .profile import FeatureKind, Profile, build_profile

__all__ = [
    "ModelVersion",
    "load_model",
    "set_metrics",
    "set_target_alert_rate",
    "threshold_for_rate",
    "train_model",
]

logger = logging.getLogger(__name__)

PROFILE_FILE = "profile.json"
DETECTOR_FILE = "detector.pkl"
CALIBRATION_FILE = "calibration.json"
REFERENCE_FILE = "reference.json"
METRICS_FILE = "metrics.json"
ARTIFACT_FILES = (
    PROFILE_FILE,
    DETECTOR_FILE,
    CALIBRATION_FILE,
    REFERENCE_FILE,
    METRICS_FILE,
)
STATE_FORMAT = 1

_RETRAIN = "retrain the model version with `oddwatch train`"


@dataclasses.dataclass
class ModelVersion:
    """A trained model version: profile, outlier detector, threshold and metrics.

    ``reference`` is the training sample that batches are tested for drift
    against, and ``metrics`` the custom metrics evaluated on every event.
    Scoring with ``learn=True`` changes the online detector, so one instance
    must not be used from several threads at once.

    Examples
    --------
    >>> frame = pd.DataFrame({"age": [float(20 + i % 40) for i in range(500)],
    ...                       "sex": ["F", "M"] * 250})
    >>> mv = train_model(frame, model="census", version=1)
    >>> out = mv.score_frame(pd.DataFrame({"age": [30.0, 99.0], "sex": ["F", "X"]}))
    >>> for row in out[["is_outlier", "status_age", "status_sex"]].to_dict("records"):
    ...     print(row)
    {'is_outlier': False, 'status_age': 'ok', 'status_sex': 'ok'}
    {'is_outlier': True, 'status_age': 'above_max', 'status_sex': 'unseen_category'}
    """

    model: str
    version: int
    profile: Profile
    detector: AutoOutlierDetector
    training_rows: int
    created: str
    oddwatch_version: str = dataclasses.field(default_factory=oddwatch_version)
    reference: DriftReference | None = None
    metrics: tuple[MetricConfig, ...] = ()
    _built_metrics: tuple[tuple[MetricConfig, ...], list[Metric]] | None = (
        dataclasses.field(default=None, init=False, repr=False, compare=False)
    )

    @property
    def threshold(self) -> float:
        """Score above which an event is an outlier."""
        return self.detector.threshold_

    @property
    def target_alert_rate(self) -> float:
        """Share of normal events the threshold was calibrated to flag."""
        return self.detector.target_alert_rate

    @property
    def calibration_scores(self) -> np.ndarray:
        """Scores of the held-out training rows that set the threshold."""
        return self.detector.calibration_scores_

    def check_block(self, data: Block) -> BlockCheck:
        """Check every feature of every row against the training profile."""
        if isinstance(data, BlockCheck):
            return data
        return check_block(self.profile, data)

    def score_block(self, data: Block, learn: bool = True) -> np.ndarray:
        """Score rows in order; with ``learn``, normal rows are learned as they pass.

        Returns float64 scores, higher for more anomalous rows. A row is an
        outlier when its score is above :attr:`threshold`, and outliers are
        never learned. Scoring a block gives the same scores, up to float
        rounding, as scoring its rows one call at a time.
        """
        return self.detector.score_and_learn(self.check_block(data), learn=learn)

    def score_frame(self, frame: Block, learn: bool = True) -> pd.DataFrame:
        """Score and check rows, one output row per input row.

        Columns: ``score``, ``threshold``, ``is_outlier``, one
        ``status_<feature>`` per profile feature, and for each custom metric
        ``metric_<name>`` (its value), ``metric_<name>_passed`` and
        ``metric_<name>_error``, as the stream computes them.
        """
        check = self.check_block(frame)
        scores = self.detector.score_and_learn(check, learn=learn)
        metrics = self.evaluate_metrics(frame) if self.metrics else {}
        index = frame.index if isinstance(frame, pd.DataFrame) else None
        out = pd.DataFrame(
            {
                "score": scores,
                "threshold": np.full(len(scores), self.threshold),
                "is_outlier": scores > self.threshold,
            },
            index=index,
        )
        statuses = check.statuses.add_prefix("status_")
        statuses.index = out.index
        for name, result in metrics.items():
            out[f"metric_{name}"] = result.values
            out[f"metric_{name}_passed"] = result.passed
            out[f"metric_{name}_error"] = result.errors
        return pd.concat([out, statuses], axis=1)

    def explain_block(
        self, data: Block, rows: Sequence[int] | None = None, top: int = 3
    ) -> list[list[Contribution]]:
        """Return the ``top`` features that raise each requested row's score.

        See :func:`detectors.explain.explain_block` for how contributions are
        measured. The detector's current state is used, so explain a block
        before scoring it with ``learn=True`` to get the scores reported.
        """
        return explain_block(self.detector, self.check_block(data), rows, top)

    def drift_block(
        self,
        data: Block,
        alpha: float = DEFAULT_ALPHA,
        min_values: int = MIN_VALUES,
    ) -> list[FeatureDrift]:
        """Test every feature of one batch for drift against training.

        See :func:`detectors.drift.drift_block` for the tests and the
        correction for multiple testing.
        """
        if self.reference is None:
            raise ValueError(
                f"model version {self.model}:{self.version} has no drift reference; "
                "create it with train_model or load it with load_model"
            )
        return drift_block(
            self.profile,
            self.reference,
            self.check_block(data),
            alpha=alpha,
            min_values=min_values,
        )

    def evaluate_metrics(
        self, data: pd.DataFrame | Records
    ) -> dict[str, MetricResults]:
        """Evaluate the custom metrics on a block, keyed by metric name.

        ``data`` is a DataFrame or a list of events' feature mappings with
        the values as received. A metric whose scorer cannot be loaded, or
        that raises, marks the events it fails on instead of raising (see
        :mod:`detectors.metrics`).
        """
        built = self._built_metrics
        if built is None or built[0] is not self.metrics:
            built = (self.metrics, build_metrics(self.metrics, self.profile, False))
            self._built_metrics = built
        return evaluate_metrics(built[1], self.profile, data)

    def detector_state(self) -> bytes:
        """Return the online detector's state, to snapshot and restore later."""
        state = {
            "state_format": STATE_FORMAT,
            "model": self.model,
            "version": self.version,
            "halfspace": self.detector.halfspace.model_,
        }
        return pickle.dumps(state, protocol=pickle.HIGHEST_PROTOCOL)

    def restore_detector_state(self, state: bytes) -> None:
        """Restore the online detector from :meth:`detector_state` bytes."""
        try:
            loaded = pickle.loads(state)
        except (pickle.UnpicklingError, EOFError, AttributeError, ImportError) as error:
            raise ArtifactCorruptError(
                f"detector state of {self.model}:{self.version}: expected bytes from "
                f"detector_state(), got bytes that fail to load ({error}); discard the "
                "snapshot to start from the trained detector"
            ) from error
        found = (loaded.get("state_format"), loaded.get("model"), loaded.get("version"))
        expected = (STATE_FORMAT, self.model, self.version)
        if found != expected:
            raise ArtifactFormatError(
                f"detector state: expected format {STATE_FORMAT} of "
                f"{self.model}:{self.version}, got format {found[0]} of "
                f"{found[1]}:{found[2]}; discard the snapshot to start from the "
                "trained detector"
            )
        self.detector.halfspace.restore_model(loaded["halfspace"])

    def save(self, store: str | os.PathLike[str], overwrite: bool = False) -> None:
        """Write the model version to ``store/<model>/<version>/``."""
        if self.reference is None:
            raise ValueError(
                f"model version {self.model}:{self.version} has no drift reference, "
                "which the artifact needs; create it with train_model"
            )
        directory = version_dir(store, self.model, self.version)
        calibration = {
            "threshold": self.threshold,
            "target_alert_rate": self.target_alert_rate,
            "contamination": self.detector.contamination,
            "scores": self.calibration_scores.tolist(),
        }
        files = {
            PROFILE_FILE: self.profile.to_json().encode(),
            DETECTOR_FILE: pickle.dumps(
                self.detector, protocol=pickle.HIGHEST_PROTOCOL
            ),
            CALIBRATION_FILE: _calibration_bytes(calibration),
            REFERENCE_FILE: self.reference.to_json().encode(),
            METRICS_FILE: dump_metric_configs(self.metrics).encode(),
        }
        manifest = {
            "model": self.model,
            "version": self.version,
            "oddwatch_version": self.oddwatch_version,
            "created": self.created,
            "training_rows": self.training_rows,
            "threshold": self.threshold,
            "target_alert_rate": self.target_alert_rate,
        }
        write_version(directory, files, manifest, overwrite=overwrite)
        logger.info(
            "saved model version %s:%s to %s", self.model, self.version, directory
        )


def train_model(
    frame: pd.DataFrame,
    model: str,
    version: int,
    target: Iterable[str] | str = (),
    exclude: Iterable[str] = (),
    kinds: Mapping[str, str] | None = None,
    target_alert_rate: float = 0.01,
    seed: int = 0,
    contamination: float = 0.0,
    metrics: Iterable[MetricConfig] = (),
    reference_size: int = REFERENCE_SIZE,
) -> ModelVersion:
    """Profile the training frame, fit ``auto_od`` and calibrate its threshold.

    ``target``, ``exclude`` and ``kinds`` are passed to
    :func:`detectors.profile.build_profile`, which lists the errors raised on
    bad training data. ``target_alert_rate`` and ``contamination`` are
    described in :class:`detectors.auto_od.AutoOutlierDetector`. Up to
    ``reference_size`` training values per numeric feature, drawn with
    ``seed``, are kept for drift tests. ``metrics`` are checked against the
    profile and their scorers loaded, raising
    :class:`detectors.metrics.MetricConfigError` when one is unusable.
    """
    started = time.perf_counter()
    profile = build_profile(frame, target=target, exclude=exclude, kinds=kinds)
    metrics = tuple(metrics)
    build_metrics(metrics, profile)
    detector = AutoOutlierDetector(
        profile,
        seed=seed,
        target_alert_rate=target_alert_rate,
        contamination=contamination,
    )
    check = check_block(profile, frame)
    detector.fit(check)
    # set_target_alert_rate derives later thresholds with the same function.
    detector.threshold_ = threshold_for_rate(
        detector.calibration_scores_, target_alert_rate, contamination
    )
    logger.info(
        "trained %s:%s on %d rows, %d features in %.1f s, threshold %.4g",
        model,
        version,
        len(frame),
        len(profile.features),
        time.perf_counter() - started,
        detector.threshold_,
    )
    return ModelVersion(
        model=str(model),
        version=version,
        profile=profile,
        detector=detector,
        training_rows=len(frame),
        created=datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        reference=build_reference(check, seed=seed, size=reference_size),
        metrics=metrics,
    )


def load_model(store: str | os.PathLike[str], model: str, version: int) -> ModelVersion:
    """Load a saved model version after verifying its format and checksums."""
    directory = version_dir(store, model, version)
    manifest, files = read_verified(directory)
    _require_files(directory, files)
    profile = _read_profile(directory, files)
    detector = load_pickle(directory / DETECTOR_FILE, files[DETECTOR_FILE])
    if not isinstance(detector, AutoOutlierDetector) or detector.profile != profile:
        raise ArtifactCorruptError(
            f"{directory / DETECTOR_FILE}: expected the detector fitted on "
            f"{directory / PROFILE_FILE}, got {type(detector).__name__} with another "
            f"profile; {_RETRAIN}"
        )
    # The threshold may have been moved after training by set_target_alert_rate.
    calibration = _read_calibration(directory, files)
    detector.threshold_ = calibration["threshold"]
    detector.target_alert_rate = calibration["target_alert_rate"]
    return ModelVersion(
        model=manifest["model"],
        version=manifest["version"],
        profile=profile,
        detector=detector,
        training_rows=manifest["training_rows"],
        created=manifest["created"],
        oddwatch_version=manifest["oddwatch_version"],
        reference=_read_reference(directory, files, profile),
        metrics=tuple(_read_metrics(directory, files)),
    )


def threshold_for_rate(
    calibration_scores: np.ndarray | Sequence[float],
    rate: float,
    contamination: float = 0.0,
) -> float:
    """Return the threshold that flags ``rate`` of normal calibration rows.

    The top ``contamination`` of the calibration scores are taken as
    anomalies, and the threshold is the quantile at ``(1 - contamination) *
    (1 - rate)``, so that ``rate`` of the other rows score above it.

    >>> threshold_for_rate(np.arange(101.0), 0.1)
    90.0
    """
    if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < 1:
        raise ValueError(
            f"target_alert_rate: expected a share between 0 and 1, got {rate!r}"
        )
    if not 0 <= contamination < 1:
        raise ValueError(
            f"contamination: expected a share from 0 up to 1, got {contamination!r}"
        )
    scores = np.asarray(calibration_scores, dtype=np.float64)
    if scores.ndim != 1 or len(scores) == 0 or not np.isfinite(scores).all():
        raise ValueError(
            "calibration_scores: expected a non-empty list of finite scores, got "
            f"shape {scores.shape}"
        )
    return float(np.quantile(scores, (1.0 - contamination) * (1.0 - rate)))


def set_target_alert_rate(
    store: str | os.PathLike[str], model: str, version: int, rate: float
) -> float:
    """Move a stored version's threshold to a new target alert rate.

    The threshold is derived again from the stored calibration scores, as
    training derives it, without refitting. ``calibration.json`` and the
    manifest are rewritten together. Returns the new threshold.
    """
    directory = version_dir(store, model, version)
    _, files = read_verified(directory)
    _require_files(directory, files)
    calibration = _read_calibration(directory, files)
    threshold = threshold_for_rate(
        calibration["scores"], rate, calibration["contamination"]
    )
    calibration.update(threshold=threshold, target_alert_rate=float(rate))
    rewrite_version(
        directory,
        {CALIBRATION_FILE: _calibration_bytes(calibration)},
        {"threshold": threshold, "target_alert_rate": float(rate)},
    )
    logger.info(
        "set target alert rate of %s:%s to %.4g, threshold %.4g",
        model,
        version,
        rate,
        threshold,
    )
    return threshold


def set_metrics(
    store: str | os.PathLike[str],
    model: str,
    version: int,
    configs: Iterable[MetricConfig],
) -> None:
    """Replace the custom metrics of a stored version without refitting it.

    The metrics are checked against the stored profile and their scorers
    loaded first, raising :class:`detectors.metrics.MetricConfigError` when
    one is unusable. ``metrics.json`` and the manifest are rewritten
    together.
    """
    directory = version_dir(store, model, version)
    _, files = read_verified(directory)
    _require_files(directory, files)
    configs = tuple(configs)
    build_metrics(configs, _read_profile(directory, files))
    rewrite_version(
        directory, {METRICS_FILE: dump_metric_configs(configs).encode()}, {}
    )
    logger.info(
        "set %d custom metrics of %s:%s: %s",
        len(configs),
        model,
        version,
        ", ".join(config.name for config in configs),
    )


def _require_files(directory: Path, files: Mapping[str, bytes]) -> None:
    for name in ARTIFACT_FILES:
        if name not in files:
            raise ArtifactCorruptError(
                f"{directory / MANIFEST}: expected an entry for {name}, got "
                f"{sorted(files)}; {_RETRAIN}"
            )


def _read_profile(directory: Path, files: Mapping[str, bytes]) -> Profile:
    data = load_json(directory / PROFILE_FILE, files[PROFILE_FILE])
    try:
        return Profile.from_json(json.dumps(data))
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactCorruptError(
            f"{directory / PROFILE_FILE}: expected a training profile, got JSON "
            f"missing {error}; {_RETRAIN}"
        ) from error


def _read_calibration(directory: Path, files: Mapping[str, bytes]) -> dict[str, Any]:
    path = directory / CALIBRATION_FILE
    data = load_json(path, files[CALIBRATION_FILE])
    keys = ("threshold", "target_alert_rate", "contamination", "scores")
    if not isinstance(data, dict) or not all(key in data for key in keys):
        found = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise ArtifactCorruptError(
            f"{path}: expected an object with {list(keys)}, got {found}; {_RETRAIN}"
        )
    return data


def _calibration_bytes(calibration: Mapping[str, Any]) -> bytes:
    return (json.dumps(calibration, indent=2) + "\n").encode()


def _read_reference(
    directory: Path, files: Mapping[str, bytes], profile: Profile
) -> DriftReference:
    path = directory / REFERENCE_FILE
    try:
        reference = DriftReference.from_json(files[REFERENCE_FILE])
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactCorruptError(
            f"{path}: expected the drift reference sample, got JSON that fails to "
            f"load ({error}); {_RETRAIN}"
        ) from error
    profile_numeric = {
        feature.name
        for feature in profile.feature_profiles
        if feature.kind is FeatureKind.NUMERIC
    }
    if set(reference.samples) != profile_numeric:
        raise ArtifactCorruptError(
            f"{path}: expected samples of the numeric features "
            f"{sorted(profile_numeric)}, got {sorted(reference.samples)}; {_RETRAIN}"
        )
    return reference


def _read_metrics(directory: Path, files: Mapping[str, bytes]) -> list[MetricConfig]:
    path = directory / METRICS_FILE
    document = load_json(path, files[METRICS_FILE])
    try:
        return parse_metric_configs(document, source=str(path))
    except MetricConfigError as error:
        raise ArtifactCorruptError(
            f"{error}; set the metrics again with set_metrics"
        ) from error
