"""Result objects: per-vertebra values, the L1–L4 value, and their provenance.

Results are frozen dataclasses that serialise to JSON (``to_json`` / ``from_json``)
and CSV rows, and render as an HTML table in notebooks. A result records everything
that produced it: settings, pixel spacing and its source, the lag range in mm, the
method, the tbscore version, the input hashes, the ROI source and the CPT code of the
service (77091 for the technical calculation).
"""

from __future__ import annotations

import html
import json
import math
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tbscore.core.constants import LABELS
from tbscore.core.settings import Settings
from tbscore.errors import InputError

__all__ = ["VertebraResult", "TBSResult", "RESULT_FORMAT", "CSV_COLUMNS"]

RESULT_FORMAT = "tbscore-result/1"


@dataclass(frozen=True)
class VertebraResult:
    """TBS of one vertebra.

    Attributes
    ----------
    label : str
    status : str
        ``"ok"``, ``"excluded"`` (by the user) or ``"invalid"`` (no value could be computed).
    value : float or None
        The index (dimensionless; raw, before any calibration).
    reason : str or None
        Why there is no value.
    r2, slope_se, intercept : float or None
        Fit diagnostics (intercept: ln V at 1 mm).
    n_pixels, n_pairs, n_lags : int
    lags : list of [d_row, d_col]
    lag_distances_mm : list of float
    variogram : list of float
        V at each lag (gray level squared).
    pair_counts : list of int
    roi_confidence : float or None
    calibrated_value : float or None
        The value after calibration, when a calibration was applied.
    """

    label: str
    status: str
    value: float | None = None
    reason: str | None = None
    r2: float | None = None
    slope_se: float | None = None
    intercept: float | None = None
    n_pixels: int = 0
    n_pairs: int = 0
    n_lags: int = 0
    lags: list = field(default_factory=list)
    lag_distances_mm: list = field(default_factory=list)
    variogram: list = field(default_factory=list)
    pair_counts: list = field(default_factory=list)
    roi_confidence: float | None = None
    calibrated_value: float | None = None

    @property
    def valid(self) -> bool:
        return self.status == "ok"


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: tuples to lists, nan/inf to None, numpy scalars to Python.

    The one JSON cleaner (results, calibrations)."""
    if isinstance(obj, dict):
        return {k: json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if hasattr(obj, "item") and callable(obj.item):  # numpy scalar
        return json_safe(obj.item())
    return obj


_clean = json_safe


@dataclass(frozen=True)
class TBSResult:
    """The technical TBS result of one image (CPT 77091).

    Attributes
    ----------
    vertebrae : tuple of VertebraResult
    l1_l4 : float or None
        Mean of the valid vertebrae; ``None`` with fewer than
        ``settings.min_valid_vertebrae``.
    l1_l4_labels : tuple of str
        Vertebrae that contributed to ``l1_l4``.
    l1_l4_reason : str or None
        Why ``l1_l4`` is missing.
    settings : Settings
    pixel_spacing_mm : (float, float)
    spacing_source : str
    lag_range_mm : (float, float)
    method : str
    input : dict
        ``source``, ``file_sha256``, ``pixel_sha256``, ``sop_instance_uid``.
    metadata : dict
        DICOM metadata (see :class:`tbscore.io.DicomMetadata`).
    roi_source : str
    roi_confidence : float or None
    warnings : tuple of str
    tbscore_version : str
    cpt_code : str
        ``"77091"``: technical calculation only.
    calibration : dict or None
        The calibration applied to ``calibrated_*`` values, if any.
    l1_l4_calibrated : float or None
    """

    vertebrae: tuple[VertebraResult, ...]
    l1_l4: float | None
    l1_l4_labels: tuple[str, ...]
    l1_l4_reason: str | None
    settings: Settings
    pixel_spacing_mm: tuple[float, float]
    spacing_source: str
    lag_range_mm: tuple[float, float]
    method: str
    input: dict
    metadata: dict
    roi_source: str
    roi_confidence: float | None = None
    warnings: tuple[str, ...] = ()
    tbscore_version: str = ""
    cpt_code: str = "77091"
    calibration: dict | None = None
    l1_l4_calibrated: float | None = None

    @property
    def status(self) -> str:
        """``"ok"`` when an L1–L4 value exists, else ``"incomplete"``."""
        return "ok" if self.l1_l4 is not None else "incomplete"

    def vertebra(self, label: str) -> VertebraResult:
        for v in self.vertebrae:
            if v.label == label:
                return v
        raise KeyError(label)

    # -- serialisation -------------------------------------------------------------
    def to_dict(self, *, include_phi: bool = True) -> dict[str, Any]:
        """JSON-safe dict. ``include_phi=False`` drops patient name, ID and birth date."""
        d: dict[str, Any] = {"format": RESULT_FORMAT, "status": self.status}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "settings":
                value = value.to_dict()
            elif f.name == "vertebrae":
                value = [asdict(v) for v in value]
            d[f.name] = value
        d["settings_digest"] = self.settings.digest()
        if not include_phi:
            d["metadata"] = {
                k: v
                for k, v in d["metadata"].items()
                if k not in ("patient_name", "patient_id", "birth_date")
            }
        return _clean(d)

    def to_json(
        self, path: str | Path | None = None, *, include_phi: bool = True, indent: int = 2
    ) -> str:
        """Serialise to JSON; also write it to ``path`` when given."""
        text = json.dumps(self.to_dict(include_phi=include_phi), indent=indent) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TBSResult:
        """Rebuild a result written by :meth:`to_dict`.

        Raises
        ------
        tbscore.errors.InputError
            Not a tbscore result document.
        """
        if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
            raise InputError(f"not a {RESULT_FORMAT} document")
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        vnames = {f.name for f in fields(VertebraResult)}
        kw["vertebrae"] = tuple(
            VertebraResult(**{k: v for k, v in item.items() if k in vnames})
            for item in data["vertebrae"]
        )
        kw["settings"] = Settings.from_dict(data["settings"])
        for key in ("l1_l4_labels", "warnings"):
            kw[key] = tuple(kw.get(key) or ())
        for key in ("pixel_spacing_mm", "lag_range_mm"):
            kw[key] = tuple(kw[key])
        return cls(**kw)

    @classmethod
    def from_json(cls, source: str | Path) -> TBSResult:
        """Read a result from a JSON file path or a JSON string."""
        text = str(source)
        if not text.lstrip().startswith("{"):
            text = Path(source).read_text(encoding="utf-8")
        return cls.from_dict(json.loads(text))

    def with_calibration(
        self, calibration: dict, values: dict[str, float | None], l1_l4: float | None
    ) -> TBSResult:
        """Copy with calibrated values attached (used by :mod:`tbscore.calibrate`)."""
        verts = tuple(replace(v, calibrated_value=values.get(v.label)) for v in self.vertebrae)
        return replace(self, vertebrae=verts, calibration=calibration, l1_l4_calibrated=l1_l4)

    # -- tables --------------------------------------------------------------------
    def csv_row(self) -> dict[str, Any]:
        """One flat row (see :data:`CSV_COLUMNS`); no patient identifiers."""
        row: dict[str, Any] = {
            "source": self.input.get("source"),
            "status": self.status,
            "error": self.l1_l4_reason or "",
            "cpt_code": self.cpt_code,
            "l1_l4": self.l1_l4,
            "l1_l4_n": len(self.l1_l4_labels),
            "l1_l4_labels": " ".join(self.l1_l4_labels),
            "l1_l4_calibrated": self.l1_l4_calibrated,
        }
        for label in LABELS:
            try:
                v = self.vertebra(label)
            except KeyError:
                v = VertebraResult(label=label, status="missing", reason="no ROI")
            key = label.lower()
            row[f"{key}"] = v.value
            row[f"{key}_status"] = v.status
            row[f"{key}_reason"] = v.reason or ""
            row[f"{key}_r2"] = v.r2
            row[f"{key}_pixels"] = v.n_pixels
        row.update(
            {
                "row_mm": self.pixel_spacing_mm[0],
                "col_mm": self.pixel_spacing_mm[1],
                "spacing_source": self.spacing_source,
                "lag_min_mm": self.lag_range_mm[0],
                "lag_max_mm": self.lag_range_mm[1],
                "roi_source": self.roi_source,
                "roi_confidence": self.roi_confidence,
                "settings_digest": self.settings.digest(),
                "calibration": (self.calibration or {}).get("name", ""),
                "tbscore_version": self.tbscore_version,
                "file_sha256": self.input.get("file_sha256"),
                "pixel_sha256": self.input.get("pixel_sha256"),
                "sop_instance_uid": self.input.get("sop_instance_uid"),
            }
        )
        return _clean(row)

    def _repr_html_(self) -> str:
        e = html.escape
        rows = []
        for v in self.vertebrae:
            val = "" if v.value is None else f"{v.value:.3f}"
            r2 = "" if v.r2 is None else f"{v.r2:.3f}"
            rows.append(
                f"<tr><td>{e(v.label)}</td><td>{val}</td><td>{e(v.status)}</td>"
                f"<td>{r2}</td><td>{v.n_lags}</td><td>{v.n_pixels}</td>"
                f"<td>{e(v.reason or '')}</td></tr>"
            )
        l14 = "n/a" if self.l1_l4 is None else f"{self.l1_l4:.3f}"
        return (
            f"<div><b>tbscore {e(self.tbscore_version)}</b> — CPT {e(self.cpt_code)} technical "
            f"result for <code>{e(str(self.input.get('source')))}</code><br>"
            f"L1–L4: <b>{l14}</b> ({e(', '.join(self.l1_l4_labels))})"
            f"{' — ' + e(self.l1_l4_reason) if self.l1_l4_reason else ''}<br>"
            f"spacing {self.pixel_spacing_mm[0]:.3f}×{self.pixel_spacing_mm[1]:.3f} mm "
            f"({e(self.spacing_source)}), lags {self.lag_range_mm[0]}–{self.lag_range_mm[1]} mm, "
            f"settings {e(self.settings.digest())}"
            "<table><tr><th>vertebra</th><th>TBS (raw)</th><th>status</th><th>R²</th>"
            "<th>lags</th><th>pixels</th><th>reason</th></tr>" + "".join(rows) + "</table>"
            "<small>Not interchangeable with TBS iNsight values unless calibrated.</small></div>"
        )


#: Columns of :meth:`TBSResult.csv_row`, in order.
CSV_COLUMNS: tuple[str, ...] = tuple(
    [
        "source",
        "status",
        "error",
        "cpt_code",
        "l1_l4",
        "l1_l4_n",
        "l1_l4_labels",
        "l1_l4_calibrated",
    ]
    + [
        f"{lab}{suf}"
        for lab in ("l1", "l2", "l3", "l4")
        for suf in ("", "_status", "_reason", "_r2", "_pixels")
    ]
    + [
        "row_mm",
        "col_mm",
        "spacing_source",
        "lag_min_mm",
        "lag_max_mm",
        "roi_source",
        "roi_confidence",
        "settings_digest",
        "calibration",
        "tbscore_version",
        "file_sha256",
        "pixel_sha256",
        "sop_instance_uid",
    ]
)
