"""The shipped JSON Schema files: up to date, valid, and in step with Python."""

import copy

import orjson
import pytest

from schemas import InvalidEvent
from schemas.__main__ import main
from schemas.examples import EXAMPLES
from schemas.export import RECORDS, SCHEMA_DIR, json_schema, render_schema
from schemas.record import codec_of
from tests.unit.test_schemas_records import INVALID_CASES, NESTED_CASES

jsonschema = pytest.importorskip(
    "jsonschema", reason="jsonschema is needed to apply the schemas; pip install it"
)

STEMS = list(RECORDS)


def _validator(record_type):
    stem = next(stem for stem, known in RECORDS.items() if known is record_type)
    schema = orjson.loads((SCHEMA_DIR / f"{stem}.schema.json").read_bytes())
    checker = jsonschema.Draft202012Validator.FORMAT_CHECKER
    return jsonschema.Draft202012Validator(schema, format_checker=checker)


def _document(record_type) -> dict:
    return copy.deepcopy(orjson.loads(EXAMPLES[record_type].to_json()))


@pytest.mark.parametrize("stem", STEMS)
def test_shipped_schema_up_to_date(stem):
    path = SCHEMA_DIR / f"{stem}.schema.json"
    assert path.is_file(), f"{path} is missing; regenerate with `python -m schemas`"
    assert path.read_bytes() == render_schema(RECORDS[stem]), (
        f"{path} differs from the record definitions; regenerate it with "
        "`python -m schemas` and commit the result"
    )


def test_no_stray_schema_files():
    shipped = {path.name for path in SCHEMA_DIR.glob("*.json")}
    assert shipped == {f"{stem}.schema.json" for stem in STEMS}


@pytest.mark.parametrize("stem", STEMS)
def test_schema_valid_for_draft_2020_12(stem):
    jsonschema.Draft202012Validator.check_schema(json_schema(RECORDS[stem]))


@pytest.mark.parametrize("stem", STEMS)
def test_schema_describes_every_field(stem):
    record_type = RECORDS[stem]
    properties = json_schema(record_type)["properties"]
    wire_names = [spec.wire_name for spec in codec_of(record_type).fields]
    assert list(properties) == wire_names
    for name, schema in properties.items():
        assert schema["description"].strip(), name


@pytest.mark.parametrize("stem", STEMS)
def test_schema_example_valid(stem):
    schema = json_schema(RECORDS[stem])
    validator = _validator(RECORDS[stem])
    assert len(schema["examples"]) == 1
    for example in schema["examples"]:
        assert list(validator.iter_errors(example)) == []


@pytest.mark.parametrize("stem", STEMS)
def test_schema_rejects_missing_required(stem):
    record_type = RECORDS[stem]
    validator = _validator(record_type)
    for spec in codec_of(record_type).fields:
        if not spec.required:
            continue
        document = _document(record_type)
        del document[spec.wire_name]
        assert not validator.is_valid(document), spec.wire_name


# Cases the Python validator rejects but JSON Schema cannot: the pattern of a
# time does not know how many days a month has.
PYTHON_ONLY = [("PredictionEvent", "timestamp", "2026-13-04T15:00:00Z")]


@pytest.mark.parametrize(
    ("record_type", "name", "value"),
    INVALID_CASES,
    ids=[f"{t.__name__}.{name}={value!r}"[:60] for t, name, value in INVALID_CASES],
)
def test_schema_rejects_what_python_rejects(record_type, name, value):
    document = {**_document(record_type), name: value}
    with pytest.raises(InvalidEvent):
        record_type.from_dict(document)
    if (record_type.__name__, name, value) in PYTHON_ONLY:
        pytest.skip("JSON Schema cannot express this rule")
    assert not _validator(record_type).is_valid(document)


@pytest.mark.parametrize(
    ("record_type", "location", "value", "field"),
    NESTED_CASES,
    ids=[case[3] for case in NESTED_CASES],
)
def test_schema_rejects_nested_python_rejects(record_type, location, value, field):
    document = _document(record_type)
    *parents, last = location
    target = document
    for step in parents:
        target = target[step]
    target[last] = value
    with pytest.raises(InvalidEvent):
        record_type.from_dict(document)
    assert not _validator(record_type).is_valid(document)


def _outlier_alert_with(**changes):
    return {**_document(RECORDS["alert"]), **changes}


def _registration_with_metric(**changes):
    document = _document(RECORDS["model_registration"])
    document["metrics"][0].update(changes)
    return document


def _scored_with_metric(**changes):
    document = _document(RECORDS["scored_event"])
    document["metrics"]["hours_cap"].update(changes)
    return document


# Rules between fields that both validators enforce.
RULE_CASES = [
    ("alert", _outlier_alert_with(request_id=None)),
    ("alert", _outlier_alert_with(score=None)),
    ("alert", _outlier_alert_with(health="red")),
    ("alert", _outlier_alert_with(kind="unhealthy_batch", health="red")),
    ("model_registration", _registration_with_metric(scorer="census.metrics:hours")),
    ("model_registration", _registration_with_metric(feature=None)),
    ("scored_event", _scored_with_metric(error="boom")),
    ("scored_event", _scored_with_metric(value=None, error="boom", passed=True)),
    ("scored_event", _scored_with_metric(value=None)),
]


@pytest.mark.parametrize(
    ("stem", "document"),
    RULE_CASES,
    ids=[f"{case[0]}-{i}" for i, case in enumerate(RULE_CASES)],
)
def test_schema_rules_match_python(stem, document):
    record_type = RECORDS[stem]
    with pytest.raises(InvalidEvent):
        record_type.from_dict(document)
    assert not _validator(record_type).is_valid(document)


def test_batch_alert_valid_for_schema():
    document = _outlier_alert_with(
        kind="unhealthy_batch",
        request_id=None,
        score=None,
        threshold=None,
        health="orange",
        pass_share=0.975,
    )
    RECORDS["alert"].from_dict(document)
    assert _validator(RECORDS["alert"]).is_valid(document)


def test_prediction_schema_allows_missing_timestamp():
    document = _document(RECORDS["prediction_event"])
    del document["timestamp"]
    assert _validator(RECORDS["prediction_event"]).is_valid(document)


def test_command_writes_schemas(tmp_path, capsys):
    assert main([str(tmp_path)]) == 0
    for stem in STEMS:
        written = (tmp_path / f"{stem}.schema.json").read_bytes()
        assert written == render_schema(RECORDS[stem])
    assert "alert.schema.json" in capsys.readouterr().out


def test_command_check_reports_outdated(tmp_path, capsys):
    main([str(tmp_path)])
    assert main(["--check", str(tmp_path)]) == 0

    (tmp_path / "alert.schema.json").write_text("{}\n")
    assert main(["--check", str(tmp_path)]) == 1
    error = capsys.readouterr().err
    assert "alert.schema.json" in error
    assert "python -m schemas" in error
