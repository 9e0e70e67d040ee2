"""Clinical TBS reports: interpretation (CPT 77092) and complete service (CPT 77089).

A :class:`Report` gathers everything a reader needs: patient and study, the image with
the L1–L4 ROIs, the per-vertebra values and log–log variogram fits, the L1–L4 value, its
fracture-risk category under a named threshold set, TBS-adjusted FRAX, the method and
its parameters, the calibration, provenance, and a coding block (CPT code of the
service, the no-modifier rule, dated Medicare rates).

It renders to one self-contained HTML page (:func:`render_html`; images embedded as
base64 PNG data URIs; every value HTML-escaped by jinja2's autoescape) and to PDF
(:func:`render_pdf`), which is the same HTML laid out by ``xhtml2pdf`` (optional extra
``pdf``). The CLI sub-commands ``interpret``, ``score`` and ``billing`` are added by
:func:`register_cli`.

Which value is interpreted
--------------------------
The threshold sets and the FRAX adjustment were derived for TBS iNsight values. When the
result carries a calibration to that scale (``l1_l4_calibrated``) the calibrated L1–L4
value is interpreted; otherwise the raw tbscore index is, and the report says that the
category is then indicative only.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import io
import json
import math
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tbscore import billing, risk
from tbscore._version import __version__
from tbscore.errors import TBSError
from tbscore.io.load import DXAImage
from tbscore.result import TBSResult, VertebraResult
from tbscore.risk import DEFAULT_THRESHOLD_SET, Interpretation, ThresholdSet
from tbscore.roi import VertebraROIs

__all__ = [
    "REPORT_FORMAT",
    "REPORT_SERVICES",
    "NOT_INTERCHANGEABLE",
    "ReportError",
    "Report",
    "interpret_result",
    "reported_tbs",
    "variogram_figure",
    "build_report",
    "render_html",
    "render_pdf",
    "write_report",
    "parse_services",
    "services_from_files",
    "register_cli",
]

#: Format tag of the JSON written by :meth:`Report.to_json`.
REPORT_FORMAT = "tbscore-report/1"

#: Report services and what they are.
REPORT_SERVICES: dict[str, str] = {
    "score": "TBS calculation with interpretation and report on fracture risk",
    "interpret": "TBS interpretation and report on fracture risk",
}

#: The statement every report carries, prominently.
NOT_INTERCHANGEABLE = (
    "tbscore values are an open re-implementation of the published TBS method. They are "
    "NOT interchangeable with values of the commercial TBS iNsight software unless "
    "calibrated against paired TBS iNsight measurements. The fracture-risk threshold sets "
    "and the TBS-adjusted FRAX equations were derived from TBS iNsight values."
)

_SEX_FROM_DICOM = {"F": "female", "M": "male"}


class ReportError(TBSError):
    """A report cannot be built or written (no value, bad service, missing PDF support)."""

    code = "report_error"


# --------------------------------------------------------------------------------------
# interpretation of a result
# --------------------------------------------------------------------------------------


def reported_tbs(result: TBSResult) -> tuple[float | None, str]:
    """The L1–L4 value to interpret, and its basis.

    Returns
    -------
    value : float or None
        ``l1_l4_calibrated`` when the result is calibrated, else the raw ``l1_l4``.
    basis : {"calibrated", "raw"}
    """
    if result.calibration is not None and result.l1_l4_calibrated is not None:
        return float(result.l1_l4_calibrated), "calibrated"
    return (None if result.l1_l4 is None else float(result.l1_l4)), "raw"


def _clinical_inputs(
    result: TBSResult, age: float | None, sex: str | None, bmi: float | None, use_metadata: bool
) -> tuple[float | None, str | None, float | None, dict[str, str]]:
    """Clinical inputs, defaulting to the DICOM metadata where not given, and where each
    came from (``{"age": "entered" | "DICOM header", ...}``, only for known inputs)."""
    meta = result.metadata or {}
    given = {"age": age, "sex": sex, "bmi": bmi}
    dicom = {
        "age": meta.get("age_years"),
        "sex": _SEX_FROM_DICOM.get(str(meta.get("sex") or "").upper()),
        "bmi": meta.get("bmi"),
    }
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for key, value in given.items():
        if value is None and use_metadata and dicom[key] is not None:
            value, sources[key] = dicom[key], "DICOM header"
        elif value is not None:
            sources[key] = "entered"
        values[key] = value
    return values["age"], values["sex"], values["bmi"], sources


def interpret_result(
    result: TBSResult,
    *,
    age: float | None = None,
    sex: str | None = None,
    bmi: float | None = None,
    frax_mof: float | None = None,
    frax_hip: float | None = None,
    threshold_set: str | ThresholdSet = DEFAULT_THRESHOLD_SET,
    use_metadata: bool = True,
) -> Interpretation:
    """Fracture-risk interpretation of a result's L1–L4 value.

    Parameters
    ----------
    result : TBSResult
        The technical result (CPT 77091).
    age : float, optional
        Age (years); default: the DICOM age (``result.metadata["age_years"]``).
    sex : {"female", "male", "F", "M"}, optional
        Default: the DICOM PatientSex (``O`` is not used).
    bmi : float, optional
        Body-mass index (kg/m²); default: from the DICOM height and weight.
    frax_mof, frax_hip : float, optional
        FRAX 10-year probabilities (percent) to adjust for TBS (needs an age, 40–90).
    threshold_set : str or ThresholdSet
        Cut-offs (:data:`tbscore.risk.THRESHOLD_SETS`), default the 2023 update.
    use_metadata : bool
        Fill missing clinical inputs from the DICOM metadata.

    Returns
    -------
    tbscore.risk.Interpretation

    Raises
    ------
    ReportError
        The result has no L1–L4 value.
    tbscore.risk.RiskInputError
        Invalid clinical inputs (e.g. FRAX with an age outside 40–90).
    """
    value, _basis = reported_tbs(result)
    if value is None:
        raise ReportError(
            f"no L1-L4 value to interpret ({result.l1_l4_reason or 'incomplete result'})",
            str(result.input.get("source") or "") or None,
        )
    age, sex, bmi, sources = _clinical_inputs(result, age, sex, bmi, use_metadata)
    interp = risk.interpret(
        value,
        threshold_set=threshold_set,
        age=age,
        sex=sex,
        frax_mof=frax_mof,
        frax_hip=frax_hip,
        bmi=bmi,
    )
    return dataclasses.replace(interp, input_sources=sources)


# --------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------


def _variogram_panel(ax: Axes, vert: VertebraResult) -> None:
    """One vertebra: ln V against ln lag (mm) with the fitted line."""
    pts = [
        (math.log(d), math.log(v))
        for d, v in zip(vert.lag_distances_mm, vert.variogram, strict=False)
        if d and v is not None and d > 0 and v > 0
    ]
    ax.tick_params(labelsize=7)
    ax.set_xlabel("ln lag (mm)", fontsize=7)
    ax.set_ylabel("ln V", fontsize=7)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    if not pts:
        why = vert.reason or vert.status
        ax.text(
            0.5,
            0.5,
            f"{vert.status}\n{why}",
            ha="center",
            va="center",
            fontsize=8,
            transform=ax.transAxes,
            wrap=True,
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{vert.label}: no value", fontsize=8)
        return
    x = [p[0] for p in pts]
    y = [p[1] for p in pts]
    ax.plot(x, y, "o", markersize=3.5, color="#1f4e79", label="variogram")
    if vert.value is not None and vert.intercept is not None:
        x0, x1 = min(x), max(x)
        pad = 0.05 * (x1 - x0 or 1.0)
        xs = [x0 - pad, x1 + pad]
        ax.plot(
            xs,
            [vert.intercept + vert.value * t for t in xs],
            "-",
            color="#d62728",
            linewidth=1.2,
            label="fit",
        )
        r2 = "" if vert.r2 is None else f", R² {vert.r2:.3f}"
        ax.set_title(f"{vert.label}: slope {vert.value:.3f}{r2}", fontsize=8)
    else:
        ax.set_title(f"{vert.label}: {vert.status} ({vert.reason or 'no fit'})", fontsize=7)


def variogram_figure(result: TBSResult, *, width_in: float = 7.0) -> Figure:
    """Log–log variogram plots of every vertebra with the fitted lines.

    Each panel shows ``ln V(k)`` against ``ln |k|`` (lag length in mm) for the lags used
    and the least-squares line ``ln V = intercept + slope * ln |k|``, whose slope is the
    vertebra's value and whose intercept is ``ln V`` at 1 mm.

    Parameters
    ----------
    result : TBSResult
    width_in : float
        Figure width in inches.

    Returns
    -------
    matplotlib.figure.Figure
        2 x 2 panels for up to four vertebrae (an Agg canvas attached).
    """
    verts = list(result.vertebrae)
    ncols = 2 if len(verts) > 1 else 1
    nrows = max(1, math.ceil(len(verts) / ncols))
    fig = Figure(figsize=(width_in, 2.3 * nrows + 0.3), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i < len(verts):
            _variogram_panel(ax, verts[i])
        else:
            ax.set_axis_off()
    return fig


def _png(fig: Figure, dpi: int = 150) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


# --------------------------------------------------------------------------------------
# report context
# --------------------------------------------------------------------------------------


def _f(value: Any, digits: int = 3, unit: str = "") -> str:
    """Format a number (or ``"–"`` for None/non-finite)."""
    if value is None:
        return "–"
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "–"
    return f"{v:.{digits}f}{unit}"


def _g(value: Any, unit: str = "") -> str:
    """Format a number compactly (``:g``)."""
    if value is None:
        return "–"
    return f"{float(value):g}{unit}"


def _person_name(name: str | None) -> str:
    """DICOM PN ``FAMILY^GIVEN^MIDDLE`` as ``FAMILY, GIVEN MIDDLE``."""
    if not name:
        return "–"
    parts = [p for p in str(name).split("=")[0].split("^")]
    family, rest = parts[0], " ".join(p for p in parts[1:] if p)
    return f"{family}, {rest}" if family and rest else (family or rest or "–")


def _dicom_date(value: str | None) -> str:
    """``YYYYMMDD`` as ``YYYY-MM-DD`` (other text unchanged)."""
    if not value:
        return "–"
    s = str(value).strip()
    if len(s) == 8 and s.isdigit():
        return f"{s[:4]}-{s[4:6]}-{s[6:]}"
    return s


def _source_of(interp: Interpretation | None, key: str, value: Any) -> str:
    """`` (entered)`` or `` (DICOM header)`` after a clinical input; an interpretation made
    without :func:`interpret_result` had its inputs given by the caller (entered)."""
    if value is None:
        return ""
    if interp is None:
        return " (DICOM header)"
    return f" ({interp.input_sources.get(key, 'entered')})"


def _patient(result: TBSResult, interp: Interpretation | None, include_phi: bool) -> dict:
    meta = result.metadata or {}
    withheld = "(withheld)"
    dicom_sex = _SEX_FROM_DICOM.get(str(meta.get("sex") or "").upper())
    age = interp.age if interp is not None else meta.get("age_years")
    sex = interp.sex if interp is not None else dicom_sex
    bmi = interp.bmi if interp is not None else meta.get("bmi")
    return {
        "Name": _person_name(meta.get("patient_name")) if include_phi else withheld,
        "Patient ID": (meta.get("patient_id") or "–") if include_phi else withheld,
        "Birth date": _dicom_date(meta.get("birth_date")) if include_phi else withheld,
        "Age": "–"
        if age is None
        else f"{float(age):g} years" + _source_of(interp, "age", age),
        "Sex": (sex or "–") + _source_of(interp, "sex", sex),
        "BMI": "–" if bmi is None else f"{float(bmi):.1f} kg/m²" + _source_of(interp, "bmi", bmi),
    }


def _study(result: TBSResult) -> dict:
    meta = result.metadata or {}
    device = " ".join(str(x) for x in (meta.get("manufacturer"), meta.get("model")) if x)
    source = str(result.input.get("source") or "")
    return {
        "Study date": _dicom_date(meta.get("study_date")),
        "Device": device or "–",
        "Modality": meta.get("modality") or "–",
        "Image": Path(source).name if source else "–",
    }


def _vertebra_rows(result: TBSResult) -> tuple[dict, ...]:
    rows = []
    for v in result.vertebrae:
        rows.append(
            {
                "label": v.label,
                "value": _f(v.value),
                "calibrated": _f(v.calibrated_value),
                "status": v.status,
                "r2": _f(v.r2),
                "slope_se": _f(v.slope_se, 4),
                "lags": str(v.n_lags),
                "pixels": str(v.n_pixels),
                "reason": v.reason or "",
            }
        )
    return tuple(rows)


def _l1_l4(result: TBSResult) -> dict:
    value, basis = reported_tbs(result)
    return {
        "value": _f(result.l1_l4),
        "calibrated": None if result.l1_l4_calibrated is None else _f(result.l1_l4_calibrated),
        "labels": ", ".join(result.l1_l4_labels) or "–",
        "n": len(result.l1_l4_labels),
        "reason": result.l1_l4_reason,
        "interpreted": _f(value),
        "basis": basis,
        "available": value is not None,
    }


def _category(interp: Interpretation | None) -> dict | None:
    if interp is None:
        return None
    ts = interp.threshold_set
    return {
        "label": interp.category.label,
        "code": interp.category.code,
        "rule": interp.category.rule,
        "tbs_compared": interp.category.tbs_compared,
        "set_title": ts.title,
        "set_name": ts.name,
        "set_version": ts.version,
        "population": ts.population,
        "bands": ts.describe(),
        "citation": ts.citation,
        "gradient": interp.gradient_of_risk.statement,
        "gradient_citation": interp.gradient_of_risk.citation,
    }


def _frax(interp: Interpretation | None) -> dict | None:
    if interp is None or interp.frax is None:
        return None
    fx = interp.frax
    rows = []
    if fx.frax_mof is not None:
        rows.append(
            {
                "outcome": "Major osteoporotic fracture",
                "input": _f(fx.frax_mof, 2),
                "adjusted": _f(fx.adjusted_mof, 2),
            }
        )
    if fx.frax_hip is not None:
        rows.append(
            {
                "outcome": "Hip fracture",
                "input": _f(fx.frax_hip, 2),
                "adjusted": _f(fx.adjusted_hip, 2),
            }
        )
    return {
        "rows": rows,
        "age": _g(fx.age, " years"),
        "tbs": _f(fx.tbs, 4),
        "citation": fx.citation,
        "warnings": list(fx.warnings),
        "equations": (
            "MOF: w = 5.340 - 4.213·TBS - 0.0521·age + 0.0393·TBS·age + 0.897·L; "
            "hip: w = 15.420 - 12.627·TBS - 0.194·age + 0.157·TBS·age + 0.920·L; "
            "L = ln(p/(100-p)), adjusted p = 100/(1+exp(-w))"
        ),
    }


def _method(result: TBSResult) -> dict:
    s = result.settings
    row_mm, col_mm = result.pixel_spacing_mm
    conf = "" if result.roi_confidence is None else f" (confidence {result.roi_confidence:.2f})"
    return {
        "Method": result.method,
        "Lag range": f"{_g(result.lag_range_mm[0])}–{_g(result.lag_range_mm[1])} mm",
        "Directions": ", ".join(s.directions),
        "Pixel spacing": f"{row_mm:.4g} × {col_mm:.4g} mm (row × column; {result.spacing_source})",
        "Minimum pairs, lags, pixels": (
            f"{s.min_pairs_per_lag} pairs per lag, {s.min_lags} lags, {s.min_roi_pixels} ROI pixels"
        ),
        "Minimum R²": _g(s.min_r2),
        "L1–L4 rule": f"mean of valid vertebrae, at least {s.min_valid_vertebrae} needed",
        "ROIs": f"{result.roi_source}{conf}",
        "Settings digest": s.digest(),
    }


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _calibration(result: TBSResult) -> str:
    """One line describing the calibration (``tbscore.calibrate`` dict), or none."""
    cal = result.calibration
    if not cal:
        return "none: raw tbscore index"
    parts = [str(cal.get("name") or "unnamed calibration")]
    a, b = _num(cal.get("a")), _num(cal.get("b"))
    if a is not None and b is not None:
        parts.append(f"calibrated = {a:.4f} + {b:.4f} × tbscore")
    if cal.get("method"):
        parts.append(f"method {cal['method']}")
    n, r = _num(cal.get("n")), _num(cal.get("r"))
    if n is not None:
        parts.append(f"n = {n:g}" + ("" if r is None else f", r = {r:.3f}"))
    rng = cal.get("x_range")
    if isinstance(rng, list | tuple) and len(rng) == 2 and None not in map(_num, rng):
        parts.append(f"fitted on tbscore {rng[0]:.3f}–{rng[1]:.3f}")
    if cal.get("created"):
        parts.append(f"created {cal['created']}")
    return "; ".join(parts)


def _provenance(result: TBSResult, generated: str) -> dict:
    meta = result.metadata or {}
    return {
        "Report generated": generated,
        "tbscore version (report)": __version__,
        "tbscore version (result)": result.tbscore_version or "–",
        "Input": str(result.input.get("source") or "–"),
        "Study UID": meta.get("study_instance_uid") or "–",
        "SOP Instance UID": result.input.get("sop_instance_uid") or "–",
        "File SHA-256": result.input.get("file_sha256") or "–",
        "Pixel SHA-256": result.input.get("pixel_sha256") or "–",
    }


def _money(value: Any) -> str:
    return "–" if value is None else f"${float(value):,.2f}"


def _rate_rows(schedule: str) -> list[dict]:
    rows = []
    for c in billing.cpt_codes(schedule=schedule):
        opps = (
            f"{_money(c.opps_payment_rate)} (APC {c.opps_apc}, SI {c.opps_status_indicator})"
            if c.opps_payable
            else "not payable"
        )
        rows.append(
            {
                "code": c.code,
                "component": c.component,
                "descriptor": c.descriptor,
                "rvu": f"{c.total_rvu}",
                "pfs_qp": _money(c.pfs_qp_rate),
                "pfs_non_qp": _money(c.pfs_non_qp_rate),
                "opps": opps,
            }
        )
    return rows


def _coding(service: str, result: TBSResult, schedule: str) -> dict:
    performed = billing.service_code(service, schedule=schedule)
    technical = billing.cpt_code(result.cpt_code or "77091", schedule=schedule)
    info = billing.schedule_info(schedule)
    if service == "score":
        based_on = (
            f"{technical.code} ({technical.descriptor}) is included in the global "
            f"{performed.code}: do not bill it separately with {performed.code}."
        )
        notes = [
            "Office / imaging centre (POS 11): bill the global 77089, or split 77091 + 77092.",
            "Hospital outpatient: 77089 is not payable under OPPS; bill 77091 (facility, "
            "OPPS) + 77092 (professional, PFS) instead.",
        ]
    else:
        based_on = (
            f"This interpretation is based on a technical result, {technical.code} "
            f"({technical.descriptor}), billed separately by whoever performed it."
        )
        notes = ["77092 is a professional service paid under the PFS (not payable under OPPS)."]
    return {
        "performed": {
            "code": performed.code,
            "descriptor": performed.descriptor,
            "component": performed.component,
        },
        "technical": {
            "code": technical.code,
            "descriptor": technical.descriptor,
            "component": technical.component,
        },
        "based_on": based_on,
        "notes": notes,
        "modifier_rule": billing.modifier_rule(schedule=schedule),
        "rates": _rate_rows(schedule),
        "schedule": (
            f"{info['payer']} {info['calendar_year']}, effective "
            f"{info['effective_date']}, current as of {info['current_as_of']}"
        ),
        "rates_are": info["rates_are"],
        "source": info["source"]["title"],
        "source_detail": f"{info['source']['pfs']}; {info['source']['opps']}",
    }


def _warnings(result: TBSResult, interp: Interpretation | None, basis: str) -> tuple[str, ...]:
    out: list[str] = []
    interp_w = list(interp.warnings) if interp is not None else []
    has_bmi = any(w.startswith("BMI") for w in interp_w)
    out.extend(w for w in result.warnings if not (has_bmi and w.startswith("BMI")))
    out.extend(interp_w)
    if result.l1_l4 is None:
        out.append(f"No L1–L4 value ({result.l1_l4_reason}); no fracture-risk interpretation.")
    if interp is not None and basis == "raw":
        out.append(
            "The category was assigned from the raw tbscore index (no calibration to TBS "
            "iNsight); the threshold sets were derived for TBS iNsight values, so the "
            "category is indicative only."
        )
        if interp.frax is not None:
            out.append(
                "The TBS-adjusted FRAX probabilities were computed from the raw tbscore "
                "index; the adjustment equations were derived for TBS iNsight values, so "
                "the adjusted probabilities are indicative only."
            )
    if str((result.metadata or {}).get("sex") or "").upper() == "O":
        out.append("PatientSex 'O' in the DICOM header: sex not used for the interpretation.")
    return tuple(dict.fromkeys(out))


@dataclass(frozen=True)
class Report:
    """Everything a TBS report shows, as display-ready values.

    Build with :func:`build_report`; render with :func:`render_html`, :func:`render_pdf`
    or :func:`write_report`.

    Attributes
    ----------
    service : {"score", "interpret"}
        ``score``: complete service (CPT 77089); ``interpret``: interpretation and report
        of a result computed elsewhere (CPT 77092).
    title, subtitle : str
    generated : str
        UTC time the report was built (ISO 8601).
    patient, study : dict of str to str
        Display blocks (identifiers ``"(withheld)"`` when built without PHI).
    vertebrae : tuple of dict
        Per-vertebra table rows (``label``, ``value``, ``calibrated``, ``status``, ``r2``,
        ``slope_se``, ``lags``, ``pixels``, ``reason``).
    l1_l4 : dict
        ``value`` (raw), ``calibrated``, ``labels``, ``reason``, ``interpreted`` (the value
        the category was assigned from) and its ``basis`` (``raw`` / ``calibrated``).
    category : dict or None
        Category and threshold set (name, version, population, bands, citation).
    frax : dict or None
        TBS-adjusted FRAX table, citation and warnings, when FRAX inputs were given.
    method : dict of str to str
    calibration : str
    provenance : dict of str to str
    coding : dict
        CPT code of the service, technical code, modifier rule, rate table, source.
    warnings : tuple of str
    citations : tuple of str
    disclaimer : str
    overlay_png, variogram_png : bytes or None
        Embedded figures.
    overlay_note : str or None
        Why there is no overlay.
    result : TBSResult
    interpretation : Interpretation or None
    include_phi : bool
    """

    service: str
    title: str
    subtitle: str
    generated: str
    patient: dict
    study: dict
    vertebrae: tuple
    l1_l4: dict
    category: dict | None
    frax: dict | None
    method: dict
    calibration: str
    provenance: dict
    coding: dict
    warnings: tuple[str, ...]
    citations: tuple[str, ...]
    disclaimer: str
    overlay_png: bytes | None = field(default=None, repr=False)
    variogram_png: bytes | None = field(default=None, repr=False)
    overlay_note: str | None = None
    result: TBSResult | None = field(default=None, repr=False)
    interpretation: Interpretation | None = field(default=None, repr=False)
    include_phi: bool = True

    @property
    def cpt_code(self) -> str:
        """CPT code of the service this report documents."""
        return str(self.coding["performed"]["code"])

    def context(self) -> dict[str, Any]:
        """Template context: the display fields plus the figures as data URIs."""
        ctx = {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("overlay_png", "variogram_png", "result", "interpretation")
        }
        ctx["overlay_uri"] = _data_uri(self.overlay_png)
        ctx["variogram_uri"] = _data_uri(self.variogram_png)
        ctx["cpt_code"] = self.cpt_code
        ctx["version"] = __version__
        return ctx

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe record of the report (``tbscore-report/1``), figures left out."""
        d = {k: v for k, v in self.context().items() if not k.endswith("_uri")}
        d.update(format=REPORT_FORMAT, cpt_code=self.cpt_code)
        d["interpretation"] = None if self.interpretation is None else self.interpretation.to_dict()
        d["result"] = (
            None if self.result is None else self.result.to_dict(include_phi=self.include_phi)
        )
        return json.loads(json.dumps(d, default=str))

    def to_json(self, path: str | Path | None = None, *, indent: int = 2) -> str:
        """Serialise :meth:`to_dict`; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(), indent=indent, ensure_ascii=False) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text


def _data_uri(png: bytes | None) -> str | None:
    if not png:
        return None
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _check_interpretation(interp: Interpretation, result: TBSResult) -> None:
    value, _ = reported_tbs(result)
    if value is None or abs(interp.tbs - value) > 5e-4:
        raise ReportError(
            f"the interpretation is for TBS {interp.tbs:.3f}, the result's L1-L4 value is "
            f"{_f(value)}"
        )


def _overlay(image: DXAImage | None, rois: VertebraROIs | None, result: TBSResult):
    """(PNG bytes, note) for the overlay block."""
    if image is None or rois is None:
        return None, (
            "Image not available: the result was computed elsewhere."
            if image is None
            else "ROIs not available."
        )
    pix = result.input.get("pixel_sha256")
    if pix and image.pixel_sha256 and pix != image.pixel_sha256:
        raise ReportError(
            "the image is not the one the result was computed from (pixel SHA-256 differs)",
            image.source,
        )
    from tbscore.overlay import overlay_png

    row_mm, col_mm = image.spacing_mm
    title = f"pixels {row_mm:.3g} × {col_mm:.3g} mm"
    return overlay_png(image, rois, result, margin_mm=30.0, width_in=3.0, title=title), None


def build_report(
    result: TBSResult,
    interpretation: Interpretation | None = None,
    *,
    image: DXAImage | None = None,
    rois: VertebraROIs | None = None,
    service: str = "score",
    include_phi: bool = True,
    schedule: str = billing.DEFAULT_SCHEDULE,
) -> Report:
    """Assemble a :class:`Report` from a result and its interpretation.

    Parameters
    ----------
    result : TBSResult
        The technical result (CPT 77091).
    interpretation : Interpretation, optional
        From :func:`interpret_result` (or :func:`tbscore.risk.interpret` of the same
        value). Default: interpret with the clinical inputs of the DICOM header and the
        default threshold set, when the result has an L1–L4 value.
    image : DXAImage, optional
        The image, to draw the ROI overlay; it must be the one the result was computed
        from (same pixel hash).
    rois : VertebraROIs, optional
        The ROIs used (with exclusions), for the overlay.
    service : {"score", "interpret"}
        ``score`` documents the complete service (77089); ``interpret`` the
        interpretation of a result computed elsewhere (77092).
    include_phi : bool
        Show patient name, ID and birth date (False writes ``"(withheld)"``).
    schedule : str
        Fee schedule for the coding block (:mod:`tbscore.billing`).

    Returns
    -------
    Report

    Raises
    ------
    ReportError
        Unknown service, an interpretation of another value, or an image that is not
        the result's.
    """
    if service not in REPORT_SERVICES:
        raise ReportError(f"service must be one of {', '.join(REPORT_SERVICES)}, got {service!r}")
    value, basis = reported_tbs(result)
    if interpretation is None and value is not None:
        interpretation = interpret_result(result)
    if interpretation is not None:
        _check_interpretation(interpretation, result)
    overlay, note = _overlay(image, rois, result)
    generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    coding = _coding(service, result, schedule)
    citations = list(interpretation.citations) if interpretation is not None else []
    return Report(
        service=service,
        title="Trabecular Bone Score (TBS) report",
        subtitle=f"{REPORT_SERVICES[service]} — CPT {coding['performed']['code']}",
        generated=generated,
        patient=_patient(result, interpretation, include_phi),
        study=_study(result),
        vertebrae=_vertebra_rows(result),
        l1_l4=_l1_l4(result),
        category=_category(interpretation),
        frax=_frax(interpretation),
        method=_method(result),
        calibration=_calibration(result),
        provenance=_provenance(result, generated),
        coding=coding,
        warnings=_warnings(result, interpretation, basis),
        citations=tuple(dict.fromkeys(citations)),
        disclaimer=NOT_INTERCHANGEABLE,
        overlay_png=overlay,
        variogram_png=_png(variogram_figure(result)),
        overlay_note=note,
        result=result,
        interpretation=interpretation,
        include_phi=include_phi,
    )


# --------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------

_FONTS = {"tbscore-font:regular": "DejaVuSans.ttf", "tbscore-font:bold": "DejaVuSans-Bold.ttf"}


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(
        loader=PackageLoader("tbscore", "templates"),
        autoescape=True,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_html(report: Report, *, for_pdf: bool = False) -> str:
    """Render the report as one self-contained HTML page.

    Parameters
    ----------
    report : Report
    for_pdf : bool
        The print layout used by :func:`render_pdf` (A4 page rules, embedded font,
        page-numbered footer). The content is the same.

    Returns
    -------
    str
        HTML; every value is escaped, images are base64 data URIs, nothing is fetched.
    """
    template = _environment().get_template("report.html.j2")
    return template.render(for_pdf=for_pdf, **report.context())


def _font_path(name: str) -> str:
    import matplotlib

    return str(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name)


def _link_callback(uri: str, rel: str | None = None) -> str:
    """Resolve only embedded data and the bundled fonts; refuse everything else."""
    if uri.startswith("data:"):
        return uri
    if uri in _FONTS:
        return _font_path(_FONTS[uri])
    return ""


def render_pdf(report: Report) -> bytes:
    """Render the report as PDF (the HTML of :func:`render_html`, laid out by xhtml2pdf).

    Returns
    -------
    bytes
        The PDF document.

    Raises
    ------
    ReportError
        xhtml2pdf is not installed (``pip install 'tbscore[pdf]'``), or it failed.
    """
    try:
        from xhtml2pdf import pisa
    except ImportError as exc:
        raise ReportError(
            "PDF output needs the optional dependency xhtml2pdf: "
            f"pip install 'tbscore[pdf]' (or write .html); import failed: {exc}"
        ) from exc
    import logging

    buf = io.BytesIO()
    logger = logging.getLogger("xhtml2pdf")
    level = logger.level
    logger.setLevel(logging.ERROR)  # glyph and CSS notices are not the user's business
    try:
        status = pisa.CreatePDF(
            render_html(report, for_pdf=True),
            dest=buf,
            encoding="utf-8",
            link_callback=_link_callback,
        )
    finally:
        logger.setLevel(level)
    if status.err:
        raise ReportError(f"PDF rendering failed ({status.err} error(s))")
    return buf.getvalue()


def write_report(report: Report, path: str | Path) -> Path:
    """Write the report as ``.html`` / ``.htm``, ``.pdf`` or ``.json`` (by suffix).

    Raises
    ------
    ReportError
        Unknown suffix, or PDF without xhtml2pdf.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix in (".html", ".htm"):
        path.write_text(render_html(report), encoding="utf-8")
    elif suffix == ".pdf":
        path.write_bytes(render_pdf(report))
    elif suffix == ".json":
        report.to_json(path)
    else:
        raise ReportError("report file must end in .html, .pdf or .json", str(path))
    return path


# --------------------------------------------------------------------------------------
# CLI
# --------------------------------------------------------------------------------------


def _clinical_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("clinical inputs (default: from the DICOM header)")
    g.add_argument("--age", type=float, help="age in years")
    g.add_argument("--sex", help="F or M (female / male)")
    g.add_argument("--bmi", type=float, help="body-mass index, kg/m^2")
    g.add_argument(
        "--frax-mof",
        type=float,
        metavar="PERCENT",
        help="FRAX 10-year major osteoporotic fracture probability (%%)",
    )
    g.add_argument(
        "--frax-hip",
        type=float,
        metavar="PERCENT",
        help="FRAX 10-year hip fracture probability (%%)",
    )
    g.add_argument(
        "--threshold-set",
        default=DEFAULT_THRESHOLD_SET,
        choices=sorted(risk.THRESHOLD_SETS),
        help=f"category cut-offs (default {DEFAULT_THRESHOLD_SET})",
    )
    g.add_argument(
        "--no-dicom-defaults",
        action="store_true",
        help="do not take age, sex and BMI from the DICOM header",
    )


def _calibration_arg(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument(
        "--calibration",
        metavar="CAL.json",
        help=f"calibration to a reference TBS scale (tbscore calibrate) {what}; the "
        "calibrated value is then the one interpreted",
    )


def _output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "-o",
        "--output",
        action="append",
        required=True,
        metavar="REPORT",
        help="report file: .html, .pdf or .json (repeatable)",
    )
    p.add_argument(
        "--no-phi",
        action="store_true",
        help="leave patient name, ID and birth date out of the report",
    )


def _interpretation_from_args(result: TBSResult, args: argparse.Namespace):
    if reported_tbs(result)[0] is None:
        return None
    return interpret_result(
        result,
        age=args.age,
        sex=args.sex,
        bmi=args.bmi,
        frax_mof=args.frax_mof,
        frax_hip=args.frax_hip,
        threshold_set=args.threshold_set,
        use_metadata=not args.no_dicom_defaults,
    )


def _print_summary(report: Report, paths: list[Path]) -> None:
    l14 = report.l1_l4
    lines = [f"tbscore {__version__}  CPT {report.cpt_code} ({REPORT_SERVICES[report.service]})"]
    if l14["available"]:
        lines.append(
            f"L1-L4    {l14['value']} ({l14['labels']})"
            + (f"; calibrated {l14['calibrated']}" if l14["calibrated"] else "")
        )
    else:
        lines.append(f"L1-L4    n/a: {l14['reason']}")
    if report.category is not None:
        c = report.category
        lines.append(f"category {c['label']} ({c['rule']}; {c['set_title']})")
    for row in (report.frax or {}).get("rows", []):
        lines.append(
            f"FRAX     {row['outcome']}: {row['input']}% -> {row['adjusted']}% (TBS-adjusted)"
        )
    lines.extend(f"warning: {w}" for w in report.warnings)
    lines.extend(f"written {p}" for p in paths)
    sys.stdout.write("\n".join(lines) + "\n")


def _check_outputs(outputs: list[str]) -> None:
    """Refuse report names with an unknown suffix, before anything is computed or written."""
    for out in outputs:
        if Path(out).suffix.lower() not in (".html", ".htm", ".pdf", ".json"):
            raise ReportError("report file must end in .html, .pdf or .json", out)


def _write_all(report: Report, outputs: list[str]) -> list[Path]:
    _check_outputs(outputs)
    return [write_report(report, out) for out in outputs]


def _read_result(path: str) -> TBSResult:
    try:
        return TBSResult.from_json(Path(path))
    except FileNotFoundError:
        raise ReportError("result file does not exist", path) from None
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ReportError(f"not a readable tbscore result ({exc})", path) from exc


def cmd_interpret(args: argparse.Namespace) -> int:
    """``tbscore interpret``: CPT 77092 report of a result computed elsewhere."""
    from tbscore.cli import EXIT_INCOMPLETE, EXIT_OK

    result = _read_result(args.result)
    if args.calibration:
        from tbscore.calibrate import apply_calibration

        result = apply_calibration(result, args.calibration)
    image = rois = None
    if args.image:
        from tbscore.api import as_image, resolve_rois

        if not args.roi:
            raise ReportError("--image needs --roi (the ROIs the result was computed with)")
        spacing = tuple(result.pixel_spacing_mm)
        image = as_image(args.image, spacing=spacing)
        rois = resolve_rois(args.roi, image)
    interp = _interpretation_from_args(result, args)
    report = build_report(
        result, interp, image=image, rois=rois, service="interpret", include_phi=not args.no_phi
    )
    _print_summary(report, _write_all(report, args.output))
    return EXIT_OK if result.l1_l4 is not None else EXIT_INCOMPLETE


def cmd_score(args: argparse.Namespace) -> int:
    """``tbscore score``: CPT 77089, calculation with interpretation and report."""
    from tbscore.api import as_image, calc, resolve_rois
    from tbscore.cli import EXIT_INCOMPLETE, EXIT_OK, settings_from_args
    from tbscore.roi import apply_exclusions

    _check_outputs(args.output)  # nothing (result JSON, SR) is written for a bad report name
    settings = settings_from_args(args)
    image = as_image(
        args.file,
        spacing=tuple(args.spacing) if args.spacing else None,
        override_spacing=args.override_spacing,
    )
    rois = apply_exclusions(resolve_rois(args.roi, image), args.exclude)
    result = calc(image, rois, settings=settings, calibration=args.calibration)
    if args.result_json:
        result.to_json(args.result_json, include_phi=not args.no_phi)
    if args.sr:
        from tbscore.sr import write_sr

        write_sr(result, args.file, args.sr)
    interp = _interpretation_from_args(result, args)
    report = build_report(
        result, interp, image=image, rois=rois, service="score", include_phi=not args.no_phi
    )
    paths = _write_all(report, args.output)
    paths += [Path(p) for p in (args.result_json, args.sr) if p]
    _print_summary(report, paths)
    return EXIT_OK if result.l1_l4 is not None else EXIT_INCOMPLETE


_CODE_TO_SERVICE = {code: name for name, code in billing.SERVICES.items()}


def parse_services(text: str) -> dict[str, int]:
    """Parse ``"calc=3,score=2"`` into ``{"calc": 3, "score": 2}``.

    Raises
    ------
    tbscore.billing.BillingError
        Malformed item, unknown service or a negative count.
    """
    counts: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, num = item.partition("=")
        try:
            n = int(num) if sep else 1
        except ValueError:
            raise billing.BillingError(f"bad service count {item!r} (use NAME=COUNT)") from None
        if n < 0:
            raise billing.BillingError(f"negative count in {item!r}")
        key = name.strip().lower()
        if key not in billing.SERVICES:
            raise billing.BillingError(
                f"unknown service {name!r}; known services: {', '.join(billing.SERVICES)}"
            )
        counts[key] = counts.get(key, 0) + n
    return counts


def _read_service_file(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError("file does not exist", path) from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"not a JSON file ({exc})", path) from exc
    if not isinstance(data, Mapping) or data.get("format") not in (
        "tbscore-result/1",
        REPORT_FORMAT,
    ):
        raise ReportError("not a tbscore result or report JSON", path)
    if str(data.get("cpt_code") or "") not in _CODE_TO_SERVICE:
        raise ReportError(f"unknown CPT code {data.get('cpt_code')!r}", path)
    return data


def _result_key(data: Mapping | None) -> tuple | None:
    """Identity of a technical result: image hash, SOP instance and settings digest."""
    if not isinstance(data, Mapping):
        return None
    inp = data.get("input") or {}
    return (inp.get("pixel_sha256"), inp.get("sop_instance_uid"), data.get("settings_digest"))


def services_from_files(paths: list[str]) -> tuple[dict[str, int], list[str]]:
    """Count services in result (``tbscore-result/1``) and report (``tbscore-report/1``)
    JSON files by their ``cpt_code``.

    A result file that is the technical part of a ``score`` report also given (same
    image and settings) is not counted again: 77089 includes 77091.

    Returns
    -------
    counts : dict of str to int
        Service name -> count.
    notes : list of str
        Files left out, and why.
    """
    docs = {path: _read_service_file(path) for path in dict.fromkeys(paths)}
    in_scores = {
        _result_key(d.get("result"))
        for d in docs.values()
        if d.get("format") == REPORT_FORMAT and d.get("cpt_code") == billing.SERVICES["score"]
    }
    counts: dict[str, int] = {}
    notes: list[str] = []
    for path, data in docs.items():
        if data.get("format") != REPORT_FORMAT and _result_key(data) in in_scores:
            notes.append(
                f"{path}: technical part of a score report given too (77089 "
                "includes 77091); not counted again"
            )
            continue
        service = _CODE_TO_SERVICE[str(data["cpt_code"])]
        counts[service] = counts.get(service, 0) + 1
    return counts, notes


def cmd_billing(args: argparse.Namespace) -> int:
    """``tbscore billing``: billing summary of a set of services."""
    from tbscore.cli import EXIT_OK

    counts, notes = services_from_files(args.results)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for name, n in parse_services(args.services or "").items():
        counts[name] = counts.get(name, 0) + n
    if not counts:
        raise ReportError("no services: give result/report files or --services")
    rows = billing.billing_summary(counts, args.setting, rate=args.rate, split=args.split)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        sys.stdout.write(billing.format_table(rows) + "\n")
    return EXIT_OK


def _add_interpret(sub: Any) -> None:
    p = sub.add_parser(
        "interpret",
        help="CPT 77092: interpretation and report of a result computed elsewhere",
        description="Fracture-risk interpretation and report (CPT 77092) of a tbscore "
        "result JSON (from 'tbscore calc --json').",
    )
    p.add_argument("result", help="result JSON (tbscore-result/1)")
    p.add_argument("--image", help="the DICOM the result was computed from (for the overlay)")
    p.add_argument("--roi", help="the ROI file used (with --image)")
    _calibration_arg(p, "to apply to the result")
    _clinical_args(p)
    _output_args(p)
    p.set_defaults(func=cmd_interpret)


def _add_score(sub: Any) -> None:
    from tbscore.cli import add_settings_args

    p = sub.add_parser(
        "score",
        help="CPT 77089: calculation with interpretation and report (complete service)",
        description="Compute TBS (as 'calc') and write the interpretation report "
        "(CPT 77089, global).",
    )
    p.add_argument("file", help="DICOM file")
    p.add_argument(
        "--roi",
        help="ROI file (tbscore-roi/1 JSON, .npy/.png label image); default: automatic detection",
    )
    p.add_argument(
        "--exclude",
        action="append",
        metavar="LABEL[:REASON]",
        help="exclude a vertebra, e.g. --exclude L2:fracture (repeatable)",
    )
    p.add_argument(
        "--result-json",
        metavar="RESULT.json",
        help="also write the technical result (tbscore-result/1)",
    )
    p.add_argument(
        "--sr", metavar="OUT.dcm", help="also write a DICOM SR (TID 1500) of the result"
    )
    _calibration_arg(p, "to apply")
    _clinical_args(p)
    _output_args(p)
    add_settings_args(p)
    p.set_defaults(func=cmd_score)


def _add_billing(sub: Any) -> None:
    p = sub.add_parser(
        "billing",
        help="billing summary (CPT codes, Medicare 2026 rates) for a set of services",
        description="Billing summary of TBS services counted from result/report JSON "
        "files (by their cpt_code) and/or --services.",
    )
    p.add_argument("results", nargs="*", help="result or report JSON files")
    p.add_argument(
        "--services",
        metavar="NAME=N,...",
        help="service counts, e.g. calc=3,score=2 (calc, interpret, score, export)",
    )
    p.add_argument("--setting", required=True, choices=billing.SETTINGS)
    p.add_argument(
        "--rate", default="qp", choices=billing.RATES, help="PFS conversion factor (default qp)"
    )
    p.add_argument(
        "--split",
        action="store_true",
        help="office: bill a complete service as 77091 + 77092 instead of 77089",
    )
    p.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    p.set_defaults(func=cmd_billing)


def register_cli(subparsers: Any) -> None:
    """Add the ``interpret``, ``score`` and ``billing`` sub-commands."""
    _add_interpret(subparsers)
    _add_score(subparsers)
    _add_billing(subparsers)
