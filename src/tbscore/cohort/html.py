"""HTML of a :class:`~tbscore.cohort.summary.CohortReport` (jinja2, autoescaped,
figures embedded as PNG data URIs: one self-contained file)."""

from __future__ import annotations

import base64
import datetime as _dt
import io
import math
from typing import TYPE_CHECKING, Any

from tbscore._version import __version__

if TYPE_CHECKING:
    from tbscore.cohort.summary import CohortReport

__all__ = ["render_cohort_html", "png", "data_uri"]


def png(fig: Any, dpi: int = 110) -> bytes:
    """A figure as PNG bytes."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def data_uri(data: bytes | None) -> str | None:
    """``data:image/png;base64,...`` of PNG bytes."""
    return None if data is None else "data:image/png;base64," + base64.b64encode(data).decode()


_FIGURE_TITLES = {
    "status": "Inputs by status",
    "distribution": "Distributions",
    "covariates": "Values against age, sex and BMI",
    "groups": "Per scanner and site",
    "confidence": "Detection confidence",
    "longitudinal": "Longitudinal change",
}


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "" if not math.isfinite(value) else f"{value:.3f}"
    try:
        import pandas as pd

        if value is pd.NA:
            return ""
    except ImportError:  # pragma: no cover
        pass
    return str(value)


def _table(df: Any, limit: int = 200) -> dict[str, Any]:
    cols = [str(c) for c in df.columns]
    rows = [[_cell(v) for v in rec] for rec in df.head(limit).itertuples(index=False)]
    return {"columns": cols, "rows": rows, "more": max(0, len(df) - limit)}


def render_cohort_html(report: CohortReport) -> str:
    """The cohort report page."""
    from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape

    env = Environment(
        loader=PackageLoader("tbscore.cohort", "templates"),
        autoescape=select_autoescape(["html", "j2"]),
        undefined=StrictUndefined,
    )
    figures = [
        {"key": k, "title": _FIGURE_TITLES.get(k, k), "src": data_uri(png(f))}
        for k, f in report.figures.items()
    ]
    tables = {k: _table(v) for k, v in report.tables.items()}
    thumbs = [{"name": n, "src": data_uri(p), "why": w} for n, p, w in report.thumbnails]
    return env.get_template("cohort.html.j2").render(
        source=report.source,
        version=__version__,
        generated=_dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        notes=report.notes,
        figures=figures,
        tables=tables,
        thumbs=thumbs,
        value_column=report.value_column,
        lsc=report.lsc,
        n_inputs=int(report.tables["status"]["n"].sum()) if len(report.tables["status"]) else 0,
    )
