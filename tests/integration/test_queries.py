"""The shipped ClickHouse queries, run over rows that the real pipeline stored.

The module sends prediction events through Pipeline and ClickHouseSink into an
embedded ClickHouse, without Kafka. They are rows of the Adult test file, a run
of crafted values that fail their range checks, late events, an event without a
timestamp and invalid messages. Kafka then delivers the first half of every
block again under other offset ranges, so the tables hold those rows twice.
Every file in deploy/clickhouse/queries is checked against numbers computed
here in pandas from the events sent, the training data and the scores the
pipeline published.
"""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
import pandas as pd
import pytest

from streams.app import deduplication_token
from streams.batching import Batcher
from streams.errors import ConfigError
from streams.pipeline import BlockOutput, Pipeline
from streams.queries import list_queries, load_query
from streams.records import DeadLetter, RawMessage
from streams.registry import ModelRegistry
from streams.sink import ClickHouseSink
from streams.storage import Storage

pytestmark = pytest.mark.integration

MODEL = "census"
VERSION = 1
TOPIC = "t.predictions"
WINDOW_SECONDS = 60
BATCH_SIZE = 100
BLOCK_SIZE = 64

EARLIER_EVENTS = 40
"""Events sent from a day before the main traffic."""

MAIN_EVENTS = 560
MAIN_SECONDS = 300
CRAFTED_FROM = 240
"""Position of the first crafted event in the main traffic, in its third window."""

# Values that fail their range check, one kind per crafted event in turn.
# None for education means the feature is left out of the event.
CRAFTED = [
    ("age", 200),
    ("age", 10),
    ("workclass", "Space-agency"),
    ("education", None),
    ("occupation", None),
    ("hours-per-week", "forty"),
    ("capital-gain", True),
    ("native-country", 42),
]
CRAFTED_EVENTS = 3 * len(CRAFTED)

# Invalid messages by position in the main traffic, with the reason code and
# event field the dead letter must carry.
INVALID = {
    30: (b'{"model": "census", "version": 1, "request_id": ', "invalid_json", ""),
    120: (b'{"model": "census", "version": 1}', "invalid_event", "request_id"),
    200: (
        b'{"model": "census", "version": "one", "request_id": "x", "features": {}}',
        "invalid_event",
        "version",
    ),
    330: (
        b'{"model": "census", "version": 7, "request_id": "v7", "features": {}}',
        "model_not_registered",
        "version",
    ),
    420: (
        b'{"model": "fraud", "version": 1, "request_id": "f1", "features": {}}',
        "model_not_registered",
        "version",
    ),
    480: (b"", "invalid_json", ""),
    520: (b"not json", "invalid_json", ""),
}

LATE_AFTER = 400
"""Position in the main traffic after which the late events are sent."""

NO_TIMESTAMP = 300
"""Position of the main event sent without a timestamp."""

# The tables stored twice on replay. feature_checks is left out: it is a view
# that reads events FINAL, so it returns a replayed event's checks once.
TABLES = (
    "events",
    "batches",
    "batch_checks",
    "alerts",
    "dead_letters",
)

HEALTH_CUTOFFS = [(0.97, "green"), (0.93, "yellow"), (0.85, "orange")]


@dataclass
class Traffic:
    """The messages sent and their contents."""

    messages: list[RawMessage]
    events: pd.DataFrame
    """One row per valid event in offset order, with its expected batch."""
    rejected: pd.DataFrame
    """One row per invalid message, with the expected reason code and field."""


@dataclass
class Stored:
    """An engine directory that the pipeline wrote, and what it published."""

    url: str
    traffic: Traffic
    scored: pd.DataFrame
    dead_letters: list[DeadLetter]
    statuses: pd.DataFrame
    """One row per event and profiled feature: status and passed, from pandas."""
    start: datetime
    """Start of the main traffic, a whole minute about 30 minutes ago."""


@pytest.fixture(scope="module")
def stored(tmp_path_factory, census_store, adult_train, adult_test) -> Stored:
    """Run the traffic through the pipeline into a fresh engine directory."""
    start = (datetime.now(UTC) - timedelta(minutes=30)).replace(second=0, microsecond=0)
    traffic = _build_traffic(adult_test, start)
    url = f"chdb://{tmp_path_factory.mktemp('queries') / 'clickhouse'}"
    scored, dead_letters = _run_pipeline(traffic, census_store, url)
    statuses = _expected_statuses(traffic.events, adult_train)
    return Stored(url, traffic, scored, dead_letters, statuses, start)


@pytest.fixture
def storage(stored):
    with Storage.connect(stored.url) as storage:
        yield storage


def _run(storage: Storage, name: str, **values) -> pd.DataFrame:
    query = load_query(name)
    return storage.query_frame(query.sql, parameters=query.bind(values))


# Building and sending the traffic


def _build_traffic(adult_test: pd.DataFrame, start: datetime) -> Traffic:
    rows = adult_test.drop(columns=["income"]).to_dict(orient="records")
    labels = adult_test["income"].tolist()
    items: list[tuple[bytes, dict | None, tuple[str, str] | None]] = []

    def add_event(request_id: str, row: int, time: datetime | None, **changes):
        features = {k: (None if v != v else v) for k, v in rows[row].items()}
        for feature, value in changes.items():
            if feature == "education" and value is None:
                del features[feature]
            else:
                features[feature] = value
        event = {
            "model": MODEL,
            "version": VERSION,
            "request_id": request_id,
            "features": features,
            "prediction": {"income": labels[row]},
        }
        if time is not None:
            event["timestamp"] = time.isoformat().replace("+00:00", "Z")
        items.append((orjson.dumps(event), event, None))

    # A day earlier: one window whose batch is red on age and orange on
    # workclass.
    earlier = start - timedelta(days=1)
    for number in range(EARLIER_EVENTS):
        changes = {}
        if number % 3 == 0:
            changes["age"] = 200
        if number % 10 == 0:
            changes["workclass"] = "Space-agency"
        time = earlier + timedelta(seconds=number)
        add_event(f"early-{number:03d}", number, time, **changes)

    # The main traffic: five windows of about 112 events each.
    for number in range(MAIN_EVENTS):
        if number in INVALID:
            payload, code, field = INVALID[number]
            items.append((payload, None, (code, field)))
        offset = timedelta(
            microseconds=round(number * MAIN_SECONDS * 1e6 / MAIN_EVENTS)
        )
        time = None if number == NO_TIMESTAMP else start + offset
        changes = {}
        if CRAFTED_FROM <= number < CRAFTED_FROM + CRAFTED_EVENTS:
            feature, value = CRAFTED[(number - CRAFTED_FROM) % len(CRAFTED)]
            changes[feature] = value
        if number == CRAFTED_FROM:
            changes["city"] = "Lyon"
        add_event(f"req-{number:04d}", EARLIER_EVENTS + number, time, **changes)

        # Events of the second window sent during the fourth, and one sent
        # 0.4 ms before the fourth window starts, which is late once its time
        # is truncated to milliseconds.
        if number == LATE_AFTER:
            for late in range(3):
                late_time = start + timedelta(seconds=70 + 5 * late)
                add_event(f"late-{late}", 1000 + late, late_time)
            edge = start + timedelta(seconds=180, microseconds=-400)
            add_event("late-edge", 1003, edge)

    return _messages(items)


def _messages(
    items: list[tuple[bytes, dict | None, tuple[str, str] | None]],
) -> Traffic:
    """Wrap the payloads in messages with offsets and receive times; tabulate them."""
    messages, events, rejected = [], [], []
    received_at = None
    for offset, (payload, event, rejection) in enumerate(items):
        if event is not None and "timestamp" in event:
            received_at = datetime.fromisoformat(event["timestamp"]) + timedelta(
                milliseconds=250
            )
        else:
            received_at = received_at + timedelta(milliseconds=100)
        messages.append(
            RawMessage(TOPIC, 0, offset, MODEL.encode(), payload, received_at)
        )
        if event is not None:
            time = datetime.fromisoformat(
                event.get("timestamp") or received_at.isoformat()
            )
            events.append(
                {
                    "offset": offset,
                    "request_id": event["request_id"],
                    "event_time": _stored_time(time),
                    "features": event["features"],
                    "prediction": event["prediction"],
                }
            )
        else:
            code, field = rejection
            rejected.append(
                {
                    "offset": offset,
                    "received_at": _stored_time(received_at),
                    "reason_code": code,
                    "field": field,
                }
            )
    return Traffic(
        messages, _assign_batches(pd.DataFrame(events)), pd.DataFrame(rejected)
    )


def _stored_time(time: datetime) -> pd.Timestamp:
    """Return a time as ClickHouse returns a DateTime64(3, 'UTC'): naive UTC, in ms."""
    return pd.Timestamp(time).tz_convert(None).floor("ms")


def _assign_batches(events: pd.DataFrame) -> pd.DataFrame:
    """Add each event's batch, window and lateness by the batching rules.

    An event goes into the current window, the latest window seen so far, and
    is late when its own window is earlier. A window's events are cut into
    batches of BATCH_SIZE in order. A full batch closes by size, the last open
    batch at shutdown, and every other by time.
    """
    window_ms = WINDOW_SECONDS * 1000
    millis = events["event_time"].astype("datetime64[ms]").astype("int64")
    window = millis // window_ms * window_ms
    current = window.cummax()
    sequence = events.groupby(current).cumcount() // BATCH_SIZE
    events = events.assign(
        window_start=pd.to_datetime(current, unit="ms"),
        late=window < current,
    )
    events["batch_id"] = [
        f"{MODEL}/{VERSION}/{start:%Y-%m-%dT%H:%M:%S}Z/{number:06d}"
        for start, number in zip(events["window_start"], sequence, strict=True)
    ]
    events["window_end"] = events["window_start"] + pd.Timedelta(seconds=WINDOW_SECONDS)
    sizes = events.groupby("batch_id")["request_id"].transform("count")
    last = events["batch_id"] == events["batch_id"].iloc[-1]
    events["closed_by"] = "time"
    events.loc[last, "closed_by"] = "shutdown"
    events.loc[sizes == BATCH_SIZE, "closed_by"] = "size"
    return events


def _run_pipeline(
    traffic: Traffic, store, url: str
) -> tuple[pd.DataFrame, list[DeadLetter]]:
    """Process and store the traffic in blocks; return the scores and dead letters."""
    pipeline = Pipeline(
        ModelRegistry(store),
        Batcher(window_seconds=WINDOW_SECONDS, batch_size=BATCH_SIZE),
    )
    outputs = []
    with Storage.connect(url) as storage:
        _keep_duplicates(storage)
        sink = ClickHouseSink(storage)
        for first in range(0, len(traffic.messages), BLOCK_SIZE):
            block = traffic.messages[first : first + BLOCK_SIZE]
            output = pipeline.process(block)
            sink.write(output, deduplication_token(block))
            outputs.append((block, output))
        closing = pipeline.close_all({(TOPIC, 0): traffic.messages[-1].offset})
        sink.write(closing, "batches:" + ",".join(closing.batches["batch_id"]))
        outputs.append(([], closing))

        # Kafka delivers the first half of every block again, as after a
        # worker restart. The rows of that half and the block's batch
        # summaries are stored a second time, under other insert tokens
        # because the offset ranges differ.
        for block, output in outputs[:-1]:
            again = block[: BLOCK_SIZE // 2]
            sink.write(_replayed_rows(output, again), deduplication_token(again))

    scored = [
        orjson.loads(value) for _, output in outputs for _, value in output.scored
    ]
    dead_letters = [letter for _, output in outputs for letter in output.dead_letters]
    return pd.DataFrame(scored), dead_letters


def _keep_duplicates(storage: Storage) -> None:
    """Stop merges of the tables, so rows stored twice stay until the queries run.

    ClickHouse merges small parts within seconds, and a merge of a
    ReplacingMergeTree removes the duplicates. Without merges, a query that
    leaves out FINAL counts a row stored twice as two.
    """
    for table in TABLES:
        storage.command(
            f"ALTER TABLE {table} "
            "MODIFY SETTING max_bytes_to_merge_at_max_space_in_pool = 1"
        )


def _replayed_rows(output: BlockOutput, messages: list[RawMessage]) -> BlockOutput:
    """Return the rows of ``messages`` in ``output``, with its batch summaries."""
    offsets = {message.offset for message in messages}
    events = _select(
        output.events, [o in offsets for o in output.events["kafka_offset"]]
    )
    request_ids = set(events["request_id"])
    alerts = output.alerts
    return BlockOutput(
        events=events,
        batches=output.batches,
        # Batch alerts have an empty request_id.
        alerts=_select(
            alerts, [r in request_ids or r == "" for r in alerts["request_id"]]
        ),
        dead_letters=[d for d in output.dead_letters if d.message.offset in offsets],
    )


def _select(columns: dict[str, list], keep: list[bool]) -> dict[str, list]:
    return {
        name: [value for value, kept in zip(values, keep, strict=True) if kept]
        for name, values in columns.items()
    }


# Expected values, computed in pandas


def _expected_statuses(events: pd.DataFrame, train: pd.DataFrame) -> pd.DataFrame:
    """Return each event's range check status per feature, from the training data.

    A number passes within the training minimum and maximum, and a category
    when training saw it. A missing value passes when training had missing
    values for that feature.
    """
    features = [column for column in train.columns if column != "income"]
    rules = {feature: _TrainingRange.of(train[feature]) for feature in features}
    rows = []
    for event in events.itertuples():
        for feature, rule in rules.items():
            status = rule.status(event.features.get(feature))
            passed = status == "ok" or (status == "missing" and rule.had_missing)
            rows.append(
                {
                    "request_id": event.request_id,
                    "batch_id": event.batch_id,
                    "window_start": event.window_start,
                    "event_time": event.event_time,
                    "feature": feature,
                    "status": status,
                    "passed": passed,
                }
            )
    return pd.DataFrame(rows)


@dataclass(frozen=True)
class _TrainingRange:
    """What training saw of one feature: its range or its categories."""

    numeric: bool
    minimum: float
    maximum: float
    categories: frozenset
    had_missing: bool

    @classmethod
    def of(cls, column: pd.Series) -> "_TrainingRange":
        numeric = pd.api.types.is_numeric_dtype(column)
        return cls(
            numeric=numeric,
            minimum=column.min() if numeric else 0.0,
            maximum=column.max() if numeric else 0.0,
            categories=frozenset() if numeric else frozenset(column.dropna()),
            had_missing=bool(column.isna().any()),
        )

    def status(self, value) -> str:
        if value is None:
            return "missing"
        if not self.numeric:
            return "ok" if str(value) in self.categories else "unseen_category"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return "wrong_type"
        if value < self.minimum:
            return "below_min"
        if value > self.maximum:
            return "above_max"
        return "ok"


def _health(share: float) -> str:
    for cutoff, level in HEALTH_CUTOFFS:
        if share >= cutoff:
            return level
    return "red"


def _expected_checks(stored: Stored) -> pd.DataFrame:
    """Return checked and passed per batch and check, as the grid shows them."""
    statuses = stored.statuses
    ranges = (
        statuses.groupby(["window_start", "batch_id", "feature"])["passed"]
        .agg(checked="count", passed="sum")
        .reset_index()
        .assign(check="range")
    )
    events = stored.traffic.events.merge(
        stored.scored[["request_id", "is_outlier"]], on="request_id"
    )
    outliers = (
        events.assign(inlier=~events["is_outlier"])
        .groupby(["window_start", "batch_id"])["inlier"]
        .agg(checked="count", passed="sum")
        .reset_index()
        .assign(check="auto_od", feature="")
    )
    checks = pd.concat([ranges, outliers], ignore_index=True)
    checks["pass_share"] = checks["passed"] / checks["checked"]
    checks["health"] = checks["pass_share"].map(_health)
    return checks.sort_values(["window_start", "batch_id", "check", "feature"])


def _expected_batches(stored: Stored) -> pd.DataFrame:
    """Return each batch's summary: events, outliers, late events, share, health."""
    events = stored.traffic.events.merge(
        stored.scored[["request_id", "is_outlier"]], on="request_id"
    )
    batches = (
        events.groupby("batch_id")
        .agg(
            window_start=("window_start", "first"),
            window_end=("window_end", "first"),
            closed_by=("closed_by", "first"),
            events=("request_id", "count"),
            outliers=("is_outlier", "sum"),
            late_events=("late", "sum"),
        )
        .reset_index()
    )
    checks = _expected_checks(stored).groupby("batch_id")
    totals = checks[["checked", "passed"]].sum()
    batches["pass_share"] = batches["batch_id"].map(
        totals["passed"] / totals["checked"]
    )
    worst = checks["pass_share"].min()
    batches["health"] = batches["batch_id"].map(worst).map(_health)
    return batches.sort_values(["window_start", "batch_id"], ignore_index=True)


def _rows(frame: pd.DataFrame, columns: list[str]) -> list[tuple]:
    """Return the frame's rows as tuples of plain Python values."""
    return [
        tuple(value.item() if hasattr(value, "item") else value for value in row)
        for row in frame[columns].itertuples(index=False, name=None)
    ]


def _batch_of(stored: Stored, request_id: str) -> str:
    events = stored.traffic.events
    return events.loc[events["request_id"] == request_id, "batch_id"].item()


# Tests


def test_query_files_all_tested():
    assert sorted(QUERY_TESTS) == [query.name for query in list_queries()]


@pytest.mark.parametrize("name", [query.name for query in list_queries()])
def test_query_header_lists_columns(stored, storage, name):
    query = load_query(name)
    frame = _run(storage, name, **_sample_parameters(stored)[name])
    assert len(frame) > 0
    assert list(frame.columns) == query.columns


def test_replayed_rows_stored_twice(storage):
    for table in TABLES:
        raw = storage.query_rows(f"SELECT count() FROM {table}")[0][0]
        final = storage.query_rows(f"SELECT count() FROM {table} FINAL")[0][0]
        assert raw > final, table


def test_feature_pass_share_grid(stored, storage):
    expected = _expected_checks(stored)
    columns = [
        "window_start", "batch_id", "feature", "check", "checked", "passed",
        "pass_share", "health",
    ]  # fmt: skip

    frame = _run(
        storage,
        "feature_pass_share",
        model=MODEL,
        version=VERSION,
        since=stored.start - timedelta(days=2),
    )
    assert _rows(frame, columns) == _rows(expected, columns)

    since = stored.start + timedelta(seconds=120)
    frame = _run(
        storage, "feature_pass_share", model=MODEL, version=VERSION, since=since
    )
    later = expected[expected["window_start"] >= _stored_time(since)]
    assert _rows(frame, columns) == _rows(later, columns)
    assert frame["window_start"].is_monotonic_increasing


def test_score_over_time_all_events(stored, storage):
    expected = stored.traffic.events.merge(stored.scored, on=["request_id", "batch_id"])
    expected = expected.sort_values(["event_time", "request_id"])
    columns = [
        "event_time",
        "request_id",
        "score",
        "threshold",
        "is_outlier",
        "batch_id",
    ]

    frame = _run(storage, "score_over_time", model=MODEL, version=VERSION)
    assert _rows(frame, columns) == _rows(expected, columns)

    since = stored.start + timedelta(seconds=100)
    frame = _run(storage, "score_over_time", model=MODEL, version=VERSION, since=since)
    later = expected[expected["event_time"] >= _stored_time(since)]
    assert _rows(frame, columns) == _rows(later, columns)


def test_score_over_time_other_version(storage):
    frame = _run(storage, "score_over_time", model=MODEL, version=VERSION + 1)
    assert len(frame) == 0


def test_batch_summary_crafted_batch(stored, storage):
    batch_id = _batch_of(stored, f"req-{CRAFTED_FROM:04d}")
    batch = _expected_batches(stored).set_index("batch_id").loc[batch_id]
    checks = _expected_checks(stored)
    checks = checks[checks["batch_id"] == batch_id].sort_values(["check", "feature"])

    frame = _run(storage, "batch_summary", batch_id=batch_id)
    assert set(frame["batch_id"]) == {batch_id}
    assert set(frame["closed_by"]) == {batch["closed_by"]}
    assert set(frame["events"]) == {batch["events"]}
    assert set(frame["outliers"]) == {batch["outliers"]}
    assert set(frame["late_events"]) == {batch["late_events"]}
    assert set(frame["batch_pass_share"]) == {batch["pass_share"]}
    assert set(frame["batch_health"]) == {batch["health"]}
    assert set(frame["window_start"]) == {batch["window_start"]}
    assert set(frame["window_end"]) == {batch["window_end"]}
    columns = ["check", "feature", "checked", "passed", "pass_share"]
    assert _rows(frame, columns) == _rows(checks, columns)


def test_batch_summary_late_events(stored, storage):
    events = stored.traffic.events.set_index("request_id")
    late = ["late-0", "late-1", "late-2", "late-edge"]
    assert events.loc[late, "late"].all()
    batch_id = _batch_of(stored, "late-edge")
    assert set(events.loc[late, "batch_id"]) == {batch_id}

    frame = _run(storage, "batch_summary", batch_id=batch_id)
    assert set(frame["late_events"]) == {
        events.loc[events["batch_id"] == batch_id, "late"].sum()
    }


def test_batch_summary_unknown_batch(storage):
    frame = _run(
        storage, "batch_summary", batch_id="census/1/2000-01-01T00:00:00Z/000000"
    )
    assert len(frame) == 0


def test_batch_requests_crafted_batch(stored, storage):
    batch_id = _batch_of(stored, f"req-{CRAFTED_FROM:04d}")
    events = stored.traffic.events
    scores = stored.scored[["request_id", "score", "threshold", "is_outlier"]]
    events = events[events["batch_id"] == batch_id].merge(scores, on="request_id")
    events = events.sort_values(["event_time", "request_id"], ignore_index=True)
    statuses = stored.statuses[stored.statuses["batch_id"] == batch_id]

    frame = _run(storage, "batch_requests", batch_id=batch_id)
    assert frame["request_id"].tolist() == events["request_id"].tolist()
    assert frame["event_time"].tolist() == events["event_time"].tolist()
    features = [orjson.loads(text) for text in frame["features"]]
    assert features == events["features"].tolist()
    predictions = [orjson.loads(text) for text in frame["prediction"]]
    assert predictions == events["prediction"].tolist()
    for row in frame.itertuples():
        own = statuses[statuses["request_id"] == row.request_id]
        assert row.statuses == dict(zip(own["feature"], own["status"], strict=True))
        failed = sorted(own.loc[~own["passed"], "feature"])
        assert list(row.failed_features) == failed, row.request_id
        expected_extra = ["city"] if row.request_id == f"req-{CRAFTED_FROM:04d}" else []
        assert list(row.extra_features) == expected_extra
    columns = ["score", "threshold", "is_outlier"]
    assert _rows(frame, columns) == _rows(events, columns)


def test_worst_features_hour_before(stored, storage):
    until = stored.start + timedelta(seconds=180)
    statuses = stored.statuses
    end = _stored_time(until)
    in_hour = statuses[
        (statuses["event_time"] >= end - pd.Timedelta(hours=1))
        & (statuses["event_time"] < end)
    ]
    expected = _worst_features(in_hour)
    columns = ["feature", "failed", "checked", "failed_share", "top_failed_status"]

    frame = _run(
        storage,
        "worst_features_hour_before",
        model=MODEL,
        version=VERSION,
        until=until,
        limit=100,
    )
    assert _rows(frame, columns) == _rows(expected, columns)
    # Crafted age values fail as often above as below the range.
    assert frame.set_index("feature").loc["age", "top_failed_status"] == "above_max"

    frame = _run(
        storage,
        "worst_features_hour_before",
        model=MODEL,
        version=VERSION,
        until=until,
        limit=3,
    )
    assert _rows(frame, columns) == _rows(expected.head(3), columns)


def test_worst_features_last_hour(stored, storage):
    before = datetime.now(UTC)
    frame = _run(
        storage, "worst_features_last_hour", model=MODEL, version=VERSION, limit=100
    )
    after = datetime.now(UTC)

    # Events a day old are out of the hour, and the main traffic is in it.
    statuses = stored.statuses
    times = statuses["event_time"]
    in_hour = statuses[
        (times >= _stored_time(before) - pd.Timedelta(hours=1))
        & (times < _stored_time(before))
    ]
    assert not times.between(
        _stored_time(before) - pd.Timedelta(hours=1),
        _stored_time(after) - pd.Timedelta(hours=1),
    ).any()
    expected = _worst_features(in_hour)
    columns = ["feature", "failed", "checked", "failed_share", "top_failed_status"]
    assert _rows(frame, columns) == _rows(expected, columns)
    age = frame.set_index("feature").loc["age"]
    assert age["checked"] == len(stored.traffic.events) - EARLIER_EVENTS


def _worst_features(statuses: pd.DataFrame) -> pd.DataFrame:
    failed = statuses[~statuses["passed"]]
    counts = failed.groupby(["feature", "status"]).size().reset_index(name="count")
    counts = counts.sort_values(
        ["feature", "count", "status"], ascending=[True, False, True]
    )
    top = counts.groupby("feature")["status"].first()
    worst = statuses.groupby("feature").agg(
        failed=("passed", lambda passed: int((~passed).sum())),
        checked=("passed", "count"),
    )
    worst = worst[worst["failed"] > 0].reset_index()
    worst["failed_share"] = worst["failed"] / worst["checked"]
    worst["top_failed_status"] = worst["feature"].map(top)
    return worst.sort_values(["failed", "feature"], ascending=[False, True])


def test_alerts_per_day_by_kind(stored, storage):
    events = stored.traffic.events.merge(
        stored.scored[["request_id", "is_outlier"]], on="request_id"
    )
    outliers = events.loc[events["is_outlier"], "event_time"].dt.normalize()
    batches = _expected_batches(stored)
    unhealthy = batches.loc[batches["health"].isin(["orange", "red"]), "window_end"]
    expected = pd.concat(
        [
            pd.DataFrame({"day": outliers, "kind": "outlier"}),
            pd.DataFrame({"day": unhealthy.dt.normalize(), "kind": "unhealthy_batch"}),
        ]
    )
    expected = expected.groupby(["day", "kind"]).size().reset_index(name="alerts")
    expected = expected.assign(model=MODEL, version=VERSION)
    assert set(expected["kind"]) == {"outlier", "unhealthy_batch"}
    assert expected["day"].nunique() >= 2
    columns = ["day", "model", "version", "kind", "alerts"]

    first_day = expected["day"].min()
    frame = _run(storage, "alerts_per_day", since=first_day.date())
    assert _rows(frame, columns) == _rows(expected, columns)

    last_day = expected["day"].max()
    frame = _run(storage, "alerts_per_day", since=last_day.date())
    assert _rows(frame, columns) == _rows(
        expected[expected["day"] == last_day], columns
    )


def test_dead_letters_by_reason(stored, storage):
    rejected = stored.traffic.rejected
    reasons = {letter.message.offset: letter.reason for letter in stored.dead_letters}
    expected = (
        rejected.sort_values("offset")
        .groupby("reason_code")
        .agg(
            dead_letters=("offset", "count"),
            first_received_at=("received_at", "min"),
            last_received_at=("received_at", "max"),
            example_field=("field", "first"),
            example_offset=("offset", "first"),
        )
        .reset_index()
        .sort_values(["dead_letters", "reason_code"], ascending=[False, True])
    )
    expected["example_reason"] = expected["example_offset"].map(reasons)
    expected["example_topic"] = TOPIC
    expected["example_partition"] = 0
    columns = [
        "reason_code", "dead_letters", "first_received_at", "last_received_at",
        "example_reason", "example_field", "example_topic", "example_partition",
        "example_offset",
    ]  # fmt: skip

    frame = _run(
        storage, "dead_letters_by_reason", since=stored.start - timedelta(days=2)
    )
    assert _rows(frame, columns) == _rows(expected, columns)
    assert sorted(frame["reason_code"]) == sorted(
        set(c for _, c, _ in INVALID.values())
    )

    # From just after the first invalid JSON, that one is no longer counted.
    first = rejected.sort_values("offset").iloc[0]
    since = first["received_at"] + pd.Timedelta(milliseconds=1)
    frame = _run(storage, "dead_letters_by_reason", since=since.tz_localize(UTC))
    counts = dict(zip(frame["reason_code"], frame["dead_letters"], strict=True))
    assert (
        counts[first["reason_code"]]
        == (rejected["reason_code"] == first["reason_code"]).sum() - 1
    )


def test_batch_summary_check_matches_stored(stored, storage):
    frame = _run(
        storage,
        "batch_summary_check",
        model=MODEL,
        version=VERSION,
        batch_window=WINDOW_SECONDS,
        since=stored.start - timedelta(days=2),
    )
    batches = storage.query_frame(
        "SELECT batch_id, window_start, window_end, closed_by, events, outliers, "
        "late_events, pass_share, health FROM batches FINAL "
        "ORDER BY window_start, batch_id"
    )
    checks = storage.query_frame(
        "SELECT batch_id, feature, check, checked, passed FROM batch_checks FINAL"
    )
    stored_checks = {
        batch_id: sorted(_rows(group, ["feature", "check", "checked", "passed"]))
        for batch_id, group in checks.groupby("batch_id")
    }
    columns = [
        "batch_id", "window_start", "window_end", "closed_by", "events", "outliers",
        "late_events", "pass_share", "health",
    ]  # fmt: skip

    assert _rows(frame, columns) == _rows(batches, columns)
    assert [list(c) for c in frame["checks"]] == [
        stored_checks[batch_id] for batch_id in frame["batch_id"]
    ]
    assert set(frame["stored_summary"]) == {"match"}

    # Both agree with the batches computed here from the events sent.
    expected = _expected_batches(stored)
    assert _rows(frame, columns) == _rows(expected, columns)


def test_batch_summary_check_repeated_request(tmp_path, census_store, stored):
    events = stored.traffic.events.head(5)
    payloads = []
    for event in events.itertuples():
        payloads.append(
            {
                "model": MODEL,
                "version": VERSION,
                "request_id": event.request_id,
                "timestamp": event.event_time.isoformat() + "Z",
                "features": event.features,
            }
        )
    # The client sends the first event again, then an event of a later window.
    payloads.append(payloads[0])
    later = dict(payloads[1], request_id="later")
    later["timestamp"] = (
        events["event_time"].iloc[0] + pd.Timedelta(minutes=5)
    ).isoformat() + "Z"
    messages = [
        RawMessage(TOPIC, 0, offset, None, orjson.dumps(payload), stored.start)
        for offset, payload in enumerate(payloads)
    ]
    pipeline = Pipeline(
        ModelRegistry(census_store), Batcher(window_seconds=WINDOW_SECONDS)
    )
    url = f"chdb://{tmp_path / 'clickhouse'}"
    with Storage.connect(url) as storage:
        sink = ClickHouseSink(storage)
        first = pipeline.process(messages)
        sink.write(first, deduplication_token(messages))
        last = [
            RawMessage(TOPIC, 0, len(messages), None, orjson.dumps(later), stored.start)
        ]
        sink.write(pipeline.process(last), deduplication_token(last))
        frame = _run(
            storage,
            "batch_summary_check",
            model=MODEL,
            version=VERSION,
            batch_window=WINDOW_SECONDS,
            since=stored.start - timedelta(days=2),
        )
        stored_events = storage.query_rows("SELECT events FROM batches FINAL")

    # The repeated request goes to the dead-letter topic, so the stream and
    # SQL count the same five events.
    assert [letter.reason_code for letter in first.dead_letters] == [
        "duplicate_request_id"
    ]
    assert stored_events == [(5,)]
    assert frame["events"].tolist() == [5, 1]
    assert frame["stored_summary"].tolist() == ["match", "missing"]
    assert frame["closed_by"].tolist() == ["time", ""]


def test_batch_drift_per_feature(stored, storage):
    since = stored.start - timedelta(days=2)
    frame = _run(storage, "batch_drift", model=MODEL, version=VERSION, since=since)
    batches = storage.query_frame(
        "SELECT batch_id, events FROM batches FINAL WHERE model = {m:String}",
        {"m": MODEL},
    )
    features = stored.statuses["feature"].nunique()
    # Every closed batch is tested, one row per profiled feature.
    assert sorted(set(frame["batch_id"])) == sorted(batches["batch_id"])
    assert len(frame) == len(batches) * features
    small = set(batches.loc[batches["events"] < 20, "batch_id"])
    assert (frame.loc[frame["batch_id"].isin(small), "tested"] == 0).all()
    tested = frame[frame["tested"] == 1]
    assert len(tested) > 0
    assert (tested["values"] <= 100).all()
    drifted = tested["adjusted_p_value"] < 0.01
    assert (tested["drifted"] == drifted.astype(int)).all()
    assert frame["window_start"].is_monotonic_increasing


def test_query_bind_fills_nullable():
    query = load_query("score_over_time")
    bound = query.bind({"model": MODEL, "version": VERSION})
    assert bound == {"model": MODEL, "version": VERSION, "since": None}


def test_query_bind_rejects_bad_names():
    query = load_query("score_over_time")
    with pytest.raises(ConfigError, match="missing parameter version"):
        query.bind({"model": MODEL})
    with pytest.raises(ConfigError, match="has no parameter until"):
        query.bind({"model": MODEL, "version": VERSION, "until": None})


def test_query_unknown_name():
    with pytest.raises(ConfigError, match="expected one of: .*score_over_time"):
        load_query("scores")


def test_query_header_mismatch(tmp_path):
    (tmp_path / "count.sql").write_text(
        "-- Count the events of a model.\n"
        "--\n"
        "-- Parameters:\n"
        "--   {model:String}  model name\n"
        "--\n"
        "-- Columns:\n"
        "--   events  number of events\n"
        "SELECT count() AS events FROM events WHERE version = {version:UInt32}\n"
    )
    with pytest.raises(ValueError, match="query uses {version:UInt32}"):
        load_query("count", tmp_path)


def _sample_parameters(stored: Stored) -> dict[str, dict]:
    """Return parameters for every query that give it at least one row."""
    since = stored.start - timedelta(days=2)
    batch_id = _batch_of(stored, f"req-{CRAFTED_FROM:04d}")
    version = {"model": MODEL, "version": VERSION}
    return {
        "alerts_per_day": {"since": since.date()},
        "batch_drift": {**version, "since": since},
        "batch_requests": {"batch_id": batch_id},
        "batch_summary": {"batch_id": batch_id},
        "batch_summary_check": {
            **version,
            "batch_window": WINDOW_SECONDS,
            "since": since,
        },
        "dead_letters_by_reason": {"since": since},
        "feature_pass_share": {**version, "since": since},
        "score_over_time": version,
        "worst_features_hour_before": {
            **version,
            "until": stored.start + timedelta(minutes=10),
            "limit": 10,
        },
        "worst_features_last_hour": {**version, "limit": 10},
    }


QUERY_TESTS = {
    "alerts_per_day": test_alerts_per_day_by_kind,
    "batch_drift": test_batch_drift_per_feature,
    "batch_requests": test_batch_requests_crafted_batch,
    "batch_summary": test_batch_summary_crafted_batch,
    "batch_summary_check": test_batch_summary_check_matches_stored,
    "dead_letters_by_reason": test_dead_letters_by_reason,
    "feature_pass_share": test_feature_pass_share_grid,
    "score_over_time": test_score_over_time_all_events,
    "worst_features_hour_before": test_worst_features_hour_before,
    "worst_features_last_hour": test_worst_features_last_hour,
}
"""The test that checks each query file's results, by file name."""
