"""Model lifecycle while a worker runs: register, retire, change the alert rate.

One worker runs the whole scenario, in three phases separated by waits until
it has stored everything sent:

A. version 1 is registered and gets 40 events;
B. version 2 is registered while the worker runs and gets 200 events;
C. ``oddwatch models retire`` retires version 1, and ``set_alert_rate``
   moves version 2 to a 20 % alert rate. Then version 1 gets 40 events and
   version 2 gets the same 200 feature rows as in phase B again.

The tests below check what the worker stored in each phase.
"""

import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import numpy as np
import orjson
import pandas as pd
import pytest

from detectors import ModelVersion, load_model, threshold_for_rate, train_model
from streams.lifecycle import set_alert_rate
from streams.settings import Settings
from streams.storage import Storage
from tests.integration.support_worker import (
    drain,
    make_worker,
    prediction,
    register,
    run_cli,
    send,
    today_at,
)

pytestmark = pytest.mark.integration

MODEL = "lights"
NEW_ALERT_RATE = 0.2

# Seconds to let the worker's registration consumer fetch the records that
# the lifecycle commands published. The worker reads them before its next
# block without waiting, so a block that arrives sooner is still scored
# with the old registrations.
REGISTRATION_FETCH_SECONDS = 3.0


def _training_frame(seed: int, rows: int = 3000) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "x": rng.uniform(0, 10, rows),
            "y": rng.normal(50, 10, rows),
            "color": rng.choice(["red", "green", "blue"], rows, p=[0.5, 0.3, 0.2]),
        }
    )


def _rows(seed: int, count: int) -> list[dict]:
    return _training_frame(seed, count).to_dict(orient="records")


def _events(version: int, prefix: str, rows: list[dict]) -> list[bytes]:
    return [
        prediction(
            MODEL,
            version,
            f"{prefix}-{number:03d}",
            row,
            today_at(timedelta(hours=3, seconds=number)),
        )
        for number, row in enumerate(rows)
    ]


@dataclass
class LifecycleRun:
    """The rows sent, the stores, the ``models list`` output and what was stored."""

    store: Path
    trained_store: Path
    version_1_rows: list[dict]
    version_2_rows: list[dict]
    trained_version_2: ModelVersion
    changed_version_2: ModelVersion
    list_output: str
    exit_code: int
    log: str
    events: pd.DataFrame
    dead_letters: pd.DataFrame


@pytest.fixture(scope="module")
def lifecycle_run(tmp_path_factory, kafka_servers) -> LifecycleRun:
    directory = tmp_path_factory.mktemp("lifecycle")
    store = directory / "store"
    version_1 = train_model(_training_frame(1), model=MODEL, version=1)
    version_2 = train_model(_training_frame(2), model=MODEL, version=2)
    version_1.save(store)
    version_2.save(store)
    # Changing the alert rate rewrites version 2's artifact, so keep a copy.
    trained_store = directory / "trained-store"
    version_2.save(trained_store)
    version_1_rows = _rows(11, 40)
    version_2_rows = _rows(12, 200)

    worker = make_worker(directory, kafka_servers, store)
    register(worker, version_1)
    worker.start()
    try:
        send(worker, kafka_servers, MODEL.encode(), _events(1, "a1", version_1_rows))
        drain(worker, kafka_servers)

        register(worker, version_2)
        send(worker, kafka_servers, MODEL.encode(), _events(2, "b2", version_2_rows))
        drain(worker, kafka_servers)

        run_cli(worker, "models", "retire", "--model", MODEL, "--version", "1")
        set_alert_rate(Settings.from_env(worker.env), MODEL, 2, NEW_ALERT_RATE)
        time.sleep(REGISTRATION_FETCH_SECONDS)
        send(worker, kafka_servers, MODEL.encode(), _events(1, "c1", version_1_rows))
        send(worker, kafka_servers, MODEL.encode(), _events(2, "c2", version_2_rows))
        drain(worker, kafka_servers)
        list_output = run_cli(worker, "models", "list")
    finally:
        exit_code = worker.stop()

    with Storage.connect(worker.clickhouse) as storage:
        events = storage.query_frame(
            "SELECT version, request_id, score, threshold, is_outlier FROM events "
            "ORDER BY version, request_id"
        )
        dead_letters = storage.query_frame(
            "SELECT offset, reason_code, field, original FROM dead_letters "
            "ORDER BY offset"
        )
    return LifecycleRun(
        store=store,
        trained_store=trained_store,
        version_1_rows=version_1_rows,
        version_2_rows=version_2_rows,
        trained_version_2=load_model(trained_store, MODEL, 2),
        changed_version_2=load_model(store, MODEL, 2),
        list_output=list_output,
        exit_code=exit_code,
        log=worker.log(),
        events=events,
        dead_letters=dead_letters,
    )


def _phase(run: LifecycleRun, version: int, prefix: str) -> pd.DataFrame:
    events = run.events
    chosen = (events["version"] == version) & events["request_id"].str.startswith(
        f"{prefix}-"
    )
    return events[chosen].sort_values("request_id").reset_index(drop=True)


def test_worker_exits_cleanly(lifecycle_run):
    assert lifecycle_run.exit_code == 0, lifecycle_run.log


def test_version_registered_while_running_is_scored(lifecycle_run):
    run = lifecycle_run
    before = _phase(run, 2, "b2")
    after = _phase(run, 2, "c2")

    assert len(before) == len(run.version_2_rows), run.log
    assert len(after) == len(run.version_2_rows), run.log
    assert np.isfinite(before["score"]).all()
    assert np.isfinite(after["score"]).all()


def test_retired_version_events_are_dead_letters(lifecycle_run):
    run = lifecycle_run
    stored_version_1 = run.events[run.events["version"] == 1]["request_id"]
    letters = run.dead_letters
    retired = letters[letters["reason_code"] == "model_retired"]
    retired_ids = sorted(
        orjson.loads(text)["request_id"] for text in retired["original"]
    )

    # Events sent before the retirement were scored, later ones were not.
    assert sorted(stored_version_1) == [f"a1-{n:03d}" for n in range(40)]
    assert retired_ids == [f"c1-{n:03d}" for n in range(40)]
    assert set(retired["field"]) == {"version"}
    assert len(letters) == len(retired), letters[["reason_code", "field"]]


def test_new_alert_rate_applies_to_later_events(lifecycle_run):
    run = lifecycle_run
    old_threshold = run.trained_version_2.threshold
    new_threshold = run.changed_version_2.threshold
    before = _phase(run, 2, "b2")
    after = _phase(run, 2, "c2")

    # The stored artifact has the threshold of the new rate, without refitting.
    assert new_threshold == pytest.approx(
        threshold_for_rate(run.trained_version_2.calibration_scores, NEW_ALERT_RATE)
    )
    assert new_threshold < old_threshold

    # Events before the change were judged against the old threshold, events
    # after it against the new one.
    assert (before["threshold"] == old_threshold).all(), before["threshold"].unique()
    assert (after["threshold"] == new_threshold).all(), after["threshold"].unique()
    for phase in (before, after):
        flagged = phase["score"] > phase["threshold"]
        assert (phase["is_outlier"] == flagged.astype(int)).all()

    # The same feature rows give many more outliers at a 20 % alert rate.
    assert before["is_outlier"].sum() <= 0.05 * len(before)
    assert after["is_outlier"].sum() >= 0.1 * len(after)


def test_models_list_shows_states_and_thresholds(lifecycle_run):
    run = lifecycle_run
    rows = {}
    for line in run.list_output.splitlines()[1:]:
        fields = line.split()
        if fields and fields[0] == MODEL:
            rows[int(fields[1])] = fields

    assert sorted(rows) == [1, 2], run.list_output
    assert rows[1][2] == "retired"
    assert rows[2][2] == "active"
    assert rows[2][3] == f"{run.changed_version_2.threshold:.4g}"
    assert rows[2][4] == f"{NEW_ALERT_RATE:.2%}"


def test_stream_scores_as_offline_replay(lifecycle_run):
    run = lifecycle_run
    trained = load_model(run.trained_store, MODEL, 2)
    expected = trained.score_block(run.version_2_rows, learn=True)
    stored = _phase(run, 2, "b2")["score"].to_numpy()

    np.testing.assert_allclose(stored, expected, rtol=1e-6, atol=1e-9)


def test_alert_rate_change_keeps_learned_state(lifecycle_run):
    """Version 2 keeps what its online detector learned in phase B.

    The lifecycle commands promise that a new threshold takes effect without
    losing the detector's state. So phase C must be scored from the state
    that phase B left, not from the trained state again.
    """
    run = lifecycle_run
    rows = run.version_2_rows
    learner = load_model(run.trained_store, MODEL, 2)
    learner.score_block(rows, learn=True)
    resumed = load_model(run.store, MODEL, 2)
    resumed.restore_detector_state(learner.detector_state())
    expected = resumed.score_block(rows, learn=True)
    from_trained = load_model(run.store, MODEL, 2).score_block(rows, learn=True)
    stored = _phase(run, 2, "c2")["score"].to_numpy()

    # Phase B's 200 events change the detector enough to tell the two apart.
    assert not np.allclose(expected, from_trained, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(stored, expected, rtol=1e-6, atol=1e-9)
