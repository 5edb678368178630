"""Model versions available to the workers, loaded from the model store."""

import logging
import threading
from pathlib import Path

from detectors import ModelVersion, load_model

__all__ = ["ModelNotFound", "ModelRegistry"]

log = logging.getLogger(__name__)


class ModelNotFound(LookupError):
    """No artifact exists for the requested model version."""


class ModelRegistry:
    """Load each model version once from ``store`` and keep it in memory.

    The loaded ModelVersion owns the online detector state, which changes as
    events are learned, so every caller gets the same object.
    """

    def __init__(self, store: Path) -> None:
        self.store = Path(store)
        self._models: dict[tuple[str, int], ModelVersion] = {}
        self._lock = threading.Lock()

    def get(self, model: str, version: int) -> ModelVersion:
        """Return the loaded version, loading it on first use."""
        key = (model, version)
        with self._lock:
            loaded = self._models.get(key)
            if loaded is not None:
                return loaded
            if not (self.store / model / str(version)).is_dir():
                raise ModelNotFound(
                    f"model {model!r} version {version} is not registered: no artifact "
                    f"in {self.store}; run `oddwatch train --model {model} "
                    f"--version {version} ...` first"
                )
            loaded = load_model(self.store, model, version)
            self._models[key] = loaded
            log.info(
                "loaded model %s version %d from %s (threshold %.6g)",
                model,
                version,
                self.store,
                loaded.threshold,
            )
            return loaded

    def loaded(self) -> list[ModelVersion]:
        """Return the model versions loaded so far."""
        with self._lock:
            return list(self._models.values())
