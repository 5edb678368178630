"""The ``oddwatch report`` page: one model version's checks, scores and alerts.

:func:`write_report` reads ClickHouse through :class:`streams.storage.Storage`
and writes one HTML file that opens offline in a browser. The page shows the
check × batch grid and the outlier score of every request against the
threshold. It lists the batches, with the requests of the most recent ones,
and the alerts with their reasons. Once the worker stores drift per feature
and batch, it shows that too.

NOTE: the page inlines plotly.js, so even a small report is about 5 MB.
"""

import logging
from datetime import datetime
from pathlib import Path

from streams.report.data import ReportData, load_report_data
from streams.report.page import render_report
from streams.storage import Storage

__all__ = ["ReportData", "load_report_data", "render_report", "write_report"]

log = logging.getLogger(__name__)


def write_report(
    storage: Storage,
    out: Path,
    *,
    model: str,
    version: int,
    since: datetime | None = None,
    detail_batches: int = 50,
) -> ReportData:
    """Query the report of ``model`` ``version`` and write it to ``out``."""
    data = load_report_data(
        storage, model, version, since=since, detail_batches=detail_batches
    )
    page = render_report(data)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    log.info(
        "wrote report of %s version %d to %s: %d events, %d batches, %.1f MB",
        model,
        version,
        out,
        data.events,
        len(data.batches),
        len(page.encode()) / 1e6,
    )
    return data
