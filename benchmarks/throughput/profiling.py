"""Profiles of the worker: py-spy on the process, timers and cProfile in-process.

- :class:`PySpy` samples a running ``oddwatch worker`` (all its Python
  threads, native frames included) and :func:`summarise_stacks` turns the
  samples into the top functions by own time and a split by thread.
- :func:`time_stages` runs a :class:`~streams.processor.BlockProcessor` in
  this process on blocks of the same events, with a timer around each step
  of a block, then runs more blocks under cProfile. Kafka consumption and
  Faust are not part of it; py-spy covers those.
"""

from __future__ import annotations

import cProfile
import functools
import gc
import io
import pstats
import re
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.throughput.harness import REPO_ROOT, AdultEvents, Stage
from detectors import ModelVersion
from streams import pipeline as pipeline_module
from streams.batching import Batcher
from streams.journal import Journal
from streams.pipeline import Pipeline
from streams.processor import BlockProcessor
from streams.records import RawMessage
from streams.sink import ClickHouseSink
from streams.storage import Storage
from streams.worker import GC_FIRST_THRESHOLD

_FRAME = re.compile(r"^(?P<name>.*) \((?P<file>[^()]*?)(?::\d+)?\)$")


def find_py_spy() -> str | None:
    """Return the py-spy next to this Python, else the one on PATH, else None."""
    executable = Path(sys.executable).with_name("py-spy")
    return str(executable) if executable.exists() else shutil.which("py-spy")


class PySpy:
    """``py-spy record`` attached to a process until :meth:`stop`."""

    def __init__(self, pid: int, output: Path, rate: int = 100) -> None:
        found = find_py_spy()
        if found is None:
            raise RuntimeError(
                "py-spy is not installed; install it with `pip install py-spy` "
                "or pass --profile-events 0"
            )
        self.output = output
        self._log = output.with_suffix(".log").open("w")
        self.process = subprocess.Popen(
            [found, "record", "--pid", str(pid), "--rate", str(rate), "--native",
             "--threads", "--format", "raw", "--output", str(output)],
            stdout=self._log, stderr=subprocess.STDOUT,
        )  # fmt: skip

    def stop(self) -> None:
        """Stop sampling; py-spy writes its output on SIGINT."""
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self._log.close()


@dataclass
class StackSummary:
    """py-spy's samples of every Python thread, as thread-seconds."""

    seconds: float
    """Wall-clock seconds sampled."""
    steps: list[tuple[str, str, float]]
    """(thread role, step, thread-seconds), by role and then most first."""
    own: list[tuple[str, float]]
    """(function, thread-seconds as the innermost frame), waits left out."""


# The step a sample belongs to is the innermost of these functions on its
# stack, named as py-spy names them (qualified name, file ending).
STEPS = [
    ("BlockProcessor.process", "streams/processor.py", "block: other"),
    ("Pipeline.process", "streams/pipeline.py", "pipeline: other"),
    ("parse_prediction", "schemas/prediction.py", "parse_prediction"),
    ("ModelVersion.check_block", "detectors/model.py", "check_block"),
    ("ModelVersion.score_block", "detectors/model.py", "score_block"),
    ("ModelVersion.explain_block", "detectors/model.py", "explain_block"),
    ("Batcher.assign", "streams/batching.py", "Batcher.assign"),
    ("Pipeline._add_batches", "streams/pipeline.py", "_add_batches and drift"),
    ("_add_events", "streams/pipeline.py", "_add_events"),
    ("_add_feature_checks", "streams/pipeline.py", "_add_feature_checks"),
    ("_add_scored_and_alerts", "streams/pipeline.py", "_add_scored_and_alerts"),
    ("BlockProcessor._send", "streams/processor.py", "queue for Kafka"),
    ("BlockProcessor._confirm_sent", "streams/processor.py", "wait for Kafka"),
    ("ClickHouseSink.write", "streams/sink.py", "ClickHouse inserts"),
    ("Journal.append", "streams/journal.py", "journal insert"),
    ("BlockProcessor.close_idle_batches", "streams/processor.py", "close_idle_batches"),
    ("BlockProcessor._snapshot", "streams/processor.py", "detector snapshot"),
    ("score_predictions", "streams/app.py", "agent: other"),
    ("_raw_message", "streams/app.py", "agent: _raw_message"),
    ("Stream.take_events", "faust/streams.py", "Faust: take_events"),
    ("Stream._c_aiter", "faust/streams.py", "Faust: stream iterator"),
    ("Consumer._drain_messages", "faust/transport/consumer.py", "Faust: drain"),
    (
        "Conductor._compile_message_handler.<locals>.on_message",
        "faust/transport/conductor.py",
        "Faust: deliver message to stream",
    ),
    ("Consumer.getmany", "faust/transport/consumer.py", "Faust: getmany"),
    ("Consumer.commit", "faust/transport/consumer.py", "Faust: commit"),
    ("Service.wait_first", "mode/services.py", "mode: Service.wait_first"),
    ("Fetcher._proc_fetch_request", "consumer/fetcher.py", "aiokafka: fetch"),
]

# Innermost named frames of a thread that waits: for a lock, a condition, a
# queue or a socket. Inside a step the wait counts for the step.
WAITS = {
    "pthread_cond_timedwait", "pthread_cond_wait", "PyThread_acquire_lock_timed",
    "epoll_wait", "select_epoll_poll_impl", "poll", "__poll", "nanosleep",
    "clock_nanosleep", "sem_timedwait", "sem_wait", "futex_wait",
}  # fmt: skip


def summarise_stacks(path: Path, rate: int = 100, top: int = 10) -> StackSummary:
    """Split py-spy's raw stacks by thread role and step, and count own time."""
    steps: Counter[tuple[str, str]] = Counter()
    own: Counter[str] = Counter()
    per_thread: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        thread, *raw_frames = stack.split(";")
        frames = [_parse_frame(f) for f in raw_frames if not f.startswith("0x")]
        if not frames:
            continue
        per_thread[thread] += count
        role = _thread_role(thread.rpartition(": ")[2])
        waiting = frames[-1][0] in WAITS
        steps[(role, _step(frames, waiting))] += count
        if not waiting:
            own[_label(frames[-1])] += count
    seconds = max(per_thread.values(), default=0) / rate
    ordered = sorted(steps.items(), key=lambda item: (item[0][0], -item[1]))
    return StackSummary(
        seconds=seconds,
        steps=[(role, step, count / rate) for (role, step), count in ordered],
        own=[(name, count / rate) for name, count in own.most_common(top)],
    )


def _parse_frame(frame: str) -> tuple[str, str]:
    match = _FRAME.match(frame)
    if match is None:
        return frame, ""
    return match["name"], match["file"]


def _label(frame: tuple[str, str]) -> str:
    name, file = frame
    return f"{name} ({file})" if file else name


def _short(file: str) -> str:
    """Shorten a source path to its package-relative part."""
    for marker in ("site-packages/", f"{REPO_ROOT}/", "/lib/python3.11/"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


def _thread_role(name: str) -> str:
    if name.startswith("asyncio_"):
        return "asyncio.to_thread pool (blocks, timer)"
    if name == "MainThread":
        return "main thread (Faust event loop, agent)"
    if name.startswith("Thread-"):
        return "Faust consumer thread (aiokafka)"
    return name


def _step(frames: list[tuple[str, str]], waiting: bool) -> str:
    for name, file in reversed(frames):
        for function, suffix, step in STEPS:
            if name == function and file.endswith(suffix):
                return step
    return "idle (waiting)" if waiting else "other"


@dataclass
class StageTimes:
    """Seconds per step of a block, summed over the timed blocks."""

    events: int
    blocks: int
    seconds: dict[str, float]
    """Wall-clock seconds per step."""
    cpu: dict[str, float]
    """CPU seconds of this process per step."""
    top_functions: list[tuple[str, int, float, float]]
    """cProfile's top functions: (function, calls, own s, cumulative s)."""
    profiled_events: int


# (label, parent label): the steps of one block as nested in the code.
STAGE_TREE = [
    ("block", None),
    ("Pipeline.process", "block"),
    ("parse_prediction", "Pipeline.process"),
    ("check_block", "Pipeline.process"),
    ("score_block", "Pipeline.process"),
    ("explain_block", "Pipeline.process"),
    ("Batcher.assign", "Pipeline.process"),
    ("_add_batches", "Pipeline.process"),
    ("drift_block", "_add_batches"),
    ("_add_events", "Pipeline.process"),
    ("_add_feature_checks", "Pipeline.process"),
    ("_add_metric_checks", "Pipeline.process"),
    ("_add_scored_and_alerts", "Pipeline.process"),
    ("_send", "block"),
    ("_confirm_sent", "block"),
    ("ClickHouseSink.write", "block"),
    ("insert events", "ClickHouseSink.write"),
    ("insert batch_rows", "ClickHouseSink.write"),
    ("insert alerts", "ClickHouseSink.write"),
    ("insert metric_checks", "ClickHouseSink.write"),
    ("insert dead_letters", "ClickHouseSink.write"),
    ("Journal.append", "block"),
]


class _Timers:
    """Wall-clock and process CPU seconds per label.

    Process CPU time counts every thread of this process, which includes the
    embedded ClickHouse engine's threads and librdkafka's.
    """

    def __init__(self) -> None:
        self.seconds: defaultdict[str, float] = defaultdict(float)
        self.cpu: defaultdict[str, float] = defaultdict(float)
        self.enabled = False

    @contextmanager
    def timing(self, label: str) -> Iterator[None]:
        started, cpu_started = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.seconds[label] += time.perf_counter() - started
            self.cpu[label] += time.process_time() - cpu_started

    def wrap(self, function: Callable, label: Callable[..., str]) -> Callable:
        @functools.wraps(function)
        def timed(*args: Any, **kwargs: Any) -> Any:
            if not self.enabled:
                return function(*args, **kwargs)
            with self.timing(label(*args, **kwargs)):
                return function(*args, **kwargs)

        return timed


@contextmanager
def _timers_installed(timers: _Timers) -> Iterator[None]:
    """Wrap the steps of a block in timers; restore the originals on exit."""

    def fixed(name: str) -> Callable[..., str]:
        return lambda *_args, **_kwargs: name

    targets: list[tuple[Any, str, Callable[..., str]]] = [
        (Pipeline, "process", fixed("Pipeline.process")),
        (Pipeline, "_add_batches", fixed("_add_batches")),
        (pipeline_module, "parse_prediction", fixed("parse_prediction")),
        (pipeline_module, "_add_events", fixed("_add_events")),
        (pipeline_module, "_add_feature_checks", fixed("_add_feature_checks")),
        (pipeline_module, "_add_metric_checks", fixed("_add_metric_checks")),
        (pipeline_module, "_add_scored_and_alerts", fixed("_add_scored_and_alerts")),
        (ModelVersion, "check_block", fixed("check_block")),
        (ModelVersion, "score_block", fixed("score_block")),
        (ModelVersion, "explain_block", fixed("explain_block")),
        (ModelVersion, "drift_block", fixed("drift_block")),
        (Batcher, "assign", fixed("Batcher.assign")),
        (BlockProcessor, "_send", fixed("_send")),
        (BlockProcessor, "_confirm_sent", fixed("_confirm_sent")),
        (ClickHouseSink, "write", fixed("ClickHouseSink.write")),
        (Journal, "append", fixed("Journal.append")),
        (Storage, "insert_block", lambda _self, table, *_a, **_k: f"insert {table}"),
        (Storage, "insert_arrow", lambda _self, table, *_a, **_k: f"insert {table}"),
    ]
    originals = [(owner, name, getattr(owner, name)) for owner, name, _ in targets]
    try:
        for owner, name, label in targets:
            setattr(owner, name, timers.wrap(getattr(owner, name), label))
        yield
    finally:
        for owner, name, original in originals:
            setattr(owner, name, original)


def time_stages(
    stage: Stage,
    model_version: ModelVersion,
    events: AdultEvents,
    count: int,
    profiled: int,
) -> StageTimes:
    """Time each step over ``count`` events, then cProfile ``profiled`` more.

    The garbage collector is set as in a worker process, which changes the
    CPU per event by a third or more.
    """
    previous = gc.get_threshold()
    gc.set_threshold(GC_FIRST_THRESHOLD, *previous[1:])
    try:
        return _time_stages(stage, model_version, events, count, profiled)
    finally:
        gc.set_threshold(*previous)


def _time_stages(
    stage: Stage,
    model_version: ModelVersion,
    events: AdultEvents,
    count: int,
    profiled: int,
) -> StageTimes:
    stage.register(model_version)
    settings = stage.settings()
    processor = BlockProcessor(settings)
    processor.open()
    blocks = _blocks(stage.topic, events, settings.block_size)
    timers = _Timers()
    try:
        with _timers_installed(timers):
            # The first blocks recover the partition and load the model.
            for _ in range(2):
                processor.process(next(blocks))
            timers.enabled = True
            timed_events = _run_blocks(processor, blocks, count, timers)
            timers.enabled = False
        top, profiled_events = _profile_blocks(processor, blocks, profiled)
    finally:
        processor.close()
    return StageTimes(
        events=timed_events,
        blocks=-(-timed_events // settings.block_size),
        seconds=dict(timers.seconds),
        cpu=dict(timers.cpu),
        top_functions=top,
        profiled_events=profiled_events,
    )


def _blocks(topic: str, events: AdultEvents, size: int) -> Iterator[list[RawMessage]]:
    offset = 0
    while True:
        now = datetime.now(UTC)
        block = [
            RawMessage(topic, 0, number, b"census", events.event(number), now)
            for number in range(offset, offset + size)
        ]
        offset += size
        yield block


def _run_blocks(
    processor: BlockProcessor,
    blocks: Iterator[list[RawMessage]],
    count: int,
    timers: _Timers,
) -> int:
    done = 0
    while done < count:
        block = next(blocks)
        with timers.timing("block"):
            processor.process(block)
        done += len(block)
    return done


def _profile_blocks(
    processor: BlockProcessor, blocks: Iterator[list[RawMessage]], count: int
) -> tuple[list[tuple[str, int, float, float]], int]:
    if count == 0:
        return [], 0
    profiler = cProfile.Profile()
    done = 0
    while done < count:
        block = next(blocks)
        profiler.enable()
        processor.process(block)
        profiler.disable()
        done += len(block)
    stats = pstats.Stats(profiler, stream=io.StringIO())
    rows = []
    for (file, line, name), (_cc, calls, own, cumulative, _callers) in sorted(
        stats.stats.items(), key=lambda item: -item[1][2]
    )[:10]:
        rows.append((f"{name} ({_short(file)}:{line})", calls, own, cumulative))
    return rows, done
