"""The demo on the UCI Adult data: train, stream the test file, query ClickHouse.

It runs the same commands a user would: ``oddwatch train``, ``oddwatch
worker`` in a child process and ``oddwatch replay``, then prints what
ClickHouse stores. The demo keeps its own state in ``<home>/demo``, which it
clears first, so every run starts from nothing.
"""

import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pandas as pd

from streams.lag import wait_until_consumed
from streams.settings import Settings
from streams.storage import Storage

__all__ = ["ADULT_COLUMNS", "read_adult", "run_demo"]

log = logging.getLogger(__name__)

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

OUT_OF_RANGE_SQL = """
SELECT feature,
       countIf(status = 'below_min') AS below_min,
       countIf(status = 'above_max') AS above_max,
       countIf(status = 'unseen_category') AS unseen_category,
       countIf(status = 'missing') AS missing,
       countIf(status = 'wrong_type') AS wrong_type,
       countIf(status != 'ok') AS not_ok
FROM feature_checks
WHERE model = 'census' AND version = 1
GROUP BY feature
ORDER BY not_ok DESC, feature
"""

OUTLIER_SQL = """
SELECT count() AS events,
       countIf(is_outlier = 1) AS over_threshold,
       round(100 * over_threshold / events, 2) AS over_threshold_percent,
       any(threshold) AS threshold
FROM events
WHERE model = 'census' AND version = 1
"""


def read_adult(path: Path) -> pd.DataFrame:
    """Read an Adult file (``adult.data`` or ``adult.test``, gzipped or not).

    The files have no header, separate fields with ", " and mark missing
    values with "?". The test file starts with a line that is not data and
    ends its labels with a dot, which is removed here.
    """
    frame = pd.read_csv(
        path,
        header=None,
        names=ADULT_COLUMNS,
        sep=r",\s*",
        engine="python",
        na_values=["?"],
        comment="|",
    )
    frame = frame.dropna(how="all")
    frame["income"] = frame["income"].str.rstrip(".")
    return frame


def run_demo(settings: Settings, data_dir: Path) -> None:
    """Run the demo end to end and print the results."""
    work = settings.home / "demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    train_csv, test_csv = work / "adult-train.csv", work / "adult-test.csv"
    read_adult(data_dir / "adult.data.gz").to_csv(train_csv, index=False)
    read_adult(data_dir / "adult.test.gz").to_csv(test_csv, index=False)

    run_id = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "ODDWATCH_KAFKA": settings.kafka,
        "ODDWATCH_STORE": str(work / "models"),
        "ODDWATCH_CLICKHOUSE": f"chdb://{work / 'clickhouse'}",
        "ODDWATCH_HOME": str(work),
        "ODDWATCH_TOPIC_PREFIX": f"oddwatch-demo-{run_id}.",
        "ODDWATCH_GROUP": f"oddwatch-demo-{run_id}",
    }
    oddwatch = [sys.executable, "-m", "streams"]

    _step("train census version 1 on adult.data (32,561 rows)")
    started = time.monotonic()
    subprocess.run(
        [
            *oddwatch,
            "train",
            "--model",
            "census",
            "--version",
            "1",
            "--data",
            str(train_csv),
            "--target",
            "income",
        ],
        env=env,
        check=True,
    )
    print(f"  took {time.monotonic() - started:.1f} s")

    _step("start a worker")
    worker_log = (work / "worker.log").open("w")
    worker = subprocess.Popen(
        [*oddwatch, "worker"], env=env, stdout=worker_log, stderr=subprocess.STDOUT
    )
    try:
        _step("replay adult.test (16,281 rows) to Kafka")
        started = time.monotonic()
        subprocess.run(
            [
                *oddwatch,
                "replay",
                "--model",
                "census",
                "--version",
                "1",
                "--data",
                str(test_csv),
                "--exclude",
                "income",
            ],
            env=env,
            check=True,
        )
        topic = env["ODDWATCH_TOPIC_PREFIX"] + "predictions"
        waited = wait_until_consumed(
            settings.kafka, env["ODDWATCH_GROUP"], topic, timeout=600
        )
        print(
            f"  scored and stored in {time.monotonic() - started:.1f} s "
            f"(waited {waited:.1f} s after the last event was sent)"
        )
    finally:
        _stop(worker)
        worker_log.close()

    _step("read the results from ClickHouse")
    with Storage.connect(env["ODDWATCH_CLICKHOUSE"]) as storage:
        for title, query in [
            ("values out of the training range, per feature", OUT_OF_RANGE_SQL),
            ("events over the outlier threshold", OUTLIER_SQL),
        ]:
            print(f"\n-- {title}\n{query.strip()}\n")
            print(storage.query_frame(query).to_string(index=False))
    print(f"\nworker log: {work / 'worker.log'}")


def _stop(worker: subprocess.Popen) -> None:
    worker.send_signal(signal.SIGTERM)
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        log.warning("worker did not stop within 60 s of SIGTERM; killing it")
        worker.kill()
        worker.wait()


def _step(text: str) -> None:
    print(f"\n==> {text}", flush=True)
