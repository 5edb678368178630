"""The model versions a worker scores with, from registrations and the model store."""

import hashlib
import logging
import time
from collections.abc import Callable
from pathlib import Path

from detectors import DetectorError, ModelVersion, load_model
from detectors.artifacts import MANIFEST
from schemas import ModelRegistration, ModelState
from streams.registration import RegistrationReader

__all__ = ["ModelNotFound", "ModelRegistry", "ModelUnavailable"]

log = logging.getLogger(__name__)


class ModelNotFound(LookupError):
    """The model version is not registered (or, without Kafka, not in the store)."""

    reason_code = "model_not_registered"


class ModelRetired(LookupError):
    """The model version was retired; its events are no longer scored."""

    reason_code = "model_retired"


class ModelUnavailable(LookupError):
    """The model version is registered but its artifact cannot be loaded."""

    reason_code = "model_unavailable"


class ModelRegistry:
    """Load each registered model version once and keep it in memory.

    With a :class:`RegistrationReader`, a version is known once it is
    registered on the ``models`` topic. Its artifact is loaded from the path
    in the registration, or from ``store`` when that path does not exist on
    this machine. Without a reader (offline use), every version in ``store``
    is known.

    The loaded ModelVersion owns the online detector state, which changes as
    events are learned, so every caller gets the same object. Not thread-safe:
    the worker uses it from one thread at a time.
    """

    def __init__(
        self,
        store: Path,
        reader: RegistrationReader | None = None,
        *,
        snapshots: Callable[[str, int, str], bytes | None] | None = None,
    ) -> None:
        self.store = Path(store)
        self.reader = reader
        self.snapshots = snapshots
        self._caught_up_at = 0.0
        self._models: dict[tuple[str, int], tuple[str, ModelVersion]] = {}

    def refresh(self) -> None:
        """Pick up registrations published since the last call."""
        if self.reader is not None:
            self.reader.poll()

    def get(self, model: str, version: int) -> ModelVersion:
        """Return the loaded version.

        Raises ModelNotFound, ModelRetired or ModelUnavailable, each with a
        ``reason_code`` for the dead letter.
        """
        registration = self._registration(model, version)
        checksum = registration.checksum if registration else ""
        cached = self._models.get((model, version))
        if cached is not None and cached[0] == checksum:
            return cached[1]
        directory = self._artifact_directory(model, version, registration)
        if registration is not None:
            self._verify(directory, registration)
        try:
            loaded = load_model(directory.parent.parent, model, version)
        except DetectorError as error:
            raise ModelUnavailable(
                f"model {model!r} version {version} could not be loaded: {error}"
            ) from error
        if cached is not None:
            # The same version registered again (a new threshold or new
            # metrics): keep what its online detector has learned.
            loaded.restore_detector_state(cached[1].detector_state())
            origin = "carried over from the version it replaces"
        elif self._resume(loaded, checksum):
            origin = "resumed from its last snapshot"
        else:
            origin = "as trained"
        self._models[(model, version)] = (checksum, loaded)
        log.info(
            "loaded model %s version %d from %s (threshold %.6g), detector %s",
            model,
            version,
            directory,
            loaded.threshold,
            origin,
        )
        return loaded

    def loaded(self) -> list[ModelVersion]:
        """Return the model versions loaded so far."""
        return [model_version for _, model_version in self._models.values()]

    def loaded_with_checksums(self) -> list[tuple[str, ModelVersion]]:
        """Return (registration checksum, model version) for each loaded version."""
        return list(self._models.values())

    def _resume(self, model_version: ModelVersion, checksum: str) -> bool:
        """Restore the newest snapshot of the online detector, if there is one."""
        if self.snapshots is None or not checksum:
            return False
        state = self.snapshots(model_version.model, model_version.version, checksum)
        if state is None:
            return False
        try:
            model_version.restore_detector_state(state)
        except (DetectorError, ValueError, TypeError) as error:
            log.warning(
                "ignored the snapshot of model %s version %d, which does not "
                "restore (%s); starting from the trained state",
                model_version.model,
                model_version.version,
                error,
            )
            return False
        return True

    def _registration(self, model: str, version: int) -> ModelRegistration | None:
        if self.reader is None:
            if not (self.store / model / str(version)).is_dir():
                raise ModelNotFound(
                    f"model {model!r} version {version} is not in the model store "
                    f"{self.store}; run `oddwatch train --model {model} "
                    f"--version {version} ...` first"
                )
            return None
        registration = self.reader.registrations.get((model, version))
        if registration is None and time.monotonic() - self._caught_up_at > 1.0:
            # It may have been registered a moment ago: read the topic to its
            # end, at most once a second, so a stream of unknown versions does
            # not wait on the broker for each of them.
            self.reader.catch_up(timeout=2.0)
            self._caught_up_at = time.monotonic()
            registration = self.reader.registrations.get((model, version))
        if registration is None:
            raise ModelNotFound(
                f"model {model!r} version {version} is not registered on "
                f"{self.reader.topic}; run `oddwatch train --model {model} "
                f"--version {version} ...`, then replay this dead letter"
            )
        if registration.state == ModelState.RETIRED:
            raise ModelRetired(
                f"model {model!r} version {version} is retired; send its events "
                "to an active version"
            )
        return registration

    def _artifact_directory(
        self, model: str, version: int, registration: ModelRegistration | None
    ) -> Path:
        if registration is not None and Path(registration.artifact).is_dir():
            return Path(registration.artifact)
        directory = self.store / model / str(version)
        if not directory.is_dir():
            where = registration.artifact if registration else str(directory)
            raise ModelUnavailable(
                f"model {model!r} version {version} is registered but its artifact "
                f"is neither at {where} nor at {directory}; make the model store "
                "available to the worker (ODDWATCH_STORE)"
            )
        return directory

    @staticmethod
    def _verify(directory: Path, registration: ModelRegistration) -> None:
        try:
            found = hashlib.sha256((directory / MANIFEST).read_bytes()).hexdigest()
        except OSError as error:
            raise ModelUnavailable(
                f"model {registration.model!r} version {registration.version}: "
                f"reading {directory / MANIFEST} failed: {error}"
            ) from error
        if found != registration.checksum:
            raise ModelUnavailable(
                f"model {registration.model!r} version {registration.version}: the "
                f"manifest in {directory} has checksum {found[:12]}…, the "
                f"registration says {registration.checksum[:12]}…; the artifact was "
                "replaced after registration, so register it again"
            )
