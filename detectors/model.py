"""Model versions: training, scoring, explaining, saving and loading."""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import os
import pickle
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np
import pandas as pd

from .artifacts import (
    MANIFEST,
    load_json,
    load_pickle,
    oddwatch_version,
    read_verified,
    version_dir,
    write_version,
)
from .auto_od import AutoOutlierDetector
from .base import Block
from .checks import BlockCheck, check_block
from .errors import ArtifactCorruptError, ArtifactFormatError
from .explain import Contribution, explain_block
from .profile import Profile, build_profile

__all__ = ["ModelVersion", "load_model", "train_model"]

logger = logging.getLogger(__name__)

PROFILE_FILE = "profile.json"
DETECTOR_FILE = "detector.pkl"
CALIBRATION_FILE = "calibration.json"
STATE_FORMAT = 1


@dataclasses.dataclass
class ModelVersion:
    """A trained model version: profile, outlier detector and threshold.

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

        Columns: ``score``, ``threshold``, ``is_outlier`` and one
        ``status_<feature>`` per profile feature.
        """
        check = self.check_block(frame)
        scores = self.detector.score_and_learn(check, learn=learn)
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
        directory = version_dir(store, self.model, self.version)
        calibration = {
            "threshold": self.threshold,
            "target_alert_rate": self.target_alert_rate,
            "scores": self.calibration_scores.tolist(),
        }
        files = {
            PROFILE_FILE: self.profile.to_json().encode(),
            DETECTOR_FILE: pickle.dumps(
                self.detector, protocol=pickle.HIGHEST_PROTOCOL
            ),
            CALIBRATION_FILE: (json.dumps(calibration, indent=2) + "\n").encode(),
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
) -> ModelVersion:
    """Profile the training frame, fit ``auto_od`` and calibrate its threshold.

    ``target``, ``exclude`` and ``kinds`` are passed to
    :func:`detectors.profile.build_profile`, which lists the errors raised on
    bad training data. ``target_alert_rate`` and ``contamination`` are
    described in :class:`detectors.auto_od.AutoOutlierDetector`.
    """
    started = time.perf_counter()
    profile = build_profile(frame, target=target, exclude=exclude, kinds=kinds)
    detector = AutoOutlierDetector(
        profile,
        seed=seed,
        target_alert_rate=target_alert_rate,
        contamination=contamination,
    )
    detector.fit(check_block(profile, frame))
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
    )


def load_model(store: str | os.PathLike[str], model: str, version: int) -> ModelVersion:
    """Load a saved model version after verifying its format and checksums."""
    directory = version_dir(store, model, version)
    manifest, files = read_verified(directory)
    for name in (PROFILE_FILE, DETECTOR_FILE, CALIBRATION_FILE):
        if name not in files:
            raise ArtifactCorruptError(
                f"{directory / MANIFEST}: expected an entry for {name}, got "
                f"{sorted(files)}; retrain the model version with `oddwatch train`"
            )

    profile_data = load_json(directory / PROFILE_FILE, files[PROFILE_FILE])
    try:
        profile = Profile.from_json(json.dumps(profile_data))
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactCorruptError(
            f"{directory / PROFILE_FILE}: expected a training profile, got JSON "
            f"missing {error}; retrain the model version with `oddwatch train`"
        ) from error
    detector = load_pickle(directory / DETECTOR_FILE, files[DETECTOR_FILE])
    if not isinstance(detector, AutoOutlierDetector) or detector.profile != profile:
        raise ArtifactCorruptError(
            f"{directory / DETECTOR_FILE}: expected the detector fitted on "
            f"{directory / PROFILE_FILE}, got {type(detector).__name__} with another "
            "profile; retrain the model version with `oddwatch train`"
        )
    return ModelVersion(
        model=manifest["model"],
        version=manifest["version"],
        profile=profile,
        detector=detector,
        training_rows=manifest["training_rows"],
        created=manifest["created"],
        oddwatch_version=manifest["oddwatch_version"],
    )
