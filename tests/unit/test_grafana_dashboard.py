"""The Grafana dashboard in deploy/grafana, against the shipped query files.

The dashboard is generated from deploy/clickhouse/queries by
deploy/grafana/build_dashboard.py. These tests fail when the shipped JSON is
out of date, or when a panel's SQL is not a query file with Grafana values in
place of its placeholders. They also run every panel on the embedded
ClickHouse engine and fail when it returns other rows than its query file.
"""

import importlib.util
import json
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest

from streams.queries import list_queries
from streams.storage import Storage

ROOT = Path(__file__).resolve().parents[2]
GRAFANA_DIR = ROOT / "deploy" / "grafana"
DATASOURCE_FILE = GRAFANA_DIR / "provisioning" / "datasources" / "clickhouse.yml"
PROVIDER_FILE = GRAFANA_DIR / "provisioning" / "dashboards" / "oddwatch.yml"
COMPOSE_FILE = ROOT / "deploy" / "docker-compose.yml"


def _load_builder():
    path = GRAFANA_DIR / "build_dashboard.py"
    spec = importlib.util.spec_from_file_location("build_dashboard", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _load_builder()
SHIPPED = json.loads(builder.DASHBOARD_PATH.read_text(encoding="utf-8"))
QUERY_PANELS = [panel for panel in SHIPPED["panels"] if panel.get("targets")]

# Values that Grafana and the plugin put in place of the dashboard's variables
# and macros in the engine tests below.
MODEL = "census"
VERSION = 1
BATCH_WINDOW = 60
LIMIT = 10
START = datetime(2026, 1, 1, 10, 0, tzinfo=UTC)
RANGE_FROM = START - timedelta(hours=1)
RANGE_TO = START + timedelta(minutes=30)
CLOSED_BATCH = f"{MODEL}/{VERSION}/2026-01-01T10:00:00Z/000001"
OPEN_BATCH = f"{MODEL}/{VERSION}/2026-01-01T10:01:00Z/000002"
EARLY_BATCH = f"{MODEL}/{VERSION}/2026-01-01T07:00:00Z/000000"


def _panel_id(panel: dict) -> str:
    return panel["title"]


def test_shipped_dashboard_is_built_from_query_files():
    shipped = builder.DASHBOARD_PATH.read_text(encoding="utf-8")
    built = builder.render(builder.build_dashboard())
    assert shipped == built, (
        "deploy/grafana/dashboards/oddwatch.json is out of date; run "
        ".venv/bin/python deploy/grafana/build_dashboard.py"
    )


@pytest.mark.parametrize("panel", QUERY_PANELS, ids=_panel_id)
def test_panel_sql_restores_one_query_file(panel):
    raw_sql = panel["targets"][0]["rawSql"]
    matches = [
        query.name for query in list_queries() if _restore(raw_sql, query) == query.sql
    ]
    assert len(matches) == 1, f"panel SQL restores to query files {matches}"
    assert f"deploy/clickhouse/queries/{matches[0]}.sql" in panel["description"]


@pytest.mark.parametrize("panel", QUERY_PANELS, ids=_panel_id)
def test_panel_uses_provisioned_datasource(panel):
    provisioned = re.search(r"^\s*uid:\s*(\S+)\s*$", _text(DATASOURCE_FILE), re.M)
    assert provisioned is not None, f"{DATASOURCE_FILE} names no uid"
    for target in [panel, *panel["targets"]]:
        assert target["datasource"]["uid"] == provisioned.group(1)
        assert target["datasource"]["type"] == "grafana-clickhouse-datasource"


def test_panels_have_unique_ids_inside_grid():
    ids = [panel["id"] for panel in SHIPPED["panels"]]
    assert len(ids) == len(set(ids))
    for panel in SHIPPED["panels"]:
        position = panel["gridPos"]
        assert position["x"] + position["w"] <= 24, panel["title"]


def test_panel_variables_are_defined():
    defined = {variable["name"] for variable in SHIPPED["templating"]["list"]}
    used = set()
    for panel in QUERY_PANELS:
        used |= set(re.findall(r"\$\{(\w+)", panel["targets"][0]["rawSql"]))
    assert used <= defined, f"undefined variables: {sorted(used - defined)}"


def test_pass_share_colours_follow_health_cutoffs():
    grid = _panel_for("feature_pass_share")
    steps = grid["fieldConfig"]["defaults"]["thresholds"]["steps"]
    assert [(step["color"], step["value"]) for step in steps] == [
        ("red", None),
        ("orange", 0.85),
        ("yellow", 0.93),
        ("green", 0.97),
    ]


def test_provisioning_points_at_shipped_dashboard():
    provider_path = re.search(r"^\s*path:\s*(\S+)\s*$", _text(PROVIDER_FILE), re.M)
    assert provider_path is not None, f"{PROVIDER_FILE} names no path"
    compose = _text(COMPOSE_FILE)
    assert f"./grafana/dashboards:{provider_path.group(1)}:ro" in compose
    home = f"{provider_path.group(1)}/{builder.DASHBOARD_PATH.name}"
    assert f"GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH: {home}" in compose


def test_unmapped_parameter_raises(tmp_path):
    (tmp_path / "odd.sql").write_text(
        "-- Summary.\n--\n-- Parameters:\n--   {cutoff:Float32}  a share\n--\n"
        "-- Columns:\n--   x  a number\nSELECT {cutoff:Float32} AS x\n"
    )
    [query] = list_queries(tmp_path)
    with pytest.raises(ValueError, match=r"\{cutoff:Float32\} has no Grafana value"):
        builder.grafana_sql(query)


# The panels on the embedded engine


@pytest.fixture(scope="module")
def storage(tmp_path_factory):
    url = f"chdb://{tmp_path_factory.mktemp('grafana') / 'clickhouse'}"
    with Storage.connect(url) as storage:
        _insert_rows(storage)
        yield storage


@pytest.mark.parametrize("panel", QUERY_PANELS, ids=_panel_id)
def test_panel_returns_query_file_rows(storage, panel):
    raw_sql = panel["targets"][0]["rawSql"]
    [query] = [
        query for query in list_queries() if _restore(raw_sql, query) == query.sql
    ]

    expected = storage.query_frame(query.sql, parameters=query.bind(_bound(query)))
    found = storage.query_frame(_expand(raw_sql))

    assert len(expected) > 0, f"{query.name} returned no rows; the test data is thin"
    pd.testing.assert_frame_equal(found, expected)


def test_variables_list_stored_values(storage):
    variables = {
        variable["name"]: variable
        for variable in SHIPPED["templating"]["list"]
        if variable["type"] == "query"
    }

    models = storage.query_frame(_expand(variables["model"]["query"]))
    versions = storage.query_frame(_expand(variables["version"]["query"]))
    batches = storage.query_frame(_expand(variables["batch_id"]["query"]))

    assert models.iloc[:, 0].tolist() == ["census", "fraud"]
    assert versions.iloc[:, 0].tolist() == [2, 1]
    assert batches.iloc[:, 0].tolist() == [OPEN_BATCH, CLOSED_BATCH, EARLY_BATCH]


def _restore(raw_sql: str, query) -> str:
    """Put the query's placeholders back in place of their Grafana values."""
    values = {
        builder.GRAFANA_VALUES[(name, type_name)]: f"{{{name}:{type_name}}}"
        for name, type_name in query.parameters.items()
        if (name, type_name) in builder.GRAFANA_VALUES
    }
    # Longest first, so that toDate($__fromTime, 'UTC') is restored whole.
    for value in sorted(values, key=len, reverse=True):
        raw_sql = raw_sql.replace(value, values[value])
    return raw_sql


def _expand(raw_sql: str) -> str:
    """Interpolate variables as Grafana does and macros as the plugin does."""
    replacements = {
        "${model:sqlstring}": f"'{MODEL}'",
        "${version}": str(VERSION),
        "${batch_id:sqlstring}": f"'{CLOSED_BATCH}'",
        "${batch_window:sqlstring}": f"'{BATCH_WINDOW}'",
        "${limit}": str(LIMIT),
        # grafana-clickhouse-datasource 4.x, pkg/macros: whole unix seconds.
        "$__fromTime": f"toDateTime({int(RANGE_FROM.timestamp())})",
        "$__toTime": f"toDateTime({int(RANGE_TO.timestamp())})",
    }
    for variable, value in replacements.items():
        raw_sql = raw_sql.replace(variable, value)
    assert "$" not in raw_sql, f"uninterpolated text left in {raw_sql!r}"
    return raw_sql


def _bound(query) -> dict:
    """Parameter values equal to those that _expand puts in the panel's SQL."""
    values = {
        "model": MODEL,
        "version": VERSION,
        "batch_id": CLOSED_BATCH,
        "batch_window": float(BATCH_WINDOW),
        "limit": LIMIT,
        "until": RANGE_TO,
    }
    if query.parameters.get("since") == "Date":
        values["since"] = RANGE_FROM.date()
    else:
        values["since"] = RANGE_FROM
    return {name: value for name, value in values.items() if name in query.parameters}


def _panel_for(query_name: str) -> dict:
    path = f"deploy/clickhouse/queries/{query_name}.sql"
    [panel] = [panel for panel in QUERY_PANELS if path in panel["description"]]
    return panel


def _text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


def _insert_rows(storage: Storage) -> None:
    """Store two batches of census version 1 and a little of everything else.

    The closed batch has a summary in batches and batch_checks, the open
    batch has events only. Rows of other model versions and an older batch
    before the range check that the panels filter as their query files do.
    """
    events = []
    checks = []
    for number in range(8):
        batch = CLOSED_BATCH if number < 5 else OPEN_BATCH
        time = START + timedelta(seconds=10 * number + (60 if number >= 5 else 0))
        outlier = number in (2, 6)
        events.append(_event(MODEL, VERSION, f"r{number}", time, batch, outlier))
        for feature in ("age", "workclass"):
            failed = feature == "age" and number in (1, 6)
            checks.append(
                {
                    "model": MODEL,
                    "version": VERSION,
                    "request_id": f"r{number}",
                    "event_time": time,
                    "batch_id": batch,
                    "feature": feature,
                    "status": "above_max" if failed else "ok",
                    "passed": 0 if failed else 1,
                }
            )
    events += [
        _event("fraud", 1, "f1", START, "fraud/1/2026-01-01T10:00:00Z/000001"),
        _event(MODEL, 2, "v2", START, f"{MODEL}/2/2026-01-01T10:00:00Z/000001"),
        _event(MODEL, VERSION, "early", START - timedelta(hours=3), EARLY_BATCH),
    ]
    storage.insert_block("events", _columns(events))
    storage.insert_block("feature_checks_stored", _columns(checks))

    batch = {"model": MODEL, "version": VERSION, "batch_id": CLOSED_BATCH}
    storage.insert_block(
        "batches",
        _columns(
            [
                batch
                | {
                    "window_start": START,
                    "window_end": START + timedelta(seconds=BATCH_WINDOW),
                    "closed_by": "size",
                    "events": 5,
                    "outliers": 1,
                    "late_events": 0,
                    "pass_share": 13 / 15,
                    "health": "red",
                }
            ]
        ),
    )
    storage.insert_block(
        "batch_checks",
        _columns(
            [
                batch
                | {
                    "window_start": START,
                    "feature": feature,
                    "check": check,
                    "checked": 5,
                    "passed": passed,
                }
                for feature, check, passed in [
                    ("", "auto_od", 4),
                    ("age", "range", 4),
                    ("workclass", "range", 5),
                ]
            ]
        ),
    )
    storage.insert_block(
        "batch_drift",
        _columns(
            [
                batch
                | {
                    "window_start": START,
                    "feature": feature,
                    "method": method,
                    "tested": 1,
                    "values": 5,
                    "missing": 0,
                    "statistic": statistic,
                    "p_value": p_value,
                    "adjusted_p_value": p_value,
                    "drifted": int(p_value < 0.01),
                    "reason": "",
                }
                for feature, method, statistic, p_value in [
                    ("age", "ks", 0.9, 0.001),
                    ("workclass", "chi_square", 1.2, 0.5),
                ]
            ]
        ),
    )
    storage.insert_block(
        "alerts",
        _columns(
            [
                batch
                | {
                    "alert_id": alert_id,
                    "kind": kind,
                    "created_at": time,
                    "occurred_at": time,
                }
                for alert_id, kind, time in [
                    ("a1", "outlier", START),
                    ("a2", "unhealthy_batch", START + timedelta(minutes=1)),
                    ("a3", "outlier", RANGE_FROM - timedelta(days=1)),
                ]
            ]
        ),
    )
    storage.insert_block(
        "dead_letters",
        _columns(
            [
                {
                    "received_at": time,
                    "topic": "oddwatch.predictions",
                    "partition": partition,
                    "offset": offset,
                    "reason_code": code,
                    "reason": reason,
                    "field": field,
                }
                for time, partition, offset, code, reason, field in [
                    (START, 0, 10, "invalid_json", "not JSON", ""),
                    (
                        START + timedelta(seconds=5),
                        0,
                        11,
                        "invalid_json",
                        "not JSON",
                        "",
                    ),
                    (
                        START,
                        1,
                        3,
                        "invalid_event",
                        "version is not an integer",
                        "version",
                    ),
                ]
            ]
        ),
    )


def _event(model, version, request_id, time, batch_id, outlier=False) -> dict:
    return {
        "model": model,
        "version": version,
        "request_id": request_id,
        "event_time": time,
        "received_at": time,
        "batch_id": batch_id,
        "score": 0.9 if outlier else 0.1,
        "threshold": 0.5,
        "is_outlier": int(outlier),
    }


def _columns(rows: list[dict]) -> dict[str, list]:
    """Turn rows with the same keys into the columns that insert_block takes."""
    return {name: [row[name] for row in rows] for name in rows[0]}
