"""The cohort report: what a researcher looks at before trusting a batch.

:func:`summarize` reads a batch output (``.csv``, ``.parquet``, ``.jsonl``, or a
DataFrame from :func:`tbscore.batch.batch`) and returns a :class:`CohortReport`
holding pandas tables and matplotlib figures (no pyplot state), which renders to one
self-contained HTML page (:meth:`CohortReport.to_html`, figures embedded as PNG).

What is in it
-------------
* counts by status and by reason (``error_code``);
* distributions of the L1–L4 value and of each vertebra's value;
* values against age, sex and BMI when the rows carry them;
* values per scanner model and per site (a ``site`` column of the manifest);
* the distribution of the detection confidence of automatic ROIs;
* the inputs that need review — warnings, low detection confidence, implausible
  fits (R² < ``min_r2_review`` or a negative index), incomplete results — with
  overlay thumbnails of the first ``thumbnails`` of them;
* outliers of the L1–L4 value (robust z-score, median/MAD, ``|z| > 3.5``);
* provenance: settings digests, lag ranges, calibrations and tbscore versions
  present in the file, said plainly when more than one is mixed;
* longitudinal change per subject (manifest ``subject`` column, else the
  pseudonymous ``patient_key``) between consecutive visits, against an LSC.

Values are the raw tbscore index unless every row was calibrated; the report says
which, and never mixes raw and calibrated values in one figure.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from tbscore._version import __version__
from tbscore.clinical.longitudinal import Scan, consecutive_changes

__all__ = ["CohortReport", "summarize", "REVIEW_CONFIDENCE", "OUTLIER_Z"]

#: Automatic ROIs below this detection confidence need review (as in batch warnings).
REVIEW_CONFIDENCE = 0.6
#: Robust z-score beyond which an L1–L4 value is listed as an outlier.
OUTLIER_Z = 3.5
_LABELS = ("l1", "l2", "l3", "l4")


@dataclass
class CohortReport:
    """Tables and figures of a cohort (see the module docstring).

    Attributes
    ----------
    tables : dict of str -> pandas.DataFrame
        ``status``, ``reasons``, ``values``, ``by_group``, ``review``, ``outliers``,
        ``provenance``, ``changes``.
    figures : dict of str -> matplotlib.figure.Figure
    notes : list of str
        Plain statements (mixed settings, raw values, missing columns).
    value_column : str
        ``"l1_l4"`` or ``"l1_l4_calibrated"``.
    thumbnails : list of (str, bytes or None, str)
        (input name, overlay PNG or None, why it needs review).
    source : str
    """

    tables: dict[str, Any]
    figures: dict[str, Any]
    notes: list[str]
    value_column: str
    thumbnails: list[tuple[str, bytes | None, str]] = field(default_factory=list)
    source: str = ""
    lsc: float | None = None

    def _repr_html_(self) -> str:
        st = self.tables["status"]
        rows = "".join(
            f"<tr><td>{html.escape(str(k))}</td><td>{v}</td></tr>"
            for k, v in zip(st["status"], st["n"], strict=True)
        )
        return (
            f"<b>tbscore cohort report</b> ({html.escape(self.source)})<table>{rows}</table>"
            + "".join(f"<p>{html.escape(n)}</p>" for n in self.notes)
        )

    def to_html(self, path: str | Path | None = None) -> str:
        """The report as one self-contained HTML page (written to ``path`` if given)."""
        from tbscore.cohort.html import render_cohort_html

        text = render_cohort_html(self)
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


# ----------------------------------------------------------------------------- data


def _frame(results: Any):
    import pandas as pd

    if isinstance(results, pd.DataFrame):
        return results.copy(), "DataFrame"
    from tbscore.batch.table import read_table

    return read_table(results), Path(results).name


def _num(df: Any, col: str):
    import pandas as pd

    if col not in df.columns:
        return pd.Series(np.nan, index=df.index, dtype="float64")
    return pd.to_numeric(df[col].replace("", None), errors="coerce").astype("float64")


def _text(df: Any, col: str):
    import pandas as pd

    if col not in df.columns:
        return pd.Series("", index=df.index, dtype=object)
    return df[col].astype(object).where(df[col].notna(), "").astype(str)


def _robust_z(x: np.ndarray) -> np.ndarray:
    med = np.nanmedian(x)
    mad = np.nanmedian(np.abs(x - med))
    if not np.isfinite(mad) or mad == 0:
        return np.zeros_like(x)
    return 0.6745 * (x - med) / mad


def _scanner(df: Any):
    man = _text(df, "manufacturer").str.strip()
    mod = _text(df, "model").str.strip()
    s = (man + " " + mod).str.strip()
    return s.where(s != "", "(unknown scanner)")


def _review_reasons(df: Any, min_r2: float) -> list[str]:
    reasons = []
    warn = _text(df, "warnings")
    conf = _num(df, "roi_confidence")
    status = _text(df, "status")
    l14 = _num(df, "l1_l4")
    r2 = np.column_stack([_num(df, f"{lab}_r2").to_numpy() for lab in _LABELS])
    vals = np.column_stack([_num(df, lab).to_numpy() for lab in _LABELS])
    for i in range(len(df)):
        why = []
        if status.iloc[i] == "incomplete":
            why.append("incomplete (no L1-L4 value)")
        if np.isfinite(conf.iloc[i]) and conf.iloc[i] < REVIEW_CONFIDENCE:
            why.append(f"detection confidence {conf.iloc[i]:.2f}")
        low = [f"L{k + 1}" for k in range(4) if np.isfinite(r2[i, k]) and r2[i, k] < min_r2]
        if low:
            why.append(f"R² < {min_r2:g} ({', '.join(low)})")
        neg = [f"L{k + 1}" for k in range(4) if np.isfinite(vals[i, k]) and vals[i, k] < 0]
        if neg or (np.isfinite(l14.iloc[i]) and l14.iloc[i] < 0):
            why.append("negative index (implausible)")
        if warn.iloc[i].strip():
            why.append("warnings: " + warn.iloc[i].strip()[:200])
        reasons.append("; ".join(why))
    return reasons


def _subject_column(df: Any) -> tuple[Any, str]:
    for col in ("subject", "manifest_subject"):
        if col in df.columns and _text(df, col).str.strip().ne("").any():
            return _text(df, col).str.strip(), col
    return _text(df, "patient_key"), "patient_key"


def _visit(df: Any):
    for col in ("visit", "manifest_visit"):
        if col in df.columns:
            return _text(df, col).str.strip()
    return _text(df, "study_date")


# ----------------------------------------------------------------------------- figures


def _fig(w: float = 6.4, h: float = 3.6):
    from matplotlib.figure import Figure

    return Figure(figsize=(w, h), layout="constrained")


def _status_figure(status_tab: Any):
    fig = _fig(5.5, 2.8)
    ax = fig.add_subplot()
    colours = {
        "ok": "#3a7d44",
        "incomplete": "#d9a400",
        "error": "#b22222",
        "excluded": "#888888",
        "duplicate": "#4f6d9a",
    }
    ax.barh(
        status_tab["status"],
        status_tab["n"],
        color=[colours.get(s, "#555") for s in status_tab["status"]],
    )
    for y, n in enumerate(status_tab["n"]):
        ax.text(n, y, f" {n}", va="center")
    ax.invert_yaxis()
    ax.set_xlabel("inputs")
    ax.set_title("Inputs by status")
    return fig


def _distribution_figure(df: Any, vcol: str, label: str):
    fig = _fig(8.0, 3.4)
    axes = fig.subplots(1, 2)
    v = _num(df, vcol).dropna()
    ax = axes[0]
    if len(v):
        ax.hist(v, bins=min(30, max(5, len(v) // 2)), color="#4f6d9a", edgecolor="white")
        ax.axvline(float(v.median()), color="k", lw=1, ls="--", label=f"median {v.median():.3f}")
        ax.legend(fontsize=8)
    ax.set_xlabel(label)
    ax.set_ylabel("scans")
    ax.set_title(f"L1–L4 ({len(v)} values)")
    ax = axes[1]
    data, names = [], []
    suffix = "_calibrated" if vcol.endswith("_calibrated") else ""
    for lab in _LABELS:
        x = _num(df, f"{lab}{suffix}").dropna()
        data.append(x.to_numpy())
        names.append(f"{lab.upper()}\n(n={len(x)})")
    if any(len(d) for d in data):
        ax.boxplot([d if len(d) else [np.nan] for d in data], tick_labels=names, showfliers=True)
    ax.set_ylabel(label)
    ax.set_title("Per vertebra")
    return fig


def _covariate_figure(df: Any, vcol: str, label: str):
    age, bmi, sex = _num(df, "age_years"), _num(df, "bmi"), _text(df, "sex")
    v = _num(df, vcol)
    panels = [("age", age), ("BMI", bmi)]
    have = [(n, x) for n, x in panels if np.isfinite(x).any()]
    have_sex = (sex != "").any()
    k = len(have) + (1 if have_sex else 0)
    if k == 0:
        return None
    fig = _fig(3.2 * k + 0.5, 3.2)
    axes = np.atleast_1d(fig.subplots(1, k))
    for ax, (name, x) in zip(axes, have, strict=False):
        ok = np.isfinite(x) & np.isfinite(v)
        ax.scatter(x[ok], v[ok], s=14, alpha=0.7, color="#4f6d9a")
        if ok.sum() >= 3:
            b, a = np.polyfit(x[ok], v[ok], 1)
            xs = np.linspace(float(x[ok].min()), float(x[ok].max()), 2)
            r = float(np.corrcoef(x[ok], v[ok])[0, 1])
            ax.plot(xs, a + b * xs, "k--", lw=1, label=f"r = {r:.2f}")
            ax.legend(fontsize=8)
        ax.set_xlabel("age (years)" if name == "age" else "BMI (kg/m²)")
        ax.set_ylabel(label)
        ax.set_title(f"vs {name} (n={int(ok.sum())})")
    if have_sex:
        ax = axes[-1]
        groups = sorted(g for g in sex.unique() if g)
        data = [v[(sex == g) & np.isfinite(v)].to_numpy() for g in groups]
        ax.boxplot(
            [d if len(d) else [np.nan] for d in data],
            tick_labels=[f"{g}\n(n={len(d)})" for g, d in zip(groups, data, strict=True)],
        )
        ax.set_ylabel(label)
        ax.set_title("by sex")
    return fig


def _group_figure(df: Any, vcol: str, label: str):
    v = _num(df, vcol)
    groupings = [("scanner", _scanner(df))]
    if "site" in df.columns or "manifest_site" in df.columns:
        groupings.append(("site", _text(df, "site" if "site" in df.columns else "manifest_site")))
    fig = _fig(4.2 * len(groupings) + 0.5, 3.6)
    axes = np.atleast_1d(fig.subplots(1, len(groupings)))
    for ax, (name, g) in zip(axes, groupings, strict=True):
        keys = sorted(k for k in g.unique() if k and bool((np.isfinite(v) & (g == k)).any()))
        data = [v[(g == k) & np.isfinite(v)].to_numpy() for k in keys]
        ax.boxplot(
            [d if len(d) else [np.nan] for d in data],
            tick_labels=[f"{k}\n(n={len(d)})" for k, d in zip(keys, data, strict=True)],
        )
        ax.tick_params(axis="x", labelsize=7)
        ax.set_ylabel(label)
        ax.set_title(f"by {name}")
    return fig


def _confidence_figure(df: Any):
    conf = _num(df, "roi_confidence").dropna()
    if not len(conf):
        return None
    fig = _fig(5.0, 2.8)
    ax = fig.add_subplot()
    ax.hist(conf, bins=np.linspace(0, 1, 21), color="#6a8d73", edgecolor="white")
    ax.axvline(
        REVIEW_CONFIDENCE, color="#b22222", ls="--", lw=1, label=f"review below {REVIEW_CONFIDENCE}"
    )
    ax.set_xlabel("detection confidence (automatic ROIs)")
    ax.set_ylabel("scans")
    ax.legend(fontsize=8)
    ax.set_title(f"Detection confidence (n={len(conf)})")
    return fig


def _spaghetti_figure(scans: list[Scan], changes: list[Any], label: str):
    from tbscore.clinical.longitudinal import visit_sort_key

    subjects: dict[str, list[Scan]] = {}
    for s in scans:
        subjects.setdefault(s.subject, []).append(s)
    multi = {k: v for k, v in subjects.items() if len(v) >= 2}
    if not multi:
        return None
    visits = sorted({s.visit for v in multi.values() for s in v}, key=visit_sort_key)
    pos = {vis: i for i, vis in enumerate(visits)}
    sig = {(c.subject, c.visit_to) for c in changes if c.significant}
    fig = _fig(6.0, 3.6)
    ax = fig.add_subplot()
    for subj, items in multi.items():
        items = sorted(items, key=lambda s: (visit_sort_key(s.visit), s.order))
        xs = [pos[s.visit] for s in items]
        ys = [s.value for s in items]
        flagged = any((subj, s.visit) in sig for s in items)
        ax.plot(
            xs,
            ys,
            "-o",
            ms=3,
            lw=1.2 if flagged else 0.8,
            color="#b22222" if flagged else "#4f6d9a",
            alpha=0.9 if flagged else 0.5,
        )
    ax.set_xticks(range(len(visits)), visits)
    ax.set_xlabel("visit")
    ax.set_ylabel(label)
    ax.set_title(f"Per subject ({len(multi)} with ≥ 2 scans; red: change > LSC)")
    return fig


def _thumbnail(row: Any) -> bytes | None:
    """Overlay PNG of one input (its ROI file, or automatic detection), or ``None``."""
    from tbscore.api import as_image, resolve_rois
    from tbscore.errors import TBSError
    from tbscore.render.overlay import overlay_png

    path = str(row.get("input") or "")
    if not path or not Path(path).is_file():
        return None
    roi_src = str(row.get("roi_source") or "")
    roi = roi_src[5:] if roi_src.startswith("file:") and Path(roi_src[5:]).is_file() else None
    try:
        image = as_image(path)
        rois = resolve_rois(roi, image)
        return overlay_png(image, rois, dpi=50)
    except (TBSError, OSError, ValueError):
        return None


# ----------------------------------------------------------------------------- main


def summarize(
    results: Any,
    *,
    lsc: float | None = None,
    thumbnails: int = 12,
    min_r2_review: float = 0.5,
) -> CohortReport:
    """Summarise a batch output for quality control.

    Parameters
    ----------
    results : path or pandas.DataFrame
        A ``tbscore batch`` output (``.csv``, ``.parquet``, ``.jsonl``) or its
        DataFrame.
    lsc : float, optional
        Least significant change (TBS units) for the longitudinal calls
        (``tbscore precision``); without it changes are listed, not called.
    thumbnails : int
        Overlay thumbnails drawn for at most this many inputs needing review (the
        DICOM files must still be at their ``input`` paths).
    min_r2_review : float
        Vertebra fits with a lower R² are listed for review.

    Returns
    -------
    CohortReport

    Raises
    ------
    tbscore.errors.TBSError
        The file cannot be read or is not a batch output.
    """
    import pandas as pd

    df, source = _frame(results)
    notes: list[str] = []
    n = len(df)
    status = _text(df, "status")
    status_tab = (
        status.value_counts().rename_axis("status").reset_index(name="n")
        if n
        else pd.DataFrame({"status": [], "n": []})
    )
    codes = _text(df, "error_code")
    err = _text(df, "error")
    reasons = (
        pd.DataFrame({"error_code": codes, "example": err})[codes != ""]
        .groupby("error_code")
        .agg(n=("example", "size"), example=("example", "first"))
        .reset_index()
        .sort_values("n", ascending=False)
    )
    cal = _num(df, "l1_l4_calibrated")
    raw = _num(df, "l1_l4")
    scored = np.isfinite(raw)
    if scored.any() and np.isfinite(cal[scored]).all():
        vcol, vlabel = "l1_l4_calibrated", "L1–L4 (calibrated)"
        notes.append("All values are calibrated (column l1_l4_calibrated).")
    else:
        vcol, vlabel = "l1_l4", "L1–L4 (raw tbscore index)"
        if np.isfinite(cal).any():
            notes.append(
                "Some but not all rows are calibrated: figures show the raw index "
                "for every row so that raw and calibrated values are never mixed."
            )
        else:
            notes.append(
                "Values are the raw tbscore index (uncalibrated): not TBS iNsight "
                "values, and not to be read against clinical TBS categories."
            )
    v = _num(df, vcol)
    values = pd.DataFrame(
        {
            "measure": ["L1-L4"] + [lab.upper() for lab in _LABELS],
            **{
                k: [
                    f(_num(df, c))
                    for c in [vcol]
                    + [
                        f"{lab}{'_calibrated' if vcol.endswith('_calibrated') else ''}"
                        for lab in _LABELS
                    ]
                ]
                for k, f in (
                    ("n", lambda s: int(np.isfinite(s).sum())),
                    ("mean", lambda s: float(np.nanmean(s)) if np.isfinite(s).any() else math.nan),
                    (
                        "sd",
                        lambda s: (
                            float(np.nanstd(s, ddof=1)) if np.isfinite(s).sum() > 1 else math.nan
                        ),
                    ),
                    ("min", lambda s: float(np.nanmin(s)) if np.isfinite(s).any() else math.nan),
                    (
                        "median",
                        lambda s: float(np.nanmedian(s)) if np.isfinite(s).any() else math.nan,
                    ),
                    ("max", lambda s: float(np.nanmax(s)) if np.isfinite(s).any() else math.nan),
                )
            },
        }
    )
    scanner = _scanner(df)
    by_group = (
        pd.DataFrame({"scanner": scanner, "value": v})
        .groupby("scanner")
        .agg(
            n=("value", "size"),
            n_values=("value", lambda s: int(np.isfinite(s).sum())),
            mean=("value", "mean"),
            sd=("value", "std"),
        )
        .reset_index()
    )
    review_why = _review_reasons(df, min_r2_review)
    name = _text(df, "input").map(lambda p: Path(p).name if p else "")
    review = pd.DataFrame({"input": name, "status": status, "why": review_why, "value": v})[
        [bool(w) for w in review_why]
    ]
    z = _robust_z(v.to_numpy())
    out_mask = np.isfinite(z) & (np.abs(z) > OUTLIER_Z)
    outliers = pd.DataFrame({"input": name, "value": v, "robust_z": z})[out_mask]
    prov_rows = []
    for col, what in (
        ("settings_digest", "settings digest"),
        ("tbscore_version", "version"),
        ("calibration", "calibration"),
        ("calibration_rule", "calibration rule"),
    ):
        vals = sorted(x for x in _text(df, col).unique() if x)
        prov_rows.append({"what": what, "values": ", ".join(vals) or "(none)", "n": len(vals)})
        if col in ("settings_digest", "tbscore_version") and len(vals) > 1:
            notes.append(
                f"MIXED {what}s in this file ({', '.join(vals)}): values computed "
                "differently are not comparable without re-scoring."
            )
    lag = sorted(
        {
            f"{a:g}-{b:g} mm"
            for a, b in zip(_num(df, "lag_min_mm"), _num(df, "lag_max_mm"), strict=True)
            if np.isfinite(a) and np.isfinite(b)
        }
    )
    prov_rows.append({"what": "lag range", "values": ", ".join(lag) or "(none)", "n": len(lag)})
    if len(lag) > 1:
        notes.append(f"MIXED lag ranges ({', '.join(lag)}).")
    provenance = pd.DataFrame(prov_rows)
    subj, subj_col = _subject_column(df)
    visit = _visit(df)
    dates = _text(df, "study_date")
    order = _num(df, "manifest_line")
    scans = [
        Scan(
            subj.iloc[i],
            visit.iloc[i],
            float(v.iloc[i]),
            dates.iloc[i],
            int(order.iloc[i]) if np.isfinite(order.iloc[i]) else i,
        )
        for i in range(n)
        if subj.iloc[i] and np.isfinite(v.iloc[i]) and status.iloc[i] == "ok"
    ]
    changes = consecutive_changes(scans, lsc)
    changes_tab = pd.DataFrame(
        [
            {
                "subject": c.subject,
                "from": c.visit_from,
                "to": c.visit_to,
                "value_from": c.value_from,
                "value_to": c.value_to,
                "delta": c.delta,
                "percent": c.percent,
                "years": c.years,
                "call": c.call,
            }
            for c in changes
        ],
        columns=[
            "subject",
            "from",
            "to",
            "value_from",
            "value_to",
            "delta",
            "percent",
            "years",
            "call",
        ],
    )
    if changes and lsc is None:
        notes.append(
            "No LSC given: changes are listed but not called significant "
            "(tbscore summarize --lsc VALUE, from the site's precision study)."
        )
    if changes:
        notes.append(f"Longitudinal subjects from the {subj_col!r} column.")
    figures: dict[str, Any] = {
        "status": _status_figure(status_tab),
        "distribution": _distribution_figure(df, vcol, vlabel),
        "groups": _group_figure(df, vcol, vlabel),
    }
    for key, fig in (
        ("covariates", _covariate_figure(df, vcol, vlabel)),
        ("confidence", _confidence_figure(df)),
        ("longitudinal", _spaghetti_figure(scans, changes, vlabel)),
    ):
        if fig is not None:
            figures[key] = fig
    thumbs: list[tuple[str, bytes | None, str]] = []
    for i in [i for i, w in enumerate(review_why) if w][: max(0, thumbnails)]:
        row = df.iloc[i].to_dict()
        thumbs.append((name.iloc[i], _thumbnail(row), review_why[i]))
    tables = {
        "status": status_tab,
        "reasons": reasons,
        "values": values,
        "by_group": by_group,
        "review": review,
        "outliers": outliers,
        "provenance": provenance,
        "changes": changes_tab,
    }
    return CohortReport(tables, figures, notes, vcol, thumbs, source, lsc)


def report_version() -> str:
    """The tbscore version that made the report."""
    return __version__
