"""The Kafka broker stopped for 30 s in the middle of a stream.

The test runs a broker of its own, so stopping it does not disturb the
other tests. The worker is left alone through the outage: it must reconnect
by itself, finish the stream, and store every event once.
"""

import os
import subprocess
import time

import pytest

from streams.lag import LagProbe, wait_until_consumed
from streams.storage import Storage
from tests.conftest import (
    KAFKA_SCRIPT,
    _free_port_pair,
    _wait_for_group_coordinator,
)
from tests.faults.conftest import (
    batch_violations,
    census_events,
    count_delivery,
    produce,
    register,
    wait_for_progress,
)

pytestmark = pytest.mark.integration

EVENTS = 10_000
OUTAGE_SECONDS = 30.0


class Broker:
    """A single-node broker run by deploy/kafka/kafka.sh on 127.0.0.1."""

    def __init__(self, run_dir) -> None:
        self.port = _free_port_pair()
        self.env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_RUN_DIR": str(run_dir),
        }

    @property
    def servers(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        """Start the broker and wait until its group coordinator responds."""
        subprocess.run([str(KAFKA_SCRIPT), "start"], env=self.env, check=True)
        _wait_for_group_coordinator(self.servers)

    def stop(self) -> None:
        subprocess.run([str(KAFKA_SCRIPT), "stop"], env=self.env, check=True)


@pytest.fixture
def broker(tmp_path):
    """A broker for this test alone, stopped at the end."""
    own = Broker(tmp_path / "kafka")
    own.start()
    yield own
    own.stop()


def test_broker_outage_recovers(worker_process, broker, adult_test):
    worker = worker_process
    worker.env["ODDWATCH_KAFKA"] = broker.servers
    topic = worker.topic("predictions")
    # Most events go in before the outage, so it strikes while the worker is
    # busy with them; the rest come after the broker is back.
    before = EVENTS * 4 // 5
    started = time.monotonic()

    register(worker)
    produce(broker.servers, topic, census_events(adult_test, before))
    worker.start()
    probe = LagProbe(broker.servers, worker.group, topic)
    try:
        wait_for_progress(probe, worker, below=before, timeout=90)
    finally:
        probe.close()

    # The outage: stop the broker, keep it down, start it on the same data.
    stopped = time.monotonic()
    broker.stop()
    time.sleep(max(0.0, OUTAGE_SECONDS - (time.monotonic() - stopped)))
    broker.start()
    outage = time.monotonic() - stopped
    alive_after_outage = worker.process.poll() is None

    produce(
        broker.servers, topic, census_events(adult_test, EVENTS - before, first=before)
    )
    wait_until_consumed(broker.servers, worker.group, topic, timeout=240)
    alive_at_end = worker.process.poll() is None
    exit_code = worker.stop()
    log = worker.log_path.read_text(errors="replace")

    with Storage.connect(worker.clickhouse) as storage:
        delivery = count_delivery(storage, {f"req-{n}" for n in range(EVENTS)})
        batched = storage.query_rows("SELECT sum(events) FROM batches")[0][0]
        violations = batch_violations(storage)
    seconds = time.monotonic() - started

    retries = log.count("retrying in")
    print(f"\nbroker down {outage:.1f} s; {retries} retry lines in the worker log")
    print(delivery.line("broker outage", seconds))

    assert alive_after_outage, log[-6000:]
    assert alive_at_end, log[-6000:]
    assert exit_code == 0, log[-6000:]
    assert delivery.lost == 0
    assert delivery.doubled == 0
    assert batched == EVENTS
    assert violations == {}
