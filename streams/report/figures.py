"""The report's plotly figures: check grid, outlier scores and drift.

Plotly draws text as its own subset of HTML, so every string from the data
is escaped with :func:`html.escape` before it becomes a label or hover text.
Plotly turns the entities back into the characters it shows.
"""

import html

import pandas as pd
import plotly.graph_objects as go

from streams.batching import AUTO_OD, RANGE, HealthCutoffs
from streams.report.data import ReportData

__all__ = [
    "HEALTH_COLORS",
    "batch_anchor",
    "batch_label",
    "drift_figure",
    "grid_figure",
    "score_figure",
]

HEALTH_COLORS = {
    "green": "#1a9850",
    "yellow": "#e6c229",
    "orange": "#f08a24",
    "red": "#c62828",
}

_FONT = dict(
    family="-apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif",
    size=12,
    color="#1f2933",
)
_ROW_HEIGHT = 22
_MIN_GRID_HEIGHT = 160


def batch_anchor(position: int) -> str:
    """Return the HTML id of the batch at ``position`` in ``ReportData.batches``."""
    return f"batch-{position}"


def batch_label(batch_id: str, window_start: pd.Timestamp, with_date: bool) -> str:
    """Return a short label of a batch: its window start, partition and sequence.

    A batch id ends with the batch's sequence number within its window, led by
    the Kafka partition (``p3-000001``) when the worker batches per partition.
    The label leaves out partition-less ids' sequence 0.

    Examples
    --------
    >>> start = pd.Timestamp("2026-12-04 15:00", tz="UTC")
    >>> batch_label("census/1/2026-12-04T15:00:00Z/000003", start, with_date=False)
    '15:00:00 #3'
    >>> batch_label("census/1/2026-12-04T15:00:00Z/p2-000000", start, with_date=True)
    '12-04 15:00:00 p2 #0'
    """
    label = window_start.strftime("%m-%d %H:%M:%S" if with_date else "%H:%M:%S")
    partition, _, sequence = batch_id.rsplit("/", 1)[-1].rpartition("-")
    if partition:
        label += f" {partition}"
    if not sequence.isdigit():
        return f"{label} {sequence}"
    return f"{label} #{int(sequence)}" if int(sequence) or partition else label


def _pass_share_colorscale(cutoffs: HealthCutoffs) -> list[tuple[float, str]]:
    # A band per health level, so a cell has the colour of the health that
    # its share alone would give. Shading inside a band shows how far in.
    return [
        (0.0, "#7f0000"),
        (cutoffs.orange - 1e-9, HEALTH_COLORS["red"]),
        (cutoffs.orange, HEALTH_COLORS["orange"]),
        (cutoffs.yellow - 1e-9, "#f6a54e"),
        (cutoffs.yellow, HEALTH_COLORS["yellow"]),
        (cutoffs.green - 1e-9, "#f1dc6b"),
        (cutoffs.green, "#a6d96a"),
        (1.0, HEALTH_COLORS["green"]),
    ]


def _base_layout(figure: go.Figure, height: int) -> None:
    figure.update_layout(
        template="plotly_white",
        font=_FONT,
        height=height,
        margin=dict(l=10, r=10, t=10, b=10),
        hoverlabel=dict(font=dict(family=_FONT["family"], size=12), align="left"),
    )


def _columns(batches: pd.DataFrame) -> list[str]:
    """Return the label of every batch, in the order of ``batches``."""
    starts = batches["window_start"]
    with_date = starts.dt.date.nunique() > 1 if len(starts) else False
    labels = [
        batch_label(batch_id, start, with_date)
        for batch_id, start in zip(batches["batch_id"], starts, strict=True)
    ]
    # Equal labels would merge columns of the category axis.
    if len(set(labels)) < len(labels):
        return list(batches["batch_id"])
    return labels


def _row_key(check: str, feature: str) -> tuple[int, str, str]:
    # Whole-event checks (auto_od first, then metrics) above the features.
    if check == RANGE:
        return (2, feature, check)
    return (0 if check == AUTO_OD else 1, check, feature)


def _row_label(check: str, feature: str) -> str:
    if check == RANGE:
        return html.escape(feature)
    name = html.escape(check if not feature else f"{check}: {feature}")
    return f"<b>{name}</b>"


def grid_figure(data: ReportData, cutoffs: HealthCutoffs | None = None) -> go.Figure:
    """Draw the check × batch grid coloured by the share of values that passed."""
    cutoffs = cutoffs or HealthCutoffs()
    batches = data.batches
    grid = data.grid
    rows = sorted(
        {(c, f) for c, f in zip(grid["check"], grid["feature"], strict=True)},
        key=lambda row: _row_key(*row),
    )
    row_index = {row: i for i, row in enumerate(rows)}
    column_index = {batch_id: i for i, batch_id in enumerate(batches["batch_id"])}

    # One cell per row and batch; a check missing from a batch stays empty.
    shares = [[None] * len(column_index) for _ in rows]
    hover = [[["", 0, 0, ""] for _ in column_index] for _ in rows]
    for cell in grid.itertuples(index=False):
        column = column_index.get(cell.batch_id)
        if column is None:
            continue
        row = row_index[(cell.check, cell.feature)]
        checked, passed = int(cell.checked), int(cell.passed)
        shares[row][column] = passed / checked if checked else None
        hover[row][column] = [
            html.escape(cell.batch_id),
            passed,
            checked,
            batch_anchor(column),
        ]

    figure = go.Figure(
        go.Heatmap(
            z=shares,
            x=_columns(batches),
            y=[_row_label(*row) for row in rows],
            customdata=hover,
            zmin=0,
            zmax=1,
            colorscale=_pass_share_colorscale(cutoffs),
            showscale=False,
            xgap=1,
            ygap=1,
            hovertemplate=(
                "%{y}<br>batch %{customdata[0]}<br>"
                "passed %{customdata[1]} of %{customdata[2]} (%{z:.1%})"
                "<extra></extra>"
            ),
            hoverongaps=False,
        )
    )
    _base_layout(figure, max(_MIN_GRID_HEIGHT, 90 + _ROW_HEIGHT * len(rows)))
    figure.update_xaxes(type="category", tickangle=-45, showgrid=False)
    figure.update_yaxes(autorange="reversed", showgrid=False, ticksuffix="  ")
    figure.update_layout(plot_bgcolor="#eef0f3")
    return figure


def score_figure(data: ReportData) -> go.Figure:
    """Draw the auto_od score of every request over time, with the threshold."""
    scores = data.scores
    figure = go.Figure()
    hover = (
        "request %{customdata[0]}<br>batch %{customdata[1]}<br>"
        "%{x|%Y-%m-%d %H:%M:%S.%L} UTC<br>score %{y:.4f}, threshold "
        "%{customdata[2]:.4f}<extra>%{fullData.name}</extra>"
    )
    for is_outlier, name, marker in (
        (0, "below threshold", dict(size=4, color="#5b7db1", opacity=0.55)),
        (1, "outlier", dict(size=8, color=HEALTH_COLORS["red"], symbol="x")),
    ):
        part = scores[scores["is_outlier"] == is_outlier]
        figure.add_trace(
            go.Scatter(
                x=part["event_time"],
                y=part["score"],
                mode="markers",
                name=name,
                marker=marker,
                customdata=list(
                    zip(
                        part["request_id"].map(html.escape),
                        part["batch_id"].map(html.escape),
                        part["threshold"],
                        strict=True,
                    )
                ),
                hovertemplate=hover,
            )
        )
    figure.add_trace(
        go.Scatter(
            x=scores["event_time"],
            y=scores["threshold"],
            mode="lines",
            name="threshold",
            line=dict(color="#1f2933", dash="dash", width=1.5, shape="hv"),
            hoverinfo="skip",
        )
    )
    _base_layout(figure, 380)
    figure.update_layout(
        legend=dict(orientation="h", yanchor="bottom", y=1.0, x=0),
        margin=dict(t=30),
    )
    figure.update_xaxes(title_text="event time (UTC)")
    figure.update_yaxes(title_text="auto_od score")
    return figure


def drift_figure(data: ReportData) -> go.Figure:
    """Draw the drift of every feature per batch, darker for more drift."""
    drift = data.drift
    batches = data.batches
    positions = {batch_id: i for i, batch_id in enumerate(batches["batch_id"])}
    features = sorted(drift["feature"].unique())
    feature_index = {feature: i for i, feature in enumerate(features)}
    values = [[None] * len(positions) for _ in features]
    hover = [[["", ""] for _ in positions] for _ in features]
    for row in drift.itertuples(index=False):
        column = positions.get(row.batch_id)
        if column is None:
            continue
        line = feature_index[row.feature]
        values[line][column] = float(row.value)
        verdict = ""
        if "drifted" in drift.columns:
            verdict = "drifted" if row.drifted else "no drift"
        if "threshold" in drift.columns:
            verdict += f" (threshold {row.threshold:.4g})"
        hover[line][column] = [html.escape(row.batch_id), verdict]

    figure = go.Figure(
        go.Heatmap(
            z=values,
            x=_columns(batches),
            y=[html.escape(feature) for feature in features],
            customdata=hover,
            colorscale="Reds",
            colorbar=dict(title=dict(text="drift"), thickness=12),
            xgap=1,
            ygap=1,
            hovertemplate=(
                "%{y}<br>batch %{customdata[0]}<br>drift %{z:.4g} "
                "%{customdata[1]}<extra></extra>"
            ),
            hoverongaps=False,
        )
    )
    _base_layout(figure, max(_MIN_GRID_HEIGHT, 90 + _ROW_HEIGHT * len(features)))
    figure.update_xaxes(type="category", tickangle=-45, showgrid=False)
    figure.update_yaxes(autorange="reversed", showgrid=False, ticksuffix="  ")
    figure.update_layout(plot_bgcolor="#eef0f3")
    return figure
