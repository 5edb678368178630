"""Hostile input: every message is scored or dead-lettered, and the worker lives.

Hand-written cases cover what producers get wrong in practice: bytes that
are not UTF-8 or not JSON, JSON that is not an object, NaN and 1e400,
nesting 10,000 deep, a 10 MB event, huge integers, strings for numbers,
unknown versions and timestamps centuries away. Hypothesis adds a few
thousand events drawn from the JSON Schema shipped in schemas/json, each
property valid or broken. The same schema, checked with the jsonschema
package, decides which of them the worker must score. The tests after the
first pin, one by one, the failures that hostile input has shown.
"""

import contextlib
import json
import logging
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import psutil
import pytest
from confluent_kafka import Consumer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from detectors import load_model, train_model
from schemas import MAX_EVENT_BYTES
from streams.batching import Batcher
from streams.lag import LagProbe
from streams.pipeline import Pipeline
from streams.processor import BlockProcessor, WorkerStopping
from streams.records import RawMessage
from streams.registration import build_registration, publish_registration
from streams.registry import ModelRegistry
from streams.storage import Storage
from tests.conftest import ROOT
from tests.faults.conftest import (
    batch_violations,
    produce,
    register,
    stop_within,
    wait_for_progress,
)

pytestmark = pytest.mark.integration

SCHEMA = json.loads(
    (ROOT / "schemas" / "json" / "prediction_event.schema.json").read_text()
)
VALIDATOR = Draft202012Validator(SCHEMA)

GENERATED = 1200
"""Messages drawn from the schema. The worker receives them in three rounds."""

ROUNDS = 3

MAX_GROWTH_MB = 300
"""Generous bound on the worker's RSS growth over the first round."""

MAX_LATER_GROWTH_MB = 50
"""The same messages again must not grow the worker much further."""

NORMAL = {"x": 5.0, "y": 50.0, "color": "red"}
NOW = datetime.now(UTC).replace(microsecond=0)

BELIEVABLE = (datetime(2000, 1, 1, tzinfo=UTC), NOW)
"""Event times the worker must accept; it may reject times outside.

The schema allows any time, and the worker rejects those it takes for a
wrong clock or unit.
"""


def _event(request_id: str, **fields) -> dict:
    event = {
        "model": "shapes",
        "version": 1,
        "request_id": request_id,
        "timestamp": NOW.isoformat().replace("+00:00", "Z"),
        "features": dict(NORMAL),
        "prediction": {"label": 1},
    }
    event.update(fields)
    return event


def _dumps(document) -> bytes:
    # The standard library writes integers of any size; orjson stops at 64 bits.
    return json.dumps(document, separators=(",", ":")).encode()


def _raw(request_id: str, **fields) -> bytes:
    return _dumps(_event(request_id, **fields))


def _with_feature(request_id: str, name: str, json_text: str) -> bytes:
    """An event whose feature ``name`` is the literal JSON text given."""
    features = _dumps({**NORMAL, name: 0}).decode()
    features = features.replace(f'"{name}":0', f'"{name}":{json_text}')
    return _raw(request_id).replace(_dumps(NORMAL), features.encode(), 1)


@dataclass
class Dead:
    """Expect a dead letter: its field, a phrase of its reason and its code.

    ``code`` None accepts any reason code.
    """

    code: str | None
    field: str
    phrase: str


@dataclass
class Scored:
    """Expect a scored event with these statuses; unnamed features are ``ok``."""

    request_id: str
    statuses: dict[str, str] = field(default_factory=dict)
    event_time: datetime | None = None


@dataclass
class Either:
    """Accept either outcome, each as described."""

    dead: Dead
    scored: Scored


def _hand_cases() -> list[tuple[str, bytes, Dead | Scored | Either]]:
    big = "9" * 40
    # The batch window of this time would end after year 9999.
    last_millisecond = datetime(9999, 12, 31, 23, 59, 59, 999_000)
    deep = "[" * 10_000 + "]" * 10_000
    huge = {**NORMAL, "blob": "x" * (10 * 1024 * 1024)}
    return [
        ("not UTF-8", _raw("h-utf8").replace(b"shapes", b"shap\xffes"),
         Dead(None, "", "UTF-8")),
        ("not JSON", b"{not json", Dead(None, "", "invalid JSON")),
        ("empty value", b"", Dead(None, "", "invalid JSON")),
        ("JSON array", b"[1, 2]", Dead(None, "", "a JSON array")),
        ("JSON number", b"42", Dead(None, "", "a JSON number")),
        ("JSON string", b'"event"', Dead(None, "", "a JSON string")),
        ("NaN literal", _with_feature("h-nan", "x", "NaN"),
         Dead(None, "", "invalid JSON")),
        ("Infinity literal", _with_feature("h-inf", "y", "-Infinity"),
         Dead(None, "", "invalid JSON")),
        ("1e400", _with_feature("h-1e400", "x", "1e400"),
         Dead(None, "", "infinity")),
        ("10,000 nested arrays", _with_feature("h-deep", "x", deep),
         Dead(None, "", "depth")),
        ("10 MB event", _raw("h-10mb", features=huge),
         Dead(None, "", f"at most {MAX_EVENT_BYTES} bytes")),
        ("huge integers", _with_feature("h-bigint", "x", big).replace(
            b'"y":50.0', f'"y":-{big}'.encode()),
         Scored("h-bigint", {"x": "above_max", "y": "below_min"})),
        ("version beyond UInt32", _raw("h-v64", version=2**64),
         Dead(None, "version", "4294967295")),
        ("string for a number", _raw("h-ten", features={**NORMAL, "x": "ten"}),
         Scored("h-ten", {"x": "wrong_type"})),
        ("object for a number", _raw("h-obj", features={**NORMAL, "y": {"a": 1}}),
         Scored("h-obj", {"y": "wrong_type"})),
        ("string version", _raw("h-v1", version="1"),
         Dead(None, "version", "integer")),
        ("features not an object", _raw("h-flist", features=[1, 2]),
         Dead(None, "features", "object")),
        ("no features", _dumps({"model": "shapes", "version": 1,
                                "request_id": "h-nofeat"}),
         Dead(None, "features", "nothing")),
        ("unknown model", _raw("h-model", model="nosuch"),
         Dead("model_not_registered", "version", "not registered")),
        ("unknown version", _raw("h-v9", version=9),
         Dead("model_not_registered", "version", "not registered")),
        ("NUL in request_id", _raw("h-\x00-nul"), Scored("h-\x00-nul")),
        ("year 1900", _raw("h-1900", timestamp="1900-01-01T00:00:00Z"),
         Either(Dead(None, "timestamp", "1900"),
                Scored("h-1900", event_time=datetime(1900, 1, 1)))),
        ("year 2200", _raw("h-2200", timestamp="2200-06-15T12:00:00.5Z"),
         Either(Dead(None, "timestamp", "2200"),
                Scored("h-2200", event_time=datetime(2200, 6, 15, 12, 0, 0, 500_000)))),
        ("year 9999", _raw("h-9999", timestamp="9999-12-31T23:59:59.999Z"),
         Either(Dead(None, "timestamp", "9999"),
                Scored("h-9999", event_time=last_millisecond))),
        ("year 1 east of UTC",
         _raw("h-0001", timestamp="0001-01-01T00:00:00+01:00"),
         Dead(None, "timestamp", "out of range")),
        ("month 13", _raw("h-m13", timestamp="2026-13-01T00:00:00Z"),
         Dead(None, "timestamp", "ISO 8601")),
    ]  # fmt: skip


# Strategies drawn from the schema: each property is valid, broken or absent.

_JSON_LEAVES = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20)
)
_JSON_VALUES = st.recursive(
    _JSON_LEAVES,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)

# The generated events stay clear of the failures that tests below pin, so
# that one finding does not hide the others:
# - times fall in a few months (test_many_months_in_one_block),
# - unregistered names are short, broken strings printable and times free of
#   long rejection reasons (test_long_reason_is_dead_lettered),
# - unregistered models and versions come from short lists
#   (test_unregistered_versions_are_quick),
# - request ids are unique (test_repeated_request_id_keeps_summaries).
_MONTHS = [(1900, 1), (1969, 12), (2000, 1), (2019, 6), (2024, 2), (2200, 1),
           (9999, 12)]  # fmt: skip
_OTHER_MODELS = ["Shapes", "shapes ", "ʃapes", "census", "\u00a0", "x" * 12]
# Characters that repr() shows as themselves, so a reason quoting them does
# not grow.
_PRINTABLE = st.characters(categories=("L", "N", "P", "S"), include_characters=" ")


@st.composite
def _mostly(draw, common, rare: st.SearchStrategy):
    """Draw ``common`` seven times in eight, otherwise from ``rare``."""
    return common if draw(st.integers(0, 7)) else draw(rare)


@st.composite
def _times(draw) -> str:
    year, month = draw(st.sampled_from(_MONTHS))
    moment = datetime(year, month, 1, tzinfo=UTC) + timedelta(
        seconds=draw(st.integers(0, 27 * 86400)),
        microseconds=draw(st.integers(0, 999_999)),
    )
    text = moment.isoformat()
    return draw(st.sampled_from([
        text.replace("+00:00", "Z"), text.replace("+00:00", ""),
        text.replace("T", " "), text]))  # fmt: skip


def _string_strategy(spec: dict) -> st.SearchStrategy:
    limit = spec.get("maxLength", 300)
    pattern = spec.get("pattern")
    if pattern is None:
        return st.text(max_size=40)
    if pattern == r"\S":
        return st.from_regex(r"\S", fullmatch=False).filter(lambda s: len(s) <= limit)
    return st.from_regex(pattern, fullmatch=True).filter(_short_reason_time)


def _short_reason_time(text: str) -> bool:
    """Leave out times whose rejection reason is too long for a dead letter.

    An offset of 24 hours or more, or a long fraction, makes the reason
    longer than 256 characters (test_long_reason_is_dead_lettered).
    """
    offset = re.search(r"([+-])([0-9]{2}):([0-9]{2})$", text)
    if offset is not None and int(offset.group(2)) >= 24:
        return False
    return re.search(r"\.[0-9]{10}", text) is None


def _broken(spec: dict) -> st.SearchStrategy:
    """Values that break ``spec``: wrong JSON type or out of its limits."""
    options = [_JSON_LEAVES.filter(lambda v: not _is_type(v, spec["type"]))]
    if "maxLength" in spec:
        options.append(st.text(min_size=spec["maxLength"] + 1,
                               max_size=spec["maxLength"] + 20))  # fmt: skip
    if spec.get("pattern") == r"\S":
        options.append(st.sampled_from(["", " ", "\t\n"]))
    elif "pattern" in spec:
        options.append(st.text(_PRINTABLE, max_size=30))
    if "minimum" in spec:
        options.append(st.integers(max_value=spec["minimum"] - 1))
        options.append(st.integers(min_value=spec["maximum"] + 1))
        options.append(st.floats(spec["minimum"] + 0.1, spec["minimum"] + 0.9))
    return st.one_of(options)


def _is_type(value, json_type) -> bool:
    types = json_type if isinstance(json_type, list) else [json_type]
    checks = {
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "object": lambda v: isinstance(v, dict),
        "null": lambda v: v is None,
    }
    return any(checks[kind](value) for kind in types)


def _valid(name: str, spec: dict) -> st.SearchStrategy:
    if name == "model":
        return _mostly("shapes", st.sampled_from(_OTHER_MODELS))
    if name == "version":
        return _mostly(1, st.sampled_from([2, 99, spec["maximum"]]))
    if name == "timestamp":
        return st.none() | _times() | _string_strategy(spec)
    if name == "features":
        keys = st.sampled_from(["x", "y", "color"]) | st.text(max_size=8)
        return st.dictionaries(keys, _JSON_VALUES, max_size=6) | st.just(NORMAL)
    if spec.get("type") == "string":
        return _string_strategy(spec)
    return _JSON_VALUES


@st.composite
def _documents(draw) -> bytes | tuple[object, bool]:
    """One message: raw bytes, or a JSON document and how to encode it.

    Most documents are objects built from the schema's properties.
    """
    kind = draw(st.integers(0, 19))
    if kind == 0:
        return draw(st.binary(max_size=64))
    if kind == 1:
        return draw(_JSON_VALUES), True
    document = {}
    for name, spec in SCHEMA["properties"].items():
        # Valid three times in four, otherwise broken or absent. A property
        # of any type, such as the prediction, cannot be broken.
        choice = draw(st.integers(0, 7))
        if choice < 6 or (choice == 6 and "type" not in spec):
            document[name] = draw(_valid(name, spec))
        elif choice == 6:
            document[name] = draw(_broken(spec))
    if draw(st.booleans()):
        document[draw(st.text(max_size=8))] = draw(_JSON_VALUES)
    return document, draw(st.booleans())


def _generate(count: int, seed_value: int) -> list:
    """Draw ``count`` messages from :func:`_documents`, the same for one seed."""
    drawn: list = []

    @seed(seed_value)
    @settings(
        max_examples=count,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
        deadline=None,
    )
    @given(_documents())
    def collect(message) -> None:
        drawn.append(message)

    collect()
    return drawn


def _encode(messages: list, prefix: str) -> list[bytes]:
    """Encode drawn messages, numbering each valid request id after ``prefix``.

    The numbers make request ids unique, so storage keeps every event, and
    the prefix distinguishes one round of the same messages from another.
    """
    encoded = []
    for number, message in enumerate(messages):
        if isinstance(message, bytes):
            encoded.append(message)
            continue
        document, ascii_only = message
        if isinstance(document, dict):
            request_id = document.get("request_id")
            if isinstance(request_id, str) and request_id.strip():
                document = {**document, "request_id": f"{prefix}{number}-{request_id}"}
        text = json.dumps(document, ensure_ascii=ascii_only)
        encoded.append(text.encode("utf-8", "surrogatepass"))
    return encoded


def _expected(raw: bytes) -> str:
    """Return the outcome the schema requires: ``scored``, ``dead`` or ``either``.

    ``either`` covers what the schema cannot express: a timestamp that
    matches its pattern but is no calendar date or lies outside
    :data:`BELIEVABLE`, and numbers beyond the range of a double, which
    orjson rejects.
    """
    try:
        document = json.loads(raw.decode("utf-8"), parse_constant=_reject)
    except (UnicodeDecodeError, ValueError, RecursionError):
        return "dead"
    if len(raw) > MAX_EVENT_BYTES or not VALIDATOR.is_valid(document):
        return "dead"
    if not _finite(document):
        return "either"
    timestamp = document.get("timestamp")
    if timestamp is not None and not _believable_time(timestamp):
        return "either"
    if (document["model"], document["version"]) != ("shapes", 1):
        return "dead"
    return "scored"


def _reject(constant: str):
    raise ValueError(f"{constant} is not JSON")


def _finite(value) -> bool:
    if isinstance(value, dict):
        return all(_finite(v) for v in value.values())
    if isinstance(value, list):
        return all(_finite(v) for v in value)
    if isinstance(value, int) and not isinstance(value, bool):
        return abs(value) < 1.7e308
    return True


def _believable_time(text: str) -> bool:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return False
    return BELIEVABLE[0] <= moment <= BELIEVABLE[1]


@pytest.fixture(scope="module")
def shapes_store(tmp_path_factory):
    """A store holding shapes version 1: x in [0, 10], y near 50, three colors."""
    store = tmp_path_factory.mktemp("shapes-store")
    rng = np.random.default_rng(1)
    frame = pd.DataFrame(
        {
            "x": rng.uniform(0, 10, 2000),
            "y": rng.normal(50, 10, 2000).clip(0, 100),
            "color": rng.choice(["red", "green", "blue"], 2000),
        }
    )
    train_model(frame, model="shapes", version=1).save(store)
    return store


@pytest.fixture
def shapes_worker(worker_process, shapes_store):
    worker_process.env["ODDWATCH_STORE"] = str(shapes_store)
    return worker_process


def _create_predictions_topic(servers: str, topic: str, max_bytes: int) -> None:
    """Create the input topic with a message limit above the broker's default.

    The broker's ``message.max.bytes`` is 1048588 by default, too small for
    the 10 MB event.
    """
    admin = AdminClient({"bootstrap.servers": servers})
    topic_spec = NewTopic(topic, 1, config={"max.message.bytes": str(max_bytes)})
    for future in admin.create_topics([topic_spec]).values():
        future.result(timeout=30)


def _wait_until_done(worker, servers: str, timeout: float) -> None:
    probe = LagProbe(servers, worker.group, worker.topic("predictions"))
    try:
        wait_for_progress(probe, worker, below=1, timeout=timeout)
    finally:
        probe.close()


def _rss_mb(worker) -> float:
    return psutil.Process(worker.process.pid).memory_info().rss / 2**20


def _end_offset(servers: str, topic: str) -> int:
    """Return the end offset of partition 0: its message count, when none expired."""
    consumer = Consumer({"bootstrap.servers": servers, "group.id": f"{topic}-count"})
    try:
        _low, high = consumer.get_watermark_offsets(
            TopicPartition(topic, 0), timeout=10
        )
    finally:
        consumer.close()
    return high


def test_hostile_input_is_handled(shapes_worker, kafka_servers):
    worker = shapes_worker
    topic = worker.topic("predictions")
    seed_value = int(time.time())
    started = time.monotonic()
    big_limit = {"message.max.bytes": 12 * 1024 * 1024}

    _create_predictions_topic(kafka_servers, topic, 12 * 1024 * 1024)
    register(worker, "shapes", 1)
    worker.start()

    # Hypothesis draws while the worker starts.
    cases = _hand_cases()
    drawn = _generate(GENERATED, seed_value)
    rounds = [_encode(drawn, prefix=f"g{number}-") for number in range(ROUNDS)]

    # Warm up, so the model is loaded before the first memory reading.
    warm = [_raw(f"warm-{n}") for n in range(200)]
    warm_offsets = produce(kafka_servers, topic, warm, key=b"shapes")
    _wait_until_done(worker, kafka_servers, timeout=120)
    rss = [_rss_mb(worker)]

    hostile = [raw for _, raw, _ in cases] + rounds[0]
    offsets = produce(kafka_servers, topic, hostile, key=b"shapes",
                      config=big_limit)  # fmt: skip
    _wait_until_done(worker, kafka_servers, timeout=240)
    rss.append(_rss_mb(worker))
    for messages in rounds[1:]:
        hostile += messages
        offsets += produce(kafka_servers, topic, messages, key=b"shapes")
        _wait_until_done(worker, kafka_servers, timeout=240)
    rss.append(_rss_mb(worker))

    sentinel = produce(kafka_servers, topic, [_raw("sentinel")], key=b"shapes")[0]
    _wait_until_done(worker, kafka_servers, timeout=60)
    alive = worker.process.poll() is None
    exit_code = worker.stop()
    seconds = time.monotonic() - started

    with Storage.connect(worker.clickhouse) as storage:
        events = storage.query_rows(
            "SELECT kafka_offset, request_id, event_time FROM events"
        )
        statuses = storage.query_rows(
            "SELECT kafka_offset, feature, status FROM feature_checks"
        )
        letters = storage.query_rows(
            "SELECT offset, reason_code, field, reason FROM dead_letters"
        )
        violations = batch_violations(storage)
    published_letters = _end_offset(kafka_servers, worker.topic("deadletter"))

    scored_at = {offset: (request_id, moment) for offset, request_id, moment in events}
    status_at: dict[int, dict[str, str]] = {}
    for offset, feature, status in statuses:
        status_at.setdefault(offset, {})[feature] = status
    dead_at = {offset: (code, name, reason) for offset, code, name, reason in letters}

    # Every message is stored once: as an event or as a dead letter.
    sent = warm_offsets + offsets + [sentinel]
    both = set(scored_at) & set(dead_at)
    missing = [o for o in sent if o not in scored_at and o not in dead_at]
    doubled = len(events) - len(scored_at) + len(letters) - len(dead_at)

    hand_failures = []
    for (name, _raw_value, expected), offset in zip(
        cases, offsets[: len(cases)], strict=True
    ):
        outcome = _hand_outcome(expected, offset, scored_at, status_at, dead_at)
        if outcome:
            hand_failures.append(f"{name}: {outcome}")

    generated_failures = []
    generated_offsets = offsets[len(cases) :]
    for raw, offset in zip(hostile[len(cases) :], generated_offsets, strict=True):
        expected = _expected(raw)
        got = "scored" if offset in scored_at else "dead" if offset in dead_at else "?"
        if expected != "either" and got != expected:
            generated_failures.append(
                (raw[:200], expected, got, dead_at.get(offset, ("", "", ""))[2])
            )
    unclear = [r for r in dead_at.values() if not r[0] or not r[2].strip()]

    print(
        f"\nhostile: seed {seed_value}; worker RSS {rss[0]:.0f} MB before, "
        f"{rss[1]:.0f} MB after {len(cases) + GENERATED} hostile events, "
        f"{rss[2]:.0f} MB after {len(hostile)}; "
        f"{len(scored_at)} scored, {len(dead_at)} dead letters "
        f"({published_letters} on the topic)"
    )
    print(
        f"hostile input: sent {len(sent)}, stored {len(events) + len(letters)}, "
        f"doubled {doubled}, lost {len(missing)}, {seconds:.1f} s"
    )
    for failure in hand_failures + generated_failures[:10]:
        print(f"  mismatch: {failure}")

    assert alive, worker.log()
    assert exit_code == 0, worker.log()
    assert sentinel in scored_at, "the worker stalled before a normal event"
    assert status_at[sentinel] == {"x": "ok", "y": "ok", "color": "ok"}
    assert not missing
    assert not both
    assert doubled == 0
    assert hand_failures == []
    assert generated_failures == []
    assert unclear == []
    assert published_letters == len(dead_at)
    assert rss[1] - rss[0] < MAX_GROWTH_MB
    assert rss[2] - rss[1] < MAX_LATER_GROWTH_MB
    assert violations == {}


def _hand_outcome(expected, offset, scored_at, status_at, dead_at) -> str:
    """Return what differs from the expected outcome, or '' when nothing does."""
    if isinstance(expected, Either):
        chosen = expected.dead if offset in dead_at else expected.scored
        return _hand_outcome(chosen, offset, scored_at, status_at, dead_at)
    if isinstance(expected, Dead):
        if offset not in dead_at:
            return "expected a dead letter, got a scored event"
        code, name, reason = dead_at[offset]
        if expected.code is not None and code != expected.code:
            return f"reason code {code!r}, expected {expected.code!r}"
        if name != expected.field:
            return f"field {name!r}, expected {expected.field!r}"
        if expected.phrase not in reason:
            return f"reason {reason!r} lacks {expected.phrase!r}"
        return ""
    if offset not in scored_at:
        return f"expected a scored event, got dead letter {dead_at.get(offset)}"
    request_id, moment = scored_at[offset]
    wanted = {"x": "ok", "y": "ok", "color": "ok", **expected.statuses}
    if request_id != expected.request_id:
        return f"request_id {request_id!r}, expected {expected.request_id!r}"
    if expected.event_time is not None and moment != expected.event_time:
        return f"event time {moment}, expected {expected.event_time}"
    if status_at.get(offset) != wanted:
        return f"statuses {status_at.get(offset)}, expected {wanted}"
    return ""


# Findings of the test above, each pinned on its own. Most run the worker's
# block processor in the test process, against the real broker and engine,
# which is quicker than a worker process and fails with the exception itself.


@pytest.fixture
def shapes_processor(processor_settings, shapes_store):
    """A block processor scoring shapes version 1, closed after the test."""
    settings = processor_settings(shapes_store)
    model_version = load_model(shapes_store, "shapes", 1)
    publish_registration(settings, build_registration(model_version, shapes_store))
    processor = BlockProcessor(settings)
    yield processor
    processor.stopping.set()
    if processor._pipeline is not None:
        processor.close()


def _messages(processor: BlockProcessor, values: list[bytes]) -> list[RawMessage]:
    topic = processor.settings.topic("predictions")
    now = datetime.now(UTC)
    return [
        RawMessage(topic, 0, offset, b"shapes", value, now)
        for offset, value in enumerate(values)
    ]


def _stored(processor: BlockProcessor) -> tuple[list[tuple], list[tuple]]:
    """Close the processor; return the events and dead letters it stored."""
    processor.close()
    with Storage.connect(processor.settings.clickhouse) as storage:
        events = storage.query_rows(
            "SELECT kafka_offset, request_id, batch_id FROM events "
            "ORDER BY kafka_offset"
        )
        letters = storage.query_rows(
            "SELECT offset, reason_code, field FROM dead_letters ORDER BY offset"
        )
    return events, letters


@pytest.mark.parametrize(
    ("bad", "field_name"),
    [
        # 200 characters is within the schema's limit of 256, and the reason
        # repeats the name twice.
        ({"model": "m" * 200}, "version"),
        # The reason quotes 64 characters of the value, each escaped as \x00.
        ({"timestamp": "\x00" * 64}, "timestamp"),
        # Valid for the schema's pattern; Python rejects the offset at length.
        ({"timestamp": "2026-12-04 15:00:00.1234567890+95:38"}, "timestamp"),
    ],
    ids=["long model name", "control characters in timestamp", "offset of 95 h"],
)
def test_long_reason_is_dead_lettered(shapes_processor, bad, field_name):
    messages = _messages(shapes_processor, [_raw("r0", **bad), _raw("r1")])

    shapes_processor.process(messages)
    events, letters = _stored(shapes_processor)

    assert [(offset, name) for offset, _code, name in letters] == [(0, field_name)]
    assert [row[:2] for row in events] == [(1, "r1")]


def test_last_minute_of_year_9999(shapes_processor):
    # The batch window of this event ends at 10000-01-01T00:00:00Z.
    messages = _messages(
        shapes_processor, [_raw("r0", timestamp="9999-12-31T23:59:30Z")]
    )

    shapes_processor.process(messages)
    events, letters = _stored(shapes_processor)

    assert len(events) + len(letters) == 1


def test_far_future_event_keeps_windows(shapes_store):
    # One event stamped in year 9999 must not pull later events into its
    # batch window.
    pipeline = Pipeline(ModelRegistry(shapes_store), _batcher())
    received = datetime.now(UTC)
    values = [_raw("future", timestamp="9999-06-01T00:00:00Z"), _raw("now")]
    messages = [
        RawMessage("predictions", 0, offset, b"shapes", value, received)
        for offset, value in enumerate(values)
    ]

    output = pipeline.process(messages)
    pipeline.close_all({("predictions", 0): 1})

    batch_of = dict(zip(output.events["request_id"], output.events["batch_id"],
                        strict=True))  # fmt: skip
    assert f"/{received.date().isoformat()}T" in batch_of["now"]


def test_unregistered_versions_are_quick(shapes_processor):
    # A block of registered events takes well under a second; looking up an
    # unknown version must not cost a broker round trip for every one.
    count = 40
    values = [_raw(f"r{n}", version=1000 + n) for n in range(count)]
    messages = _messages(shapes_processor, values)

    started = time.monotonic()
    shapes_processor.process(messages)
    seconds = time.monotonic() - started
    _events, letters = _stored(shapes_processor)

    print(f"\n{count} events of unregistered versions took {seconds:.1f} s")
    assert len(letters) == count
    assert seconds < 2.0


def test_many_months_in_one_block(shapes_processor, caplog):
    # ClickHouse rejects an insert that touches more than 100 partitions,
    # and the tables are partitioned by month of event time.
    caplog.set_level(logging.WARNING, logger="streams.processor")
    count = 150
    values = [
        _raw(f"r{n}", timestamp=f"{2000 + n // 12}-{n % 12 + 1:02d}-01T00:00:00Z")
        for n in range(count)
    ]
    messages = _messages(shapes_processor, values)

    worker = threading.Thread(target=_process_quietly,
                              args=(shapes_processor, messages))  # fmt: skip
    worker.start()
    worker.join(timeout=20)
    stalled = worker.is_alive()
    shapes_processor.stopping.set()
    worker.join(timeout=60)
    retries = [r.getMessage() for r in caplog.records if "retrying" in r.msg]
    if retries:
        print(f"\n{len(retries)} retries; the last: {retries[-1][:400]}")
    events, letters = _stored(shapes_processor)

    assert not stalled, f"the block was still retrying after 20 s: {retries[-1]}"
    assert len(events) + len(letters) == count


def _process_quietly(processor: BlockProcessor, messages: list[RawMessage]) -> None:
    with contextlib.suppress(WorkerStopping):
        processor.process(messages)


def _batcher() -> Batcher:
    return Batcher(window_seconds=60, batch_size=100, partition=0)


def test_failing_block_is_not_lost(shapes_worker, kafka_servers):
    """A block whose processing raises must be neither committed nor stuck.

    Needs an event that makes processing raise; a long unregistered model
    name does (test_long_reason_is_dead_lettered). Once no such event is
    known, this test passes without exercising the failure.
    """
    worker = shapes_worker
    topic = worker.topic("predictions")
    values = [_raw(f"a{n}") for n in range(300)]
    values += [_raw("failing", model="m" * 200)]
    values += [_raw(f"b{n}") for n in range(300)]

    register(worker, "shapes", 1)
    offsets = produce(kafka_servers, topic, values, key=b"shapes")
    worker.start()
    probe = LagProbe(kafka_servers, worker.group, topic)
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and probe.lag() != 0:
            time.sleep(0.5)
        lag = probe.lag()
    finally:
        probe.close()
    alive = worker.process.poll() is None
    exit_code, exit_seconds = stop_within(worker, timeout=15)
    log = worker.log_path.read_text(errors="replace")

    with Storage.connect(worker.clickhouse) as storage:
        stored = {row[0] for row in storage.query_rows(
            "SELECT kafka_offset FROM events")}  # fmt: skip
        stored |= {row[0] for row in storage.query_rows(
            "SELECT offset FROM dead_letters")}  # fmt: skip
    committed = len(values) - lag
    lost = [o for o in offsets if o < committed and o not in stored]
    waiting = [o for o in offsets if o not in stored]
    failures = log.count("Traceback")

    print(
        f"\nfailing block: sent {len(values)}, stored {len(stored)}, committed "
        f"{committed}, lost {len(lost)}, not stored after 30 s {len(waiting)}; "
        f"{failures} tracebacks logged; SIGTERM: exit code {exit_code} after "
        f"{exit_seconds:.1f} s (None: killed after 15 s)"
    )
    assert alive
    assert lost == [], f"{len(lost)} events committed but never stored"
    assert waiting == [], f"{len(waiting)} events still not stored after 30 s"
    assert exit_code == 0, "the worker did not stop within 15 s of SIGTERM"


def test_repeated_request_id_keeps_summaries(shapes_processor):
    """A producer that retries sends an event twice under one request id.

    Storage keeps one row per request id once its parts merge; the batch
    summary must then count the event once too.
    """
    values = [_raw("r0"), _raw("r1"), _raw("r1"), _raw("r2")]
    messages = _messages(shapes_processor, values)

    shapes_processor.process(messages)
    shapes_processor.close()
    with Storage.connect(shapes_processor.settings.clickhouse) as storage:
        # Merge now what ClickHouse would merge at some later moment.
        for table in ("events", "feature_checks_stored"):
            storage.command(f"OPTIMIZE TABLE {table} FINAL")
        events = storage.query_rows("SELECT count() FROM events")[0][0]
        batched = storage.query_rows("SELECT sum(events) FROM batches")[0][0]
        violations = batch_violations(storage)

    assert events == 3
    assert batched == 3
    assert violations == {}
