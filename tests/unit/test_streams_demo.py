"""The demo's queries and broken events, without Kafka."""

import tempfile

import orjson

from streams.demo import DEMO_QUERIES, STRONGEST_ALERTS_SQL, broken_events
from streams.storage import Storage


def test_demo_queries_run_on_empty_tables():
    with Storage.connect("chdb://" + tempfile.mkdtemp()) as storage:
        for title, query in [*DEMO_QUERIES, ("alerts", STRONGEST_ALERTS_SQL)]:
            frame = storage.query_frame(query)
            assert len(frame.columns) > 0, title


def test_demo_broken_events_mix_kinds():
    rows = [{"age": 39, "workclass": "State-gov"}] * 5
    events = broken_events(rows, 12)
    parsed = []
    for raw in events:
        try:
            parsed.append(orjson.loads(raw))
        except orjson.JSONDecodeError:
            parsed.append(None)
    assert parsed.count(None) == 2
    assert sum(1 for e in parsed if e and e["request_id"] == "") == 2
    assert sum(1 for e in parsed if e and e["version"] == 7) == 2
