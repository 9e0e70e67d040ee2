"""BMD and T-score of L1–L4 from a DXA vendor's Structured Report.

DXA scanners (GE Lunar, Hologic, ...) export their bone-density results as a DICOM SR
(Comprehensive or Enhanced SR) beside the image. There is no single template they all
use, so this reader walks the content tree and takes the numeric items (``NUM``) whose
concept name is a bone mineral density (``BMD``, "Bone Mineral Density", unit
``g/cm2``) or a T-score, for the region L1–L4: the region is the name of the item, of a
container above it, or a ``TEXT``/``CODE`` sibling naming the region (``"L1-L4"``,
``"L1 - L4"``, ``"L1–L4"``). Items for other regions (single vertebrae, hip) are
ignored. Nothing is guessed: a value whose region is not L1–L4 is not taken.

The result is the ``bone_density`` input of a report (``bmd_g_cm2``, ``t_score``,
``source``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from tbscore.errors import InputError

__all__ = ["read_dxa_sr", "find_dxa_sr", "is_dxa_sr"]

_L1_L4 = re.compile(r"\bL\s*1\s*(?:-|–|—|to|\.\.)\s*L?\s*4\b", re.IGNORECASE)
_BMD = re.compile(r"\bBMD\b|bone\s+mineral\s+density|bone\s+density", re.IGNORECASE)
_T = re.compile(r"\bT[\s-]?score\b", re.IGNORECASE)
_Z = re.compile(r"\bZ[\s-]?score\b", re.IGNORECASE)
_SR_MODALITY = "SR"


def _meaning(item: Any, keyword: str = "ConceptNameCodeSequence") -> str:
    seq = getattr(item, keyword, None)
    if not seq:
        return ""
    return str(getattr(seq[0], "CodeMeaning", "") or "")


def _text_of(item: Any) -> str:
    vt = str(getattr(item, "ValueType", "") or "")
    if vt == "TEXT":
        return str(getattr(item, "TextValue", "") or "")
    if vt == "CODE":
        return _meaning(item, "ConceptCodeSequence")
    return ""


def _num(item: Any) -> tuple[float, str] | None:
    seq = getattr(item, "MeasuredValueSequence", None)
    if not seq:
        return None
    mv = seq[0]
    try:
        value = float(mv.NumericValue)
    except (AttributeError, TypeError, ValueError):
        return None
    unit = ""
    units = getattr(mv, "MeasurementUnitsCodeSequence", None)
    if units:
        unit = str(getattr(units[0], "CodeValue", "") or "")
    return value, unit


def _walk(items: Any, region: bool, found: dict[str, float]) -> None:
    items = list(items or [])
    sibling_region = any(_L1_L4.search(_text_of(it) or "") for it in items)
    for it in items:
        name = _meaning(it)
        here = region or sibling_region or bool(_L1_L4.search(name))
        vt = str(getattr(it, "ValueType", "") or "")
        if vt == "NUM" and here:
            num = _num(it)
            if num is not None and not _Z.search(name):
                value, unit = num
                if _T.search(name):
                    found.setdefault("t_score", value)
                elif _BMD.search(name) and unit.replace("^", "").lower() in ("g/cm2", ""):
                    found.setdefault("bmd_g_cm2", value)
        if getattr(it, "ContentSequence", None):
            _walk(it.ContentSequence, here and vt == "CONTAINER" or region, found)


def is_dxa_sr(ds: Any) -> bool:
    """Whether a dataset is an SR that is not one of tbscore's own reports."""
    if str(getattr(ds, "Modality", "")) != _SR_MODALITY:
        return False
    return "tbscore" not in str(getattr(ds, "Manufacturer", "") or "").lower()


def read_dxa_sr(path: str | Path) -> dict[str, Any] | None:
    """BMD (g/cm²) and T-score of L1–L4 from a vendor DXA SR.

    Parameters
    ----------
    path : path
        The SR file.

    Returns
    -------
    dict or None
        ``{"bmd_g_cm2": float | None, "t_score": float | None, "source": str,
        "study_instance_uid": str}``, or None when the SR has neither value for L1–L4.

    Raises
    ------
    InputError
        Not a readable DICOM SR (naming the file).
    """
    from tbscore.errors import DicomReadError
    from tbscore.io.sniff import read_dicom

    try:
        ds = read_dicom(path)
    except DicomReadError as exc:
        raise InputError(exc.reason, str(path)) from exc
    if str(getattr(ds, "Modality", "")) != _SR_MODALITY:
        raise InputError("not a DICOM Structured Report (Modality is not SR)", str(path))
    found: dict[str, float] = {}
    root_region = bool(_L1_L4.search(_meaning(ds)))
    _walk(getattr(ds, "ContentSequence", None), root_region, found)
    if not found:
        return None
    vendor = " ".join(
        str(getattr(ds, k, "") or "") for k in ("Manufacturer", "ManufacturerModelName")
    ).strip()
    return {
        "bmd_g_cm2": found.get("bmd_g_cm2"),
        "t_score": found.get("t_score"),
        "source": f"vendor DXA SR ({vendor or 'unknown vendor'}, {Path(path).name})",
        "study_instance_uid": str(getattr(ds, "StudyInstanceUID", "") or ""),
    }


def find_dxa_sr(folder: str | Path, study_instance_uid: str | None) -> Path | None:
    """The vendor DXA SR of a study in ``folder`` (same StudyInstanceUID), if any.

    Files that are not DICOM, not SR, or tbscore's own SRs are skipped; with no
    ``study_instance_uid`` nothing is matched (an SR of another study is never taken).
    """
    from tbscore.errors import DicomReadError
    from tbscore.io.sniff import is_dicom, read_dicom

    if not study_instance_uid:
        return None
    for p in sorted(Path(folder).iterdir()):
        if not p.is_file() or not is_dicom(p):
            continue
        try:
            ds = read_dicom(p, stop_before_pixels=True)
        except DicomReadError:
            continue
        if is_dxa_sr(ds) and str(getattr(ds, "StudyInstanceUID", "")) == study_instance_uid:
            return p
    return None
