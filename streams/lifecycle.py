"""Model lifecycle: list, retire, change the alert rate, change custom metrics.

Every change rewrites the artifact where needed and publishes a new
registration of the same version on the ``models`` topic; running workers
pick it up before their next block. A version whose artifact changed keeps
its online detector state in the workers, so a new threshold or new metrics
take effect without losing what the detector learned.
"""

import logging
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from detectors import load_model
from schemas import MetricConfig, ModelRegistration, ModelState
from streams.errors import OddwatchError
from streams.registration import (
    RegistrationReader,
    build_registration,
    publish_registration,
)
from streams.settings import Settings

__all__ = [
    "list_registrations",
    "reregister",
    "retire",
    "set_alert_rate",
    "set_version_metrics",
]

log = logging.getLogger(__name__)


def list_registrations(settings: Settings) -> list[ModelRegistration]:
    """Return the latest registration of every model version, sorted."""
    reader = RegistrationReader(settings)
    try:
        reader.catch_up(timeout=15)
        return sorted(reader.registrations.values(), key=lambda r: (r.model, r.version))
    finally:
        reader.close()


def retire(settings: Settings, model: str, version: int) -> ModelRegistration:
    """Mark a version retired; workers send its events to the dead-letter topic."""
    current = _current(settings, model, version)
    retired = replace(current, state=ModelState.RETIRED, created_at=datetime.now(UTC))
    publish_registration(settings, retired)
    return retired


def set_alert_rate(
    settings: Settings, model: str, version: int, rate: float
) -> ModelRegistration:
    """Re-derive the threshold for ``rate`` from the stored calibration scores."""
    from detectors import set_target_alert_rate

    _current(settings, model, version)
    set_target_alert_rate(settings.store, model, version, rate)
    return reregister(settings, model, version)


def set_version_metrics(
    settings: Settings, model: str, version: int, configs: list[MetricConfig]
) -> ModelRegistration:
    """Replace the custom metrics of a version without refitting it."""
    from detectors import set_metrics

    _current(settings, model, version)
    set_metrics(settings.store, model, version, configs)
    return reregister(settings, model, version)


def reregister(settings: Settings, model: str, version: int) -> ModelRegistration:
    """Publish the stored artifact's registration again, keeping the version active."""
    model_version = load_model(settings.store, model, version)
    registration = build_registration(model_version, Path(settings.store))
    publish_registration(settings, registration)
    return registration


def _current(settings: Settings, model: str, version: int) -> ModelRegistration:
    for registration in list_registrations(settings):
        if (registration.model, registration.version) == (model, version):
            return registration
    raise OddwatchError(
        f"model {model!r} version {version} is not registered on "
        f"{settings.topic('models')}; run `oddwatch train` first"
    )
