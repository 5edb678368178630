"""Run the Faust worker for oddwatch's app."""

import gc
import logging

import faust

from streams.app import create_app
from streams.settings import Settings

__all__ = ["run_worker"]

log = logging.getLogger(__name__)

GC_FIRST_THRESHOLD = 50_000
"""Allocations between two collections of the youngest generation."""


def run_worker(settings: Settings) -> None:
    """Start a worker and block until it is stopped (SIGINT or SIGTERM)."""
    from streams.topics import ensure_topics

    # Fail with oddwatch's own message when Kafka is not there, before Faust
    # starts and ends in a library traceback.
    ensure_topics(settings, timeout=15)
    # A block allocates hundreds of thousands of objects that live until it
    # is stored. With the default threshold of 700 the collector keeps
    # rescanning them: blocks of 5,000 took 157 us of CPU per event, and
    # 92 us with 50,000 (benchmarks/throughput --stages-only).
    gc.set_threshold(GC_FIRST_THRESHOLD, *gc.get_threshold()[1:])
    app = create_app(settings)
    log.info("starting worker: %s", settings.describe())
    worker = faust.Worker(app, loglevel=settings.log_level.upper(), quiet=True)
    worker.execute_from_commandline()
