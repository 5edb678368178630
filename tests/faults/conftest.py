"""Fixtures and checks shared by the fault-injection tests.

Every test here runs oddwatch against the real Kafka broker and the real
embedded ClickHouse engine, injects one fault, and then counts what reached
ClickHouse: events sent, stored, doubled and lost, and whether the batch
summaries still equal the same aggregation in SQL.
"""

import signal
import subprocess
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pytest
from confluent_kafka import Producer

from streams.errors import KafkaUnavailableError
from streams.lag import LagProbe
from streams.settings import Settings
from streams.storage import Storage
from tests.integration.conftest import (  # noqa: F401  (fixtures used by tests here)
    WorkerProcess,
    census_store,
    register,
    worker_process,
)

START = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=2)
"""Event time of the first generated event.

Two hours in the past, so the worker's idle timer closes batches of windows
that have ended, as it does in production after a quiet spell.
"""


@pytest.fixture
def processor_settings(tmp_path, kafka_servers, unique_name):
    """Build settings for a block processor run inside the test process.

    Call it with the model store; topics, group and the ClickHouse directory
    are unique to the test.
    """

    def build(store) -> Settings:
        return Settings.from_env(
            {
                "ODDWATCH_KAFKA": kafka_servers,
                "ODDWATCH_STORE": str(store),
                "ODDWATCH_CLICKHOUSE": f"chdb://{tmp_path / 'clickhouse'}",
                "ODDWATCH_HOME": str(tmp_path / "home"),
                "ODDWATCH_TOPIC_PREFIX": f"{unique_name}.",
                "ODDWATCH_GROUP": unique_name,
            }
        )

    return build


def produce(
    servers: str,
    topic: str,
    values: list[bytes],
    key: bytes = b"census",
    config: dict | None = None,
) -> list[int]:
    """Produce ``values`` to ``topic``, wait for the broker, return their offsets."""
    producer = Producer(
        {"bootstrap.servers": servers, "linger.ms": 10, **(config or {})}
    )
    offsets: list[int] = [-1] * len(values)

    def recorder(position: int):
        def record(error, message) -> None:
            if error is None:
                offsets[position] = message.offset()

        return record

    for position, value in enumerate(values):
        while True:
            try:
                producer.produce(
                    topic, key=key, value=value, on_delivery=recorder(position)
                )
                break
            except BufferError:
                producer.poll(0.1)
        producer.poll(0)
    assert producer.flush(60) == 0, f"messages to {topic} were not delivered"
    assert -1 not in offsets, f"the broker rejected messages to {topic}"
    return offsets


def census_events(
    adult_test, count: int, first: int = 0, start: datetime = START
) -> list[bytes]:
    """Return ``count`` census events cycling over the Adult test rows.

    Request ids are ``req-<n>`` from ``first``. Event number n has the event
    time ``start`` + 12 ms × n, so 5000 events fill one minute.
    """
    rows = adult_test.drop(columns=["income"]).to_dict(orient="records")
    events = []
    for number in range(first, first + count):
        row = rows[number % len(rows)]
        moment = start + timedelta(milliseconds=12 * number)
        events.append(
            orjson.dumps(
                {
                    "model": "census",
                    "version": 1,
                    "request_id": f"req-{number}",
                    "timestamp": moment.isoformat().replace("+00:00", "Z"),
                    "features": {k: (None if v != v else v) for k, v in row.items()},
                    "prediction": {"income": "<=50K"},
                }
            )
        )
    return events


def kill_worker(worker: WorkerProcess) -> None:
    """Send SIGKILL to the worker, as an out-of-memory kill or a power cut would."""
    assert worker.process is not None
    worker.process.send_signal(signal.SIGKILL)
    worker.process.wait(timeout=30)
    worker.exit_codes.append(worker.process.returncode)
    worker.process = None


def stop_within(worker: WorkerProcess, timeout: float) -> tuple[int | None, float]:
    """Send SIGTERM; return the exit code (None if killed after ``timeout``) and time.

    Unlike ``WorkerProcess.stop``, a worker that does not stop in time is
    killed without failing the test, so the test can check the data first.
    """
    assert worker.process is not None
    signalled = time.monotonic()
    worker.process.send_signal(signal.SIGTERM)
    try:
        code: int | None = worker.process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        worker.process.kill()
        worker.process.wait(timeout=30)
        code = None
    seconds = time.monotonic() - signalled
    worker.process = None
    return code, seconds


def wait_for_progress(
    probe: LagProbe, worker: WorkerProcess, below: int, timeout: float
) -> int:
    """Wait until the group's lag drops below ``below`` and return that lag.

    Fails when the worker exits first or ``timeout`` seconds pass. A lag the
    broker cannot report yet (a new or restarting broker) counts as unknown.
    """
    deadline = time.monotonic() + timeout
    lag = _lag_or_unknown(probe)
    while lag >= below or lag < 0:
        assert worker.process is not None and worker.process.poll() is None, (
            f"worker exited with code {worker.process and worker.process.returncode}"
            f"; log:\n{worker.log()}"
        )
        assert time.monotonic() < deadline, (
            f"lag stayed at {lag} (not below {below}) for {timeout:.0f} s; "
            f"log:\n{worker.log()}"
        )
        time.sleep(0.2)
        lag = _lag_or_unknown(probe)
    return lag


def _lag_or_unknown(probe: LagProbe) -> int:
    try:
        return probe.lag()
    except KafkaUnavailableError:
        return -1


@dataclass
class Delivery:
    """How many events reached the ``events`` table, by plain ``count()``."""

    sent: int
    stored: int
    doubled: int
    lost: int

    def line(self, scenario: str, seconds: float) -> str:
        return (
            f"{scenario}: sent {self.sent}, stored {self.stored}, doubled "
            f"{self.doubled}, lost {self.lost}, {seconds:.1f} s"
        )


def count_delivery(storage: Storage, sent_ids: set[str]) -> Delivery:
    """Compare the request ids sent with the rows of ``events``."""
    stored = storage.query_rows("SELECT count() FROM events")[0][0]
    stored_ids = {row[0] for row in storage.query_rows(
        "SELECT DISTINCT request_id FROM events")}  # fmt: skip
    return Delivery(
        sent=len(sent_ids),
        stored=stored,
        doubled=stored - len(stored_ids),
        lost=len(sent_ids - stored_ids),
    )


# Each query returns the rows that break one rule; an empty result passes.
BATCH_RULES = {
    "batches row repeated": """
        SELECT batch_id, count() AS rows FROM batches
        GROUP BY batch_id HAVING rows > 1""",
    "batch_checks row repeated": """
        SELECT batch_id, feature, check, count() AS rows FROM batch_checks
        GROUP BY batch_id, feature, check HAVING rows > 1""",
    "events of a batch with no batches row": """
        SELECT DISTINCT batch_id FROM events
        WHERE batch_id NOT IN (SELECT batch_id FROM batches)""",
    "batch events or outliers differ from SQL over events": """
        SELECT b.batch_id, b.events, e.events, b.outliers, e.outliers
        FROM batches AS b
        LEFT JOIN (SELECT batch_id, count() AS events,
                          countIf(is_outlier = 1) AS outliers
                   FROM events GROUP BY batch_id) AS e USING batch_id
        WHERE b.events != e.events OR b.outliers != e.outliers""",
    "range check counts differ from SQL over feature_checks": """
        SELECT c.batch_id, c.feature, c.checked, f.checked, c.passed, f.passed
        FROM (SELECT * FROM batch_checks WHERE check = 'range') AS c
        FULL JOIN (SELECT batch_id, feature, count() AS checked,
                          sum(passed) AS passed
                   FROM feature_checks GROUP BY batch_id, feature) AS f
            USING (batch_id, feature)
        WHERE c.checked != f.checked OR c.passed != f.passed""",
    "auto_od check counts differ from SQL over events": """
        SELECT c.batch_id, c.checked, e.checked, c.passed, e.passed
        FROM (SELECT * FROM batch_checks WHERE check = 'auto_od') AS c
        FULL JOIN (SELECT batch_id, count() AS checked,
                          countIf(is_outlier = 0) AS passed
                   FROM events GROUP BY batch_id) AS e USING batch_id
        WHERE c.checked != e.checked OR c.passed != e.passed""",
}


def batch_violations(storage: Storage) -> dict[str, list[tuple]]:
    """Return, per broken rule of :data:`BATCH_RULES`, up to 5 offending rows."""
    violations = {}
    for rule, sql in BATCH_RULES.items():
        rows = storage.query_rows(sql + " LIMIT 5")
        if rows:
            violations[rule] = rows
    return violations
