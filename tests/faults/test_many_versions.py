"""100 versions of one model scored at once, their events interleaved.

Version v is trained on x uniform in [v, v + 1] and on the categories
``k<v>a`` and ``k<v>b``, and receives only values inside that range and
those categories. A check against another version's profile would give a
status other than ``ok``. A score from another version's detector would
differ from scoring the version's events alone. An event put in another
version's batch would leave a batch holding events of two versions.
"""

import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import timedelta

import numpy as np
import orjson
import pandas as pd
import pytest

from detectors import load_model, train_model
from streams.lag import wait_until_consumed
from streams.publisher import Publisher
from streams.registration import build_registration
from streams.settings import Settings
from streams.storage import Storage
from streams.topics import ensure_topics
from tests.faults.conftest import START, batch_violations, count_delivery, produce

pytestmark = pytest.mark.integration

VERSIONS = 100
ROUNDS = 50
"""Events per version; round r sends one event to every version."""

BATCH_SIZE = 10


def _train_version(store: str, version: int) -> None:
    rng = np.random.default_rng(version)
    frame = pd.DataFrame(
        {
            "x": rng.uniform(version, version + 1, 300),
            "kind": rng.choice([f"k{version}a", f"k{version}b"], 300),
        }
    )
    train_model(frame, model="shapes", version=version, seed=version).save(store)


def _events() -> list[dict]:
    rng = np.random.default_rng(0)
    events = []
    for round_number in range(ROUNDS):
        moment = START + timedelta(milliseconds=100 * round_number)
        for version in range(1, VERSIONS + 1):
            events.append(
                {
                    "model": "shapes",
                    "version": version,
                    "request_id": f"v{version}-{round_number}",
                    "timestamp": moment.isoformat().replace("+00:00", "Z"),
                    "features": {
                        # Inside the middle of the training range, so that
                        # no value falls outside the sampled minimum or maximum.
                        "x": version + float(rng.uniform(0.2, 0.8)),
                        "kind": f"k{version}{'ab'[round_number % 2]}",
                    },
                }
            )
    return events


def test_versions_do_not_mix(worker_process, kafka_servers, tmp_path):
    worker = worker_process
    store = tmp_path / "shapes-store"
    worker.env.update(
        {"ODDWATCH_STORE": str(store), "ODDWATCH_BATCH_SIZE": str(BATCH_SIZE)}
    )
    started = time.monotonic()

    # Training dominates the test's time, so both cores train. Spawned
    # processes, because this one already runs Kafka and ClickHouse threads.
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=2, mp_context=context) as pool:
        list(pool.map(_train_version, [str(store)] * VERSIONS,
                      range(1, VERSIONS + 1)))  # fmt: skip
    trained = time.monotonic() - started

    settings = Settings.from_env(worker.env)
    ensure_topics(settings)
    publisher = Publisher(settings)
    models = {v: load_model(store, "shapes", v) for v in range(1, VERSIONS + 1)}
    for model_version in models.values():
        registration = build_registration(model_version, store)
        publisher.send(
            settings.topic("models"), registration.key(), registration.to_json()
        )
    publisher.flush()
    publisher.close()

    events = _events()
    worker.start()
    produce(kafka_servers, worker.topic("predictions"),
            [orjson.dumps(event) for event in events], key=b"shapes")  # fmt: skip
    wait_until_consumed(
        kafka_servers, worker.group, worker.topic("predictions"), timeout=300
    )
    exit_code = worker.stop()

    with Storage.connect(worker.clickhouse) as storage:
        delivery = count_delivery(storage, {e["request_id"] for e in events})
        statuses = dict(storage.query_rows(
            "SELECT status, count() FROM feature_checks GROUP BY status"))  # fmt: skip
        wrong_version = storage.query_rows(
            "SELECT count() FROM events "
            "WHERE NOT startsWith(request_id, concat('v', toString(version), '-'))"
        )[0][0]
        stored = storage.query_frame(
            "SELECT version, request_id, score, threshold FROM events"
        )
        mixed_batches = storage.query_rows(
            "SELECT count() FROM events AS e INNER JOIN batches AS b USING batch_id "
            "WHERE e.model != b.model OR e.version != b.version"
        )[0][0]
        per_version = storage.query_rows(
            "SELECT version, sum(events), count() FROM batches GROUP BY version"
        )
        violations = batch_violations(storage)
    seconds = time.monotonic() - started

    # Scoring each version's events alone, in the order sent, must give the
    # scores the worker stored.
    stored = stored.set_index("request_id")
    score_gaps, threshold_mismatches = [], 0
    for version, model_version in models.items():
        mine = [e for e in events if e["version"] == version]
        expected = model_version.score_block([e["features"] for e in mine])
        got = stored.loc[[e["request_id"] for e in mine]]
        score_gaps.append(float(np.max(np.abs(got["score"].to_numpy() - expected))))
        threshold_mismatches += int((got["threshold"] != model_version.threshold).sum())

    print(
        f"\ntrained {VERSIONS} versions in {trained:.1f} s; statuses {statuses}; "
        f"largest score gap {max(score_gaps):.3g}"
    )
    print(delivery.line(f"{VERSIONS} versions", seconds))

    assert exit_code == 0, worker.log()
    assert delivery.lost == 0
    assert delivery.doubled == 0
    assert statuses == {"ok": len(events) * 2}
    assert wrong_version == 0
    assert threshold_mismatches == 0
    assert max(score_gaps) < 1e-9
    assert mixed_batches == 0
    assert sorted(per_version) == [
        (version, ROUNDS, ROUNDS // BATCH_SIZE) for version in range(1, VERSIONS + 1)
    ]
    assert violations == {}
