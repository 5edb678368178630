"""Build the Grafana dashboard of oddwatch from the shipped query files.

Every panel runs the text of one file in deploy/clickhouse/queries. Only its
``{name:Type}`` placeholders are replaced, by the Grafana values in
``GRAFANA_VALUES``: dashboard variables, and macros of the ClickHouse data
source plugin (grafana-clickhouse-datasource 4.x) for the time range. The
plugin expands ``$__fromTime`` to ``toDateTime(<unix seconds>)``, so the
range start is used to the second.

Run it after changing a query file, from the repository root:

    .venv/bin/python deploy/grafana/build_dashboard.py

``--check`` writes nothing and exits 1 when the shipped dashboard differs from
the one this script builds. tests/unit/test_grafana_dashboard.py runs the same
comparison.
"""

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from streams.batching import HealthCutoffs
from streams.queries import Query, load_query

__all__ = [
    "DASHBOARD_PATH",
    "GRAFANA_VALUES",
    "build_dashboard",
    "grafana_sql",
    "render",
]

DASHBOARD_PATH = Path(__file__).resolve().parent / "dashboards" / "oddwatch.json"
"""The dashboard file that Grafana's provisioning loads."""

DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "oddwatch-clickhouse"}
"""The data source of provisioning/datasources/clickhouse.yml."""

GRAFANA_VALUES: dict[tuple[str, str], str] = {
    ("model", "String"): "${model:sqlstring}",
    ("version", "UInt32"): "${version}",
    ("batch_id", "String"): "${batch_id:sqlstring}",
    ("batch_window", "Float64"): "toFloat64(${batch_window:sqlstring})",
    ("limit", "UInt32"): "${limit}",
    ("since", "DateTime64(3, 'UTC')"): "$__fromTime",
    ("since", "Nullable(DateTime64(3, 'UTC'))"): "$__fromTime",
    ("since", "Date"): "toDate($__fromTime, 'UTC')",
    ("until", "DateTime64(3, 'UTC')"): "$__toTime",
}
"""The Grafana text that replaces each (parameter name, ClickHouse type).

``sqlstring`` quotes a variable as an SQL string literal and escapes quotes
inside it, so the text typed into the batch window box cannot change the
query. A ``Date`` parameter takes the UTC day of the range start, because the
query compares it with UTC days.
"""

# Colours of Grafana's palette for the worker's health levels.
_HEALTH_COLORS = ("green", "yellow", "orange", "red")


def grafana_sql(query: Query) -> str:
    """Return the query's text with Grafana values in place of its placeholders.

    Raise ValueError for a parameter that ``GRAFANA_VALUES`` does not map.
    """
    sql = query.sql
    for name, type_name in query.parameters.items():
        value = GRAFANA_VALUES.get((name, type_name))
        if value is None:
            raise ValueError(
                f"{query.path}: parameter {{{name}:{type_name}}} has no Grafana "
                "value; add it to GRAFANA_VALUES in deploy/grafana/build_dashboard.py"
            )
        sql = sql.replace(f"{{{name}:{type_name}}}", value)
    return sql


def build_dashboard(directory: Path | None = None) -> dict[str, Any]:
    """Build the dashboard from the query files of ``directory``.

    ``directory`` defaults to the shipped deploy/clickhouse/queries.
    """
    panels = [
        _pass_share_grid(load_query("feature_pass_share", directory), 0),
        _score_chart(load_query("score_over_time", directory), 11),
        _batch_table(load_query("batch_summary_check", directory), 20),
        _worst_features(load_query("worst_features_hour_before", directory), 30),
        _alerts_chart(load_query("alerts_per_day", directory), 30),
        _dead_letters(load_query("dead_letters_by_reason", directory), 39),
        _drift(load_query("batch_drift", directory), 46),
        _row("Batch ${batch_id}", 56),
        _batch_checks(load_query("batch_summary", directory), 57),
        _batch_requests(load_query("batch_requests", directory), 57),
    ]
    for number, panel in enumerate(panels, start=1):
        panel["id"] = number
    return {
        "uid": "oddwatch",
        "title": "oddwatch",
        "description": "Checks, outlier scores, batches, alerts and dead letters "
        "of one model version, from the oddwatch tables in ClickHouse.",
        "tags": ["oddwatch"],
        "timezone": "utc",
        "editable": True,
        "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "schemaVersion": 41,
        "version": 1,
        "annotations": {"list": []},
        "links": [],
        "templating": {"list": _variables()},
        "panels": panels,
    }


# Dashboard variables


def _variables() -> list[dict[str, Any]]:
    return [
        _query_variable(
            "model", "Model", "SELECT DISTINCT model FROM events ORDER BY model"
        ),
        _query_variable(
            "version",
            "Version",
            "SELECT DISTINCT version FROM events "
            "WHERE model = ${model:sqlstring} ORDER BY version DESC",
        ),
        # Batch ids start with the model, version and window start, so the
        # newest batch sorts first and is selected by default.
        _query_variable(
            "batch_id",
            "Batch",
            "SELECT DISTINCT batch_id FROM events "
            "WHERE model = ${model:sqlstring} AND version = ${version} "
            "ORDER BY batch_id DESC LIMIT 500",
        ),
        {
            "type": "textbox",
            "name": "batch_window",
            "label": "Batch window (s)",
            "description": "The workers' ODDWATCH_BATCH_WINDOW, used to recompute "
            "window ends in the batch table.",
            "query": "60",
            "current": {"text": "60", "value": "60"},
        },
        {
            "type": "custom",
            "name": "limit",
            "label": "Worst features",
            "query": "5,10,20,50",
            "current": {"text": "10", "value": "10"},
            "options": [
                {"text": value, "value": value, "selected": value == "10"}
                for value in ("5", "10", "20", "50")
            ],
        },
    ]


def _query_variable(name: str, label: str, sql: str) -> dict[str, Any]:
    return {
        "type": "query",
        "name": name,
        "label": label,
        "datasource": DATASOURCE,
        "query": sql,
        "definition": sql,
        # Reload the values whenever the dashboard loads.
        "refresh": 1,
        "sort": 0,
        "includeAll": False,
        "multi": False,
    }


# Panels, one builder per panel


def _pass_share_grid(query: Query, y: int) -> dict[str, Any]:
    """Build the table of features × batches, each cell coloured by health level."""
    panel = _panel(query, "table", "Pass share per feature and batch", 0, y, 24, 11)
    panel["fieldConfig"] = {
        "defaults": {
            "unit": "percentunit",
            "decimals": 1,
            "min": 0,
            "max": 1,
            "color": {"mode": "thresholds"},
            "thresholds": _pass_share_thresholds(),
            "custom": {"align": "center", "cellOptions": {"type": "color-background"}},
        },
        "overrides": [
            _override(
                "feature",
                ("custom.cellOptions", {"type": "auto"}),
                ("custom.align", "left"),
                ("mappings", [_empty_text("auto_od (whole event)")]),
            )
        ],
    }
    panel["options"] = {"showHeader": True, "cellHeight": "sm"}
    panel["transformations"] = [
        {
            "id": "groupingToMatrix",
            "options": {
                "rowField": "feature",
                "columnField": "batch_id",
                "valueField": "pass_share",
                "emptyValue": "null",
            },
        },
        {
            "id": "organize",
            "options": {"renameByName": {"feature\\batch_id": "feature"}},
        },
        # Batch ids repeat the model and version chosen above, so only the
        # window start and sequence number remain as the column title.
        {
            "id": "renameByRegex",
            "options": {"regex": "^.*/([^/]+/[^/]+)$", "renamePattern": "$1"},
        },
    ]
    return panel


def _score_chart(query: Query, y: int) -> dict[str, Any]:
    """Build the chart of the score of each request, with the threshold as a line."""
    panel = _panel(
        query, "timeseries", "Outlier score per request and threshold", 0, y, 24, 9
    )
    panel["fieldConfig"] = {
        "defaults": {
            "custom": {"drawStyle": "points", "pointSize": 4, "showPoints": "always"},
        },
        "overrides": [
            _override("score", ("color", {"mode": "fixed", "fixedColor": "blue"})),
            _override(
                "threshold",
                ("color", {"mode": "fixed", "fixedColor": "red"}),
                ("custom.drawStyle", "line"),
                ("custom.lineInterpolation", "stepAfter"),
                ("custom.lineStyle", {"fill": "dash", "dash": [10, 10]}),
                ("custom.showPoints", "never"),
            ),
            _override(
                "is_outlier",
                ("custom.hideFrom", {"viz": True, "legend": True, "tooltip": False}),
            ),
        ],
    }
    panel["options"] = {
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "none"},
    }
    return panel


def _batch_table(query: Query, y: int) -> dict[str, Any]:
    """Build the table of the range's batches, recomputed from the stored events."""
    panel = _panel(query, "table", "Batches", 0, y, 24, 10)
    panel["fieldConfig"] = {
        "defaults": {},
        "overrides": [
            _health_override("health"),
            _override("pass_share", ("unit", "percentunit"), ("decimals", 2)),
            _override(
                "stored_summary",
                ("mappings", [_value_colors({"match": "green", "differs": "red"})]),
                ("custom.cellOptions", {"type": "color-text"}),
            ),
        ],
    }
    panel["options"] = {
        "showHeader": True,
        "cellHeight": "sm",
        "sortBy": [{"displayName": "window_start", "desc": True}],
    }
    panel["transformations"] = [
        {
            "id": "organize",
            "options": {
                "excludeByName": {"model": True, "version": True, "checks": True}
            },
        }
    ]
    return panel


def _worst_features(query: Query, y: int) -> dict[str, Any]:
    """Build the table of features that failed most in the range's last hour."""
    panel = _panel(
        query, "table", "Worst features, last hour of the range", 0, y, 12, 9
    )
    panel["fieldConfig"] = {
        "defaults": {},
        "overrides": [
            _override(
                "failed_share",
                ("unit", "percentunit"),
                ("decimals", 1),
                ("min", 0),
                ("max", 1),
                ("color", {"mode": "fixed", "fixedColor": "red"}),
                ("custom.cellOptions", {"type": "gauge", "mode": "basic"}),
            )
        ],
    }
    panel["options"] = {"showHeader": True, "cellHeight": "sm"}
    return panel


def _alerts_chart(query: Query, y: int) -> dict[str, Any]:
    """Build stacked bars of alerts per UTC day, one colour per alert kind."""
    panel = _panel(
        query, "barchart", "Alerts per day by kind, all models", 12, y, 12, 9
    )
    panel["fieldConfig"] = {
        "defaults": {"custom": {"fillOpacity": 80, "lineWidth": 1}},
        "overrides": [
            _override("outlier", ("color", {"mode": "fixed", "fixedColor": "orange"})),
            _override(
                "unhealthy_batch", ("color", {"mode": "fixed", "fixedColor": "red"})
            ),
        ],
    }
    panel["options"] = {
        "stacking": "normal",
        "showValue": "auto",
        "xTickLabelRotation": 0,
        "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
        "tooltip": {"mode": "multi", "sort": "none"},
    }
    # The query returns one row per day, model, version and kind. Summing
    # over models and versions, then spreading the kinds into columns,
    # gives one bar per day with one segment per kind. The day becomes text
    # first, because the matrix turns its row values into text, and a time
    # would show as milliseconds.
    panel["transformations"] = [
        {
            "id": "convertFieldType",
            "options": {
                "conversions": [
                    {
                        "targetField": "day",
                        "destinationType": "string",
                        "dateFormat": "YYYY-MM-DD",
                        "timezone": "utc",
                    }
                ],
                "fields": {},
            },
        },
        {
            "id": "groupBy",
            "options": {
                "fields": {
                    "day": {"operation": "groupby", "aggregations": []},
                    "kind": {"operation": "groupby", "aggregations": []},
                    "alerts": {"operation": "aggregate", "aggregations": ["sum"]},
                }
            },
        },
        {
            "id": "groupingToMatrix",
            "options": {
                "rowField": "day",
                "columnField": "kind",
                "valueField": "alerts (sum)",
                "emptyValue": "null",
            },
        },
    ]
    return panel


def _dead_letters(query: Query, y: int) -> dict[str, Any]:
    panel = _panel(query, "table", "Dead letters by reason, all models", 0, y, 24, 7)
    panel["fieldConfig"] = {"defaults": {}, "overrides": []}
    panel["options"] = {"showHeader": True, "cellHeight": "sm"}
    return panel


def _drift(query: Query, y: int) -> dict[str, Any]:
    """Build the table of drift tests, drifted features in red."""
    panel = _panel(query, "table", "Drift per feature and batch", 0, y, 24, 10)
    panel["fieldConfig"] = {
        "defaults": {},
        "overrides": [
            _override(
                "drifted",
                ("color", {"mode": "thresholds"}),
                ("thresholds", _steps(("green", None), ("red", 1))),
                ("custom.cellOptions", {"type": "color-background"}),
            )
        ],
    }
    panel["options"] = {"showHeader": True, "cellHeight": "sm"}
    return panel


def _batch_checks(query: Query, y: int) -> dict[str, Any]:
    """Build the table of the stored summary of the batch chosen at the top."""
    panel = _panel(query, "table", "Checks of the batch", 0, y, 10, 10)
    panel["description"] += " An open batch has no rows yet."
    panel["fieldConfig"] = {
        "defaults": {},
        "overrides": [
            _override(
                "pass_share",
                ("unit", "percentunit"),
                ("decimals", 1),
                ("color", {"mode": "thresholds"}),
                ("thresholds", _pass_share_thresholds()),
                ("custom.cellOptions", {"type": "color-background"}),
            ),
            _health_override("batch_health"),
            _override("batch_pass_share", ("unit", "percentunit"), ("decimals", 2)),
        ],
    }
    panel["options"] = {"showHeader": True, "cellHeight": "sm"}
    return panel


def _batch_requests(query: Query, y: int) -> dict[str, Any]:
    panel = _panel(query, "table", "Requests of the batch", 10, y, 14, 10)
    panel["fieldConfig"] = {
        "defaults": {},
        "overrides": [
            _override(
                "is_outlier",
                ("color", {"mode": "thresholds"}),
                ("thresholds", _steps(("text", None), ("red", 1))),
                ("custom.cellOptions", {"type": "color-text"}),
            )
        ],
    }
    panel["options"] = {"showHeader": True, "cellHeight": "sm"}
    return panel


# Pieces shared by the panels


def _panel(
    query: Query, kind: str, title: str, x: int, y: int, width: int, height: int
) -> dict[str, Any]:
    """Return a panel of type ``kind`` that runs ``query`` as a table."""
    return {
        "type": kind,
        "title": title,
        "description": f"{query.summary} SQL: deploy/clickhouse/queries/"
        f"{query.name}.sql",
        "datasource": DATASOURCE,
        "gridPos": {"x": x, "y": y, "w": width, "h": height},
        "targets": [
            {
                "refId": "A",
                "datasource": DATASOURCE,
                "editorType": "sql",
                "queryType": "table",
                # 1 returns the rows as one table frame. The time series
                # format (0) would turn every string column, such as
                # request_id, into a label of its own series.
                "format": 1,
                "rawSql": grafana_sql(query),
            }
        ],
    }


def _row(title: str, y: int) -> dict[str, Any]:
    return {
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": [],
    }


def _override(field: str, *properties: tuple[str, Any]) -> dict[str, Any]:
    return {
        "matcher": {"id": "byName", "options": field},
        "properties": [{"id": key, "value": value} for key, value in properties],
    }


def _health_override(field: str) -> dict[str, Any]:
    colors = {level: level for level in _HEALTH_COLORS}
    return _override(
        field,
        ("mappings", [_value_colors(colors)]),
        ("custom.cellOptions", {"type": "color-background"}),
    )


def _pass_share_thresholds() -> dict[str, Any]:
    """Grafana thresholds at the worker's health cut-offs."""
    cutoffs = HealthCutoffs()
    return _steps(
        ("red", None),
        ("orange", cutoffs.orange),
        ("yellow", cutoffs.yellow),
        ("green", cutoffs.green),
    )


def _steps(*steps: tuple[str, float | None]) -> dict[str, Any]:
    """Return absolute thresholds. A step's colour applies from its value up."""
    return {
        "mode": "absolute",
        "steps": [{"color": color, "value": value} for color, value in steps],
    }


def _value_colors(colors: dict[str, str]) -> dict[str, Any]:
    return {
        "type": "value",
        "options": {
            value: {"color": color, "index": index}
            for index, (value, color) in enumerate(colors.items())
        },
    }


def _empty_text(text: str) -> dict[str, Any]:
    return {"type": "special", "options": {"match": "empty", "result": {"text": text}}}


def render(dashboard: dict[str, Any]) -> str:
    """Return the dashboard as the JSON text that is shipped."""
    return json.dumps(dashboard, indent=2, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--check",
        action="store_true",
        help="write nothing, and exit 1 when the shipped dashboard is out of date",
    )
    arguments = parser.parse_args(argv)
    text = render(build_dashboard())
    if arguments.check:
        shipped = DASHBOARD_PATH.read_text(encoding="utf-8")
        if shipped != text:
            print(
                f"{DASHBOARD_PATH} is out of date; run "
                "deploy/grafana/build_dashboard.py to rebuild it",
                file=sys.stderr,
            )
            return 1
        return 0
    DASHBOARD_PATH.write_text(text, encoding="utf-8")
    print(f"wrote {DASHBOARD_PATH}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
