"""The report page, built from what the real pipeline stored in ClickHouse.

The events are Adult test rows scored by the pipeline without Kafka and
written by the ClickHouse sink, as the worker writes them. The newest batch
stays open, as under a running worker. The page is checked as HTML in
Python, then loaded in headless Chromium, which saves screenshots under
test-artifacts/.
"""

import asyncio
import subprocess
import sys
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path

import orjson
import pytest
from plotly.offline import get_plotlyjs

from streams.batching import Batcher
from streams.pipeline import Pipeline
from streams.records import RawMessage
from streams.registry import ModelRegistry
from streams.replay import event_from_row
from streams.report import load_report_data, write_report
from streams.report.figures import grid_figure
from streams.sink import ClickHouseSink
from streams.storage import Storage
from tests.browser.chromium import find_chromium, open_page
from tests.conftest import ROOT

pytestmark = pytest.mark.integration

START = datetime(2026, 12, 4, 15, 0, tzinfo=UTC)
SECONDS_APART = 1.2
EVENTS = 2400
SHIFTED = range(1200, 1350)
"""Events whose age is raised by 70 years, which turns their batches red."""

INJECTED_REQUEST = "<script>alert(1)</script>"
INJECTED_VALUE = "<img src=x onerror=alert(2)>"
INJECTED_EXTRA = "<b onmouseover=alert(3)>colour</b>"
INVALID = [b"{not json", b"[1, 2]"]
ARTIFACTS = ROOT / "test-artifacts"


@dataclass
class StoredRun:
    """A ClickHouse directory written by the pipeline, and what it holds."""

    url: str
    events: int
    outliers: int
    health: dict[str, int]
    open_batches: int
    batches: int
    alerts: int
    dead_letters: int


def _messages(rows: list[dict], start_offset: int = 0) -> list[RawMessage]:
    values = []
    for number, row in enumerate(rows):
        row = dict(row)
        request_id = f"r{number:05d}"
        if number in SHIFTED:
            row["age"] += 70
        if number == 100:
            request_id = INJECTED_REQUEST
            row["workclass"] = INJECTED_VALUE
        if number == 101:
            row[INJECTED_EXTRA] = "blue"
        event = event_from_row(
            row,
            model="census",
            version=1,
            request_id=request_id,
            prediction_columns=["income"],
            timestamp=START + timedelta(seconds=number * SECONDS_APART),
        )
        values.append(orjson.dumps(event))
    values.extend(INVALID)
    return [
        RawMessage(
            topic="oddwatch.predictions",
            partition=0,
            offset=start_offset + offset,
            key=b"census",
            value=value,
            received_at=START + timedelta(seconds=offset * SECONDS_APART),
        )
        for offset, value in enumerate(values)
    ]


def _run_pipeline(url: str, store: Path, messages: list[RawMessage]) -> None:
    """Score ``messages`` in blocks of 500 and store them, as the worker does.

    The batch of the last window stays open, because no later event closes it.
    """
    pipeline = Pipeline(
        ModelRegistry(store), Batcher(window_seconds=60, batch_size=100)
    )
    with Storage.connect(url) as storage:
        sink = ClickHouseSink(storage)
        for first in range(0, len(messages), 500):
            block = messages[first : first + 500]
            sink.write(
                pipeline.process(block), f"0:{block[0].offset}-{block[-1].offset}"
            )


def _count(storage: Storage, sql: str) -> int:
    return int(storage.query_rows(sql)[0][0])


@pytest.fixture(scope="module")
def stored_run(tmp_path_factory, census_store, adult_test) -> StoredRun:
    """Adult test rows scored and stored; the newest batch is open."""
    url = "chdb://" + str(tmp_path_factory.mktemp("report") / "clickhouse")
    rows = adult_test.head(EVENTS).to_dict("records")
    _run_pipeline(url, census_store, _messages(rows))
    with Storage.connect(url, migrate=False) as storage:
        health = dict(
            storage.query_rows(
                "SELECT health, count() FROM batches FINAL GROUP BY health"
            )
        )
        open_batches = _count(
            storage,
            "SELECT uniqExact(batch_id) FROM events FINAL "
            "WHERE batch_id NOT IN (SELECT batch_id FROM batches FINAL)",
        )
        return StoredRun(
            url=url,
            events=_count(storage, "SELECT count() FROM events FINAL"),
            outliers=_count(
                storage, "SELECT countIf(is_outlier = 1) FROM events FINAL"
            ),
            health=health,
            open_batches=open_batches,
            batches=sum(health.values()) + open_batches,
            alerts=_count(storage, "SELECT count() FROM alerts FINAL"),
            dead_letters=_count(storage, "SELECT count() FROM dead_letters FINAL"),
        )


@pytest.fixture(scope="module")
def report_path(stored_run, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("page") / "report.html"
    with Storage.connect(stored_run.url, migrate=False) as storage:
        write_report(storage, path, model="census", version=1, detail_batches=10)
    return path


class _Element:
    def __init__(self, tag: str, attrs: dict[str, str]) -> None:
        self.tag = tag
        self.attrs = attrs
        self.children: list[_Element] = []
        self.parts: list[str] = []

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())

    def text(self) -> str:
        return "".join(self.parts)

    def iter(self):
        yield self
        for child in self.children:
            yield from child.iter()

    def find_all(self, tag: str, css_class: str | None = None) -> list["_Element"]:
        return [
            element
            for element in self.iter()
            if element.tag == tag
            and (css_class is None or css_class in element.classes)
        ]

    def by_id(self, element_id: str) -> "_Element":
        return next(e for e in self.iter() if e.attrs.get("id") == element_id)


_VOID = {"meta", "br", "img", "input", "link", "hr"}


class _Tree(HTMLParser):
    """Parse a page into elements whose text includes their descendants' text."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = _Element("document", {})
        self.stack = [self.root]

    def handle_starttag(self, tag, attrs):
        element = _Element(tag, {name: value or "" for name, value in attrs})
        self.stack[-1].children.append(element)
        if tag not in _VOID:
            self.stack.append(element)

    def handle_endtag(self, tag):
        for depth in range(len(self.stack) - 1, 0, -1):
            if self.stack[depth].tag == tag:
                del self.stack[depth:]
                return

    def handle_data(self, data):
        for element in self.stack:
            element.parts.append(data)


def _parse(path: Path) -> _Element:
    tree = _Tree()
    tree.feed(path.read_text(encoding="utf-8"))
    tree.close()
    return tree.root


def _number(element: _Element) -> int:
    return int(element.find_all("div", "number")[0].text().replace(",", ""))


def test_report_header_counts(stored_run, report_path):
    page = _parse(report_path)
    title = page.find_all("title")[0].text()
    assert "census version 1" in title
    assert "2026-12-04 15:00:00 UTC to 2026-12-04 15:47:58 UTC" in title
    assert _number(page.by_id("total-events")) == stored_run.events == EVENTS
    assert _number(page.by_id("total-outliers")) == stored_run.outliers
    assert _number(page.by_id("total-batches")) == stored_run.batches
    assert _number(page.by_id("total-dead-letters")) == len(INVALID)
    badges = page.by_id("total-batches").find_all("li")
    badge_counts = {
        li.find_all("span", "badge")[0].text(): li.text().split()[-1] for li in badges
    }
    for level in ("green", "yellow", "orange", "red"):
        assert int(badge_counts[level]) == stored_run.health.get(level, 0), level
    assert stored_run.health.get("red", 0) >= 1
    assert int(badge_counts["open"]) == stored_run.open_batches == 1


def test_report_sections_present(stored_run, report_path):
    page = _parse(report_path)
    for section in ("checks", "scores", "batches", "alerts", "drift"):
        assert page.by_id(section).tag == "section"
    assert page.by_id("check-grid").tag == "div"
    assert page.by_id("score-plot").tag == "div"
    # The pipeline tests every closed batch of 20 or more events for drift.
    assert page.by_id("drift-grid").tag == "div"
    alert_rows = page.by_id("alerts").find_all("tr")[1:]
    assert len(alert_rows) == stored_run.alerts
    assert any("unhealthy_batch" in row.text() for row in alert_rows)
    assert any("above_max" in row.text() for row in alert_rows)


def test_report_batch_details_limited(stored_run, report_path):
    page = _parse(report_path)
    details = page.find_all("details", "batch")
    plain = page.find_all("div", "plain")
    assert len(details) == 10
    assert len(details) + len(plain) == stored_run.batches
    assert "10 most recent batches" in page.by_id("batches").text()
    # 60 s windows with one event every 1.2 s hold 50 events each.
    for batch in details:
        assert len(batch.find_all("tbody")[0].find_all("tr")) == 50
    newest = details[0].find_all("summary")[0].text()
    assert "census/1/2026-12-04T15:47:00Z/000000" in newest


def test_report_escapes_data(stored_run, tmp_path):
    path = tmp_path / "all.html"
    with Storage.connect(stored_run.url, migrate=False) as storage:
        write_report(storage, path, model="census", version=1, detail_batches=100)
    text = path.read_text(encoding="utf-8")
    for raw in (INJECTED_REQUEST, INJECTED_VALUE, INJECTED_EXTRA):
        assert raw not in text, raw
    page = _parse(path)
    codes = [code.text() for code in page.find_all("code")]
    assert INJECTED_REQUEST in codes
    cells = [cell.text() for cell in page.find_all("td")]
    assert any(cell.startswith(INJECTED_VALUE) for cell in cells)
    assert any(INJECTED_EXTRA in cell for cell in cells)
    assert not page.find_all("img")
    assert not page.find_all("b", None) or all(
        "onmouseover" not in b.attrs for b in page.find_all("b")
    )


def test_report_is_self_contained(report_path):
    page = _parse(report_path)
    scripts = page.find_all("script")
    assert scripts
    assert all("src" not in script.attrs for script in scripts)
    assert not page.find_all("link")
    # plotly.js itself is inlined; the browser test checks that nothing loads.
    assert get_plotlyjs()[-2000:] in report_path.read_text(encoding="utf-8")


def test_report_grid_rows_and_columns(stored_run):
    with Storage.connect(stored_run.url, migrate=False) as storage:
        data = load_report_data(storage, "census", 1)
    starts = data.batches["window_start"]
    assert starts.is_monotonic_increasing
    heatmap = grid_figure(data).data[0]
    assert len(heatmap.x) == stored_run.batches
    assert heatmap.y[0] == "<b>auto_od</b>"
    assert "age" in heatmap.y
    assert len(heatmap.y) == 1 + 14
    age = list(heatmap.y).index("age")
    shares = heatmap.z[age]
    assert min(share for share in shares if share is not None) < 0.85


def test_report_since_filters(stored_run, tmp_path):
    since = START + timedelta(minutes=30)
    with Storage.connect(stored_run.url, migrate=False) as storage:
        data = write_report(
            storage,
            tmp_path / "since.html",
            model="census",
            version=1,
            since=since,
            detail_batches=3,
        )
    assert data.events == EVENTS - int(30 * 60 / SECONDS_APART)
    assert len(data.batches) == 18
    assert (data.batches["window_start"] >= since).all()
    assert (data.scores["event_time"] >= since).all()
    assert len(data.detail_batch_ids) == 3
    page = _parse(tmp_path / "since.html")
    assert "2026-12-04 15:30:00 UTC to" in page.find_all("title")[0].text()
    assert len(page.find_all("details", "batch")) == 3


def test_report_empty_range(stored_run, tmp_path):
    path = tmp_path / "empty.html"
    with Storage.connect(stored_run.url, migrate=False) as storage:
        data = write_report(
            storage,
            path,
            model="census",
            version=1,
            since=datetime(2027, 1, 1, tzinfo=UTC),
            detail_batches=0,
        )
    assert data.events == 0
    assert data.batches.empty
    page = _parse(path)
    assert "no events since 2027-01-01" in page.find_all("title")[0].text()
    assert _number(page.by_id("total-events")) == 0
    for section in ("checks", "scores", "batches", "alerts"):
        assert "in this time range" in page.by_id(section).text(), section
    assert not page.find_all("details")


def test_report_command_writes_file(stored_run, tmp_path):
    out = tmp_path / "cli.html"
    result = subprocess.run(
        [sys.executable, "-m", "streams", "report", "--model", "census",
         "--version", "1", "--clickhouse", stored_run.url, "--out", str(out),
         "--detail-batches", "2"],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert f"{EVENTS} events" in result.stdout
    assert len(_parse(out).find_all("details", "batch")) == 2


def test_report_command_unknown_version(stored_run, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "streams", "report", "--model", "census",
         "--version", "7", "--clickhouse", stored_run.url,
         "--out", str(tmp_path / "none.html")],
        capture_output=True, text=True, cwd=ROOT, timeout=300,
    )  # fmt: skip
    assert result.returncode == 2
    assert "no events of model 'census' version 7" in result.stderr
    assert "census version 1" in result.stderr
    assert not (tmp_path / "none.html").exists()


_DRIFT_TABLE = """
CREATE TABLE batch_drift (
    model String, version UInt32, batch_id String,
    window_start DateTime64(3, 'UTC'), feature String, method String,
    drift Float64, threshold Float64, drifted UInt8
) ENGINE = ReplacingMergeTree ORDER BY (model, version, batch_id, feature)
"""
_METRIC_TABLE = """
CREATE TABLE metric_checks (
    model String, version UInt32, request_id String,
    event_time DateTime64(3, 'UTC'), batch_id String, metric String,
    score Float64, threshold Float64, status String
) ENGINE = ReplacingMergeTree ORDER BY (model, version, metric, request_id)
"""


def test_report_open_batches_drift_metrics(census_store, adult_test, tmp_path):
    url = f"chdb://{tmp_path / 'clickhouse'}"
    rows = adult_test.head(200).to_dict("records")
    _run_pipeline(url, census_store, _messages(rows))
    with Storage.connect(url, migrate=False) as storage:
        # Tables of another layout than the worker's, to check the report
        # reads what it can from the columns it finds.
        storage.command("DROP TABLE batch_drift")
        storage.command("DROP TABLE metric_checks")
        storage.command(_DRIFT_TABLE)
        storage.command(_METRIC_TABLE)
        storage.command(
            "INSERT INTO batch_drift SELECT model, version, batch_id, "
            "min(event_time), feature, 'psi', if(feature = 'age', 0.4, 0.01), 0.2, "
            "feature = 'age' FROM feature_checks GROUP BY model, version, batch_id, "
            "feature"
        )
        storage.command(
            "INSERT INTO metric_checks SELECT model, version, request_id, event_time, "
            "batch_id, 'low_score', score, 0.5, if(score < 0.5, 'passed', 'failed') "
            "FROM events"
        )
        failed_metric = _count(storage, "SELECT countIf(score >= 0.5) FROM events")
        data = write_report(storage, tmp_path / "extra.html", model="census", version=1)

    batches = data.batches
    assert batches["is_open"].tolist() == [False, False, False, True]
    assert batches["health"].iloc[-1] == ""
    assert 0 < batches["pass_share"].iloc[-1] <= 1
    heatmap = grid_figure(data).data[0]
    assert "<b>low_score</b>" in heatmap.y
    assert data.drift is not None
    assert set(data.drift["feature"]) >= {"age", "workclass"}

    page = _parse(tmp_path / "extra.html")
    assert page.by_id("drift-grid").tag == "div"
    assert "No drift data" not in page.by_id("drift").text()
    assert "open" in page.by_id("total-batches").text()
    metric_headers = [
        th.text() for th in page.find_all("th") if th.text() == "low_score"
    ]
    assert len(metric_headers) == 4
    failed_cells = [
        td for td in page.find_all("td", "fail") if "low_score" in td.text()
    ]
    assert len(failed_cells) == failed_metric


def _skip_without_chromium() -> None:
    if find_chromium() is None:
        pytest.skip(
            "chromium is not installed; apt-get install chromium to run the "
            "browser test"
        )


def _cell_center_js(row: int, column: int) -> str:
    # Page coordinates of a heatmap cell, from plotly's own axis mapping.
    return f"""(() => {{
        const grid = document.getElementById("check-grid");
        const layout = grid._fullLayout;
        const box = grid.getBoundingClientRect();
        return [box.left + layout.xaxis._offset + layout.xaxis.l2p({column}),
                box.top + layout.yaxis._offset + layout.yaxis.l2p({row})];
    }})()"""


async def _look_at(path: Path, batches: int, points: int) -> dict:
    async with open_page(path.as_uri(), width=1400, height=1000) as page:
        await page.wait_for(
            "document.querySelectorAll('.plot-container .main-svg').length >= 2"
        )
        found = {
            "plots": await page.evaluate(
                "document.querySelectorAll('.plot-container').length"
            ),
            "heatmap": await page.evaluate(
                "document.querySelectorAll('#check-grid .hm image').length"
            ),
            "points": await page.evaluate(
                "document.querySelectorAll('#score-plot .scatterlayer .point').length"
            ),
            "injected": await page.evaluate(
                "[...document.querySelectorAll('code')].filter(c => c.textContent === "
                f"{orjson.dumps(INJECTED_REQUEST).decode()}).length"
            ),
        }

        # A click on the newest column of the grid opens that batch.
        x, y = await page.evaluate(_cell_center_js(0, batches - 1))
        await page.click(x, y)
        anchor = f"batch-{batches - 1}"
        found["opened_by_grid"] = await page.wait_for(
            f"document.getElementById('{anchor}').open"
        )
        found["rows_shown"] = await page.evaluate(
            f"document.querySelectorAll('#{anchor} tbody tr').length"
        )

        await page.evaluate("window.scrollTo(0, 0)")
        await page.screenshot(ARTIFACTS / "report.png")
        await page.screenshot(ARTIFACTS / "report-top.png", full_page=False)
        found.update(
            console=page.console,
            exceptions=page.exceptions,
            dialogs=page.dialogs,
            requests=page.requests,
        )
    return found


def test_report_in_chromium(stored_run, tmp_path):
    _skip_without_chromium()
    path = ARTIFACTS / "report.html"
    ARTIFACTS.mkdir(exist_ok=True)
    with Storage.connect(stored_run.url, migrate=False) as storage:
        data = write_report(
            storage, path, model="census", version=1, detail_batches=100
        )

    found = asyncio.run(_look_at(path, stored_run.batches, len(data.scores)))

    assert found["exceptions"] == []
    assert [m for m in found["console"] if m[0] in ("error", "warning")] == []
    assert found["dialogs"] == []
    assert all(url.startswith(("file:", "data:")) for url in found["requests"])
    assert found["plots"] == 3  # check grid, scores, drift grid
    assert found["heatmap"] == 1
    assert found["points"] == len(data.scores)
    assert found["injected"] == 1
    assert found["opened_by_grid"] is True
    assert found["rows_shown"] == 50
    assert (ARTIFACTS / "report.png").stat().st_size > 50_000
