"""Run the Faust worker for oddwatch's app."""

import logging

import faust

from streams.app import create_app
from streams.settings import Settings

__all__ = ["run_worker"]

log = logging.getLogger(__name__)


def run_worker(settings: Settings) -> None:
    """Start a worker and block until it is stopped (SIGINT or SIGTERM)."""
    from streams.topics import ensure_topics

    # Fail with oddwatch's own message when Kafka is not there, before Faust
    # starts and ends in a library traceback.
    ensure_topics(settings, timeout=15)
    app = create_app(settings)
    log.info("starting worker: %s", settings.describe())
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
