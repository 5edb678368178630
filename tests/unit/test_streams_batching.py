"""Batches per model version: windows, sizes, late events, summaries and health."""

import json
import math
import pickle
import tempfile
import textwrap
from dataclasses import asdict
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streams import batching
from streams.batching import (
    AUTO_OD,
    RANGE,
    Batcher,
    BatchSummary,
    CheckCount,
    ClosedBy,
    Health,
    HealthCutoffs,
)

T0 = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
STATUSES = ["ok", "below_min", "above_max", "unseen_category", "missing", "wrong_type"]


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


def _assign(batcher, seconds, *, model="census", version=1, outliers=None, **kwargs):
    """Assign events at ``seconds`` after T0, every feature ok, no outliers."""
    statuses = kwargs.pop("statuses", pd.DataFrame({"age": ["ok"] * len(seconds)}))
    outliers = [False] * len(seconds) if outliers is None else outliers
    times = [_at(second) for second in seconds]
    return batcher.assign(model, version, times, statuses, outliers, **kwargs)


def _id(window_seconds: float, sequence: int, model="census", version=1) -> str:
    start = _at(window_seconds).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{model}/{version}/{start}/{sequence:06d}"


def test_module_exports_are_sorted():
    assert batching.__all__ == sorted(batching.__all__)


def test_batch_id_format():
    ids, _ = _assign(Batcher(), [0.0, 59.999])
    assert ids == ["census/1/2026-12-04T15:00:00Z/000000"] * 2


def test_batch_id_milliseconds_short_window():
    ids, _ = _assign(Batcher(window_seconds=0.5), [0.7])
    assert ids == ["census/1/2026-12-04T15:00:00.500Z/000000"]


def test_window_closes_when_later_window_arrives():
    batcher = Batcher(window_seconds=60)
    ids, closed = _assign(batcher, [10, 50])
    assert closed == []

    ids, closed = _assign(batcher, [65])
    assert ids == [_id(60, 0)]
    assert len(closed) == 1
    summary = closed[0]
    assert summary.batch_id == _id(0, 0)
    assert summary.closed_by is ClosedBy.TIME
    assert summary.events == 2
    assert summary.window_start == T0
    assert summary.window_end == _at(60)


def test_window_closes_inside_one_block():
    ids, closed = _assign(Batcher(window_seconds=60), [1, 2, 61, 62, 185])
    assert ids == [_id(0, 0)] * 2 + [_id(60, 0)] * 2 + [_id(180, 0)]
    assert [summary.batch_id for summary in closed] == [_id(0, 0), _id(60, 0)]
    assert [summary.events for summary in closed] == [2, 2]


def test_batch_closes_at_batch_size():
    batcher = Batcher(window_seconds=60, batch_size=3)
    ids, closed = _assign(batcher, [1, 2, 3, 4, 5, 6, 7])
    assert ids == [_id(0, 0)] * 3 + [_id(0, 1)] * 3 + [_id(0, 2)]
    assert [summary.closed_by for summary in closed] == [ClosedBy.SIZE] * 2
    assert [summary.events for summary in closed] == [3, 3]


def test_full_batch_at_block_end():
    batcher = Batcher(window_seconds=60, batch_size=2)
    _, closed = _assign(batcher, [1, 2])
    assert [summary.closed_by for summary in closed] == [ClosedBy.SIZE]

    ids, closed = _assign(batcher, [3])
    assert ids == [_id(0, 1)]
    assert closed == []


def test_open_batch_fills_across_blocks():
    batcher = Batcher(window_seconds=60, batch_size=3)
    _assign(batcher, [1, 2])
    ids, closed = _assign(batcher, [3, 4])
    assert ids == [_id(0, 0), _id(0, 1)]
    assert [summary.events for summary in closed] == [3]


def test_late_event_joins_open_batch():
    batcher = Batcher(window_seconds=60)
    _assign(batcher, [70])
    ids, closed = _assign(batcher, [30, 75, 0.5])
    assert ids == [_id(60, 0)] * 3
    assert closed == []

    summary = batcher.close_all()[0]
    assert summary.events == 4
    assert summary.late_events == 2
    assert summary.window_start == _at(60)


def test_late_event_within_block_is_counted():
    ids, _ = _assign(Batcher(window_seconds=60), [61, 5])
    assert ids == [_id(60, 0)] * 2


def test_late_event_after_idle_close():
    batcher = Batcher(window_seconds=60)
    _assign(batcher, [70])
    batcher.close_idle(_at(120))

    ids, closed = _assign(batcher, [10])
    assert ids == [_id(60, 1)]
    assert closed == []
    summary = batcher.close_all()[0]
    assert summary.late_events == 1
    assert summary.window_start == _at(60)


def test_model_versions_do_not_mix():
    batcher = Batcher(window_seconds=60, batch_size=3)
    census_ids, _ = _assign(batcher, [1, 2], model="census", version=1)
    fraud_ids, closed = _assign(batcher, [130, 131, 132, 133], model="fraud", version=1)
    assert [summary.model for summary in closed] == ["fraud"]

    v2_ids, closed = _assign(batcher, [5], model="census", version=2)
    assert closed == []
    census_more, closed = _assign(batcher, [3, 125], model="census", version=1)
    assert census_ids == [_id(0, 0)] * 2
    assert fraud_ids == [_id(120, 0, "fraud")] * 3 + [_id(120, 1, "fraud")]
    assert v2_ids == [_id(0, 0, version=2)]
    assert census_more == [_id(0, 0), _id(120, 0)]
    assert [(s.model, s.version, s.closed_by) for s in closed] == [
        ("census", 1, ClosedBy.SIZE)
    ]

    remaining = {(s.model, s.version): s.events for s in batcher.close_all()}
    assert remaining == {("census", 1): 1, ("fraud", 1): 1, ("census", 2): 1}


def test_close_idle_waits_for_window_end():
    batcher = Batcher(window_seconds=60)
    _assign(batcher, [10])
    assert batcher.close_idle(_at(59.999)) == []
    assert batcher.close_idle(_at(60), idle_seconds=30) == []

    closed = batcher.close_idle(_at(90), idle_seconds=30)
    assert [summary.closed_by for summary in closed] == [ClosedBy.TIME]
    assert batcher.close_idle(_at(1000)) == []


def test_close_idle_then_same_window():
    batcher = Batcher(window_seconds=60)
    _assign(batcher, [10])
    batcher.close_idle(_at(61))
    ids, _ = _assign(batcher, [20])
    assert ids == [_id(0, 1)]
    assert batcher.close_all()[0].late_events == 0


def test_close_idle_reads_naive_now_as_utc():
    batcher = Batcher(window_seconds=60)
    _assign(batcher, [10])
    assert len(batcher.close_idle(datetime(2026, 12, 4, 15, 1))) == 1


def test_close_idle_rejects_negative_idle():
    with pytest.raises(ValueError, match="idle_seconds"):
        Batcher().close_idle(T0, idle_seconds=-1)


def test_close_all_marks_shutdown():
    batcher = Batcher(window_seconds=60)
    _assign(batcher, [10], model="census")
    _assign(batcher, [10], model="fraud")
    closed = batcher.close_all()
    assert [(s.model, s.closed_by) for s in closed] == [
        ("census", ClosedBy.SHUTDOWN),
        ("fraud", ClosedBy.SHUTDOWN),
    ]
    assert batcher.close_all() == []

    ids, _ = _assign(batcher, [11], model="census")
    assert ids == [_id(0, 1)]


def test_summary_counts_checks():
    statuses = pd.DataFrame(
        {"sex": ["ok", "unseen_category", "ok"], "age": ["missing", "ok", "ok"]}
    )
    batcher = Batcher()
    _assign(
        batcher,
        [1, 2, 3],
        statuses=statuses,
        outliers=[True, False, False],
        checks={"income_rule": [True, None, False]},
    )
    summary = batcher.close_all()[0]
    assert summary.events == 3
    assert summary.outliers == 1
    assert summary.checks == [
        CheckCount("", AUTO_OD, 3, 2),
        CheckCount("", "income_rule", 3, 1),
        CheckCount("age", RANGE, 3, 2),
        CheckCount("sex", RANGE, 3, 2),
    ]
    assert summary.pass_share == 7 / 12


def test_summary_ignores_feature_order():
    statuses = pd.DataFrame({"a": ["ok", "missing"], "b": ["above_max", "ok"]})
    first, second = Batcher(), Batcher()
    _assign(first, [1, 2], statuses=statuses)
    _assign(second, [1, 2], statuses=statuses[["b", "a"]])
    assert first.close_all() == second.close_all()


def test_metric_accepts_boolean_array():
    batcher = Batcher()
    _assign(batcher, [1, 2], checks={"rule": np.array([True, False])})
    assert CheckCount("", "rule", 2, 1) in batcher.close_all()[0].checks


@pytest.mark.parametrize(
    ("share", "expected"),
    [
        (1.0, Health.GREEN),
        (0.97, Health.GREEN),
        (math.nextafter(0.97, 0), Health.YELLOW),
        (0.93, Health.YELLOW),
        (math.nextafter(0.93, 0), Health.ORANGE),
        (0.85, Health.ORANGE),
        (math.nextafter(0.85, 0), Health.RED),
        (0.0, Health.RED),
    ],
)
def test_health_cutoffs_at_boundaries(share, expected):
    assert HealthCutoffs().level(share) is expected


@pytest.mark.parametrize(
    ("outliers", "expected"),
    [(3, Health.GREEN), (4, Health.YELLOW), (7, Health.YELLOW), (8, Health.ORANGE)],
)
def test_health_of_batch_from_outliers(outliers, expected):
    batcher = Batcher(batch_size=100)
    flags = [True] * outliers + [False] * (100 - outliers)
    _, closed = _assign(batcher, [1] * 100, outliers=flags)
    assert closed[0].health is expected


def test_health_follows_worst_check():
    features = {f"f{index}": ["ok"] * 10 for index in range(19)}
    features["broken"] = ["missing"] * 10
    batcher = Batcher()
    _assign(batcher, [1] * 10, statuses=pd.DataFrame(features))
    summary = batcher.close_all()[0]
    assert HealthCutoffs().level(summary.pass_share) is Health.YELLOW
    assert summary.health is Health.RED


def test_health_uses_given_cutoffs():
    cutoffs = HealthCutoffs(green=0.5, yellow=0.4, orange=0.3)
    batcher = Batcher(health_cutoffs=cutoffs)
    _assign(batcher, [1, 2], outliers=[True, False])
    assert batcher.close_all()[0].health is Health.GREEN


def test_health_cutoffs_must_be_ordered():
    with pytest.raises(ValueError, match="orange <= yellow <= green"):
        HealthCutoffs(green=0.9, yellow=0.95, orange=0.8)
    with pytest.raises(ValueError, match="green=1.5"):
        HealthCutoffs(green=1.5)


def test_event_times_truncated_to_milliseconds():
    late_edge = T0 + timedelta(seconds=59, microseconds=999_999)
    ids, _ = Batcher().assign(
        "census", 1, [late_edge], pd.DataFrame({"age": ["ok"]}), [False]
    )
    assert ids == [_id(0, 0)]


def test_naive_event_times_are_utc():
    naive = datetime(2026, 12, 4, 15, 0, 30)
    ids, _ = Batcher().assign("census", 1, [naive], pd.DataFrame({"a": ["ok"]}), [0])
    assert ids == [_id(0, 0)]


def test_event_times_accept_datetime64():
    times = np.array(["2026-12-04T15:01:30.250"], dtype="datetime64[ns]")
    ids, _ = Batcher().assign("census", 1, times, pd.DataFrame({"a": ["ok"]}), [0])
    assert ids == [_id(60, 0)]


def test_empty_block_changes_nothing():
    batcher = Batcher()
    ids, closed = batcher.assign("census", 1, [], pd.DataFrame({"a": []}), [])
    assert ids == []
    assert closed == []
    assert batcher.close_all() == []


@pytest.mark.parametrize("window_seconds", [0, -1, 0.0004, 1.0005, math.nan, math.inf])
def test_batcher_rejects_bad_window(window_seconds):
    with pytest.raises(ValueError, match="window_seconds"):
        Batcher(window_seconds=window_seconds)


def test_batcher_rejects_bad_batch_size():
    with pytest.raises(ValueError, match="batch_size must be at least 1, got 0"):
        Batcher(batch_size=0)
    with pytest.raises(TypeError, match="batch_size"):
        Batcher(batch_size=2.5)


def test_assign_rejects_mismatched_lengths():
    batcher = Batcher()
    with pytest.raises(ValueError, match="expected 2 rows, got 1"):
        batcher.assign("m", 1, [T0, T0], pd.DataFrame({"a": ["ok"]}), [0, 0])
    with pytest.raises(ValueError, match="outliers must have one value per event"):
        batcher.assign("m", 1, [T0], pd.DataFrame({"a": ["ok"]}), [0, 0])
    with pytest.raises(ValueError, match="'rule' must have one result per event"):
        _assign(batcher, [1], checks={"rule": [True, False]})


def test_assign_rejects_bad_values():
    batcher = Batcher()
    with pytest.raises(ValueError, match="missing times"):
        batcher.assign("m", 1, [None], pd.DataFrame({"a": ["ok"]}), [False])
    with pytest.raises(ValueError, match="statuses contains missing values"):
        _assign(batcher, [1], statuses=pd.DataFrame({"a": [None]}))
    with pytest.raises(TypeError, match="outliers must contain booleans"):
        _assign(batcher, [1], outliers=["yes"])
    with pytest.raises(TypeError, match="True, False or None, got 'yes'"):
        _assign(batcher, [1], checks={"rule": ["yes"]})
    with pytest.raises(ValueError, match="custom metric name"):
        _assign(batcher, [1], checks={AUTO_OD: [True]})
    with pytest.raises(ValueError, match="duplicate feature"):
        _assign(batcher, [1], statuses=pd.DataFrame([["ok", "ok"]], columns=["a", "a"]))


def test_pickled_batcher_resumes_mid_batch():
    statuses = pd.DataFrame({"age": ["ok", "missing", "ok", "ok", "above_max"]})
    seconds = [1, 2, 3, 61, 4]
    outliers = [False, True, False, False, True]

    whole = Batcher(batch_size=3)
    expected_ids, expected_closed = _assign(
        whole, seconds, statuses=statuses, outliers=outliers
    )
    expected_closed += whole.close_all()

    first = Batcher(batch_size=3)
    ids, closed = _assign(
        first, seconds[:2], statuses=statuses[:2], outliers=outliers[:2]
    )
    resumed = pickle.loads(pickle.dumps(first))
    more_ids, more_closed = _assign(
        resumed, seconds[2:], statuses=statuses[2:], outliers=outliers[2:]
    )
    assert ids + more_ids == expected_ids
    assert closed + more_closed + resumed.close_all() == expected_closed


def test_summary_pickles():
    batcher = Batcher()
    _assign(batcher, [1])
    summary = batcher.close_all()[0]
    assert pickle.loads(pickle.dumps(summary)) == summary


# Property tests: random events, random block cuts, checked against a plain
# event-by-event model of the batching rules and a pandas groupby.

FEATURES = ["age", "sex", "zip"]
MODEL_VERSIONS = [("census", 1), ("census", 2), ("fr/aud", 1)]


def _format_id(model: str, version: int, window_ms: int, sequence: int) -> str:
    start = datetime.fromtimestamp(window_ms / 1000, UTC)
    text = start.strftime("%Y-%m-%dT%H:%M:%S")
    if window_ms % 1000:
        text += f".{window_ms % 1000:03d}"
    return f"{model}/{version}/{text}Z/{sequence:06d}"


def _reference_ids(events: pd.DataFrame, window_ms: int, batch_size: int) -> list[str]:
    """Assign batch ids one event at a time, as the rules in streams.batching read."""
    state: dict[tuple[str, int], dict] = {}
    ids = []
    for model, version, millisecond in events[["model", "version", "ms"]].itertuples(
        index=False
    ):
        window = millisecond // window_ms * window_ms
        stream = state.get((model, version))
        if stream is None or window > stream["window"]:
            stream = {"window": window, "next": 0, "open": None, "size": 0}
            state[(model, version)] = stream
        if stream["open"] is None:
            stream["open"], stream["size"] = stream["next"], 0
            stream["next"] += 1
        ids.append(_format_id(model, version, stream["window"], stream["open"]))
        stream["size"] += 1
        if stream["size"] == batch_size:
            stream["open"] = None
    return ids


def _expected_summaries(
    events: pd.DataFrame, window_ms: int, cutoffs: HealthCutoffs
) -> dict[str, dict]:
    """Summaries computed by a pandas groupby over the per-event rows."""
    window_text = events["batch_id"].str.rsplit("/", n=2).str[1]
    window_start = pd.to_datetime(window_text, utc=True, format="ISO8601")
    events = events.assign(
        window_start=window_start,
        is_late=events["event_time"] < window_start,
        not_outlier=~events["is_outlier"],
    )
    feature_rows = events.melt(
        id_vars=["batch_id"],
        value_vars=FEATURES,
        var_name="feature",
        value_name="status",
    )
    feature_rows["passed"] = feature_rows["status"] == "ok"
    metric_rows = events.assign(passed=events["rule"].map(lambda value: value is True))

    counts = []
    for batch_id, group in feature_rows.groupby("batch_id"):
        for feature, rows in group.groupby("feature"):
            counts.append(
                (batch_id, feature, RANGE, len(rows), int(rows["passed"].sum()))
            )
    for batch_id, rows in events.groupby("batch_id"):
        counts.append(
            (batch_id, "", AUTO_OD, len(rows), int(rows["not_outlier"].sum()))
        )
    for batch_id, rows in metric_rows.groupby("batch_id"):
        counts.append((batch_id, "", "rule", len(rows), int(rows["passed"].sum())))

    expected = {}
    for batch_id, rows in events.groupby("batch_id"):
        checks = [
            CheckCount(feature, check, checked, passed)
            for key, feature, check, checked, passed in counts
            if key == batch_id
        ]
        checks = sorted(checks, key=lambda count: (count.feature, count.check))
        start = rows["window_start"].iloc[0].to_pydatetime()
        expected[batch_id] = {
            "model": rows["model"].iloc[0],
            "version": int(rows["version"].iloc[0]),
            "batch_id": batch_id,
            "window_start": start,
            "window_end": start + timedelta(milliseconds=window_ms),
            "events": len(rows),
            "outliers": int(rows["is_outlier"].sum()),
            "late_events": int(rows["is_late"].sum()),
            "checks": [asdict(check) for check in checks],
            "pass_share": sum(c.passed for c in checks)
            / sum(c.checked for c in checks),
            "health": cutoffs.level(min(c.passed / c.checked for c in checks)),
        }
    return expected


def _run_blocks(batcher, events: pd.DataFrame, cuts: list[int], *, pickle_each=False):
    """Feed ``events`` block by block, per model version as the scoring agent does."""
    ids = pd.Series("", index=events.index, dtype=object)
    closed: list[BatchSummary] = []
    bounds = [0, *sorted(set(cuts)), len(events)]
    for start, stop in zip(bounds[:-1], bounds[1:], strict=True):
        block = events.iloc[start:stop]
        for (model, version), rows in block.groupby(["model", "version"], sort=False):
            block_ids, block_closed = batcher.assign(
                model,
                version,
                rows["event_time"].tolist(),
                rows[FEATURES],
                rows["is_outlier"].to_numpy(),
                checks={"rule": rows["rule"].tolist()},
            )
            ids[rows.index] = block_ids
            closed += block_closed
        if pickle_each:
            batcher = pickle.loads(pickle.dumps(batcher))
    closed += batcher.close_all()
    return ids.tolist(), closed


@st.composite
def _event_blocks(draw):
    window_seconds = draw(st.sampled_from([1, 2.5, 60]))
    window_ms = round(window_seconds * 1000)
    count = draw(st.integers(1, 60))
    offsets = st.integers(-window_ms, 5 * window_ms)
    rows = {
        "mv": draw(st.lists(st.integers(0, 2), min_size=count, max_size=count)),
        "offset": draw(st.lists(offsets, min_size=count, max_size=count)),
        "is_outlier": draw(st.lists(st.booleans(), min_size=count, max_size=count)),
        "rule": draw(
            st.lists(
                st.sampled_from([True, False, None]), min_size=count, max_size=count
            )
        ),
    }
    for feature in FEATURES:
        statuses = st.lists(st.sampled_from(STATUSES), min_size=count, max_size=count)
        rows[feature] = draw(statuses)
    events = pd.DataFrame(rows)
    events["model"] = [MODEL_VERSIONS[index][0] for index in events["mv"]]
    events["version"] = [MODEL_VERSIONS[index][1] for index in events["mv"]]
    events["ms"] = T0.timestamp() * 1000 + events["offset"]
    events["ms"] = events["ms"].astype(np.int64)
    events["event_time"] = pd.to_datetime(events["ms"], unit="ms", utc=True)
    cuts = draw(st.lists(st.integers(1, count), max_size=5))
    batch_size = draw(st.integers(1, 7))
    return window_seconds, batch_size, events, cuts


@settings(max_examples=100, deadline=None)
@given(_event_blocks())
def test_batches_match_reference_and_groupby(case):
    window_seconds, batch_size, events, cuts = case
    window_ms = round(window_seconds * 1000)
    batcher = Batcher(window_seconds=window_seconds, batch_size=batch_size)
    ids, closed = _run_blocks(batcher, events, cuts)

    assert ids == _reference_ids(events, window_ms, batch_size)
    expected = _expected_summaries(
        events.assign(batch_id=ids), window_ms, HealthCutoffs()
    )
    actual = {}
    for summary in closed:
        fields = asdict(summary)
        assert fields.pop("closed_by") in set(ClosedBy)
        actual[summary.batch_id] = fields
    assert len(closed) == len(actual), "a batch was closed twice"
    assert actual == expected


@settings(max_examples=60, deadline=None)
@given(_event_blocks())
def test_batches_independent_of_blocks_and_pickling(case):
    window_seconds, batch_size, events, cuts = case
    one_block = _run_blocks(Batcher(window_seconds, batch_size), events, [])
    resumed = _run_blocks(
        Batcher(window_seconds, batch_size), events, cuts, pickle_each=True
    )
    assert resumed[0] == one_block[0]
    assert sorted(resumed[1], key=lambda s: s.batch_id) == sorted(
        one_block[1], key=lambda s: s.batch_id
    )


@settings(max_examples=60, deadline=None)
@given(_event_blocks())
def test_closed_by_matches_batch_size(case):
    window_seconds, batch_size, events, cuts = case
    _, closed = _run_blocks(Batcher(window_seconds, batch_size), events, cuts)
    for summary in closed:
        assert summary.events <= batch_size
        assert (summary.closed_by is ClosedBy.SIZE) == (summary.events == batch_size)


# The documented SQL, run by the embedded ClickHouse engine over the same rows.

_TABLES = [
    """CREATE TABLE events (
        model String, version UInt32, request_id String,
        event_time DateTime64(3, 'UTC'), is_outlier UInt8, batch_id String
    ) ENGINE = ReplacingMergeTree ORDER BY (model, version, request_id)""",
    """CREATE TABLE feature_checks (
        model String, version UInt32, request_id String,
        feature String, status String, passed UInt8, batch_id String
    ) ENGINE = ReplacingMergeTree ORDER BY (model, version, feature, request_id)""",
    """CREATE TABLE metric_checks (
        model String, version UInt32, request_id String,
        metric String, status String, batch_id String
    ) ENGINE = ReplacingMergeTree ORDER BY (model, version, metric, request_id)""",
]


def _documented_sql() -> str:
    """Return the query shown in the streams.batching module docstring."""
    lines = batching.__doc__.splitlines()
    start = next(i for i, line in enumerate(lines) if line.endswith("::")) + 1
    block = []
    for line in lines[start:]:
        if line and not line.startswith("    "):
            break
        block.append(line)
    return textwrap.dedent("\n".join(block)).strip()


def _random_events(seed: int, count: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    mv = rng.integers(0, len(MODEL_VERSIONS), count)
    # Mostly increasing times with jitter, so some events are late.
    offsets = np.sort(rng.integers(0, 120_000, count)) + rng.integers(
        -8000, 8000, count
    )
    events = pd.DataFrame(
        {
            "model": [MODEL_VERSIONS[index][0] for index in mv],
            "version": [MODEL_VERSIONS[index][1] for index in mv],
            "request_id": [f"r{index}" for index in range(count)],
            "event_time": T0 + pd.to_timedelta(offsets, unit="ms"),
            "is_outlier": rng.random(count) < 0.05,
            "rule": rng.choice(np.array([True, False, None], dtype=object), count),
        }
    )
    for feature in FEATURES:
        events[feature] = rng.choice(STATUSES, count, p=[0.9] + [0.02] * 5)
    return events


def _insert(session, table: str, rows: list[dict]) -> None:
    payload = "\n".join(json.dumps(row) for row in rows)
    session.query(f"INSERT INTO {table} FORMAT JSONEachRow\n{payload}")


def test_documented_sql_matches_summaries():
    chdb_session = pytest.importorskip("chdb.session")
    events = _random_events(seed=7, count=900)
    batcher = Batcher(window_seconds=10, batch_size=25)
    cuts = list(range(97, len(events), 97))
    ids, closed = _run_blocks(batcher, events, cuts)
    events["batch_id"] = ids
    assert sum(summary.late_events for summary in closed) > 0
    assert any(summary.closed_by is ClosedBy.SIZE for summary in closed)

    session = chdb_session.Session(tempfile.mkdtemp())
    for statement in _TABLES:
        session.query(statement)
    common = ["model", "version", "request_id", "batch_id"]
    times = events["event_time"].dt.strftime("%Y-%m-%d %H:%M:%S.%f").str[:-3]
    _insert(
        session,
        "events",
        events[common]
        .assign(event_time=times, is_outlier=events["is_outlier"].astype(int))
        .to_dict("records"),
    )
    features = events.melt(common, FEATURES, var_name="feature", value_name="status")
    features["passed"] = (features["status"] == "ok").astype(int)
    _insert(session, "feature_checks", features.to_dict("records"))
    statuses = events["rule"].map({True: "passed", False: "failed", None: "error"})
    _insert(
        session,
        "metric_checks",
        events[common].assign(metric="rule", status=statuses).to_dict("records"),
    )

    sql = _documented_sql().replace("60000", "10000")
    result = session.query(sql, "JSONEachRow").bytes().decode()
    rows = [json.loads(line) for line in result.splitlines()]
    session.close()

    by_id = {summary.batch_id: summary for summary in closed}
    assert sorted(by_id) == [row["batch_id"] for row in rows]
    for row in rows:
        summary = by_id[row["batch_id"]]
        start = summary.window_start.strftime("%Y-%m-%d %H:%M:%S.000")
        end = summary.window_end.strftime("%Y-%m-%d %H:%M:%S.000")
        checks = [[c.feature, c.check, c.checked, c.passed] for c in summary.checks]
        assert (row["model"], row["version"]) == (summary.model, summary.version)
        assert (row["window_start"], row["window_end"]) == (start, end)
        assert row["events"] == summary.events
        assert row["outliers"] == summary.outliers
        assert row["late_events"] == summary.late_events
        assert row["checks"] == checks
        assert row["pass_share"] == summary.pass_share
        assert row["health"] == summary.health


def test_boolean_statuses_count_as_passed():
    times = [_at(1), _at(2), _at(3)]
    texts = pd.DataFrame({"age": ["ok", "missing", "above_max"], "sex": ["ok"] * 3})
    flags = pd.DataFrame({"age": [True, True, False], "sex": [True] * 3})
    by_text = Batcher(batch_size=3).assign("census", 1, times, texts, [False] * 3)
    by_flag = Batcher(batch_size=3).assign("census", 1, times, flags, [False] * 3)
    [summary] = by_flag[1]
    counts = {check.feature: check.passed for check in summary.checks}
    assert counts == {"": 3, "age": 2, "sex": 3}
    assert by_text[1][0].checks != summary.checks
    assert by_text[0] == by_flag[0]
