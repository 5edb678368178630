"""Custom metrics, outlier explanations and batch drift through a real worker.

Each scenario runs one worker on a known stream, stops it, and reads what it
stored in ClickHouse and published on Kafka. The tests below each scenario
check one property each.
"""

import json
import math
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import orjson
import pandas as pd
import pytest
from scipy.stats import false_discovery_control

from detectors import train_model
from detectors.profile import Profile
from schemas import MetricConfig
from streams.pipeline import DRIFT_ALPHA
from streams.storage import Storage
from tests.integration.support_worker import (
    DAY_WINDOW,
    drain,
    make_worker,
    prediction,
    read_topic,
    register,
    run_cli,
    send,
    today_at,
)

pytestmark = pytest.mark.integration


# Custom metrics ----------------------------------------------------------------

GAUGES = "gauges"
RULE = MetricConfig(name="x_at_most_8", feature="x", operator="<=", threshold=8.0)
RATIO = MetricConfig(
    name="ratio_below_1",
    scorer="tests.integration.support_metrics:ratio",
    operator="<",
    threshold=1.0,
)
METRIC_EVENTS = 60
ZERO_Y_EVENTS = (7, 23, 41)
MISSING_X_EVENT = 50


def _gauges_frame(rows: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "x": rng.uniform(0, 10, rows),
            # Whole numbers from 0 to 20, so y = 0 is within the training range.
            "y": rng.integers(0, 21, rows),
            "color": rng.choice(["red", "green", "blue"], rows),
        }
    )


def _gauges_features() -> list[dict]:
    """Return the events' features: x over 8 in some, y = 0 or x missing in a few."""
    rng = np.random.default_rng(6)
    features = []
    for number in range(METRIC_EVENTS):
        row = {
            "x": round(float(rng.uniform(0, 10)), 3),
            "y": int(rng.integers(1, 21)),
            "color": str(rng.choice(["red", "green", "blue"])),
        }
        if number in ZERO_Y_EVENTS:
            row["y"] = 0
        if number == MISSING_X_EVENT:
            del row["x"]
        features.append(row)
    return features


def _expected_metrics(features: dict) -> dict[str, tuple[float | None, str]]:
    """Return (value, status) of each metric for one event's features."""
    x, y = features.get("x"), features["y"]
    if x is None:
        return {RULE.name: (None, "error"), RATIO.name: (None, "error")}
    rule = (x, "passed" if x <= 8 else "failed")
    if y == 0:
        return {RULE.name: rule, RATIO.name: (None, "error")}
    ratio = x / y
    return {RULE.name: rule, RATIO.name: (ratio, "passed" if ratio < 1 else "failed")}


@dataclass
class MetricsRun:
    """The events sent, and what the worker stored, published and scored offline."""

    features: dict[str, dict]
    exit_code: int
    log: str
    events: pd.DataFrame
    feature_checks: pd.DataFrame
    metric_checks: pd.DataFrame
    batch_checks: pd.DataFrame
    metric_counts: pd.DataFrame
    dead_letters: int
    scored: list[dict]
    offline: pd.DataFrame


@pytest.fixture(scope="module")
def metrics_run(tmp_path_factory, kafka_servers) -> MetricsRun:
    """Train with the rule metric, add the callable with ``oddwatch metrics set``."""
    directory = tmp_path_factory.mktemp("metrics")
    store = directory / "store"
    model_version = train_model(
        _gauges_frame(), model=GAUGES, version=1, metrics=[RULE]
    )
    model_version.save(store)
    worker = make_worker(
        directory, kafka_servers, store, BATCH_SIZE="20", BATCH_WINDOW=DAY_WINDOW
    )
    register(worker, model_version)
    metrics_file = directory / "metrics.json"
    metrics_file.write_text(
        json.dumps(
            [
                {"name": RULE.name, "feature": "x", "operator": "<=", "threshold": 8},
                {"name": RATIO.name, "scorer": RATIO.scorer, "operator": "<",
                 "threshold": 1},
            ]
        )
    )  # fmt: skip
    run_cli(
        worker, "metrics", "set", "--model", GAUGES, "--version", "1",
        "--file", str(metrics_file),
    )  # fmt: skip

    features = _gauges_features()
    values = [
        prediction(
            GAUGES,
            1,
            f"g{number:03d}",
            row,
            today_at(timedelta(hours=1, seconds=number)),
        )
        for number, row in enumerate(features)
    ]
    worker.start()
    try:
        send(worker, kafka_servers, GAUGES.encode(), values)
        drain(worker, kafka_servers)
    finally:
        exit_code = worker.stop()

    with Storage.connect(worker.clickhouse) as storage:
        events = storage.query_frame(
            "SELECT request_id, batch_id, score, threshold FROM events"
        )
        feature_checks = storage.query_frame(
            "SELECT request_id, feature, status FROM feature_checks"
        )
        metric_checks = storage.query_frame(
            "SELECT request_id, batch_id, metric, value, threshold, operator, status, "
            "error FROM metric_checks"
        )
        batch_checks = storage.query_frame(
            "SELECT batch_id, check, checked, passed FROM batch_checks "
            "WHERE feature = '' AND check != 'auto_od'"
        )
        metric_counts = storage.query_frame(
            "SELECT batch_id, metric AS check, count() AS checked, "
            "countIf(status = 'passed') AS passed FROM metric_checks "
            "GROUP BY batch_id, metric"
        )
        dead_letters = storage.query_rows("SELECT count() FROM dead_letters")[0][0]
    scored = [
        orjson.loads(value)
        for value in read_topic(kafka_servers, worker.topic("scored"), METRIC_EVENTS)
    ]

    # The same rows scored offline, from a file, as a user would.
    table = directory / "rows.csv"
    pd.DataFrame(features).to_csv(table, index=False)
    scored_file = directory / "scored.csv"
    run_cli(
        worker, "score", "--model", GAUGES, "--version", "1", "--data", str(table),
        "--out", str(scored_file),
    )  # fmt: skip
    return MetricsRun(
        features={f"g{number:03d}": row for number, row in enumerate(features)},
        exit_code=exit_code,
        log=worker.log(),
        events=events,
        feature_checks=feature_checks,
        metric_checks=metric_checks,
        batch_checks=batch_checks,
        metric_counts=metric_counts,
        dead_letters=dead_letters,
        scored=scored,
        offline=pd.read_csv(scored_file),
    )


def test_metric_checks_value_and_status(metrics_run):
    run = metrics_run
    rows = {(r.request_id, r.metric): r for r in run.metric_checks.itertuples()}

    assert len(rows) == 2 * METRIC_EVENTS
    for request_id, features in run.features.items():
        for metric, (value, status) in _expected_metrics(features).items():
            row = rows[(request_id, metric)]
            assert row.status == status, (request_id, metric, row)
            if value is None:
                assert row.value is None or math.isnan(row.value), (request_id, row)
                assert row.error, (request_id, metric)
            else:
                assert row.value == pytest.approx(value), (request_id, metric)
                assert row.error == "", (request_id, metric)
    assert {(r.metric, r.operator, r.threshold) for r in rows.values()} == {
        (RULE.name, "<=", 8.0),
        (RATIO.name, "<", 1.0),
    }


def test_metric_statuses_cover_each_outcome(metrics_run):
    statuses = metrics_run.metric_checks.groupby("metric")["status"].unique()

    assert set(statuses[RULE.name]) == {"passed", "failed", "error"}
    assert set(statuses[RATIO.name]) == {"passed", "failed", "error"}


def test_metric_error_names_the_exception(metrics_run):
    checks = metrics_run.metric_checks
    ratio_errors = checks[
        (checks["metric"] == RATIO.name) & (checks["status"] == "error")
    ]
    by_request = dict(
        zip(ratio_errors["request_id"], ratio_errors["error"], strict=True)
    )

    assert sorted(by_request) == sorted(
        [f"g{n:03d}" for n in ZERO_Y_EVENTS] + [f"g{MISSING_X_EVENT:03d}"]
    )
    for number in ZERO_Y_EVENTS:
        assert "ZeroDivisionError" in by_request[f"g{number:03d}"]
    assert "TypeError" in by_request[f"g{MISSING_X_EVENT:03d}"]


def test_errored_events_are_stored_and_scored(metrics_run):
    run = metrics_run
    statuses = {
        (r.request_id, r.feature): r.status for r in run.feature_checks.itertuples()
    }

    assert run.exit_code == 0, run.log
    assert run.dead_letters == 0
    assert sorted(run.events["request_id"]) == sorted(run.features)
    assert np.isfinite(run.events["score"]).all()
    assert statuses[(f"g{MISSING_X_EVENT:03d}", "x")] == "missing"
    for number in ZERO_Y_EVENTS:
        assert statuses[(f"g{number:03d}", "y")] == "ok"


def test_batch_checks_match_metric_sql(metrics_run):
    run = metrics_run
    stream = run.batch_checks.set_index(["batch_id", "check"]).sort_index()
    sql = run.metric_counts.set_index(["batch_id", "check"]).sort_index()

    # 60 events make three batches of 20, each with both metrics as checks.
    assert len(stream) == 6, stream
    assert stream.index.equals(sql.index)
    assert (stream["checked"] == 20).all()
    assert (stream["checked"] == sql["checked"]).all()
    assert (stream["passed"] == sql["passed"]).all()


def test_scored_events_carry_metric_results(metrics_run):
    run = metrics_run
    by_request = {event["request_id"]: event for event in run.scored}

    assert sorted(by_request) == sorted(run.features)
    for request_id, features in run.features.items():
        published = by_request[request_id]["metrics"]
        assert sorted(published) == sorted([RULE.name, RATIO.name]), request_id
        for metric, (value, status) in _expected_metrics(features).items():
            result = published[metric]
            assert result["passed"] == (status == "passed"), (request_id, metric)
            if value is None:
                assert result["value"] is None, (request_id, metric)
                assert result["error"], (request_id, metric)
            else:
                assert result["value"] == pytest.approx(value), (request_id, metric)
                assert result["error"] is None, (request_id, metric)


def test_offline_score_gives_same_metric_values(metrics_run):
    run = metrics_run
    offline = run.offline.assign(request_id=sorted(run.features))
    offline = offline.set_index("request_id")
    stored = run.metric_checks.set_index(["request_id", "metric"])

    for metric in (RULE.name, RATIO.name):
        for request_id in run.features:
            row = stored.loc[(request_id, metric)]
            value = offline.loc[request_id, f"metric_{metric}"]
            passed = offline.loc[request_id, f"metric_{metric}_passed"]
            error = offline.loc[request_id, f"metric_{metric}_error"]
            # The error texts may differ: a value missing from the event is
            # None for the scorer, but NaN when read from a CSV file.
            if row["status"] == "error":
                assert math.isnan(value), (request_id, metric, value)
                assert isinstance(error, str), (request_id, metric)
                assert error, (request_id, metric)
            else:
                assert value == pytest.approx(row["value"]), (request_id, metric)
            assert bool(passed) == (row["status"] == "passed"), (request_id, metric)


# Outlier explanations ----------------------------------------------------------

LAMPS = "lamps"
# At the default 1 % alert rate, each crafted event below scores under the
# threshold of this model, so a 10 % rate is used to make them outliers.
LAMPS_ALERT_RATE = 0.1

# Events anomalous in one feature each: request id, features, the feature.
CRAFTED = [
    ("far-x", {"x": 100.0, "y": 50.0, "color": "red"}, "x"),
    ("unseen-color", {"x": 5.0, "y": 50.0, "color": "purple"}, "color"),
    ("rare-color", {"x": 5.0, "y": 50.0, "color": "violet"}, "color"),
    ("unusual-y", {"x": 5.0, "y": 85.0, "color": "red"}, "y"),
]


def _lamps_frame(seed: int, rows: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    color = rng.choice(["red", "green", "blue"], rows, p=[0.6, 0.3, 0.1])
    return pd.DataFrame(
        {"x": rng.uniform(0, 10, rows), "y": rng.normal(50, 10, rows), "color": color}
    )


def _lamps_training_frame() -> pd.DataFrame:
    frame = _lamps_frame(3, 3000)
    # Six rows of 3000 make "violet" a category that is rare but seen.
    frame.loc[:5, "color"] = "violet"
    return frame


@dataclass
class ExplainRun:
    """The training profile, and the events and outlier alerts the worker stored."""

    profile: Profile
    exit_code: int
    log: str
    events: pd.DataFrame
    alerts: pd.DataFrame


@pytest.fixture(scope="module")
def explain_run(tmp_path_factory, kafka_servers) -> ExplainRun:
    """Send 40 normal events, the crafted ones, then 10 more normal ones."""
    directory = tmp_path_factory.mktemp("explain")
    store = directory / "store"
    model_version = train_model(
        _lamps_training_frame(),
        model=LAMPS,
        version=1,
        target_alert_rate=LAMPS_ALERT_RATE,
    )
    model_version.save(store)
    worker = make_worker(directory, kafka_servers, store, BATCH_WINDOW=DAY_WINDOW)
    register(worker, model_version)

    normal = _lamps_frame(4, 50).to_dict(orient="records")
    rows = [(f"n{number:03d}", row) for number, row in enumerate(normal)]
    rows[40:40] = [(request_id, features) for request_id, features, _ in CRAFTED]
    values = [
        prediction(
            LAMPS, 1, request_id, features, today_at(timedelta(hours=2, seconds=n))
        )
        for n, (request_id, features) in enumerate(rows)
    ]
    worker.start()
    try:
        send(worker, kafka_servers, LAMPS.encode(), values)
        drain(worker, kafka_servers)
    finally:
        exit_code = worker.stop()

    with Storage.connect(worker.clickhouse) as storage:
        events = storage.query_frame(
            "SELECT request_id, score, threshold, is_outlier FROM events"
        )
        alerts = storage.query_frame(
            "SELECT request_id, reasons FROM alerts WHERE kind = 'outlier'"
        )
    return ExplainRun(
        profile=model_version.profile,
        exit_code=exit_code,
        log=worker.log(),
        events=events.set_index("request_id"),
        alerts=alerts.set_index("request_id"),
    )


def _reasons(run: ExplainRun, request_id: str) -> list[dict]:
    event = run.events.loc[request_id]
    assert event["is_outlier"] == 1, (
        f"{request_id} scored {event['score']:.4g}, threshold {event['threshold']:.4g}"
    )
    assert request_id in run.alerts.index, f"no outlier alert for {request_id}"
    return orjson.loads(run.alerts.loc[request_id, "reasons"])


def test_crafted_events_are_outliers(explain_run):
    assert explain_run.exit_code == 0, explain_run.log
    for request_id, _, _ in CRAFTED:
        _reasons(explain_run, request_id)


def test_value_far_outside_range_is_first_reason(explain_run):
    profile = explain_run.profile["x"]
    reasons = _reasons(explain_run, "far-x")
    first = reasons[0]

    assert (first["check"], first["feature"], first["status"]) == (
        "range", "x", "above_max",
    )  # fmt: skip
    assert first["value"] == 100.0
    assert f"{profile.min:.6g}" in first["expected"]
    assert f"{profile.max:.6g}" in first["expected"]
    assert reasons[-1]["check"] == "auto_od"
    assert reasons[-1]["status"] == "outlier"


def test_unseen_category_is_first_reason(explain_run):
    first = _reasons(explain_run, "unseen-color")[0]

    assert (first["check"], first["feature"], first["status"]) == (
        "range", "color", "unseen_category",
    )  # fmt: skip
    assert first["value"] == "purple"
    assert "'red'" in first["expected"]


def test_rare_category_is_first_contribution(explain_run):
    reasons = _reasons(explain_run, "rare-color")
    first = reasons[0]

    # The value passes its range check, so only auto_od explains the score.
    assert all(reason["check"] != "range" for reason in reasons), reasons
    assert (first["check"], first["feature"], first["status"]) == (
        "auto_od", "color", "contributes",
    )  # fmt: skip
    assert first["value"] == "violet"
    assert first["contribution"] > 0.5
    assert "red" in first["expected"]


def test_unusual_value_in_range_is_first_contribution(explain_run):
    profile = explain_run.profile["y"]
    reasons = _reasons(explain_run, "unusual-y")
    first = reasons[0]

    assert all(reason["check"] != "range" for reason in reasons), reasons
    assert (first["check"], first["feature"], first["status"]) == (
        "auto_od", "y", "contributes",
    )  # fmt: skip
    assert first["value"] == 85.0
    assert first["contribution"] > 0.5
    assert f"{profile.min:.6g}" in first["expected"]
    assert f"{profile.max:.6g}" in first["expected"]


# Drift per batch ---------------------------------------------------------------

DIALS = "dials"
DRIFT_EVENTS = 1000
DRIFT_BATCH = 100
COLORS = ["red", "green", "blue"]


def _dials_frame(rng: np.random.Generator, rows: int, shifted: bool) -> pd.DataFrame:
    """Draw rows like training, or with y one deviation higher and blue most common."""
    return pd.DataFrame(
        {
            "x": rng.uniform(0, 10, rows),
            "y": rng.normal(60 if shifted else 50, 10, rows),
            "color": rng.choice(
                COLORS, rows, p=[0.2, 0.3, 0.5] if shifted else [0.5, 0.3, 0.2]
            ),
        }
    )


@dataclass
class DriftRun:
    """The events, batches, drift rows and batch alerts the worker stored."""

    exit_code: int
    log: str
    events: pd.DataFrame
    batches: pd.DataFrame
    drift: pd.DataFrame
    alerts: pd.DataFrame


@pytest.fixture(scope="module")
def drift_run(tmp_path_factory, kafka_servers) -> DriftRun:
    """Send 500 events drawn like training, then 500 shifted ones."""
    directory = tmp_path_factory.mktemp("drift")
    store = directory / "store"
    training = _dials_frame(np.random.default_rng(0), 3000, shifted=False)
    model_version = train_model(training, model=DIALS, version=1)
    model_version.save(store)
    worker = make_worker(
        directory,
        kafka_servers,
        store,
        BATCH_SIZE=str(DRIFT_BATCH),
        BATCH_WINDOW=DAY_WINDOW,
    )
    register(worker, model_version)

    rng = np.random.default_rng(21)
    half = DRIFT_EVENTS // 2
    stream = pd.concat(
        [_dials_frame(rng, half, False), _dials_frame(rng, half, True)],
        ignore_index=True,
    )
    values = [
        prediction(
            DIALS, 1, f"d{number:04d}", row,
            today_at(timedelta(hours=4, milliseconds=10 * number)),
        )
        for number, row in enumerate(stream.to_dict(orient="records"))
    ]  # fmt: skip
    worker.start()
    try:
        send(worker, kafka_servers, DIALS.encode(), values)
        drain(worker, kafka_servers)
    finally:
        exit_code = worker.stop()

    with Storage.connect(worker.clickhouse) as storage:
        events = storage.query_frame("SELECT request_id, batch_id FROM events")
        batches = storage.query_frame(
            "SELECT batch_id, events, closed_by, health FROM batches"
        )
        drift = storage.query_frame(
            "SELECT batch_id, feature, method, tested, values, p_value, "
            "adjusted_p_value, drifted FROM batch_drift"
        )
        alerts = storage.query_frame(
            "SELECT batch_id, reasons FROM alerts WHERE kind = 'unhealthy_batch'"
        )
    return DriftRun(exit_code, worker.log(), events, batches, drift, alerts)


def _halves(run: DriftRun) -> dict[str, str]:
    """Map each batch to 'first' or 'second', the half of the stream it holds."""
    number = run.events["request_id"].str[1:].astype(int)
    half = np.where(number < DRIFT_EVENTS // 2, "first", "second")
    halves = pd.Series(half).groupby(run.events["batch_id"]).unique()
    assert all(len(found) == 1 for found in halves), "a batch spans both halves"
    return {batch_id: found[0] for batch_id, found in halves.items()}


def test_every_closed_batch_has_drift_rows(drift_run):
    run = drift_run
    per_batch = run.drift.groupby("batch_id")["feature"].apply(sorted)

    assert run.exit_code == 0, run.log
    assert len(run.batches) == DRIFT_EVENTS // DRIFT_BATCH, run.batches
    assert (run.batches["events"] == DRIFT_BATCH).all()
    assert (run.batches["closed_by"] == "size").all()
    assert sorted(per_batch.index) == sorted(run.batches["batch_id"])
    assert all(features == ["color", "x", "y"] for features in per_batch)
    assert (run.drift["tested"] == 1).all()
    methods = dict(zip(run.drift["feature"], run.drift["method"], strict=False))
    assert methods == {"x": "ks", "y": "ks", "color": "chi_square"}


def test_shifted_features_drift_in_second_half(drift_run):
    run = drift_run
    halves = _halves(run)
    drift = run.drift.assign(half=run.drift["batch_id"].map(halves))
    drifted = drift.groupby(["feature", "half"])["drifted"].sum()
    batches = drift.groupby("half")["batch_id"].nunique()

    assert batches.to_dict() == {"first": 5, "second": 5}
    for feature in ("y", "color"):
        assert drifted[(feature, "second")] >= 4, drifted
        assert drifted[(feature, "first")] <= 1, drifted
    assert drifted["x"].sum() <= 1, drifted


def test_adjusted_p_values_correct_per_batch(drift_run):
    drift = drift_run.drift

    assert (drift["adjusted_p_value"] >= drift["p_value"]).all()
    assert (drift["adjusted_p_value"] > drift["p_value"]).any()
    assert (drift["drifted"] == (drift["adjusted_p_value"] <= DRIFT_ALPHA)).all()
    for batch_id, rows in drift.groupby("batch_id"):
        expected = false_discovery_control(rows["p_value"].to_numpy(), method="bh")
        np.testing.assert_allclose(
            rows["adjusted_p_value"].to_numpy(), expected, rtol=1e-9, err_msg=batch_id
        )


def test_drifted_batches_are_orange_or_red(drift_run):
    run = drift_run
    drifted = set(run.drift.loc[run.drift["drifted"] == 1, "batch_id"])
    health = dict(zip(run.batches["batch_id"], run.batches["health"], strict=True))

    assert drifted, "no batch drifted"
    for batch_id in drifted:
        assert health[batch_id] in ("orange", "red"), (batch_id, health[batch_id])


def test_drifted_batches_alert_with_drift_reasons(drift_run):
    run = drift_run
    alerts = dict(zip(run.alerts["batch_id"], run.alerts["reasons"], strict=True))

    for batch_id, rows in run.drift[run.drift["drifted"] == 1].groupby("batch_id"):
        assert batch_id in alerts, f"no unhealthy_batch alert for {batch_id}"
        reasons = [r for r in orjson.loads(alerts[batch_id]) if r["check"] == "drift"]
        named = {reason["feature"]: reason for reason in reasons}
        assert sorted(named) == sorted(rows["feature"]), batch_id
        for row in rows.itertuples():
            assert named[row.feature]["status"] == "drifted"
            assert named[row.feature]["value"] == pytest.approx(row.adjusted_p_value)
