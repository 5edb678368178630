"""Dead letters, deduplication tokens and the generated ClickHouse schema."""

import base64
from datetime import UTC, datetime

import orjson

from schemas import MAX_DEAD_LETTER_ORIGINAL
from streams.app import deduplication_token
from streams.ddl import render_schema
from streams.records import DeadLetter, RawMessage
from tests.conftest import ROOT

NOW = datetime(2026, 12, 4, tzinfo=UTC)


def _message(partition: int, offset: int, value: bytes = b"{}") -> RawMessage:
    return RawMessage("oddwatch.predictions", partition, offset, b"census", value, NOW)


def test_dead_letter_carries_original_and_source():
    letter = DeadLetter(_message(3, 42, b"\xffbad"), "invalid_json", "bad", "")
    document = orjson.loads(letter.to_json())
    assert base64.b64decode(document["original_base64"]) == b"\xffbad"
    assert document["partition"] == 3
    assert document["offset"] == 42
    assert document["topic"] == "oddwatch.predictions"
    assert document["reason_code"] == "invalid_json"
    assert document["original_truncated"] is False


def test_dead_letter_truncates_huge_original():
    value = b"x" * (MAX_DEAD_LETTER_ORIGINAL + 10)
    document = orjson.loads(DeadLetter(_message(0, 1, value), "c", "r").to_json())
    assert document["original_size"] == len(value)
    assert document["original_truncated"] is True
    kept = base64.b64decode(document["original_base64"])
    assert len(kept) == MAX_DEAD_LETTER_ORIGINAL


def test_deduplication_token_independent_of_order():
    messages = [_message(1, 7), _message(0, 5), _message(1, 3), _message(0, 6)]
    token = deduplication_token(messages)
    assert token == "oddwatch.predictions/0/5-6;oddwatch.predictions/1/3-7"
    assert deduplication_token(list(reversed(messages))) == token


def test_shipped_schema_matches_migrations():
    shipped = (ROOT / "deploy" / "clickhouse" / "schema.sql").read_text()
    assert shipped == render_schema(), (
        "deploy/clickhouse/schema.sql is stale; regenerate it with "
        "`python -m streams.ddl > deploy/clickhouse/schema.sql`"
    )
