"""End-to-end throughput, latency and memory of one ``oddwatch worker``.

Protocol, all on 127.0.0.1 with a broker of this run's own:

1. Train census version 1 on ``adult.data.gz``; every stage below registers
   it under a topic prefix, consumer group and ClickHouse directory of its own.
2. max: start one worker, wait until it has joined its group, produce
   ``--events`` events from the rows of ``adult.test.gz`` as fast as the
   producer goes, and wait until the group's lag is 0. The worker commits a
   block only after its rows are stored, so lag 0 means every event is
   scored, published and stored.
3. ceilings: read the same topic from the start with a group-less aiokafka
   consumer and a group-less confluent-kafka consumer, both decoding every
   event with orjson, and with a Faust agent that only takes blocks.
4. paced: a fresh worker, with the producer paced at ``--rate`` (default
   half the max stage's rate) for ``--paced-seconds``.
5. profile: a fresh worker sampled by py-spy while it drains
   ``--profile-events``, then a BlockProcessor in this process timed step by
   step on ``--stage-events`` and cProfiled on half as many more.
6. long: a fresh worker on ``--long-events``, to see whether its RSS grows.

Latency is the time from an event's Kafka timestamp (set by the producer
when it sent the event) to the ``sink_journal`` row that recorded its block
as stored. Throughput is events over the time from the first event produced
to lag 0. CPU time and RSS are read from /proc with psutil every 0.5 s; the
peak RSS is the kernel's high-water mark (VmHWM).

Run from the repository root::

    python -m benchmarks.throughput
    python -m benchmarks.throughput --events 100000 --long-events 0
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from benchmarks.throughput.ceilings import (
    ReadRate,
    read_with_aiokafka,
    read_with_confluent,
    read_with_take_events,
)
from benchmarks.throughput.harness import (
    REPO_ROOT,
    SLOWEST_RATE,
    AdultEvents,
    Broker,
    Produced,
    Sample,
    Sampler,
    Stage,
    Stored,
    WorkerProcess,
    end_offset,
    produce,
    read_stored,
    wait_until_stored,
)
from benchmarks.throughput.profiling import (
    PySpy,
    StackSummary,
    StageTimes,
    find_py_spy,
    summarise_stacks,
    time_stages,
)
from detectors import ModelVersion, train_model
from streams.demo import read_adult
from streams.lag import LagProbe
from streams.settings import Settings

log = logging.getLogger("benchmarks.throughput")

DATA_DIR = REPO_ROOT / "deploy" / "demo" / "data"
MIB = 1024 * 1024
# Faust reads these settings from the environment, which the workers and the
# take_events reader inherit, so a run can try them without code changes.
FAUST_VARIABLES = (
    "CONSUMER_MAX_FETCH_SIZE",
    "BROKER_MAX_POLL_RECORDS",
    "STREAM_BUFFER_MAXSIZE",
)
_INSERT_LINE = re.compile(r"wrote (\d+) rows to (\w+) in ([\d.]+) s")


@dataclass
class WorkerRun:
    """One stage: what was produced, stored and sampled while the worker ran."""

    name: str
    produced: Produced
    ready_seconds: float
    lag_zero_at: float
    stored: Stored
    begin: Sample
    end: Sample
    samples: list[Sample]
    peak_rss: int
    parent_cpu: float
    inserts: dict[str, tuple[int, float]]
    stacks: StackSummary | None = None

    @property
    def rate(self) -> float:
        """Events per second from the first event produced to lag 0."""
        return self.produced.events / (self.lag_zero_at - self.produced.started)

    @property
    def stored_rate(self) -> float:
        """Events per second from the first event produced to the last stored."""
        last = self.stored.journal[-1][0]
        return self.produced.events / (last - self.produced.started)

    @property
    def drain_rate(self) -> float | None:
        """Events per second stored after the producer had finished."""
        after = [row for row in self.stored.journal if row[0] >= self.produced.finished]
        if len(after) < 2:
            return None
        (first_at, first_offset), (last_at, last_offset) = after[0], after[-1]
        return (last_offset - first_offset) / (last_at - first_at)

    @property
    def worker_cpu(self) -> float:
        return self.end.worker_cpu - self.begin.worker_cpu

    @property
    def broker_cpu(self) -> float:
        return self.end.broker_cpu - self.begin.broker_cpu

    @property
    def wall(self) -> float:
        return self.end.at - self.begin.at

    @property
    def other_cpu(self) -> float:
        """CPU seconds of every process but the worker, the broker and this one."""
        machine = self.end.machine_busy - self.begin.machine_busy
        return machine - self.worker_cpu - self.broker_cpu - self.parent_cpu

    def loads(self) -> tuple[float, float]:
        """Return the mean and maximum 1-minute load average while it ran."""
        values = [s.load1 for s in self.samples if self.begin.at <= s.at <= self.end.at]
        values = values or [self.begin.load1, self.end.load1]
        return sum(values) / len(values), max(values)

    def rss_curve(self, points: int = 5) -> list[tuple[int, float, float]]:
        """Return (events stored, seconds, RSS in MiB) at evenly spaced samples."""
        samples = [s for s in self.samples if self.begin.at <= s.at <= self.end.at]
        if not samples:
            return []
        chosen = [samples[round(i * (len(samples) - 1) / (points - 1))]
                  for i in range(points)]  # fmt: skip
        return [
            (self.stored.stored_by(s.at), s.at - self.begin.at, s.rss / MIB)
            for s in chosen
        ]


def run_worker(
    stage: Stage,
    model_version: ModelVersion,
    events: AdultEvents,
    broker: Broker,
    count: int,
    rate: float | None = None,
    stacks_path: Path | None = None,
) -> WorkerRun:
    """Run one worker over ``count`` events and read back what it stored."""
    stage.register(model_version)
    worker = WorkerProcess(stage)
    probe = LagProbe(stage.servers, stage.group, stage.topic)
    sampler = spy = None
    try:
        ready = worker.wait_until_ready()
        sampler = Sampler(worker.pid, broker.pid(), interval=0.5)
        sampler.start()
        spy = PySpy(worker.pid, stacks_path) if stacks_path else None
        parent = psutil.Process()
        parent_begin = sum(parent.cpu_times()[:2])
        begin = sampler.sample()
        produced = produce(stage.servers, stage.topic, events, count, rate)
        lag_zero_at = wait_until_stored(
            probe, worker, timeout=120 + count / SLOWEST_RATE
        )
        end = sampler.sample()
        parent_cpu = sum(parent.cpu_times()[:2]) - parent_begin
        peak = worker.peak_rss()
    finally:
        try:
            if spy is not None:
                spy.stop()
            if sampler is not None:
                sampler.stop()
            probe.close()
        finally:
            worker.stop()
    stacks = summarise_stacks(stacks_path) if stacks_path else None
    return WorkerRun(
        name=stage.name,
        produced=produced,
        ready_seconds=ready,
        lag_zero_at=lag_zero_at,
        stored=read_stored(stage),
        begin=begin,
        end=end,
        samples=list(sampler.samples),
        peak_rss=peak,
        parent_cpu=parent_cpu,
        inserts=_insert_times(worker.log_path),
        stacks=stacks,
    )


def _insert_times(log_path: Path) -> dict[str, tuple[int, float]]:
    """Sum the rows and seconds of the worker's logged inserts, per table."""
    totals: dict[str, tuple[int, float]] = {}
    for match in _INSERT_LINE.finditer(log_path.read_text()):
        rows, table, seconds = int(match[1]), match[2], float(match[3])
        before = totals.get(table, (0, 0.0))
        totals[table] = (before[0] + rows, before[1] + seconds)
    return totals


def check_complete(run: WorkerRun, stage: Stage) -> list[str]:
    """Return what is missing from the stage's output; empty when complete."""
    problems = []
    expected = run.produced.events
    if run.stored.events != expected:
        problems.append(f"events table has {run.stored.events} rows, not {expected}")
    scored = end_offset(stage.servers, stage.prefix + "scored")
    if scored < expected:
        problems.append(f"scored topic has {scored} messages, fewer than {expected}")
    if run.stored.dead_letters:
        problems.append(f"{run.stored.dead_letters} events became dead letters")
    return problems


@dataclass
class Ceilings:
    aiokafka: ReadRate
    confluent: ReadRate
    take_events: ReadRate


def measure_ceilings(stage: Stage, count: int) -> Ceilings:
    """Read the max stage's topic with each reference reader in turn."""
    return Ceilings(
        aiokafka=read_with_aiokafka(stage.servers, stage.topic, count),
        confluent=read_with_confluent(stage.servers, stage.topic, count),
        take_events=read_with_take_events(
            stage.servers, stage.topic, count, stage.directory / "take-events"
        ),
    )


def train(store: Path) -> ModelVersion:
    """Train and save census version 1 on the Adult training file."""
    frame = read_adult(DATA_DIR / "adult.data.gz")
    model_version = train_model(frame, model="census", version=1, target=["income"])
    model_version.save(store, overwrite=True)
    return model_version


def machine() -> dict[str, object]:
    """Describe the machine the numbers were measured on."""
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    return {
        "nproc": os.cpu_count(),
        "cpu": model,
        "memory_gib": round(psutil.virtual_memory().total / 1024**3, 1),
        "python": platform.python_version(),
    }


def source_state() -> dict[str, object]:
    """Return the commit and the uncommitted files the workers ran from."""

    def git(*arguments: str) -> str:
        return subprocess.run(
            ["git", *arguments], cwd=REPO_ROOT, capture_output=True, text=True
        ).stdout.rstrip("\n")

    return {
        "commit": git("rev-parse", "HEAD"),
        "uncommitted": git(
            "status", "--short", "--", "streams", "schemas", "detectors"
        ).splitlines(),
    }


def uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


class Report:
    """Print results as they come and collect them for results.json."""

    def __init__(self) -> None:
        self.data: dict[str, object] = {
            "machine": machine(),
            "source": source_state(),
            "faust_environment": {
                name: os.environ[name] for name in FAUST_VARIABLES if name in os.environ
            },
            "uptime": [],
        }

    def note_load(self, when: str) -> None:
        line = uptime()
        self.data["uptime"].append({"when": when, "uptime": line})  # type: ignore[union-attr]
        print(f"[{when}] {line}", flush=True)

    def worker(self, run: WorkerRun, problems: list[str]) -> None:
        print(f"\n== {run.name}: {run.produced.events:,} events")
        _print_rates(run)
        _print_resources(run)
        if problems:
            print("  INCOMPLETE: " + "; ".join(problems))
        if run.stacks is not None:
            _print_stacks(run.stacks)
        self.data[run.name] = _worker_data(run, problems)
        sys_flush()

    def ceilings(self, ceilings: Ceilings, worker_rate: float) -> None:
        print("\n== ceilings: reading the max stage's topic")
        for name, read in dataclasses.asdict(ceilings).items():
            rate = read["messages"] / max(read["seconds"], 1e-9)
            per_message = read["cpu_seconds"] / max(read["messages"], 1) * 1e6
            print(
                f"  {name:<12} {rate:>10,.0f} messages/s "
                f"({read['messages']:,} in {read['seconds']:.1f} s, "
                f"{per_message:.0f} us CPU/message)"
            )
        ratio = worker_rate / ceilings.aiokafka.rate
        print(f"  worker / aiokafka     {ratio:.3f}")
        self.data["ceilings"] = {
            **{name: {"rate": getattr(ceilings, name).rate, **read}
               for name, read in dataclasses.asdict(ceilings).items()},
            "worker_over_aiokafka": ratio,
        }  # fmt: skip
        sys_flush()

    def stages(self, times: StageTimes) -> None:
        block = times.seconds.get("block", 0.0)
        print(
            f"\n== steps of a block, in this process ({times.events:,} events, "
            f"{times.blocks} blocks)"
        )
        print(
            f"  {'step':<34} {'wall s':>7} {'us/event':>9} {'share':>6} "
            f"{'CPU us/event':>13}"
        )
        for label, depth, seconds, cpu in _stage_rows(times):
            share = seconds / block if block else 0.0
            print(
                f"  {'  ' * depth + label:<34} {seconds:>7.2f} "
                f"{seconds / times.events * 1e6:>9.1f} {share:>6.1%} "
                f"{cpu / times.events * 1e6:>13.1f}"
            )
        print(f"\n  cProfile top 10 by own time ({times.profiled_events:,} events)")
        for name, calls, own, cumulative in times.top_functions:
            print(f"    {own:7.2f} s own {cumulative:7.2f} s cum {calls:>9,}  {name}")
        self.data["stages"] = dataclasses.asdict(times)
        sys_flush()


def _print_rates(run: WorkerRun) -> None:
    per_event = run.produced.sent_bytes / run.produced.events
    print(
        f"  producer              {run.produced.rate:>10,.0f} events/s "
        f"({per_event:.0f} B/event)"
    )
    print(f"  end to end (lag 0)    {run.rate:>10,.0f} events/s")
    print(f"  to last row stored    {run.stored_rate:>10,.0f} events/s")
    if run.drain_rate is not None:
        print(f"  after producer ended  {run.drain_rate:>10,.0f} events/s")

    latency = {name: value / 1000 for name, value in run.stored.latency_ms.items()}
    print(
        f"  latency p50 / p99 / max  {latency['p50']:.2f} / {latency['p99']:.2f} "
        f"/ {latency['max']:.2f} s"
    )
    print(
        f"  ready after {run.ready_seconds:.1f} s; rows: {run.stored.events:,} "
        f"events, {run.stored.feature_checks:,} feature checks"
    )


def _print_resources(run: WorkerRun) -> None:
    cores = run.worker_cpu / run.wall
    per_event = run.worker_cpu / run.produced.events * 1e6
    print(
        f"  worker CPU            {run.worker_cpu:.1f} s in {run.wall:.1f} s "
        f"({cores:.2f} cores, {per_event:.0f} us/event)"
    )
    print(
        f"  broker CPU            {run.broker_cpu:.1f} s; producer and probe "
        f"{run.parent_cpu:.1f} s; other processes {run.other_cpu:.1f} s"
    )
    mean_load, max_load = run.loads()
    print(f"  load average (1 min)  mean {mean_load:.2f}, max {max_load:.2f}")

    print(f"  worker RSS            peak {run.peak_rss / MIB:.0f} MiB (VmHWM)")
    for stored, seconds, rss in run.rss_curve():
        print(f"    {seconds:7.1f} s  {stored:>10,} events stored  {rss:7.0f} MiB")


def _print_stacks(stacks: StackSummary) -> None:
    print(f"  py-spy over {stacks.seconds:.1f} s: thread-seconds per step")
    role = None
    for thread_role, step, seconds in stacks.steps:
        if thread_role != role:
            role = thread_role
            print(f"    {role}")
        share = seconds / max(stacks.seconds, 1e-9)
        print(f"      {step:<34} {seconds:7.1f} s {share:6.1%} of wall")
    print("  top functions by own samples, waits left out")
    for name, seconds in stacks.own:
        print(f"    {seconds:7.1f} s  {name}")


def _stage_rows(times: StageTimes) -> list[tuple[str, int, float, float]]:
    """Order the timed steps as a tree, with the time no child accounts for."""
    from benchmarks.throughput.profiling import STAGE_TREE

    children: dict[str | None, list[str]] = {}
    for label, parent in STAGE_TREE:
        children.setdefault(parent, []).append(label)
    rows: list[tuple[str, int, float, float]] = []

    def visit(label: str, depth: int) -> None:
        seconds, cpu = times.seconds.get(label, 0.0), times.cpu.get(label, 0.0)
        rows.append((label, depth, seconds, cpu))
        kids = children.get(label, [])
        for kid in kids:
            visit(kid, depth + 1)
        if kids:
            rest = seconds - sum(times.seconds.get(kid, 0.0) for kid in kids)
            rest_cpu = cpu - sum(times.cpu.get(kid, 0.0) for kid in kids)
            rows.append(("(rest)", depth + 1, rest, rest_cpu))

    visit("block", 0)
    return rows


def _worker_data(run: WorkerRun, problems: list[str]) -> dict[str, object]:
    mean_load, max_load = run.loads()
    return {
        "events": run.produced.events,
        "producer_rate": run.produced.rate,
        "target_rate": None,
        "rate_end_to_end": run.rate,
        "rate_to_last_stored": run.stored_rate,
        "rate_after_producer": run.drain_rate,
        "latency_ms": run.stored.latency_ms,
        "worker_cpu_s": run.worker_cpu,
        "wall_s": run.wall,
        "broker_cpu_s": run.broker_cpu,
        "parent_cpu_s": run.parent_cpu,
        "other_cpu_s": run.other_cpu,
        "peak_rss_mib": run.peak_rss / MIB,
        "rss_curve": run.rss_curve(points=9),
        "load_mean": mean_load,
        "load_max": max_load,
        "ready_s": run.ready_seconds,
        "inserts": run.inserts,
        "stacks": dataclasses.asdict(run.stacks) if run.stacks else None,
        "problems": problems,
    }


def sys_flush() -> None:
    print(end="", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_size_arguments(parser)
    _add_run_arguments(parser)
    args = parser.parse_args(argv)
    _validate(parser, args)
    return args


def _add_size_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--events",
        type=int,
        default=500_000,
        help="events of the max stage (default 500,000)",
    )
    parser.add_argument(
        "--rate",
        type=float,
        default=None,
        help="events per second of the paced stage "
        "(default: half the max stage's end-to-end rate)",
    )
    parser.add_argument(
        "--paced-seconds",
        type=float,
        default=60.0,
        help="duration of the paced stage in seconds (default 60)",
    )
    parser.add_argument(
        "--long-events",
        type=int,
        default=1_000_000,
        help="events of the memory stage; 0 skips it",
    )
    parser.add_argument(
        "--profile-events",
        type=int,
        default=30_000,
        help="events drained under py-spy; 0 skips py-spy",
    )
    parser.add_argument(
        "--stage-events",
        type=int,
        default=20_000,
        help="events timed step by step in this process; 0 skips",
    )


def _add_run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--block-size",
        type=int,
        default=None,
        help="ODDWATCH_BLOCK_SIZE of the workers (default: the worker's own default)",
    )
    parser.add_argument(
        "--work-dir",
        type=Path,
        default=REPO_ROOT / ".oddwatch" / "throughput",
        help="where each run gets a directory for its broker, "
        "stores, logs and results.json",
    )
    parser.add_argument(
        "--stages-only",
        action="store_true",
        help="run only the in-process step timing (--stage-events events), "
        "skipping every worker stage",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the broker's data and the ClickHouse directories",
    )


def _validate(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    for name in ("events", "long_events", "profile_events", "stage_events"):
        if getattr(args, name) < 0:
            parser.error(f"--{name.replace('_', '-')} must be 0 or more")
    if args.events < 1000:
        parser.error(f"--events must be at least 1000, got {args.events}")
    if args.rate is not None and args.rate <= 0:
        parser.error(f"--rate must be more than 0, got {args.rate}")
    if args.stages_only and args.stage_events == 0:
        parser.error("--stages-only needs --stage-events above 0")
    if args.profile_events and not args.stages_only and find_py_spy() is None:
        parser.error(
            "py-spy is not installed; install it with `pip install py-spy` "
            "or pass --profile-events 0"
        )


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s"
    )
    run_dir = args.work_dir / (time.strftime("%Y%m%d-%H%M%S-") + uuid.uuid4().hex[:4])
    run_dir.mkdir(parents=True)
    broker = Broker(run_dir / "kafka")
    report = Report()
    report.data["arguments"] = {k: str(v) for k, v in vars(args).items()}
    # The workers inherit this process's environment, ODDWATCH_READER included.
    reader = os.environ.get("ODDWATCH_READER") or Settings().reader
    report.data["reader"] = reader
    print(f"run directory: {run_dir}\nworker reader: {reader}")
    report.note_load("start")
    broker.start()
    try:
        _run_stages(args, run_dir, broker, report)
    finally:
        report.note_load("end")
        broker.stop()
        (run_dir / "results.json").write_text(json.dumps(report.data, indent=2))
        print(f"\nresults: {run_dir / 'results.json'}")
        if not args.keep:
            _remove_bulk(run_dir)
    return 0


def _run_stages(
    args: argparse.Namespace, run_dir: Path, broker: Broker, report: Report
) -> None:
    store = run_dir / "models"
    model_version = train(store)
    events = AdultEvents(DATA_DIR / "adult.test.gz")

    def stage(name: str) -> Stage:
        return Stage(name, run_dir / name, broker.servers, store,
                     block_size=args.block_size)  # fmt: skip

    if args.stages_only:
        times = time_stages(stage("stages"), model_version, events,
                            args.stage_events, args.stage_events // 2)  # fmt: skip
        report.stages(times)
        return

    top = stage("max")
    run = run_worker(top, model_version, events, broker, args.events)
    report.worker(run, check_complete(run, top))
    report.note_load("after max")

    report.ceilings(measure_ceilings(top, args.events), run.rate)
    report.note_load("after ceilings")

    rate = args.rate or run.rate / 2
    paced = stage("paced")
    count = max(1000, int(rate * args.paced_seconds))
    paced_run = run_worker(paced, model_version, events, broker, count, rate=rate)
    report.worker(paced_run, check_complete(paced_run, paced))
    report.data["paced"]["target_rate"] = rate  # type: ignore[index]
    report.note_load("after paced")

    if args.profile_events:
        spied = stage("profile")
        spied.directory.mkdir(parents=True)
        spied_run = run_worker(spied, model_version, events, broker,
                               args.profile_events,
                               stacks_path=spied.directory / "py-spy.txt")  # fmt: skip
        report.worker(spied_run, check_complete(spied_run, spied))
        report.note_load("after profile")
    if args.stage_events:
        times = time_stages(stage("stages"), model_version, events,
                            args.stage_events, args.stage_events // 2)  # fmt: skip
        report.stages(times)
    if args.long_events:
        long = stage("long")
        long_run = run_worker(long, model_version, events, broker, args.long_events)
        report.worker(long_run, check_complete(long_run, long))
        report.note_load("after long")


def _remove_bulk(run_dir: Path) -> None:
    """Delete the broker's data and the ClickHouse directories, keep logs."""
    shutil.rmtree(run_dir / "kafka" / "data", ignore_errors=True)
    for directory in run_dir.glob("*/clickhouse"):
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
