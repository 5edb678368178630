"""Fixtures that run oddwatch against the real broker and ClickHouse engine."""

import os
import signal
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import ROOT


@pytest.fixture(scope="session")
def census_store(tmp_path_factory, adult_train):
    """A model store holding census version 1, trained on the Adult training file."""
    from detectors import train_model

    store = tmp_path_factory.mktemp("store")
    model_version = train_model(
        adult_train, model="census", version=1, target=["income"], seed=0
    )
    model_version.save(store)
    return store


def register(worker: "WorkerProcess", model: str = "census", version: int = 1) -> None:
    """Publish the stored version on the worker's models topic."""
    from detectors import load_model
    from streams.registration import build_registration, publish_registration
    from streams.settings import Settings

    settings = Settings.from_env(worker.env)
    model_version = load_model(settings.store, model, version)
    publish_registration(settings, build_registration(model_version, settings.store))


@dataclass
class WorkerProcess:
    """An ``oddwatch worker`` child process and the settings it was given."""

    env: dict[str, str]
    log_path: Path
    process: subprocess.Popen | None = None
    exit_codes: list[int] = field(default_factory=list)

    @property
    def clickhouse(self) -> str:
        return self.env["ODDWATCH_CLICKHOUSE"]

    @property
    def group(self) -> str:
        return self.env["ODDWATCH_GROUP"]

    def topic(self, name: str) -> str:
        return self.env["ODDWATCH_TOPIC_PREFIX"] + name

    def start(self) -> None:
        log = self.log_path.open("a")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "streams", "worker"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        log.close()

    def stop(self, timeout: float = 30.0) -> int:
        """Send SIGTERM and return the exit code; kill after ``timeout`` seconds."""
        assert self.process is not None
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(
                f"worker did not exit within {timeout} s of SIGTERM; log:\n{self.log()}"
            ) from None
        self.exit_codes.append(code)
        self.process = None
        return code

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


@pytest.fixture
def worker_process(tmp_path, kafka_servers, census_store, unique_name):
    """A factory-made worker with its own topics, group and ClickHouse directory."""
    env = {
        **os.environ,
        "ODDWATCH_KAFKA": kafka_servers,
        "ODDWATCH_STORE": str(census_store),
        "ODDWATCH_CLICKHOUSE": f"chdb://{tmp_path / 'clickhouse'}",
        "ODDWATCH_HOME": str(tmp_path / "home"),
        "ODDWATCH_TOPIC_PREFIX": f"{unique_name}.",
        "ODDWATCH_GROUP": unique_name,
        "ODDWATCH_BLOCK_SIZE": "1000",
    }
    worker = WorkerProcess(env=env, log_path=tmp_path / "worker.log")
    yield worker
    if worker.process is not None and worker.process.poll() is None:
        worker.process.kill()
        worker.process.wait()
