"""The demo on the UCI Adult data, run by ``make demo``.

It does what a user would: trains a scikit-learn classifier on the Adult
training file and registers oddwatch version 1 from the same file
(``oddwatch train``), starts ``oddwatch worker`` in a child process, replays
the Adult test file with the classifier's prediction in every event, mixed
with a few hundred broken events (``oddwatch replay``), and prints what
ClickHouse then holds. The demo keeps its state in ``<home>/demo``, which it
clears first, and uses topics of its own, so every run starts from nothing.
"""

import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from streams.lag import wait_until_consumed
from streams.replay import event_from_row
from streams.settings import Settings
from streams.storage import Storage

__all__ = ["ADULT_COLUMNS", "broken_events", "read_adult", "run_demo"]

log = logging.getLogger(__name__)

ADULT_COLUMNS = [
    "age", "workclass", "fnlwgt", "education", "education-num", "marital-status",
    "occupation", "relationship", "race", "sex", "capital-gain", "capital-loss",
    "hours-per-week", "native-country", "income",
]  # fmt: skip

BROKEN_EVENTS = 300

SHIFTED_ROWS = 3000
"""The last rows of the test file are made 20 years older, to show drift."""

DEMO_METRICS = [
    {"name": "long_hours", "feature": "hours-per-week", "operator": "<=",
     "threshold": 80},
    {"name": "net_capital", "scorer": "streams.demo:net_capital", "operator": ">=",
     "threshold": -4000},
]  # fmt: skip
"""Custom metrics of the demo: a rule on one feature and a Python callable."""

DEMO_QUERIES = [
    (
        "batches by health level",
        """
SELECT health, count() AS batches, sum(events) AS events, sum(outliers) AS outliers
FROM batches FINAL
GROUP BY health
ORDER BY indexOf(['green', 'yellow', 'orange', 'red'], health)
""",
    ),
    (
        "the batch table: the first five batches and every batch that is not green",
        """
SELECT b.batch_id AS batch_id, closed_by, events, outliers, late_events,
       round(pass_share, 4) AS pass_share, health, d.features AS drifted
FROM batches AS b FINAL
LEFT JOIN (
    SELECT batch_id, arrayStringConcat(groupArray(toString(feature)), ', ') AS features
    FROM batch_drift FINAL
    WHERE drifted = 1
    GROUP BY batch_id
) AS d ON b.batch_id = d.batch_id
WHERE health != 'green' OR b.batch_id IN (
    SELECT batch_id FROM batches FINAL ORDER BY batch_id LIMIT 5)
ORDER BY batch_id
""",
    ),
    (
        "values that failed their range check, per feature",
        """
SELECT feature,
       countIf(status = 'below_min') AS below_min,
       countIf(status = 'above_max') AS above_max,
       countIf(status = 'unseen_category') AS unseen_category,
       countIf(status = 'missing') AS missing,
       countIf(status = 'wrong_type') AS wrong_type,
       countIf(passed = 0) AS failed
FROM feature_checks FINAL
GROUP BY feature
ORDER BY failed DESC, feature
""",
    ),
    (
        "events over the outlier threshold",
        """
SELECT count() AS events, countIf(is_outlier = 1) AS outliers,
       round(100 * outliers / events, 2) AS outlier_percent,
       any(threshold) AS threshold
FROM events FINAL
""",
    ),
    (
        "custom metrics: events checked, passed, failed and errored",
        """
SELECT metric, count() AS checked, countIf(status = 'passed') AS passed,
       countIf(status = 'failed') AS failed, countIf(status = 'error') AS errors,
       any(if(status = 'error', error, NULL)) AS example_error
FROM metric_checks FINAL
GROUP BY metric
ORDER BY metric
""",
    ),
    (
        "drift: batches where a feature drifted from the training data",
        """
SELECT feature, method, countIf(drifted = 1) AS drifted_batches,
       countIf(tested = 1) AS tested_batches,
       round(min(adjusted_p_value), 6) AS smallest_adjusted_p
FROM batch_drift FINAL
GROUP BY feature, method
HAVING drifted_batches > 0
ORDER BY drifted_batches DESC
""",
    ),
    (
        "dead letters by reason",
        """
SELECT reason_code, count() AS events, any(reason) AS example
FROM dead_letters FINAL
GROUP BY reason_code
ORDER BY events DESC
""",
    ),
]

STRONGEST_ALERTS_SQL = """
SELECT request_id, round(score, 4) AS score, round(threshold, 4) AS threshold, reasons
FROM alerts FINAL
WHERE kind = 'outlier'
ORDER BY score DESC, request_id
LIMIT 10
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


def fit_classifier(train: pd.DataFrame) -> Any:
    """Fit the demo's model: one-hot categories and logistic regression on income."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    features = train.drop(columns=["income"])
    categorical = features.select_dtypes(exclude="number").columns.tolist()
    numeric = features.select_dtypes(include="number").columns.tolist()
    encoder = make_column_transformer(
        (OneHotEncoder(handle_unknown="ignore"), categorical),
        (StandardScaler(), numeric),
    )
    model = make_pipeline(encoder, LogisticRegression(max_iter=500))
    model.fit(
        features.fillna({name: "missing" for name in categorical}), train["income"]
    )
    return model


def net_capital(frame: pd.DataFrame) -> list[float]:
    """Return capital gain minus capital loss per event: the demo's callable metric.

    It raises for a block with a value that is not a number, and oddwatch
    then marks only the events it cannot compute as errored.
    """
    gain = frame["capital-gain"].astype(float)
    loss = frame["capital-loss"].astype(float)
    return (gain - loss).tolist()


def broken_events(rows: list[dict], count: int, seed: int = 0) -> list[bytes]:
    """Make ``count`` events of the kinds real producers get wrong.

    Half of them are valid JSON with values the training data never had
    (out of range, unseen categories, missing or extra features, wrong
    types), which the worker scores and flags; the rest cannot be accepted
    (malformed JSON, no request id, an unregistered version) and go to the
    dead-letter topic.
    """
    generator = random.Random(seed)
    damages = [
        ("age", 150), ("age", -3), ("hours-per-week", 168), ("capital-gain", 10**7),
        ("workclass", "Space-agency"), ("native-country", "Atlantis"),
        ("education", "Hogwarts"), ("age", "forty"), ("hours-per-week", True),
        ("fnlwgt", [1, 2]),
    ]  # fmt: skip
    events = []
    for number in range(count):
        row = dict(generator.choice(rows))
        request_id = f"broken-{number}"
        kind = number % 6
        if kind in (0, 1, 2):
            feature, value = damages[generator.randrange(len(damages))]
            row[feature] = value
            if kind == 1:
                row.pop(generator.choice(list(row)), None)
            if kind == 2:
                row["favourite-colour"] = "blue"
            event = event_from_row(
                row, model="census", version=1, request_id=request_id
            )
            events.append(orjson.dumps(event))
        elif kind == 3:
            event = event_from_row(
                row, model="census", version=1, request_id=request_id
            )
            events.append(orjson.dumps(event)[: generator.randrange(10, 60)])
        elif kind == 4:
            event = event_from_row(row, model="census", version=1, request_id="")
            events.append(orjson.dumps(event))
        else:
            event = event_from_row(
                row, model="census", version=7, request_id=request_id
            )
            events.append(orjson.dumps(event))
    return events


def run_demo(settings: Settings, data_dir: Path) -> None:
    """Run the demo end to end and print the results."""
    work = settings.home / "demo"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True, exist_ok=True)
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
    train_csv, events_file = work / "adult-train.csv", work / "events.jsonl"

    _step("train a classifier, and oddwatch census version 1, on adult.data")
    metrics_file = work / "metrics.json"
    metrics_file.write_bytes(orjson.dumps(DEMO_METRICS, option=orjson.OPT_INDENT_2))
    train = read_adult(data_dir / "adult.data.gz")
    test = read_adult(data_dir / "adult.test.gz")
    train.to_csv(train_csv, index=False)
    started = time.monotonic()
    classifier = fit_classifier(train)
    accuracy = _write_events(classifier, test, events_file)
    print(f"  classifier accuracy on adult.test: {accuracy:.3f}")
    quiet = {**env, "ODDWATCH_LOG_LEVEL": "warning"}
    subprocess.run(
        [*oddwatch, "train", "--model", "census", "--version", "1",
         "--data", str(train_csv), "--target", "income",
         "--metrics", str(metrics_file)],
        env=quiet, check=True,
    )  # fmt: skip
    print(f"  took {time.monotonic() - started:.1f} s")

    _step("start a worker")
    worker_log = (work / "worker.log").open("w")
    worker = subprocess.Popen(
        [*oddwatch, "worker"],
        env=env,
        stdout=worker_log,
        stderr=subprocess.STDOUT,
        preexec_fn=_stop_with_parent,
    )
    try:
        _step(
            f"replay adult.test ({len(test):,} rows) with {BROKEN_EVENTS} broken "
            f"events mixed in; the last {SHIFTED_ROWS:,} rows are 20 years older"
        )
        started = time.monotonic()
        subprocess.run(
            [*oddwatch, "replay", "--data", str(events_file)], env=quiet, check=True
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
    report = work / "report.html"
    with Storage.connect(env["ODDWATCH_CLICKHOUSE"]) as storage:
        for title, query in DEMO_QUERIES:
            _print_query(storage, title, query)
        _print_alerts(storage)
        from streams.report import write_report

        write_report(storage, report, model="census", version=1)
    print(f"\nreport: {report} (open it in a browser; it needs no server)")
    print(f"worker log: {work / 'worker.log'}")
    print(
        f"query it yourself: ODDWATCH_CLICKHOUSE=chdb://{work / 'clickhouse'} "
        ".venv/bin/oddwatch sql 'SELECT * FROM batches LIMIT 5'"
    )


def _write_events(classifier: Any, test: pd.DataFrame, path: Path) -> float:
    """Write the test rows as events with predictions, broken ones mixed in."""
    features = test.drop(columns=["income"])
    categorical = features.select_dtypes(exclude="number").columns.tolist()
    filled = features.fillna({name: "missing" for name in categorical})
    labels = classifier.predict(filled)
    scores = classifier.predict_proba(filled)[:, 1]
    accuracy = float((labels == test["income"].to_numpy()).mean())

    rows = features.to_dict(orient="records")
    for row in rows[-SHIFTED_ROWS:]:
        row["age"] = min(row["age"] + 20, 90)
    events = []
    for number, row in enumerate(rows):
        event = event_from_row(
            {**row, "income": labels[number], "score": round(float(scores[number]), 4)},
            model="census",
            version=1,
            request_id=f"adult-test-{number}",
            prediction_columns=["income", "score"],
        )
        events.append(orjson.dumps(event))
    generator = random.Random(1)
    for broken in broken_events(rows, BROKEN_EVENTS):
        events.insert(generator.randrange(len(events) + 1), broken)
    path.write_bytes(b"\n".join(events) + b"\n")
    return accuracy


def _print_query(storage: Storage, title: str, query: str) -> None:
    print(f"\n-- {title}\n{query.strip()}\n")
    frame = storage.query_frame(query)
    with pd.option_context("display.max_colwidth", 110, "display.width", 200):
        print(frame.to_string(index=False) if len(frame) else "(no rows)")


def _print_alerts(storage: Storage) -> None:
    print(f"\n-- the ten strongest outlier alerts\n{STRONGEST_ALERTS_SQL.strip()}\n")
    for row in storage.query_frame(STRONGEST_ALERTS_SQL).itertuples(index=False):
        print(f"{row.request_id}: score {row.score} > threshold {row.threshold}")
        for reason in orjson.loads(row.reasons):
            if reason["check"] == "auto_od" and not reason["feature"]:
                continue
            share = reason.get("contribution")
            weight = f" ({share:.0%} of the score)" if share is not None else ""
            print(
                f"    {reason['check']} {reason['feature']} {reason['status']}: "
                f"{reason['value']!r}{weight}, expected {reason['expected']}"
            )


def _stop_with_parent() -> None:
    """Have the kernel stop the worker if the demo process dies (Linux only)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(
            1, signal.SIGTERM
        )  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


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
