"""The parts of a throughput run: broker, events, worker process, samples, store.

Everything runs on 127.0.0.1: a broker of the benchmark's own, started with
``deploy/kafka/kafka.sh`` on a free port pair, and one ``oddwatch worker``
child process per stage, each stage with its own topic prefix, consumer
group and embedded ClickHouse directory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import orjson
import psutil
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from detectors import ModelVersion
from streams.demo import read_adult
from streams.lag import LagProbe
from streams.registration import build_registration, publish_registration
from streams.replay import event_from_row
from streams.settings import Settings
from streams.storage import Storage

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_SCRIPT = REPO_ROOT / "deploy" / "kafka" / "kafka.sh"
MODEL, VERSION = "census", 1

# Slowest worker rate the waits allow for, in events per second, so that a
# stalled worker fails the run instead of hanging it.
SLOWEST_RATE = 300.0


def free_port_pair(attempts: int = 50) -> int:
    """Return a port P such that P and P + 1 are both free on 127.0.0.1."""
    for _ in range(attempts):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = first.getsockname()[1]
            if port >= 65535:
                continue
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
            return port
    raise RuntimeError(f"found no two free adjacent ports in {attempts} attempts")


class Broker:
    """A single-node Kafka broker of this run, in its own run directory."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.port = free_port_pair()
        self.servers = f"127.0.0.1:{self.port}"

    def start(self) -> None:
        self._script("start")

    def stop(self) -> None:
        self._script("stop")

    def pid(self) -> int | None:
        try:
            return int((self.run_dir / "kafka.pid").read_text())
        except (OSError, ValueError):
            return None

    def _script(self, command: str) -> None:
        env = {
            **os.environ,
            "KAFKA_PORT": str(self.port),
            "KAFKA_RUN_DIR": str(self.run_dir),
        }
        subprocess.run(["bash", str(KAFKA_SCRIPT), command], env=env, check=True)


@dataclass
class Stage:
    """One measured run: its own topic prefix, group and ClickHouse directory."""

    name: str
    directory: Path
    servers: str
    store: Path
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    block_size: int | None = None

    @property
    def prefix(self) -> str:
        return f"bench-{self.name}-{self.run_id}."

    @property
    def group(self) -> str:
        return f"bench-{self.name}-{self.run_id}"

    @property
    def topic(self) -> str:
        return self.prefix + "predictions"

    @property
    def clickhouse(self) -> str:
        return f"chdb://{self.directory / 'clickhouse'}"

    def settings(self) -> Settings:
        overrides = {} if self.block_size is None else {"block_size": self.block_size}
        return Settings(
            kafka=self.servers,
            clickhouse=self.clickhouse,
            store=self.store,
            home=self.directory,
            topic_prefix=self.prefix,
            group=self.group,
            **overrides,
        )

    def env(self) -> dict[str, str]:
        """Return the ``ODDWATCH_*`` environment of this stage's worker."""
        env = {
            **os.environ,
            "ODDWATCH_KAFKA": self.servers,
            "ODDWATCH_CLICKHOUSE": self.clickhouse,
            "ODDWATCH_STORE": str(self.store),
            "ODDWATCH_HOME": str(self.directory),
            "ODDWATCH_TOPIC_PREFIX": self.prefix,
            "ODDWATCH_GROUP": self.group,
            "ODDWATCH_LOG_LEVEL": "info",
        }
        if self.block_size is not None:
            env["ODDWATCH_BLOCK_SIZE"] = str(self.block_size)
        return env

    def register(self, model_version: ModelVersion) -> None:
        """Create the stage's topics and publish the model's registration."""
        self.directory.mkdir(parents=True, exist_ok=True)
        settings = self.settings()
        publish_registration(settings, build_registration(model_version, self.store))


class AdultEvents:
    """Prediction events made from the rows of the Adult test file, in a cycle.

    The label column is used as the model's prediction. Each event gets a
    unique request id and the time it is produced as its timestamp.
    """

    _HEAD = b'{"model":"census","version":1,"request_id":"%s-%d","timestamp":"%s"'

    def __init__(self, path: Path) -> None:
        frame = read_adult(path)
        labels = frame.pop("income").tolist()
        self.rows = len(frame)
        self._tails = []
        for row, label in zip(frame.to_dict(orient="records"), labels, strict=True):
            event = event_from_row(row, model=MODEL, version=VERSION, request_id="")
            features = orjson.dumps(event["features"])
            prediction = orjson.dumps({"income": label})
            self._tails.append(
                b',"features":' + features + b',"prediction":' + prediction + b"}"
            )
        self._run = uuid.uuid4().hex[:8].encode()
        self._stamp_ms = -1
        self._stamp = b""

    def event(self, number: int) -> bytes:
        """Return event ``number``, stamped with the current time."""
        now_ms = time.time_ns() // 1_000_000
        if now_ms != self._stamp_ms:
            self._stamp_ms = now_ms
            moment = datetime.fromtimestamp(now_ms / 1000, tz=UTC)
            self._stamp = moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3].encode() + b"Z"
        head = self._HEAD % (self._run, number, self._stamp)
        return head + self._tails[number % self.rows]


@dataclass
class Produced:
    """Events sent by one call of :func:`produce`, with wall-clock times."""

    events: int
    started: float
    finished: float
    sent_bytes: int

    @property
    def rate(self) -> float:
        return self.events / max(self.finished - self.started, 1e-9)


def produce(
    servers: str, topic: str, events: AdultEvents, count: int, rate: float | None
) -> Produced:
    """Send ``count`` events keyed by model name; pace them when ``rate`` is set.

    Returns once the broker has acknowledged every event.
    """
    producer = Producer(
        {
            "bootstrap.servers": servers,
            "acks": "all",
            "linger.ms": 5,
            "queue.buffering.max.messages": 1_000_000,
            "queue.buffering.max.kbytes": 1_048_576,
            "log_level": 3,
        }
    )
    failures: list[str] = []

    def on_delivery(error: object, _message: object) -> None:
        if error is not None:
            failures.append(str(error))

    # Pace in steps of about a millisecond of events, so a sleep is long
    # enough to be accurate and the bursts stay far below a block's timeout.
    step = max(1, int(rate / 1000)) if rate else 1000
    key = MODEL.encode()
    sent_bytes = 0
    started = time.time()
    for number in range(count):
        value = events.event(number)
        sent_bytes += len(value)
        _produce_one(producer, topic, key, value, on_delivery)
        if number % step == step - 1:
            producer.poll(0)
            if rate:
                ahead = started + (number + 1) / rate - time.time()
                if ahead > 0:
                    time.sleep(ahead)
    remaining = producer.flush(120)
    if remaining or failures:
        raise RuntimeError(
            f"{remaining} events were not delivered to {topic} and {len(failures)} "
            f"failed; first error: {failures[0] if failures else 'timed out'}"
        )
    return Produced(count, started, time.time(), sent_bytes)


def _produce_one(producer: Producer, topic: str, key, value, callback) -> None:
    while True:
        try:
            producer.produce(topic, value=value, key=key, on_delivery=callback)
            return
        except BufferError:
            producer.poll(0.05)


def end_offset(servers: str, topic: str) -> int:
    """Return the end offset of partition 0 of ``topic``."""
    consumer = Consumer(
        {"bootstrap.servers": servers, "group.id": "bench-offsets", "log_level": 3}
    )
    try:
        _low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, 0), timeout=10
        )
        return high
    finally:
        consumer.close()


@dataclass
class Sample:
    """One reading of the worker, the broker and the machine."""

    at: float
    rss: int
    worker_cpu: float
    broker_cpu: float
    machine_busy: float
    load1: float


class Sampler(threading.Thread):
    """Read the worker's RSS and CPU time, the broker's CPU and the load."""

    def __init__(self, worker_pid: int, broker_pid: int | None, interval: float):
        super().__init__(daemon=True)
        self.worker = psutil.Process(worker_pid)
        self.broker = psutil.Process(broker_pid) if broker_pid else None
        self.interval = interval
        self.samples: list[Sample] = []
        self._finished = threading.Event()

    def run(self) -> None:
        while True:
            with contextlib.suppress(psutil.Error):
                self.samples.append(self.sample())
            if self._finished.wait(self.interval):
                return

    def sample(self) -> Sample:
        times = self.worker.cpu_times()
        broker = self.broker.cpu_times() if self.broker else None
        machine = psutil.cpu_times()
        return Sample(
            at=time.time(),
            rss=self.worker.memory_info().rss,
            worker_cpu=times.user + times.system,
            broker_cpu=broker.user + broker.system if broker else 0.0,
            machine_busy=machine.user + machine.system + machine.nice + machine.irq
            + machine.softirq + machine.steal,
            load1=os.getloadavg()[0],
        )  # fmt: skip

    def stop(self) -> None:
        self._finished.set()
        self.join(timeout=10)


class WorkerProcess:
    """One ``oddwatch worker`` child process with its log file."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.log_path = stage.directory / "worker.log"
        self._log = self.log_path.open("w")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            env=stage.env(),
            cwd=REPO_ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def peak_rss(self) -> int:
        """Return the kernel's high-water mark of the worker's RSS, in bytes."""
        status = Path(f"/proc/{self.pid}/status").read_text()
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        return 0

    def wait_until_ready(self, timeout: float = 120.0) -> float:
        """Wait for the worker to open its connections and join its group."""
        started = time.monotonic()
        admin = AdminClient({"bootstrap.servers": self.stage.servers, "log_level": 3})
        while time.monotonic() - started < timeout:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"the worker exited with code {self.process.returncode}; "
                    f"see {self.log_path}"
                )
            if "worker ready" in self.log_path.read_text() and self._joined(admin):
                return time.monotonic() - started
            time.sleep(0.2)
        raise TimeoutError(
            f"the worker was not ready within {timeout:.0f} s; see {self.log_path}"
        )

    def _joined(self, admin: AdminClient) -> bool:
        group = self.stage.group
        try:
            description = admin.describe_consumer_groups([group])[group].result(10)
        except Exception:  # noqa: BLE001 - the group may not exist yet
            return False
        return str(description.state).endswith("STABLE") and bool(description.members)

    def stop(self, timeout: float = 120.0) -> None:
        """Stop the worker with SIGTERM, as a user would, then kill it if it hangs."""
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            log.warning(
                "worker %d did not stop in %.0f s; killing it", self.pid, timeout
            )
            self.process.kill()
            self.process.wait()
        self._log.close()


def wait_until_stored(
    probe: LagProbe, worker: WorkerProcess, timeout: float, interval: float = 0.2
) -> float:
    """Return the wall-clock time at which the group's lag was first seen at 0."""
    started = time.monotonic()
    lag = -1
    while time.monotonic() - started < timeout:
        if worker.process.poll() is not None:
            raise RuntimeError(f"the worker exited; see {worker.log_path}")
        lag = probe.lag()
        if lag == 0:
            return time.time()
        time.sleep(interval)
    raise TimeoutError(
        f"the worker still had {lag} events to store after {timeout:.0f} s; see "
        f"{worker.log_path}"
    )


@dataclass
class Stored:
    """Row counts, latencies and journal of a stage, read after the worker stopped."""

    events: int
    feature_checks: int
    dead_letters: int
    latency_ms: dict[str, float]
    journal: list[tuple[float, int]]
    """(written_at as a Unix time, last offset) per block, in offset order."""

    def stored_at(self, offset: int) -> float:
        """Return when the block holding ``offset`` was stored."""
        for written_at, last_offset in self.journal:
            if last_offset >= offset:
                return written_at
        raise ValueError(f"offset {offset} is not in the journal")

    def stored_by(self, moment: float) -> int:
        """Return how many events were stored at ``moment``."""
        done = 0
        for written_at, last_offset in self.journal:
            if written_at > moment:
                break
            done = last_offset + 1
        return done


# Latency of each event: from its Kafka timestamp, which the producer set when
# it sent it, to the first journal row that covers its offset, which the
# worker writes after the block's rows are in every table.
LATENCY_SQL = """
SELECT count() AS events,
       quantileExact(0.5)(latency) AS p50,
       quantileExact(0.99)(latency) AS p99,
       max(latency) AS max
FROM (
    SELECT toUnixTimestamp64Milli(j.stored_at) - toUnixTimestamp64Milli(e.received_at)
           AS latency
    FROM (SELECT kafka_partition, toInt64(kafka_offset) AS offset, received_at
          FROM events) AS e
    ASOF JOIN (SELECT partition, last_offset, min(written_at) AS stored_at
               FROM sink_journal
               WHERE group = {group:String} AND topic = {topic:String}
               GROUP BY partition, last_offset) AS j
    ON e.kafka_partition = j.partition AND e.offset <= j.last_offset
)
"""

JOURNAL_SQL = """
SELECT toUnixTimestamp64Micro(min(written_at)) / 1e6 AS stored_at, last_offset
FROM sink_journal
WHERE group = {group:String} AND topic = {topic:String}
GROUP BY last_offset
ORDER BY last_offset
"""


def read_stored(stage: Stage) -> Stored:
    """Count the stored rows and compute each event's latency."""
    parameters = {"group": stage.group, "topic": stage.topic}
    with Storage.connect(stage.clickhouse) as storage:
        counts = [
            storage.query_rows(f"SELECT count() FROM {table}")[0][0]
            for table in ("events", "feature_checks", "dead_letters")
        ]
        _events, p50, p99, longest = storage.query_rows(LATENCY_SQL, parameters)[0]
        journal = storage.query_rows(JOURNAL_SQL, parameters)
    return Stored(
        events=counts[0],
        feature_checks=counts[1],
        dead_letters=counts[2],
        latency_ms={"p50": float(p50), "p99": float(p99), "max": float(longest)},
        journal=[(float(at), int(offset)) for at, offset in journal],
    )
