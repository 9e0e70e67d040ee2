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

import base64
import contextlib
import io
import json
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tbscore._version import __version__
from tbscore.clinical import billing
from tbscore.clinical.interpret import (
    _SEX_FROM_DICOM,
    NOT_INTERCHANGEABLE,
    REPORT_FORMAT,
    REPORT_SERVICES,
    ReportError,
    interpret_result,
    report_warnings,
    reported_tbs,
)
from tbscore.clinical.precision import compare
from tbscore.clinical.risk import Interpretation
from tbscore.clinical.signoff import SignOff, calibration_warnings, category_caveat
from tbscore.core.constants import PROFILE_INTERVAL_ESTIMATORS
from tbscore.core.result import TBSResult, format_snr, format_value_ci
from tbscore.core.roi import VertebraROIs
from tbscore.io.load import DXAImage
from tbscore.render.figures import _png, variogram_figure

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
        "name": _person_name(meta.get("patient_name")) if include_phi else withheld,
        "patient_id": (meta.get("patient_id") or "–") if include_phi else withheld,
        "birth_date": _dicom_date(meta.get("birth_date")) if include_phi else withheld,
        "age": "–" if age is None else f"{float(age):g} years" + _source_of(interp, "age", age),
        "sex": (sex or "–") + _source_of(interp, "sex", sex),
        "bmi": "–" if bmi is None else f"{float(bmi):.1f} kg/m²" + _source_of(interp, "bmi", bmi),
    }


def _study(result: TBSResult, include_phi: bool) -> dict:
    """The one study-context block: date and time, exam, order, equipment, operator, image.

    Accession number, referring physician and operator are identifying: ``(withheld)``
    without PHI. The scanner is named once (manufacturer, model, serial number).
    """
    meta = result.metadata or {}
    withheld = "(withheld)"

    def phi(value: Any, person: bool = False) -> str:
        if not include_phi:
            return withheld
        return _person_name(value) if person else (str(value) if value else "–")

    device = " ".join(str(x) for x in (meta.get("manufacturer"), meta.get("model")) if x)
    serial = meta.get("device_serial_number")
    time = str(meta.get("study_time") or "")
    source = str(result.input.get("source") or "")
    return {
        "study_date": _dicom_date(meta.get("study_date")),
        "study_time": f"{time[:2]}:{time[2:4]}" if len(time) >= 4 and time[:4].isdigit() else "–",
        "exam": meta.get("study_description") or meta.get("requested_procedure") or "–",
        "modality": meta.get("modality") or "–",
        "scanner": (device or "–") + (f", serial {serial}" if serial else ""),
        "station": meta.get("station_name") or "–",
        "institution": meta.get("institution_name") or "–",
        "accession_number": phi(meta.get("accession_number")),
        "referring_physician": phi(meta.get("referring_physician"), person=True),
        "indication": " — ".join(
            str(x) for x in (meta.get("requested_procedure"), meta.get("reason_for_request")) if x
        )
        or "–",
        "operator": phi(meta.get("operators_name"), person=True),
        "image": Path(source).name if source else "–",
    }


def _vertebra_rows(result: TBSResult) -> tuple[dict, ...]:
    rows = []
    for v in result.vertebrae:
        rows.append(
            {
                "label": v.label,
                "value": _f(v.value),
                "ci95": "–" if v.ci95 is None else f"{_f(v.ci95[0])}–{_f(v.ci95[1])}",
                "snr": format_snr(v.snr, v.value is not None) or "–",
                "calibrated": _f(v.calibrated_value),
                "status": v.status,
                "r2": _f(v.r2),
                "slope_se": _f(v.slope_se),
                "lags": str(v.n_lags),
                "pixels": str(v.n_pixels),
                "reason": v.reason or "",
            }
        )
    return tuple(rows)


def _l1_l4(result: TBSResult) -> dict:
    value, basis = reported_tbs(result)
    snrs = [v.snr for v in result.vertebrae if v.label in result.l1_l4_labels]
    low = min((x for x in snrs if x is not None), default=None)
    return {
        "value": _f(result.l1_l4),
        "value_ci": format_value_ci(result.l1_l4, result.l1_l4_ci95),
        "estimator": result.settings.estimator,
        "snr": format_snr(low, bool(snrs)) or "–",
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
        "tbs": _f(fx.tbs),
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
        "method": result.method,
        "estimator": s.estimator,
        "interval": (
            "95 % CI per vertebra = profile interval of the exponent (the model's n ≥ 0 "
            "bound included; asymmetric), L1–L4 = value ± 1.96 se, se from the analytic "
            "variance of the variogram (delta method; docs/method.md §3b); SNR = "
            "texture-to-noise ratio"
            if s.estimator in PROFILE_INTERVAL_ESTIMATORS
            else "95 % CI = value ± 1.96 se, se from the analytic variance of the variogram "
            "(delta method; docs/method.md §3b); SNR = texture-to-noise ratio"
        ),
        "lag_range": f"{_g(result.lag_range_mm[0])}–{_g(result.lag_range_mm[1])} mm",
        "directions": ", ".join(s.directions),
        "pixel_spacing": f"{row_mm:.4g} × {col_mm:.4g} mm (row × column; {result.spacing_source})",
        "minimum_pairs_lags_pixels": (
            f"{s.min_pairs_per_lag} pairs per lag, {s.min_lags} lags, {s.min_roi_pixels} ROI pixels"
        ),
        "minimum_r2": _g(s.min_r2),
        "l1_l4_rule": f"mean of valid vertebrae, at least {s.min_valid_vertebrae} needed",
        "rois": f"{result.roi_source}{conf}",
        "settings_digest": s.digest(),
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
        parts.append(f"calibrated = {a:.3f} + {b:.3f} × tbscore")
    if cal.get("method"):
        parts.append(f"method {cal['method']}")
    n, r = _num(cal.get("n")), _num(cal.get("r"))
    if n is not None:
        parts.append(f"n = {n:g}" + ("" if r is None else f", r = {r:.3f}"))
    parts.extend(_slope_ci(cal))
    rng = cal.get("x_range")
    if isinstance(rng, list | tuple) and len(rng) == 2 and None not in map(_num, rng):
        parts.append(f"fitted on tbscore {rng[0]:.3f}–{rng[1]:.3f}")
    if cal.get("created"):
        parts.append(f"created {cal['created']}")
    return "; ".join(parts)


def _provenance(result: TBSResult, generated: str) -> dict:
    meta = result.metadata or {}
    return {
        "report_generated": generated,
        "tbscore_version_report": __version__,
        "tbscore_version_result": result.tbscore_version or "–",
        "input": str(result.input.get("source") or "–"),
        "study_instance_uid": meta.get("study_instance_uid") or "–",
        "sop_instance_uid": result.input.get("sop_instance_uid") or "–",
        "file_sha256": result.input.get("file_sha256") or "–",
        "pixel_sha256": result.input.get("pixel_sha256") or "–",
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
    out = report_warnings(result, interp)  # the BMI rule is clinical's
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
    out.extend(calibration_warnings(result.calibration))
    if str((result.metadata or {}).get("sex") or "").upper() == "O":
        out.append("PatientSex 'O' in the DICOM header: sex not used for the interpretation.")
    return tuple(dict.fromkeys(out))


# --------------------------------------------------------------------------------------
# reading-station blocks (CPT 77092 sign-off): bone density, comparison
# with prior scans, sign-off, category caveat
# --------------------------------------------------------------------------------------


def _slope_ci(cal: dict) -> list[str]:
    ci = cal.get("b_ci")
    if isinstance(ci, list | tuple) and len(ci) == 2 and None not in map(_num, ci):
        return [f"slope 95 % CI {ci[0]:.3f}–{ci[1]:.3f}"]
    return []


def _bone_density(values: dict | None) -> dict | None:
    """BMD (g/cm²) and T-score of L1–L4 shown beside the TBS, when known."""
    if not values:
        return None
    bmd, t = _num(values.get("bmd_g_cm2")), _num(values.get("t_score"))
    if bmd is None and t is None:
        return None
    return {
        "bmd": _f(bmd, 3, " g/cm²"),
        "t_score": _f(t, 1),
        "source": str(values.get("source") or "entered"),
    }


def prior_summary(prior: TBSResult) -> dict[str, Any]:
    """What a report keeps of a prior scan: date, raw L1–L4 value, SOP Instance UID."""
    meta = prior.metadata or {}
    return {
        "study_date": meta.get("study_date"),
        "l1_l4": prior.l1_l4,
        "labels": list(prior.l1_l4_labels),
        "sop_instance_uid": prior.input.get("sop_instance_uid"),
        "patient_id": meta.get("patient_id"),
    }


def _comparison(
    result: TBSResult, priors: list[dict], lsc: float | None, lsc_source: str | None
) -> dict | None:
    """Prior-scan table and the change call of the raw L1–L4 index against the LSC."""
    if not priors:
        return None
    rows = []
    current = result.l1_l4
    for p in sorted(priors, key=lambda d: str(d.get("study_date") or "")):
        value = _num(p.get("l1_l4"))
        change = None
        if current is not None and value is not None and value > 0:
            change = compare(float(current), value, lsc)
        rows.append(
            {
                "date": _dicom_date(p.get("study_date")),
                "value": _f(value),
                "labels": ", ".join(p.get("labels") or []) or "–",
                "delta": "–" if change is None else f"{change.delta:+.3f}",
                "percent": "–" if change is None else f"{change.percent:+.1f} %",
                "call": "–" if change is None else change.statement,
                "significant": None if change is None else change.significant,
            }
        )
    lsc_text = (
        f"{lsc:.3f} ({lsc_source or 'site precision'})"
        if lsc is not None
        else "not known: significance not assessed (run tbscore precision)"
    )
    return {"current": _f(current), "rows": rows, "lsc": lsc_text}


def _sign_off(signoff: SignOff | None) -> dict:
    """Status, impression, recommendation and signature lines."""
    if signoff is None or not signoff.signed:
        return {
            "status": "preliminary",
            "impression": signoff.impression if signoff else "",
            "recommendation": signoff.recommendation if signoff else "",
            "final": None,
            "addenda": [],
        }
    first, *rest = signoff.signatures

    def line(sig) -> dict:
        return {
            "physician": sig.physician,
            "organisation": sig.organisation or "",
            "time": sig.display_time(),
            "text": sig.text,
            "digest": sig.digest,
        }

    return {
        "status": signoff.status,
        "impression": signoff.impression,
        "recommendation": signoff.recommendation,
        "final": line(first),
        "addenda": [line(s) for s in rest],
    }


RAW_CATEGORY_MODES = ("muted", "hidden", "shown")


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
        Display blocks (identifiers ``"(withheld)"`` when built without PHI). ``study``
        is the one study context from the DICOM header: date, time, exam, modality,
        scanner (manufacturer, model, serial), station, institution, accession number,
        referring physician, indication / order, operator and image file name.
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
    sign_off : dict
        ``status`` (preliminary / final / amended), ``impression``, ``recommendation``,
        ``final`` signature line and ``addenda``.
    bone_density : dict or None
        L1–L4 BMD and T-score shown beside the TBS, with their source.
    comparison : dict or None
        Prior scans, change of the raw L1–L4 index and the call against the LSC.
    category_caveat : str or None
        Why the category and adjusted FRAX are indicative only (shown muted).
    raw_category : {"muted", "hidden", "shown"}
        How a category with a caveat is shown (site setting).
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
    # reading-station blocks (sign-off); see _sign_off, _comparison
    sign_off: dict = field(default_factory=lambda: _sign_off(None))
    bone_density: dict | None = None
    comparison: dict | None = None
    category_caveat: str | None = None
    raw_category: str = "muted"

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
    from tbscore.render.overlay import overlay_figure

    row_mm, col_mm = image.spacing_mm
    title = f"pixels {row_mm:.3g} × {col_mm:.3g} mm"
    fig = overlay_figure(image, rois, result, margin_mm=30.0, width_in=3.0, title=title)
    left, right = orientation_marks(image.metadata.patient_orientation)
    ax = fig.axes[0]
    for x, text, ha in ((0.02, left, "left"), (0.98, right, "right")):
        ax.text(
            x,
            0.5,
            text,
            transform=ax.transAxes,
            ha=ha,
            va="center",
            fontsize=11,
            fontweight="bold",
            color="white",
            bbox={"facecolor": "black", "alpha": 0.6, "pad": 1.5, "linewidth": 0},
        )
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    return buf.getvalue(), None


_OPPOSITE = {"L": "R", "R": "L", "A": "P", "P": "A", "H": "F", "F": "H"}


def orientation_marks(patient_orientation: str | None) -> tuple[str, str]:
    """Patient-direction letters at the image's left and right edges.

    Parameters
    ----------
    patient_orientation : str or None
        DICOM PatientOrientation ``"ROW\\COLUMN"``: the first value is the patient
        direction of increasing column index (towards the image's right edge).

    Returns
    -------
    (str, str)
        Letters for the left and right edges; without the attribute, the PA spine
        convention (patient's right on the image's left): ``("R", "L")``.
    """
    first = (patient_orientation or "").split("\\")[0].strip().upper()
    if first and all(c in _OPPOSITE for c in first):
        return "".join(_OPPOSITE[c] for c in first), first
    return "R", "L"


def build_report(
    result: TBSResult,
    interpretation: Interpretation | None = None,
    *,
    image: DXAImage | None = None,
    rois: VertebraROIs | None = None,
    service: str = "score",
    include_phi: bool = True,
    schedule: str = billing.DEFAULT_SCHEDULE,
    signoff: SignOff | None = None,
    time_zone: str | None = None,
    bone_density: dict | None = None,
    priors: list[dict] | None = None,
    lsc: float | None = None,
    lsc_source: str | None = None,
    raw_category: str = "muted",
) -> Report:
    """Assemble a :class:`Report` from a result and its interpretation.

    Parameters
    ----------
    result : TBSResult
        The technical result (CPT 77091).
    interpretation : Interpretation, optional
        From :func:`interpret_result` (or :func:`tbscore.clinical.risk.interpret` of the same
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
        Fee schedule for the coding record (:mod:`tbscore.clinical.billing`; kept in the
        JSON, not printed: billing is its own output, ``tbscore billing``).
    signoff : SignOff, optional
        The physician sign-off (:mod:`tbscore.clinical.signoff`); default: preliminary.
    time_zone : str, optional
        IANA time zone of the site for the generation time (default UTC); signatures
        carry their own zone.
    bone_density : dict, optional
        ``{"bmd_g_cm2", "t_score", "source"}`` of L1–L4, shown beside the TBS.
    priors : list of dict, optional
        Prior scans of the patient (:func:`prior_summary`), compared with this one.
    lsc : float, optional
        The site's least significant change of the raw L1–L4 index
        (:mod:`tbscore.clinical.precision`), and ``lsc_source`` naming where it came from.
    raw_category : {"muted", "hidden", "shown"}
        A category (and adjusted FRAX) from a raw or weakly calibrated index is shown
        muted with the reason (default), left out, or shown (a site that allows raw values;
        the caveat is still printed).

    Returns
    -------
    Report

    Raises
    ------
    ReportError
        Unknown service, an interpretation of another value, an image that is not the
        result's, or an unknown ``raw_category``.
    """
    if service not in REPORT_SERVICES:
        raise ReportError(f"service must be one of {', '.join(REPORT_SERVICES)}, got {service!r}")
    value, basis = reported_tbs(result)
    if interpretation is None and value is not None:
        interpretation = interpret_result(result)
    if interpretation is not None:
        _check_interpretation(interpretation, result)
    if raw_category not in RAW_CATEGORY_MODES:
        raise ReportError(f"raw_category must be one of {', '.join(RAW_CATEGORY_MODES)}")
    overlay, note = _overlay(image, rois, result)
    if time_zone:
        from tbscore.clinical.signoff import signing_time

        now = signing_time(time_zone)
        generated = f"{now:%Y-%m-%d %H:%M} {now.tzname()} ({time_zone})"
    else:
        generated = datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")
    coding = _coding(service, result, schedule)
    citations = list(interpretation.citations) if interpretation is not None else []
    return Report(
        service=service,
        title="Trabecular Bone Score (TBS) report",
        subtitle=f"{REPORT_SERVICES[service]} — CPT {coding['performed']['code']}",
        generated=generated,
        patient=_patient(result, interpretation, include_phi),
        study=_study(result, include_phi),
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
        sign_off=_sign_off(signoff),
        bone_density=_bone_density(bone_density),
        comparison=_comparison(result, list(priors or []), lsc, lsc_source),
        category_caveat=None
        if interpretation is None
        else category_caveat(basis, result.calibration),
        raw_category=raw_category,
    )


# --------------------------------------------------------------------------------------
# rendering
# --------------------------------------------------------------------------------------

#: The DejaVu faces that matplotlib ships (``matplotlib.get_data_path()/fonts/ttf``),
#: embedded (subset) in every PDF report: they cover Latin, Latin Extended, Greek and
#: Cyrillic names, which the base-14 PDF fonts do not.
_FONTS = {
    "tbscore-font:regular": "DejaVuSans.ttf",
    "tbscore-font:bold": "DejaVuSans-Bold.ttf",
    "tbscore-font:italic": "DejaVuSans-Oblique.ttf",
    "tbscore-font:bolditalic": "DejaVuSans-BoldOblique.ttf",
    "tbscore-font:mono": "DejaVuSansMono.ttf",
}

#: Base-14 names that xhtml2pdf and ReportLab use on their own, whatever the CSS says
#: (the canvas's initial font, empty fragments and anchors in Helvetica, list markers
#: in Symbol / ZapfDingbats, monospace in Courier). While a report is rendered they are
#: drawn with the embedded DejaVu faces, so that the PDF has no unembedded font.
_BASE14_STANDINS = {
    "Helvetica": "DejaVuSans.ttf",
    "Helvetica-Bold": "DejaVuSans-Bold.ttf",
    "Helvetica-Oblique": "DejaVuSans-Oblique.ttf",
    "Helvetica-BoldOblique": "DejaVuSans-BoldOblique.ttf",
    "Courier": "DejaVuSansMono.ttf",
    "Symbol": "DejaVuSans.ttf",
    "ZapfDingbats": "DejaVuSans.ttf",
}


def _environment():
    from jinja2 import Environment, PackageLoader, StrictUndefined

    return Environment(
        loader=PackageLoader("tbscore.render", "templates"),
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
    """Path of a DejaVu font file shipped by matplotlib.

    Raises
    ------
    ReportError
        The file is missing (a matplotlib build without its fonts).
    """
    import matplotlib

    path = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / name
    if not path.is_file():
        raise ReportError(f"PDF reports need the font {name} that matplotlib ships", str(path))
    return str(path)


def _embedded_face(file: str) -> Any:
    """The ReportLab TrueType font of a DejaVu file, registered once per face.

    ReportLab keys embedded fonts by face name: a second ``TTFont`` of the same file
    (xhtml2pdf makes one for each ``@font-face``) is an alias of the first one, so
    every name below draws with one font object and one subset per document.
    """
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    font = TTFont("tbscore-" + Path(file).stem, _font_path(file))
    pdfmetrics.registerFont(font)  # an alias of an earlier font of the same face
    return pdfmetrics.getFont(font.fontName)


@contextlib.contextmanager
def _base14_as_embedded() -> Iterator[None]:
    """ReportLab's base-14 fonts of :data:`_BASE14_STANDINS` drawn with the embedded
    DejaVu faces for the duration of the block (ReportLab's registry entries for the
    base-14 names are restored afterwards). Not thread-safe, like xhtml2pdf's own
    font registry."""
    from reportlab.pdfbase import pdfmetrics

    registry = pdfmetrics._fonts
    saved = {name: registry.get(name) for name in _BASE14_STANDINS}
    try:
        for name, file in _BASE14_STANDINS.items():
            registry[name] = _embedded_face(file)
        yield
    finally:
        for name, font in saved.items():
            if font is None:
                registry.pop(name, None)
            else:
                registry[name] = font


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
    buf = io.BytesIO()
    with _base14_as_embedded():
        status = pisa.CreatePDF(
            render_html(report, for_pdf=True),
            dest=buf,
            encoding="utf-8",
            link_callback=_link_callback,
        )
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
