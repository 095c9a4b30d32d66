"""The Report tab: an evaluation folder (``results.json``, ``report.md``, the chart) read for the page."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from .config import AppError
from .views import _md


@dataclass
class ReportView:
    folder: str
    title: str
    header: list[str]
    rows: list[list[str]]
    """``[family, n, exact % (course rule %) per model]``, then an ``overall`` row."""
    chart: str | None
    markdown: str


def open_report(folder: str | Path | None) -> ReportView:
    """An evaluation folder (``stk-vqa evaluate`` / ``quickstart`` output): its table, chart and report.md."""
    from stk_vqa.evaluation.report import CHART_FILE, REPORT_FILE, RESULTS_FILE, pct

    if not folder or not str(folder).strip():
        raise AppError("give an evaluation folder (one holding results.json, e.g. outputs/quickstart/report)")
    path = Path(str(folder).strip()).expanduser()
    if not path.is_dir():
        raise AppError(f"{path}: no such folder")
    results_file = path / RESULTS_FILE
    if not results_file.is_file():
        raise AppError(f"{path}: no {RESULTS_FILE}: not an evaluation folder")
    try:
        results = json.loads(results_file.read_text(encoding="utf-8"))
        models, data = results["models"], results["data"]
        names = list(models)
        rows = []
        for f, n in data["families"].items():
            cells = [f, str(n)]
            for m in names:
                fam = models[m]["families"].get(f, {})
                cells.append(f"{pct(fam.get('exact_accuracy'))} ({pct(fam.get('reference_accuracy'))})")
            rows.append(cells)
        rows.append(["overall", str(data["n_evaluated"])]
                    + [f"{pct(models[m]['overall']['exact_accuracy'])} ({pct(models[m]['overall']['reference_accuracy'])})"
                       for m in names])  # fmt: skip
        title = (results.get("config") or {}).get("title") or "stk-vqa evaluation"
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise AppError(
            f"{results_file}: not a results file of stk-vqa evaluate ({type(err).__name__}: {err})"
        ) from None
    markdown = ""
    if (path / REPORT_FILE).is_file():
        markdown = (path / REPORT_FILE).read_text(encoding="utf-8")
        markdown = re.sub(r"!\[[^\]]*\]\(" + re.escape(CHART_FILE) + r"\)\n?", "", markdown)  # shown beside it
    chart = str(path / CHART_FILE) if (path / CHART_FILE).is_file() else None
    return ReportView(str(path), title, ["family", "n", *names], rows, chart, markdown)


def safe_message(err: BaseException) -> str:
    """A one-paragraph message for the page (never a traceback)."""
    if isinstance(err, AppError):
        return f"⚠️ {_md(err)}"
    first = str(err).splitlines()[0] if str(err) else ""
    return f"⚠️ unexpected error: {type(err).__name__}: {_md(first)} (details in the server log)"
