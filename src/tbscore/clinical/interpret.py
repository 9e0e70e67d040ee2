"""Interpretation of a technical result (CPT 77092): which value, which clinical inputs.

Pure clinical logic, no I/O: the inputs come from the caller or from the result's
DICOM metadata, and :func:`tbscore.clinical.risk.interpret` maps the value to a category.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from tbscore.clinical import risk
from tbscore.clinical.risk import DEFAULT_THRESHOLD_SET, Interpretation, ThresholdSet
from tbscore.core.result import TBSResult
from tbscore.errors import ReportError

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


# --------------------------------------------------------------------------------------
# interpretation of a result
# --------------------------------------------------------------------------------------


def report_warnings(result: TBSResult, interp: Interpretation | None) -> list[str]:
    """The result's warnings, then the interpretation's, for one report.

    When the interpretation warns about the BMI it used
    (:func:`tbscore.clinical.risk.bmi_warning`), the result's own BMI warning (from the
    DICOM header BMI at calculation time) is left out: one BMI warning, about the BMI
    the interpretation used. Repeated texts appear once.
    """
    interp_w = list(interp.warnings) if interp is not None else []
    own = risk.bmi_warning(_float_or_none(result.metadata.get("bmi")))
    used = risk.bmi_warning(interp.bmi) if interp is not None else None
    out = [w for w in result.warnings if not (used in interp_w and w == own)]
    return list(dict.fromkeys(out + interp_w))


def _float_or_none(value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


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
        Cut-offs (:data:`tbscore.clinical.risk.THRESHOLD_SETS`), default the 2023 update.
    use_metadata : bool
        Fill missing clinical inputs from the DICOM metadata.

    Returns
    -------
    tbscore.clinical.risk.Interpretation

    Raises
    ------
    ReportError
        The result has no L1–L4 value.
    tbscore.clinical.risk.RiskInputError
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
