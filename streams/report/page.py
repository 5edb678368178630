"""Lay out the report as one self-contained HTML page.

The page inlines plotly.js and its own style and script, so it opens from a
file with no server and no network. Every string that comes from the data
(feature names and values, request and batch ids, reasons) is escaped with
:func:`html.escape` on its way into the page.
"""

import html
import math
from typing import Any

import orjson
import pandas as pd
import plotly.io as pio
from plotly.offline import get_plotlyjs

from streams.batching import HealthCutoffs
from streams.report.data import MAX_ALERTS, ReportData
from streams.report.figures import (
    HEALTH_COLORS,
    batch_anchor,
    drift_figure,
    grid_figure,
    score_figure,
)

__all__ = ["render_report"]

HEALTH_LEVELS = ("green", "yellow", "orange", "red")

_PLOT_CONFIG = {"displaylogo": False, "responsive": True}
# Zooming does not help on a grid, and the mode bar would cover its top row.
_GRID_CONFIG = {**_PLOT_CONFIG, "displayModeBar": False}

_escape = html.escape


def render_report(data: ReportData) -> str:
    """Return the whole report page of ``data`` as HTML text."""
    title = f"oddwatch: {data.model} version {data.version}, {_time_range(data)}"
    sections = [
        _header(data),
        _grid_section(data),
        _score_section(data),
        _batch_section(data),
        _alert_section(data),
        _drift_section(data),
    ]
    return _PAGE.format(
        title=_escape(title),
        style=_STYLE,
        plotly=get_plotlyjs(),
        body="\n".join(sections),
        script=_SCRIPT,
    )


def _time_range(data: ReportData) -> str:
    start = data.since
    if start is None and not data.batches.empty:
        start = data.batches["window_start"].min()
    if start is None:
        start = data.first_event
    end = data.last_event
    if start is None or end is None:
        return "no events" + (f" since {_time(start)}" if start is not None else "")
    return f"{_time(start)} to {_time(end)}"


def _time(value: Any) -> str:
    if value is None or pd.isna(value):
        return ""
    return pd.Timestamp(value).strftime("%Y-%m-%d %H:%M:%S UTC")


def _count(value: int) -> str:
    return f"{value:,}"


def _share(value: float) -> str:
    return "" if value is None or pd.isna(value) else f"{value:.1%}"


def _badge(health: str) -> str:
    if not health:
        return '<span class="badge open">open</span>'
    return f'<span class="badge {_escape(health)}">{_escape(health)}</span>'


def _figure_div(figure: Any, div_id: str, config: dict = _PLOT_CONFIG) -> str:
    return pio.to_html(
        figure,
        include_plotlyjs=False,
        full_html=False,
        config=config,
        div_id=div_id,
    )


def _header(data: ReportData) -> str:
    batches = data.batches
    health = batches["health"].value_counts() if not batches.empty else {}
    open_batches = int(batches["is_open"].sum()) if not batches.empty else 0
    levels = "".join(
        f"<li>{_badge(level)} {_count(int(health.get(level, 0)))}</li>"
        for level in HEALTH_LEVELS
    )
    if open_batches:
        levels += f"<li>{_badge('')} {_count(open_batches)}</li>"
    outlier_share = data.outliers / data.events if data.events else float("nan")
    letters = "".join(
        f"<li><code>{_escape(row.reason_code)}</code> {_count(int(row.count))}</li>"
        for row in data.dead_letters.itertuples(index=False)
    )
    return f"""
<header>
  <h1>{_escape(data.model)} <span class="version">version {data.version}</span></h1>
  <p class="range">{_escape(_time_range(data))} &middot; generated
    {_escape(_time(data.generated_at))}</p>
  <div class="totals">
    <div class="card" id="total-events"><div class="number">{_count(data.events)}</div>
      <div class="label">events</div></div>
    <div class="card" id="total-outliers">
      <div class="number">{_count(data.outliers)}</div>
      <div class="label">outliers ({_share(outlier_share) or "none"})</div></div>
    <div class="card wide" id="total-batches">
      <div class="number">{_count(len(batches))}</div>
      <div class="label">batches by health</div><ul class="levels">{levels}</ul></div>
    <div class="card wide" id="total-dead-letters">
      <div class="number">{_count(data.dead_letter_count)}</div>
      <div class="label">dead letters, all models</div>
      <ul class="levels">{letters}</ul></div>
  </div>
  <nav><a href="#checks">Checks per batch</a><a href="#scores">Outlier scores</a>
    <a href="#batches">Batches</a><a href="#alerts">Alerts</a>
    <a href="#drift">Drift</a></nav>
</header>"""


def _legend_entries(cutoffs: HealthCutoffs) -> list[tuple[str, str]]:
    return [
        ("green", f"{cutoffs.green:.0%} or more passed"),
        ("yellow", f"{cutoffs.yellow:.0%} or more"),
        ("orange", f"{cutoffs.orange:.0%} or more"),
        ("red", f"below {cutoffs.orange:.0%}"),
    ]


def _grid_section(data: ReportData) -> str:
    cutoffs = HealthCutoffs()
    if data.grid.empty:
        body = '<p class="empty">No checks in this time range.</p>'
    else:
        legend = "".join(
            f'<span><i style="background:{HEALTH_COLORS[level]}"></i>{text}</span>'
            for level, text in _legend_entries(cutoffs)
        )
        body = f'<div class="legend">{legend}</div>' + _figure_div(
            grid_figure(data, cutoffs), "check-grid", _GRID_CONFIG
        )
    return f"""
<section id="checks">
  <h2>Checks passed per batch</h2>
  <p class="note">One row per feature's range check, and bold rows for checks of
    the whole event (auto_od and custom metrics); one column per batch, oldest
    on the left. Click a cell to open that batch below.</p>
  {body}
</section>"""


def _score_section(data: ReportData) -> str:
    if data.scores.empty:
        body = '<p class="empty">No events in this time range.</p>'
    else:
        body = _figure_div(score_figure(data), "score-plot")
    notes = []
    if data.score_sample_step > 1:
        notes.append(
            f"To keep the page light, it draws 1 in {data.score_sample_step} of the "
            "requests below the threshold, chosen by a hash of the request id."
        )
    if data.score_outliers_shown < data.outliers:
        notes.append(
            f"It draws the {_count(data.score_outliers_shown)} most recent of "
            f"{_count(data.outliers)} outliers."
        )
    note = f'<p class="note">{" ".join(notes)}</p>' if notes else ""
    return f"""
<section id="scores">
  <h2>Outlier score per request</h2>
  <p class="note">A request whose auto_od score is above the threshold is an
    outlier.</p>
  {note}{body}
</section>"""


def _batch_section(data: ReportData) -> str:
    batches = data.batches
    if batches.empty:
        return """
<section id="batches"><h2>Batches</h2>
  <p class="empty">No batches in this time range.</p></section>"""
    detail_ids = set(data.detail_batch_ids)
    events = _group(data.detail_events, "batch_id")
    checks = _checks_by_request(data.detail_checks)
    metrics = _metrics_by_request(data.detail_metrics)
    rows = []
    # Newest first, as people read a monitoring page.
    for position in range(len(batches) - 1, -1, -1):
        batch = batches.iloc[position]
        summary = _batch_cells(batch)
        anchor = batch_anchor(position)
        if batch["batch_id"] in detail_ids:
            table = _request_table(
                events.get(batch["batch_id"], pd.DataFrame()), checks, metrics
            )
            rows.append(
                f'<details class="batch" id="{anchor}">'
                f'<summary class="batch-row">{summary}</summary>{table}</details>'
            )
        else:
            rows.append(f'<div class="batch-row plain" id="{anchor}">{summary}</div>')
    detail_count = len(detail_ids)
    if detail_count == 0:
        limit_note = "This file has no request details (--detail-batches 0)."
    elif detail_count < len(batches):
        limit_note = (
            f"The {_count(detail_count)} most recent batches open to show every "
            "request. Older ones have no details in this file (option "
            f"--detail-batches, now {data.detail_limit})."
        )
    else:
        limit_note = "Every batch opens to show its requests."
    header = "".join(f"<span>{name}</span>" for name in _BATCH_COLUMNS)
    return f"""
<section id="batches">
  <h2>Batches</h2>
  <p class="note">{_escape(limit_note)}</p>
  <div class="batch-list">
    <div class="batch-row head">{header}</div>
    {"".join(rows)}
  </div>
</section>"""


_BATCH_COLUMNS = (
    "window start (UTC)", "batch id", "events", "outliers", "late", "passed",
    "health", "closed by",
)  # fmt: skip


def _batch_cells(batch: pd.Series) -> str:
    cells = [
        _time(batch["window_start"]).removesuffix(" UTC"),
        f"<code>{_escape(batch['batch_id'])}</code>",
        _count(int(batch["events"])),
        _count(int(batch["outliers"])),
        _count(int(batch["late_events"])),
        _share(batch["pass_share"]),
        _badge(batch["health"]),
        _escape(batch["closed_by"]),
    ]
    return "".join(f"<span>{cell}</span>" for cell in cells)


def _group(frame: pd.DataFrame, column: str) -> dict[str, pd.DataFrame]:
    if frame.empty:
        return {}
    return {key: part for key, part in frame.groupby(column, sort=False)}


def _checks_by_request(checks: pd.DataFrame) -> dict[str, dict[str, tuple[str, int]]]:
    """Return request id → feature → (status, passed)."""
    result: dict[str, dict[str, tuple[str, int]]] = {}
    for row in checks.itertuples(index=False):
        result.setdefault(row.request_id, {})[row.feature] = (
            row.status,
            int(row.passed),
        )
    return result


def _metrics_by_request(metrics: pd.DataFrame | None) -> dict[str, dict[str, dict]]:
    """Return request id → metric → its row (score, threshold, status)."""
    result: dict[str, dict[str, dict]] = {}
    if metrics is None:
        return result
    for row in metrics.to_dict("records"):
        result.setdefault(row["request_id"], {})[row["metric"]] = row
    return result


def _request_table(
    events: pd.DataFrame,
    checks: dict[str, dict[str, tuple[str, int]]],
    metrics: dict[str, dict[str, dict]],
) -> str:
    if events.empty:
        return '<p class="empty">No stored requests.</p>'
    request_ids = list(events["request_id"])
    features = sorted({f for rid in request_ids for f in checks.get(rid, {})})
    metric_names = sorted({m for rid in request_ids for m in metrics.get(rid, {})})
    head = ["time (UTC)", "request id", "auto_od score", "failed checks"]
    head += [_escape(feature) for feature in features]
    head += [f"<b>{_escape(name)}</b>" for name in metric_names]
    head += ["extra features", "prediction"]

    lines = []
    for event in events.itertuples(index=False):
        values = _json(event.features)
        if not isinstance(values, dict):
            values = {}
        request_checks = checks.get(event.request_id, {})
        request_metrics = metrics.get(event.request_id, {})
        cells = [
            f"<td>{_time(event.event_time)[11:19]}</td>",
            f"<td><code>{_escape(event.request_id)}</code></td>",
            _score_cell(event.score, event.threshold, bool(event.is_outlier)),
            _failed_cell(request_checks, request_metrics),
        ]
        cells += [
            _feature_cell(values, feature, request_checks.get(feature))
            for feature in features
        ]
        cells += [_metric_cell(request_metrics.get(name)) for name in metric_names]

        extra = {name: values.get(name) for name in event.extra_features}
        cells.append(f"<td>{_escape(_plain_text(extra)) if extra else ''}</td>")
        cells.append(f"<td>{_escape(_plain_text(_json(event.prediction)))}</td>")
        css = ' class="outlier"' if event.is_outlier else ""
        lines.append(f"<tr{css}>{''.join(cells)}</tr>")

    header = "".join(f"<th>{name}</th>" for name in head)
    return (
        '<div class="requests"><table><thead><tr>'
        f"{header}</tr></thead><tbody>{''.join(lines)}</tbody></table></div>"
    )


def _score_cell(score: float, threshold: float, is_outlier: bool) -> str:
    title = f"threshold {threshold:.4f}"
    mark = ' <span class="badge red">outlier</span>' if is_outlier else ""
    return f'<td class="number" title="{title}">{score:.4f}{mark}</td>'


def _failed_cell(checks: dict[str, tuple[str, int]], metrics: dict[str, dict]) -> str:
    """List the checks that did not pass, so they show without scrolling."""
    failed = [
        f"{_escape(feature)}: {_escape(status)}"
        for feature, (status, passed) in sorted(checks.items())
        if not passed
    ]
    failed += [
        f"<b>{_escape(name)}</b>: {_escape(str(row['status']))}"
        for name, row in sorted(metrics.items())
        if row.get("status") and row["status"] != "passed"
    ]
    if not failed:
        return "<td></td>"
    return f'<td class="fail">{"<br>".join(failed)}</td>'


def _feature_cell(values: dict, feature: str, check: tuple[str, int] | None) -> str:
    value = _escape(_plain_text(values.get(feature)))
    if check is None:
        return f"<td>{value}</td>"
    status, passed = check
    if status == "ok":
        return f"<td>{value}</td>"
    css = "fail" if not passed else "note"
    return (
        f'<td class="{css}">{value}<span class="status">{_escape(status)}</span></td>'
    )


def _metric_cell(row: dict | None) -> str:
    if row is None:
        return "<td></td>"
    parts = []
    if "score" in row and row["score"] is not None and not pd.isna(row["score"]):
        parts.append(f"{float(row['score']):.4g}")
    status = str(row.get("status") or "")
    failed = bool(status) and status != "passed"
    if status:
        tone = "" if failed else " ok"
        parts.append(f'<span class="status inline{tone}">{_escape(status)}</span>')
    css = ' class="fail"' if failed else ""
    return f"<td{css}>{' '.join(parts)}</td>"


def _json(text: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return text


def _plain_text(value: Any) -> str:
    """Return a value as a person reads it: dicts as ``key: value`` pairs."""
    if value is None:
        return ""
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return str(int(value))
    if isinstance(value, dict):
        return ", ".join(f"{key}: {_plain_text(item)}" for key, item in value.items())
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()


def _alert_section(data: ReportData) -> str:
    alerts = data.alerts
    if alerts.empty:
        body = '<p class="empty">No alerts in this time range.</p>'
    else:
        rows = "".join(_alert_row(alert) for alert in alerts.to_dict("records"))
        body = (
            '<table class="alerts"><thead><tr><th>occurred (UTC)</th><th>kind</th>'
            "<th>request or batch</th><th>measure</th><th>reasons</th></tr></thead>"
            f"<tbody>{rows}</tbody></table>"
        )
    note = ""
    if data.alert_count > len(alerts):
        note = (
            f'<p class="note">The {_count(len(alerts))} most recent of '
            f"{_count(data.alert_count)} alerts; the page lists at most "
            f"{_count(MAX_ALERTS)}.</p>"
        )
    return f"""
<section id="alerts">
  <h2>Alerts <span class="count">{_count(data.alert_count)}</span></h2>
  {note}{body}
</section>"""


def _alert_row(alert: dict) -> str:
    if alert["kind"] == "outlier":
        subject = f"<code>{_escape(alert['request_id'])}</code>"
        measure = f"score {alert['score']:.4f} &gt; {alert['threshold']:.4f}"
    else:
        subject = f"<code>{_escape(alert['batch_id'])}</code>"
        measure = f"{_badge(alert['health'])} {_share(alert['pass_share'])} passed"
    reasons = _json(alert["reasons"])
    if not isinstance(reasons, list):
        reasons = []
    # A batch alert's reasons give each failing check's share passed.
    as_share = alert["kind"] != "outlier"
    items = "".join(f"<li>{_reason(reason, as_share)}</li>" for reason in reasons)
    return (
        f'<tr class="{_escape(alert["kind"])}">'
        f'<td class="time">{_time(alert["occurred_at"]).removesuffix(" UTC")}</td>'
        f'<td>{_escape(alert["kind"])}</td><td>{subject}<div class="sub">batch '
        f"<code>{_escape(alert['batch_id'])}</code></div></td>"
        f'<td class="measure">{measure}</td>'
        f'<td><ul class="reasons">{items}</ul></td></tr>'
    )


def _reason(reason: Any, as_share: bool = False) -> str:
    """Explain one reason: the check and feature, its status, value and expectation.

    With ``as_share`` the value is the share of values that passed the check.
    """
    if not isinstance(reason, dict):
        return _escape(_plain_text(reason))
    name = str(reason.get("check", ""))
    if reason.get("feature"):
        name += f" {reason['feature']}"
    parts = [
        f"<b>{_escape(name)}</b>",
        f'<span class="status">{_escape(str(reason.get("status", "")))}</span>',
    ]
    details = []
    value = reason.get("value")
    if isinstance(value, int | float) and as_share:
        details.append(f"{value:.1%} passed")
    elif value is not None:
        details.append(f"value {_value_text(value)}")
    if reason.get("expected"):
        details.append(f"expected {reason['expected']}")
    if reason.get("contribution") is not None:
        details.append(f"contribution {_value_text(reason['contribution'])}")
    if details:
        parts.append(_escape(", ".join(details)))
    return " ".join(parts)


def _value_text(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    return _plain_text(value)


def _drift_section(data: ReportData) -> str:
    if data.drift is None:
        body = f'<p class="empty">{_escape(data.drift_note.capitalize())}.</p>'
    else:
        body = _figure_div(drift_figure(data), "drift-grid", _GRID_CONFIG)
    return f"""
<section id="drift">
  <h2>Drift per feature</h2>
  {body}
</section>"""


_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{style}</style>
<script>{plotly}</script>
</head>
<body>
<main>
{body}
<footer>oddwatch report. Times are UTC. Counts read with FINAL, one row per
request id.</footer>
</main>
<script>{script}</script>
</body>
</html>
"""

_STYLE = """
:root { --ink: #1f2933; --muted: #616e7c; --line: #d9dee4; --paper: #f6f7f9;
  --green: #1a9850; --yellow: #e6c229; --orange: #f08a24; --red: #c62828; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--paper); color: var(--ink);
  font: 14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1320px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { margin: 0; font-size: 26px; }
h1 .version { color: var(--muted); font-weight: 400; }
h2 { font-size: 18px; margin: 0 0 6px; }
h2 .count { color: var(--muted); font-weight: 400; }
code { font: 12px/1.3 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
.range { color: var(--muted); margin: 4px 0 16px; }
.totals { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 12px 16px; min-width: 150px; }
.card.wide { min-width: 260px; }
.card .number { font-size: 24px; font-weight: 600; }
.card .label { color: var(--muted); }
.levels { list-style: none; margin: 6px 0 0; padding: 0; display: flex;
  flex-wrap: wrap; gap: 10px; }
nav { margin: 18px 0 4px; display: flex; gap: 16px; }
nav a { color: #2b5fad; text-decoration: none; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px;
  padding: 16px 18px; margin-top: 16px; }
.note { color: var(--muted); margin: 0 0 8px; }
.empty { color: var(--muted); font-style: italic; }
.legend { display: flex; gap: 16px; color: var(--muted); margin-bottom: 4px; }
.legend i { display: inline-block; width: 12px; height: 12px; border-radius: 2px;
  margin-right: 5px; vertical-align: -1px; }
.badge { display: inline-block; padding: 0 7px; border-radius: 9px; font-size: 12px;
  color: #fff; background: var(--muted); }
.badge.green { background: var(--green); }
.badge.yellow { background: var(--yellow); color: #3d3200; }
.badge.orange { background: var(--orange); }
.badge.red { background: var(--red); }
.badge.open { background: #fff; color: var(--muted); border: 1px solid var(--line); }
.batch-list { border-top: 1px solid var(--line); }
.batch-row { display: grid; align-items: center; gap: 10px; padding: 5px 8px;
  grid-template-columns: 150px minmax(260px, 1fr) 60px 64px 44px 64px 74px 80px;
  border-bottom: 1px solid var(--line); }
.batch-row.head { font-weight: 600; color: var(--muted); font-size: 12px; }
.batch-row.plain { color: var(--muted); }
details.batch > summary { cursor: pointer; list-style: none; }
details.batch > summary::-webkit-details-marker { display: none; }
details.batch > summary > span:first-child::before { content: "\\25B8  ";
  color: var(--muted); }
details.batch[open] > summary > span:first-child::before { content: "\\25BE  "; }
details.batch > summary:hover, details.batch[open] > summary { background: #eef3fb; }
.batch-row > span:nth-child(n+3):nth-child(-n+6) { text-align: right; }
.requests { overflow: auto; max-height: 520px; border-bottom: 1px solid var(--line); }
.requests table { border-collapse: collapse; font-size: 12px; white-space: nowrap; }
.requests th { position: sticky; top: 0; background: #f0f2f5; text-align: left;
  padding: 4px 8px; border-bottom: 1px solid var(--line); }
.requests td { padding: 3px 8px; border-bottom: 1px solid #eceff2;
  vertical-align: top; }
.requests tr.outlier td:nth-child(-n+3) { background: #fdecea; }
td.number { text-align: right; }
td.fail { background: #fdecea; }
td.note { color: var(--muted); }
.status { display: block; font-size: 11px; color: var(--red); }
td.note .status, .status.ok { color: var(--muted); }
.status.inline { display: inline; margin-left: 4px; }
table.alerts { border-collapse: collapse; width: 100%; }
table.alerts th { text-align: left; color: var(--muted); font-size: 12px;
  border-bottom: 1px solid var(--line); padding: 4px 8px; }
table.alerts td { border-bottom: 1px solid var(--line); padding: 6px 8px;
  vertical-align: top; }
table.alerts td.time, table.alerts td.measure, table.alerts .sub {
  white-space: nowrap; }
.reasons { margin: 0; padding-left: 16px; }
.reasons .status { display: inline; }
.sub { color: var(--muted); font-size: 12px; }
footer { color: var(--muted); margin-top: 20px; font-size: 12px; }
"""

# Clicking a grid cell opens and shows that batch in the list.
_SCRIPT = """
(function () {
  var grid = document.getElementById("check-grid");
  if (!grid || !grid.on) { return; }
  grid.on("plotly_click", function (event) {
    var point = event.points && event.points[0];
    var anchor = point && point.customdata && point.customdata[3];
    var target = anchor && document.getElementById(anchor);
    if (!target) { return; }
    if (target.tagName === "DETAILS") { target.open = true; }
    target.scrollIntoView({behavior: "smooth", block: "start"});
  });
})();
"""
