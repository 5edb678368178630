"""The block pipeline without Kafka: block cuts, drift tests and scored messages."""

from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import orjson
import pandas as pd
import pytest

from detectors import train_model
from schemas.record import format_time
from streams.batching import Batcher
from streams.pipeline import Pipeline, _time_texts
from streams.records import RawMessage
from streams.registry import ModelRegistry

T0 = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


def _frame(rng: np.random.Generator, rows: int, shift: float = 0.0) -> pd.DataFrame:
    ages = rng.integers(18, 80, rows).astype(float) + shift
    income = rng.normal(50.0, 10.0, rows)
    income[rng.random(rows) < 0.05] = np.nan
    sectors = rng.choice(["private", "public", "self"], rows, p=[0.7, 0.2, 0.1])
    return pd.DataFrame({"age": ages, "income": income, "sector": sectors})


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("store")
    frame = _frame(np.random.default_rng(0), 3000)
    train_model(frame, model="census", version=1).save(path)
    return path


def _messages(count: int) -> list[RawMessage]:
    """Events, the last third drifted in age, with a few invalid ones."""
    rng = np.random.default_rng(1)
    frame = pd.concat(
        [_frame(rng, count - count // 3), _frame(rng, count // 3, shift=30.0)],
        ignore_index=True,
    )
    messages = []
    for number, row in enumerate(frame.to_dict(orient="records")):
        features = {
            key: None if value != value else value for key, value in row.items()
        }
        moment = T0 + timedelta(milliseconds=250 * number)
        document = {
            "model": "census",
            "version": 1,
            "request_id": f"r{number}",
            "timestamp": moment.isoformat(),
            "features": features,
        }
        raw = orjson.dumps(document) if number % 97 else b'{"model": "census"}'
        received = moment + timedelta(seconds=1)
        messages.append(RawMessage("predictions", 0, number, b"census", raw, received))
    return messages


class _RecordingPipeline(Pipeline):
    """A pipeline that keeps the drift results of every closed batch."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.drift = {}

    def _drift(self, summary, records):
        results = super()._drift(summary, records)
        self.drift[summary.batch_id] = [result.to_dict() for result in results]
        return results


def _run(store, messages, block_size):
    pipeline = _RecordingPipeline(ModelRegistry(store), Batcher(batch_size=50))
    scored, batches, dead = [], [], []
    for start in range(0, len(messages), block_size):
        output = pipeline.process(messages[start : start + block_size])
        scored.extend(value for _, value in output.scored)
        batches.extend(value for _, value in output.batch_records)
        dead.extend(
            (letter.reason_code, letter.reason) for letter in output.dead_letters
        )
    return pipeline, scored, batches, dead


def test_pipeline_block_cuts_give_same_results(store):
    messages = _messages(600)
    whole, scored, batches, dead = _run(store, messages, 600)
    cut, cut_scored, cut_batches, cut_dead = _run(store, messages, 7)
    assert len(scored) == 600 - len(dead)
    assert cut_scored == scored
    assert cut_batches == batches
    assert cut_dead == dead
    # In one block every closed batch reuses the block's range checks; in
    # blocks of 7 most batches are checked again from their stored features.
    assert len(whole.drift) >= 10
    assert cut.drift == whole.drift


def test_pipeline_drift_flags_shifted_age(store):
    pipeline, _, _, _ = _run(store, _messages(600), 600)
    drifted = [
        batch_id
        for batch_id, results in pipeline.drift.items()
        if any(result["feature"] == "age" and result["drifted"] for result in results)
    ]
    assert drifted


def test_pipeline_scored_statuses_per_event(store):
    messages = _messages(200)
    _, scored, _, _ = _run(store, messages, 200)
    documents = [orjson.loads(value) for value in scored]
    for document in documents:
        statuses = document["statuses"]
        assert list(statuses) == ["age", "income", "sector"]
        failed = [name for name, status in statuses.items() if status != "ok"]
        assert document["failed_features"] == failed
    assert any(document["statuses"]["income"] == "missing" for document in documents)


@pytest.mark.parametrize(
    "moments",
    [
        [T0, T0 + timedelta(microseconds=999_999), T0 - timedelta(microseconds=1)],
        [datetime(2026, 12, 4, 16, 0, 0, 123456, tzinfo=timezone(timedelta(hours=1)))],
        [datetime(1969, 12, 31, 23, 59, 59, 999500, tzinfo=UTC)],
        [datetime(999, 1, 1, tzinfo=UTC), T0],
        [datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)],
        [datetime(2026, 12, 4, 15, 0, 0, 500)],
        [T0 + timedelta(microseconds=1500)] * 3,
        [],
    ],
)
def test_time_texts_equal_format_time(moments):
    assert _time_texts(moments) == [format_time(moment) for moment in moments]


def test_oversized_scored_event_is_dead_letter(store):
    unknown = {f"unknown_feature_{number:05d}": 1 for number in range(30_000)}
    big = {
        "model": "census",
        "version": 1,
        "request_id": "big",
        "timestamp": T0.isoformat(),
        "features": {"age": 30, "income": 50.0, "sector": "private", **unknown},
    }
    small = {**big, "request_id": "small", "features": {"age": 30}}
    received = T0 + timedelta(seconds=1)
    messages = [
        RawMessage("predictions", 0, 0, b"census", orjson.dumps(big), received),
        RawMessage("predictions", 0, 1, b"census", orjson.dumps(small), received),
    ]
    assert len(messages[0].value) < 1_000_000

    pipeline = Pipeline(ModelRegistry(store), Batcher(batch_size=50))
    output = pipeline.process(messages)

    assert [letter.message.offset for letter in output.dead_letters] == [0]
    letter = output.dead_letters[0]
    assert letter.reason_code == "too_large"
    assert letter.field == "features"
    assert "30,000 unknown" in letter.reason
    assert len(letter.reason) <= 256
    assert output.events["request_id"] == ["small"]
    assert [orjson.loads(value)["request_id"] for _, value in output.scored] == [
        "small"
    ]
