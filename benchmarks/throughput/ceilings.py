"""Reference rates: how fast the predictions topic can be read at all.

Each reader starts at offset 0 of a topic the worker has already stored and
stops after ``count`` messages. The rate is taken from the arrival of the
first batch to the last message, so connecting and joining are left out.

- aiokafka: the client under Faust, with no consumer group (so no offset
  commits), decoding every value with orjson.
- confluent-kafka: the librdkafka client the worker already uses for its
  producer, also without a group, also decoding with orjson.
- Faust ``take_events``: a Faust app in a child process whose agent takes
  blocks as the worker's agent does (``ODDWATCH_READER=faust``, same block
  size and fetch size) and does nothing with them; Faust still commits the
  offsets of its group.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import orjson
import psutil
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition as AioTopicPartition
from confluent_kafka import Consumer, TopicPartition

from benchmarks.throughput.harness import REPO_ROOT
from streams.app import FAUST_MAX_FETCH_BYTES
from streams.settings import Settings

BLOCK_SIZE = Settings().block_size
BLOCK_TIMEOUT = Settings().block_timeout


@dataclass
class ReadRate:
    """Messages read and the seconds between the first batch and the last message."""

    messages: int
    seconds: float
    cpu_seconds: float
    """CPU time of the reading process over the whole read, connecting included."""

    @property
    def rate(self) -> float:
        return self.messages / max(self.seconds, 1e-9)


def read_with_aiokafka(servers: str, topic: str, count: int) -> ReadRate:
    """Read and decode ``count`` messages with a group-less aiokafka consumer."""
    started = time.process_time()
    messages, seconds = asyncio.run(_read_with_aiokafka(servers, topic, count))
    return ReadRate(messages, seconds, time.process_time() - started)


async def _read_with_aiokafka(
    servers: str, topic: str, count: int
) -> tuple[int, float]:
    consumer = AIOKafkaConsumer(
        bootstrap_servers=servers, group_id=None, enable_auto_commit=False
    )
    await consumer.start()
    try:
        partition = AioTopicPartition(topic, 0)
        consumer.assign([partition])
        await consumer.seek_to_beginning(partition)
        return await _drain(consumer, count)
    finally:
        await consumer.stop()


async def _drain(consumer: AIOKafkaConsumer, count: int) -> tuple[int, float]:
    read = first_batch = 0
    first_at = 0.0
    deadline = time.monotonic() + 600
    while read < count and time.monotonic() < deadline:
        batches = await consumer.getmany(timeout_ms=1000, max_records=BLOCK_SIZE)
        for messages in batches.values():
            for message in messages:
                orjson.loads(message.value)
            if not first_at:
                first_at, first_batch = time.perf_counter(), len(messages)
            read += len(messages)
    return read - first_batch, time.perf_counter() - first_at


def read_with_confluent(servers: str, topic: str, count: int) -> ReadRate:
    """Read and decode ``count`` messages with a group-less confluent consumer."""
    started = time.process_time()
    consumer = Consumer(
        {
            "bootstrap.servers": servers,
            "group.id": "bench-ceiling-unused",
            "enable.auto.commit": False,
            "enable.partition.eof": False,
        }
    )
    consumer.assign([TopicPartition(topic, 0, 0)])
    read = first_batch = 0
    first_at = 0.0
    deadline = time.monotonic() + 600
    try:
        while read < count and time.monotonic() < deadline:
            messages = consumer.consume(num_messages=BLOCK_SIZE, timeout=1.0)
            for message in messages:
                orjson.loads(message.value())
            if messages and not first_at:
                first_at, first_batch = time.perf_counter(), len(messages)
            read += len(messages)
    finally:
        consumer.close()
    seconds = time.perf_counter() - first_at
    return ReadRate(read - first_batch, seconds, time.process_time() - started)


def read_with_take_events(
    servers: str, topic: str, count: int, directory: Path
) -> ReadRate:
    """Run a Faust app whose agent only counts the blocks from ``take_events``."""
    directory.mkdir(parents=True, exist_ok=True)
    log_path = directory / "take-events.log"
    result_path = directory / "result.json"
    command = [
        sys.executable, "-m", "benchmarks.throughput.ceilings",
        servers, topic, str(count), str(result_path),
    ]  # fmt: skip
    with log_path.open("w") as log:
        child = subprocess.Popen(command, cwd=REPO_ROOT, stdout=log, stderr=log)
        cpu_seconds = 0.0
        try:
            _wait_for_file(result_path, child, timeout=600)
            with contextlib.suppress(psutil.Error):
                times = psutil.Process(child.pid).cpu_times()
                cpu_seconds = times.user + times.system
        finally:
            child.send_signal(signal.SIGTERM)
            try:
                child.wait(timeout=60)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    if not result_path.exists():
        raise RuntimeError(f"the take_events reader wrote no result; see {log_path}")
    result = json.loads(result_path.read_text())
    return ReadRate(result["messages"], result["seconds"], cpu_seconds)


def _wait_for_file(path: Path, child: subprocess.Popen, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and child.poll() is None:
        if path.exists():
            return
        time.sleep(0.2)


def _run_take_events_app(servers: str, topic: str, count: int, result: Path) -> None:
    """Count ``count`` messages in a Faust agent, write the rate, wait for SIGTERM.

    The result goes to a file because the Faust worker sends stdout to its log.
    """
    import faust

    app = faust.App(
        f"bench-take-events-{int(time.time())}",
        broker=f"kafka://{servers}",
        store="memory://",
        datadir=str(result.parent / "faust"),
        autodiscover=False,
        web_enabled=False,
        topic_partitions=1,
        topic_replication_factor=1,
        consumer_auto_offset_reset="earliest",
        broker_commit_interval=1.0,
        consumer_max_fetch_size=FAUST_MAX_FETCH_BYTES,
    )
    source = app.topic(topic, key_serializer="raw", value_serializer="raw")

    @app.agent(source, name="count_events")
    async def count_events(stream):  # type: ignore[no-untyped-def]
        read = first_batch = 0
        first_at = 0.0
        reported = False
        async for events in stream.take_events(BLOCK_SIZE, within=BLOCK_TIMEOUT):
            if not first_at:
                first_at, first_batch = time.perf_counter(), len(events)
            read += len(events)
            if read >= count and not reported:
                seconds = time.perf_counter() - first_at
                rate = {"messages": read - first_batch, "seconds": seconds}
                partial = result.with_suffix(".partial")
                partial.write_text(json.dumps(rate))
                partial.rename(result)
                reported = True

    faust.Worker(app, loglevel="WARNING", quiet=True).execute_from_commandline()


if __name__ == "__main__":
    _run_take_events_app(sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]))
