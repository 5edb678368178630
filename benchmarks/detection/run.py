"""Benchmark ``auto_od`` against Isolation Forest and river's Half-Space Trees.

Protocol, per data set: shuffle the rows with a fixed seed, keep at most
``--max-rows`` of them, use the first half as unlabelled training data and
the second half as the stream, scored then learned in row order. The table
gives the ROC AUC on the stream, the share of the stream's inliers above
the threshold (oddwatch only) and the seconds each detector took to train
and score.

- oddwatch: ``train_model`` on the first half, ``score_block(learn=True)``
  on the stream.
- IsolationForest: scikit-learn, 100 trees, fitted on the first half and
  applied to the stream as a batch; mean AUC over five seeds.
- HalfSpaceTrees: river's defaults (10 trees, height 8, window 250) on
  features min-max scaled with the first half's range, learning the first
  half and then scoring and learning the stream one row at a time.

Run from the repository root::

    python -m benchmarks.detection
    python -m benchmarks.detection --rows-per-second
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd

REPO_ROOT = Path(__file__).resolve().parents[2]
if __package__ in (None, ""):
    sys.path.insert(0, str(REPO_ROOT))

from river.anomaly import HalfSpaceTrees  # noqa: E402
from sklearn.ensemble import IsolationForest  # noqa: E402
from sklearn.metrics import roc_auc_score  # noqa: E402

from detectors import (  # noqa: E402
    ForestScorer,
    HalfSpaceScorer,
    TailScorer,
    build_profile,
    check_block,
    read_table,
    train_model,
)

ADBENCH_SETS = ("cardio", "cover", "http", "mammography", "shuttle", "smtp", "thyroid")
DEFAULT_ADBENCH = REPO_ROOT.parent / "shared" / "datasets" / "adbench"
DEFAULT_ADULT = REPO_ROOT.parent / "shared" / "datasets" / "adult"
ADULT_COLUMNS = [
    "age",
    "workclass",
    "fnlwgt",
    "education",
    "education-num",
    "marital-status",
    "occupation",
    "relationship",
    "race",
    "sex",
    "capital-gain",
    "capital-loss",
    "hours-per-week",
    "native-country",
    "income",
]
SHUFFLE_SEED = 0
FOREST_SEEDS = (0, 1, 2, 3, 4)


@dataclasses.dataclass
class Split:
    """Training half and stream half of one shuffled data set."""

    name: str
    train: np.ndarray
    stream: np.ndarray
    labels: np.ndarray
    train_anomaly_share: float


@dataclasses.dataclass
class Result:
    """Stream AUC and seconds of one detector on one data set."""

    auc: float
    seconds: float
    alert_rate: float = float("nan")
    alert_rate_all: float = float("nan")
    auc_spread: float = float("nan")


def split_rows(
    name: str, features: np.ndarray, labels: np.ndarray, max_rows: int
) -> Split:
    """Shuffle with the fixed seed, cap the rows and cut in half."""
    order = np.random.default_rng(SHUFFLE_SEED).permutation(len(features))[:max_rows]
    features = features[order].astype(np.float64)
    labels = labels[order].astype(int)
    half = len(features) // 2
    return Split(
        name, features[:half], features[half:], labels[half:], labels[:half].mean()
    )


def run_oddwatch(split: Split) -> Result:
    columns = [f"x{index}" for index in range(split.train.shape[1])]
    started = time.perf_counter()
    mv = train_model(
        pd.DataFrame(split.train, columns=columns), model=split.name, version=1
    )
    scores = mv.score_block(pd.DataFrame(split.stream, columns=columns), learn=True)
    seconds = time.perf_counter() - started
    inliers = split.labels == 0
    alerts = scores > mv.threshold
    return Result(
        roc_auc_score(split.labels, scores),
        seconds,
        alert_rate=float(alerts[inliers].mean()),
        alert_rate_all=float(alerts.mean()),
    )


def run_forest(split: Split) -> Result:
    aucs = []
    started = time.perf_counter()
    for seed in FOREST_SEEDS:
        forest = IsolationForest(n_estimators=100, random_state=seed).fit(split.train)
        aucs.append(roc_auc_score(split.labels, -forest.score_samples(split.stream)))
    seconds = (time.perf_counter() - started) / len(FOREST_SEEDS)
    return Result(float(np.mean(aucs)), seconds, auc_spread=float(np.std(aucs)))


def run_halfspace(split: Split) -> Result:
    started = time.perf_counter()
    low = split.train.min(axis=0)
    width = split.train.max(axis=0) - low
    width[width == 0] = 1.0
    names = [f"x{index}" for index in range(split.train.shape[1])]
    model = HalfSpaceTrees(seed=0)
    for row in ((split.train - low) / width).tolist():
        model.learn_one(dict(zip(names, row, strict=True)))
    scores = []
    for row in ((split.stream - low) / width).tolist():
        x = dict(zip(names, row, strict=True))
        scores.append(model.score_one(x))
        model.learn_one(x)
    seconds = time.perf_counter() - started
    return Result(roc_auc_score(split.labels, scores), seconds)


def print_components(args: argparse.Namespace) -> int:
    """Print the stream AUC of each auto_od scorer alone, without learning."""
    scorers = {
        "tails": TailScorer,
        "forest": ForestScorer,
        "halfspace": HalfSpaceScorer,
    }
    print(f"{'set':<16} | " + " ".join(f"{name:>9}" for name in scorers))
    aucs: dict[str, list[float]] = {name: [] for name in scorers}
    for name in args.sets:
        split = load_adbench(args.adbench, name, args.max_rows)
        columns = [f"x{index}" for index in range(split.train.shape[1])]
        train = pd.DataFrame(split.train, columns=columns)
        profile = build_profile(train)
        stream = check_block(profile, pd.DataFrame(split.stream, columns=columns))
        row = []
        for scorer_name, scorer in scorers.items():
            scores = scorer(profile).fit(train).score_block(stream)
            aucs[scorer_name].append(roc_auc_score(split.labels, scores))
            row.append(f"{aucs[scorer_name][-1]:>9.3f}")
        print(f"{name:<16} | " + " ".join(row), flush=True)
    print(f"{'mean':<16} | " + " ".join(f"{np.mean(v):>9.3f}" for v in aucs.values()))
    return 0


def load_adbench(directory: Path, name: str, max_rows: int) -> Split:
    with np.load(directory / f"{name}.npz", allow_pickle=False) as data:
        return split_rows(name, data["X"], data["y"], max_rows)


def load_river_shuttle(max_rows: int) -> Split:
    from river.datasets import Shuttle

    rows = [(list(x.values()), y) for x, y in Shuttle()]
    features = np.array([row for row, _ in rows], dtype=np.float64)
    labels = np.array([int(label) for _, label in rows])
    return split_rows("shuttle (river)", features, labels, max_rows)


RUNNERS: dict[str, Callable[[Split], Result]] = {
    "oddwatch": run_oddwatch,
    "IsolationForest": run_forest,
    "HalfSpaceTrees": run_halfspace,
}


HEADER = (
    f"{'set':<16} {'train':>6} {'stream':>6} {'anom':>6} | {'oddwatch':>8} "
    f"{'alerts':>6} {'all':>6} {'s':>5} | {'IForest':>7} {'±':>5} {'s':>5} | "
    f"{'HST':>6} {'s':>5}"
)
LEGEND = """\
anom: anomaly share of the training half (never shown to the detectors)
oddwatch: stream ROC AUC; alerts: share of the stream's inliers above the
threshold; all: share of all stream rows above it; s: seconds to train
and score. IForest: mean ROC AUC over seeds 0-4, ± their standard
deviation, s per seed. HST: river HalfSpaceTrees with default settings."""


def print_table(args: argparse.Namespace) -> int:
    print(HEADER)
    print("-" * len(HEADER))
    oddwatch_aucs, forest_aucs = [], []
    for name in args.sets:
        try:
            split = load_adbench(args.adbench, name, args.max_rows)
        except OSError as error:
            print(f"{name:<16} not available: {error}")
            continue
        row = print_row(split)
        oddwatch_aucs.append(row["oddwatch"].auc)
        forest_aucs.append(row["IsolationForest"].auc)
    if oddwatch_aucs:
        gaps = np.subtract(oddwatch_aucs, forest_aucs)
        print("-" * len(HEADER))
        print(
            f"{'mean (ADBench)':<37} | {np.mean(oddwatch_aucs):>8.3f} {'':>20} | "
            f"{np.mean(forest_aucs):>7.3f}"
        )
        print(f"{'oddwatch - IForest, worst set':<37} | {gaps.min():>+8.3f}")
    if args.river_shuttle:
        try:
            split = load_river_shuttle(args.max_rows)
        except Exception as error:  # noqa: BLE001 - any loading failure is reported
            print(
                f"{'shuttle (river)':<16} not available: "
                f"{type(error).__name__}: {error}"
            )
        else:
            print_row(split)
    print()
    print(LEGEND)
    return 0


def print_row(split: Split) -> dict[str, Result]:
    results = {name: runner(split) for name, runner in RUNNERS.items()}
    mine, forest, halfspace = (results[name] for name in RUNNERS)
    print(
        f"{split.name:<16} {len(split.train):>6} {len(split.stream):>6} "
        f"{split.train_anomaly_share:>6.1%} | "
        f"{mine.auc:>8.3f} {mine.alert_rate:>6.2%} {mine.alert_rate_all:>6.2%} "
        f"{mine.seconds:>5.1f} | "
        f"{forest.auc:>7.3f} {forest.auc_spread:>5.3f} {forest.seconds:>5.1f} | "
        f"{halfspace.auc:>6.3f} {halfspace.seconds:>5.1f}",
        flush=True,
    )
    return results


def measure_rows_per_second(args: argparse.Namespace) -> int:
    """Time offline scoring, learning included, of the Adult test file on one core."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    train = read_table(args.adult / "adult.data.gz", names=ADULT_COLUMNS)
    test = read_table(args.adult / "adult.test.gz", names=ADULT_COLUMNS)
    mv = train_model(train, model="census", version=1, target=["income"])
    best = float("inf")
    for _ in range(args.repeats):
        state = mv.detector_state()
        started = time.perf_counter()
        out = mv.score_frame(test, learn=True)
        best = min(best, time.perf_counter() - started)
        mv.restore_detector_state(state)
    print(
        f"Adult test file: {len(test)} rows, {len(mv.profile.features)} features, "
        f"one core: {len(test) / best:,.0f} rows/s (best of {args.repeats}, "
        f"score_frame with learn=True), {out['is_outlier'].mean():.2%} outliers"
    )
    return 0


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.detection",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--adbench",
        type=Path,
        default=Path(os.environ.get("ODDWATCH_ADBENCH", DEFAULT_ADBENCH)),
        help="directory of the ADBench .npz files (default: $ODDWATCH_ADBENCH or "
        "../shared/datasets/adbench next to the repository)",
    )
    parser.add_argument(
        "--adult",
        type=Path,
        default=DEFAULT_ADULT,
        help="directory holding adult.data.gz and adult.test.gz",
    )
    parser.add_argument(
        "--sets",
        nargs="+",
        default=list(ADBENCH_SETS),
        help="ADBench sets to run (default: all seven)",
    )
    parser.add_argument(
        "--max-rows",
        type=int,
        default=60_000,
        help="rows kept after shuffling, before the split in half",
    )
    parser.add_argument(
        "--no-river-shuttle",
        dest="river_shuttle",
        action="store_false",
        help="skip the Shuttle set bundled with river",
    )
    parser.add_argument(
        "--rows-per-second",
        action="store_true",
        help="measure offline scoring speed on the Adult test file instead",
    )
    parser.add_argument(
        "--components",
        action="store_true",
        help="print the AUC of each auto_od scorer alone instead",
    )
    parser.add_argument(
        "--repeats",
        type=int,
        default=3,
        help="timed runs for --rows-per-second; the best is reported",
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.rows_per_second:
        return measure_rows_per_second(args)
    if args.components:
        return print_components(args)
    return print_table(args)


if __name__ == "__main__":
    raise SystemExit(main())
