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
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from tbscore.core.constants import LABELS
from tbscore.core.settings import Settings
from tbscore.errors import ResultFormatError, SettingsError

__all__ = [
    "VertebraResult",
    "TBSResult",
    "RESULT_FORMAT",
    "CSV_COLUMNS",
    "UNCERTAINTY_COLUMNS",
    "format_value_ci",
    "format_snr",
]

RESULT_FORMAT = "tbscore-result/1"


def format_value_ci(
    value: float | None,
    ci95: tuple[float, float] | None,
    *,
    digits: int = 3,
    dash: str = "\u2013",
) -> str:
    """A value with its 95 % interval, the one wording of every display.

    Parameters
    ----------
    value : float or None
        The index (dimensionless).
    ci95 : (float, float) or None
        Its 95 % interval; omitted from the text when None.
    digits : int
        Decimals.
    dash : str
        Range separator (an en dash; ``"-"`` for plain-ASCII terminals).

    Returns
    -------
    str
        ``"1.234 (95 % CI 1.201\u20131.267)"``, ``"1.234"`` without an interval, ``"n/a"``
        without a value.
    """
    if value is None or not math.isfinite(value):
        return "n/a"
    text = f"{value:.{digits}f}"
    if ci95 is not None and all(math.isfinite(x) for x in ci95):
        text += f" (95 % CI {ci95[0]:.{digits}f}{dash}{ci95[1]:.{digits}f})"
    return text


def format_snr(snr: float | None, has_value: bool = True) -> str:
    """The texture-to-noise ratio as shown next to a value (``"no noise"`` when None)."""
    if not has_value:
        return ""
    if snr is None or not math.isfinite(snr):
        return "no noise"
    return f"{snr:.2g}"


#: Identifying metadata keys dropped by ``to_dict(include_phi=False)`` (also used by
#: ``tbscore.io.load.DicomMetadata.to_dict``).
PHI_METADATA_KEYS: tuple[str, ...] = (
    "patient_name",
    "patient_id",
    "birth_date",
    "accession_number",
    "referring_physician",
    "operators_name",
)


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
    se : float or None
        Standard error of ``value`` (analytic variance of the variogram, delta method;
        :mod:`tbscore.core.uncertainty`).
    ci95 : (float, float) or None
        95 % interval ``value -/+ 1.96 se`` (raw index scale); for ``"nugget"`` the
        profile interval of the exponent (asymmetric, contains ``value``;
        :func:`tbscore.core.uncertainty.profile_interval`).
    snr : float or None
        Texture-to-noise ratio of the fitted noise model (texture variogram at the
        shortest lag over the white-noise variogram); ``None`` when no noise is detected
        (or no noise model fits); below 3 the OLS index is lowered by noise by > 15 %.
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
    se: float | None = None
    ci95: tuple[float, float] | None = None
    snr: float | None = None

    @property
    def valid(self) -> bool:
        return self.status == "ok"

    def __repr__(self) -> str:
        if self.value is None:
            return f"VertebraResult({self.label}: {self.status}, {self.reason or 'no value'})"
        extra = "" if self.status == "ok" else f", {self.status}"
        return (
            f"VertebraResult({self.label}: {format_value_ci(self.value, self.ci95)}, "
            f"SNR {format_snr(self.snr)}{extra})"
        )


_PLAIN = frozenset({int, str, bool, type(None)})  # leaves json_safe returns as they are
_FLOAT = frozenset({float})


def json_safe(obj: Any) -> Any:
    """JSON-safe copy: tuples to lists, nan/inf to None, numpy scalars to Python.

    The one JSON cleaner (results, calibrations)."""
    t = type(obj)
    if t is str or t is int or t is bool or obj is None:  # the common leaves, fast
        return obj
    if t is float:
        return obj if math.isfinite(obj) else None
    if t is list or t is tuple:  # lists of plain numbers (the bulk of a result): copied
        kinds = set(map(type, obj))
        if kinds <= _PLAIN or (kinds == _FLOAT and all(map(math.isfinite, obj))):
            return list(obj)
        return [json_safe(v) for v in obj]
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


class _NotPlain(Exception):
    """A value :func:`dumps_indented` leaves to :func:`json.dumps`."""


_enc = json.encoder.encode_basestring_ascii
_isfinite = math.isfinite


def _encode_into(o: Any, level: int, out: list[str], ind: str, allow_nan: bool = True) -> None:
    enc = _enc
    t = type(o)
    if t is list:  # the bulk of a result: lists of plain floats or ints, joined at once
        kinds = set(map(type, o))
        if kinds == {float} and all(map(_isfinite, o)):
            nl = "\n" + ind * (level + 1)
            out.append("[" + nl + ("," + nl).join(map(float.__repr__, o)))
            out.append("\n" + ind * level + "]")
            return
        if kinds == {int}:
            nl = "\n" + ind * (level + 1)
            out.append("[" + nl + ("," + nl).join(map(int.__repr__, o)))
            out.append("\n" + ind * level + "]")
            return
        if kinds == {list} and all(x and set(map(type, x)) == {int} for x in o):
            # lists of int lists (the lag vectors), each joined at once
            nl = "\n" + ind * (level + 1)
            nl2 = "\n" + ind * (level + 2)
            sep2 = "," + nl2
            inner = ["[" + nl2 + sep2.join(map(int.__repr__, x)) + nl + "]" for x in o]
            out.append("[" + nl + ("," + nl).join(inner) + "\n" + ind * level + "]")
            return
    if isinstance(o, str):
        out.append(enc(o))
    elif o is None:
        out.append("null")
    elif o is True:
        out.append("true")
    elif o is False:
        out.append("false")
    elif isinstance(o, int):
        out.append(int.__repr__(o))
    elif isinstance(o, float):
        if o != o or o in (math.inf, -math.inf):
            if not allow_nan:
                raise _NotPlain  # json.dumps raises its ValueError
            out.append("NaN" if o != o else ("Infinity" if o > 0 else "-Infinity"))
        else:
            out.append(float.__repr__(o))
    elif isinstance(o, list | tuple):
        if not o:
            out.append("[]")
            return
        nl = "\n" + ind * (level + 1)
        out.append("[" + nl)
        first = True
        for v in o:
            if not first:
                out.append("," + nl)
            first = False
            _encode_into(v, level + 1, out, ind, allow_nan)
        out.append("\n" + ind * level + "]")
    elif isinstance(o, dict):
        if not o:
            out.append("{}")
            return
        nl = "\n" + ind * (level + 1)
        out.append("{" + nl)
        first = True
        for k, v in o.items():
            if not isinstance(k, str):
                raise _NotPlain
            if not first:
                out.append("," + nl)
            first = False
            out.append(enc(k))
            out.append(": ")
            tv = type(v)  # plain leaves inline (most values of a result), the rest recursed
            if tv is str:
                out.append(enc(v))
            elif v is None:
                out.append("null")
            elif tv is float and _isfinite(v):
                out.append(float.__repr__(v))
            elif tv is int:
                out.append(int.__repr__(v))
            else:
                _encode_into(v, level + 1, out, ind, allow_nan)
        out.append("\n" + ind * level + "}")
    else:
        raise _NotPlain


def dumps_indented(obj: Any, indent: int | str | None = 2, **kwargs: Any) -> str:
    """``json.dumps(obj, indent=indent, **kwargs)``, the same text, without the
    pure-Python encoder's generator chain that ``json`` uses whenever ``indent`` is given.

    For plain JSON trees (dicts with str keys, lists, tuples, str, int, float, bool,
    None); anything else (and ``indent=None``, and keyword arguments other than
    ``allow_nan`` and ``default``) goes to :func:`json.dumps` itself, which also raises
    its errors (a non-finite float with ``allow_nan=False``) and calls ``default``.
    """
    if indent is None or not kwargs.keys() <= {"allow_nan", "default"}:
        return json.dumps(obj, indent=indent, **kwargs)
    ind = " " * indent if isinstance(indent, int) else str(indent)
    out: list[str] = []
    try:
        _encode_into(obj, 0, out, ind, kwargs.get("allow_nan", True))
    except (_NotPlain, RecursionError):
        return json.dumps(obj, indent=indent, **kwargs)
    return "".join(out)


#: Largest magnitude accepted for an index value read from a result file (the index is a
#: slope of order 1; 1e308 would overflow the rounding of reports).
_MAX_ABS_VALUE = 1e3


def _bad(where: str, what: str, value: Any) -> ResultFormatError:
    text = repr(value)
    return ResultFormatError(f"{where} must be {what}, got {text[:40]}")


def _number(v: Any, where: str, *, optional: bool = True, bound: float | None = None) -> None:
    if v is None and optional:
        return
    ok = isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    if not ok or (bound is not None and abs(v) > bound):
        what = "a finite number" + (f" within +-{bound:g}" if bound is not None else "")
        raise _bad(where, what + (" or null" if optional else ""), v)


def _strings(v: Any, where: str) -> None:
    if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
        raise _bad(where, "a list of strings", v)


def _check_result_document(data: dict[str, Any]) -> None:
    """Types and ranges of every field :meth:`TBSResult.from_dict` uses."""
    for key in ("vertebrae", "settings", "pixel_spacing_mm", "lag_range_mm", "input"):
        if key not in data:
            raise ResultFormatError(f"result lacks {key!r}")
    verts = data["vertebrae"]
    if not isinstance(verts, list) or not all(isinstance(v, dict) for v in verts):
        raise _bad("vertebrae", "a list of objects", verts)
    for i, v in enumerate(verts):
        where = f"vertebrae[{i}]"
        if not isinstance(v.get("label"), str) or not isinstance(v.get("status"), str):
            raise ResultFormatError(f"{where} needs a string 'label' and 'status'")
        for key in ("value", "calibrated_value"):
            _number(v.get(key), f"{where}.{key}", bound=_MAX_ABS_VALUE)
        for key in ("r2", "slope_se", "intercept", "roi_confidence"):
            _number(v.get(key), f"{where}.{key}")
        for key in ("n_pixels", "n_pairs", "n_lags"):
            n = v.get(key, 0)
            if not isinstance(n, int) or isinstance(n, bool) or n < 0:
                raise _bad(f"{where}.{key}", "an integer >= 0", n)
        for key in ("lags", "lag_distances_mm", "variogram", "pair_counts"):
            if not isinstance(v.get(key, []), list):
                raise _bad(f"{where}.{key}", "a list", v.get(key))
        if v.get("reason") is not None and not isinstance(v["reason"], str):
            raise _bad(f"{where}.reason", "a string or null", v["reason"])
    for key in ("l1_l4", "l1_l4_calibrated"):
        _number(data.get(key), key, bound=_MAX_ABS_VALUE)
    for key in ("l1_l4_labels", "warnings"):
        if data.get(key) is not None:
            _strings(data[key], key)
    for key in ("pixel_spacing_mm", "lag_range_mm"):
        pair = data[key]
        if not isinstance(pair, list) or len(pair) != 2:
            raise _bad(key, "a list of two numbers", pair)
        for x in pair:
            _number(x, key, optional=False)
    for key in ("input", "metadata"):
        if not isinstance(data.get(key, {}), dict):
            raise _bad(key, "an object", data.get(key))
    for key in ("source", "file_sha256", "pixel_sha256", "sop_instance_uid"):
        value = data["input"].get(key)
        if value is not None and not isinstance(value, str):
            raise _bad(f"input.{key}", "a string or null", value)
    meta = data.get("metadata") or {}
    for key in ("age_years", "height_m", "weight_kg", "bmi"):
        _number(meta.get(key), f"metadata.{key}")
    for key, value in meta.items():
        if key not in ("age_years", "height_m", "weight_kg", "bmi", "bits_stored"):
            if value is not None and not isinstance(value, str):
                raise _bad(f"metadata.{key}", "a string or null", value)
    for key in ("spacing_source", "method", "roi_source", "tbscore_version", "cpt_code"):
        if key in data and not isinstance(data[key], str):
            raise _bad(key, "a string", data[key])
    for key in ("l1_l4_reason",):
        if data.get(key) is not None and not isinstance(data[key], str):
            raise _bad(key, "a string or null", data[key])
    _number(data.get("roi_confidence"), "roi_confidence")
    if data.get("calibration") is not None and not isinstance(data["calibration"], dict):
        raise _bad("calibration", "an object or null", data["calibration"])


_FIELD_NAMES: dict[type, tuple[str, ...]] = {}


def _field_names(cls: type) -> tuple[str, ...]:
    """The field names of a data class, in order (``dataclasses.fields``, once per class)."""
    names = _FIELD_NAMES.get(cls)
    if names is None:
        names = _FIELD_NAMES[cls] = tuple(f.name for f in fields(cls))
    return names


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
    l1_l4_se : float or None
        Standard error of ``l1_l4`` (vertebrae treated as independent).
    l1_l4_ci95 : (float, float) or None
        95 % interval of ``l1_l4`` (raw index scale).
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
    l1_l4_se: float | None = None
    l1_l4_ci95: tuple[float, float] | None = None

    @property
    def status(self) -> str:
        """``"ok"`` when an L1–L4 value exists, else ``"incomplete"``."""
        return "ok" if self.l1_l4 is not None else "incomplete"

    def __repr__(self) -> str:
        per = "; ".join(
            f"{v.label} {format_value_ci(v.value, v.ci95)}"
            if v.value is not None
            else f"{v.label} {v.status}"
            for v in self.vertebrae
        )
        snrs = [v.snr for v in self.vertebrae if v.value is not None]
        low = min((x for x in snrs if x is not None), default=None)
        return (
            f"TBSResult(L1\u2013L4 {format_value_ci(self.l1_l4, self.l1_l4_ci95)}, "
            f"estimator {self.settings.estimator}, lowest SNR {format_snr(low, bool(snrs))}; "
            f"{per}; source {self.input.get('source')!s}, {len(self.warnings)} warning(s))"
        )

    def vertebra(self, label: str) -> VertebraResult:
        for v in self.vertebrae:
            if v.label == label:
                return v
        raise KeyError(label)

    # -- serialisation -------------------------------------------------------------
    def to_dict(self, *, include_phi: bool = True) -> dict[str, Any]:
        """JSON-safe dict. ``include_phi=False`` drops patient name, ID and birth date."""
        d: dict[str, Any] = {"format": RESULT_FORMAT, "status": self.status}
        vnames = _field_names(VertebraResult)
        for name in _field_names(type(self)):
            value = getattr(self, name)
            if name == "settings":
                value = value.to_dict()
            elif name == "vertebrae":
                value = [{g: getattr(v, g) for g in vnames} for v in value]
            d[name] = value
        d["settings_digest"] = self.settings.digest()
        if not include_phi:
            d["metadata"] = {k: v for k, v in d["metadata"].items() if k not in PHI_METADATA_KEYS}
        return _clean(d)

    def to_json(
        self, path: str | Path | None = None, *, include_phi: bool = True, indent: int = 2
    ) -> str:
        """Serialise to JSON; also write it to ``path`` when given."""
        text = dumps_indented(self.to_dict(include_phi=include_phi), indent) + "\n"
        if path is not None:
            Path(path).write_text(text, encoding="utf-8")
        return text

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TBSResult:
        """Rebuild a result written by :meth:`to_dict`.

        Raises
        ------
        tbscore.errors.ResultFormatError
            Not a tbscore result document, or a field of the wrong type or range (also a
            ``ValueError``).
        """
        if not isinstance(data, dict) or data.get("format") != RESULT_FORMAT:
            raise ResultFormatError(f"not a {RESULT_FORMAT} document")
        _check_result_document(data)
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        vnames = {f.name for f in fields(VertebraResult)}
        kw["vertebrae"] = tuple(
            VertebraResult(
                **{
                    k: (tuple(v) if k == "ci95" and v is not None else v)
                    for k, v in item.items()
                    if k in vnames
                }
            )
            for item in data["vertebrae"]
        )
        if kw.get("l1_l4_ci95") is not None:
            kw["l1_l4_ci95"] = tuple(kw["l1_l4_ci95"])
        try:
            kw["settings"] = Settings.from_dict(data["settings"])
        except SettingsError as exc:
            raise ResultFormatError(f"settings: {exc.reason}") from exc
        for key in ("l1_l4_labels", "warnings"):
            kw[key] = tuple(kw.get(key) or ())
        for key in ("pixel_spacing_mm", "lag_range_mm"):
            kw[key] = tuple(kw[key])
        return cls(**kw)

    @classmethod
    def from_json(cls, source: str | Path) -> TBSResult:
        """Read a result from a JSON file path or a JSON string.

        Raises
        ------
        ResultFormatError
            The file cannot be read, is not JSON, or is not a ``tbscore-result/1``
            document (the error names the file).
        """
        text = str(source)
        name: str | None = None
        if not text.lstrip().startswith("{"):
            name = Path(source).name
            try:
                text = Path(source).read_text(encoding="utf-8")
            except UnicodeDecodeError as exc:
                why = "the result JSON cannot be read (not UTF-8 text)"
                raise ResultFormatError(why, name) from exc
            except OSError as exc:
                why = f"the result JSON cannot be read ({exc.__class__.__name__})"
                raise ResultFormatError(why, name) from exc
        try:
            data = json.loads(text)
        except ValueError as exc:
            why = f"the result JSON cannot be read ({type(exc).__name__}: {exc})"
            raise ResultFormatError(why, name) from exc
        if not isinstance(data, dict):
            raise ResultFormatError("a result file holds one JSON object", name)
        try:
            return cls.from_dict(data)
        except ResultFormatError as exc:
            if name is None or exc.source:
                raise
            raise ResultFormatError(exc.reason, name) from exc

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
        row.update(self._uncertainty_row())
        return _clean(row)

    def _uncertainty_row(self) -> dict[str, Any]:
        """Estimator, standard errors, 95 % intervals and SNR (see UNCERTAINTY_COLUMNS)."""
        lo, hi = self.l1_l4_ci95 or (None, None)
        row: dict[str, Any] = {
            "estimator": self.settings.estimator,
            "l1_l4_se": self.l1_l4_se,
            "l1_l4_ci95_lo": lo,
            "l1_l4_ci95_hi": hi,
        }
        for label in ("L1", "L2", "L3", "L4"):
            try:
                v = self.vertebra(label)
            except KeyError:
                v = VertebraResult(label=label, status="missing")
            key = label.lower()
            vlo, vhi = v.ci95 or (None, None)
            row[f"{key}_se"] = v.se
            row[f"{key}_ci95_lo"] = vlo
            row[f"{key}_ci95_hi"] = vhi
            row[f"{key}_snr"] = v.snr
        return row

    def _repr_html_(self) -> str:
        e = html.escape
        rows = []
        for v in self.vertebrae:
            val = "" if v.value is None else f"{v.value:.3f}"
            r2 = "" if v.r2 is None else f"{v.r2:.3f}"
            ci = "" if v.ci95 is None else f"{v.ci95[0]:.3f}–{v.ci95[1]:.3f}"
            snr = format_snr(v.snr, v.value is not None)
            rows.append(
                f"<tr><td>{e(v.label)}</td><td>{val}</td><td>{ci}</td><td>{snr}</td>"
                f"<td>{e(v.status)}</td>"
                f"<td>{r2}</td><td>{v.n_lags}</td><td>{v.n_pixels}</td>"
                f"<td>{e(v.reason or '')}</td></tr>"
            )
        l14 = format_value_ci(self.l1_l4, self.l1_l4_ci95)
        return (
            f"<div><b>tbscore {e(self.tbscore_version)}</b> — CPT {e(self.cpt_code)} technical "
            f"result for <code>{e(str(self.input.get('source')))}</code><br>"
            f"L1–L4: <b>{l14}</b> ({e(', '.join(self.l1_l4_labels))})"
            f"{' — ' + e(self.l1_l4_reason) if self.l1_l4_reason else ''}<br>"
            f"spacing {self.pixel_spacing_mm[0]:.3f}×{self.pixel_spacing_mm[1]:.3f} mm "
            f"({e(self.spacing_source)}), lags {self.lag_range_mm[0]}–{self.lag_range_mm[1]} mm, "
            f"settings {e(self.settings.digest())}, estimator {e(self.settings.estimator)}"
            "<table><tr><th>vertebra</th><th>TBS (raw)</th><th>95 % CI</th><th>SNR</th>"
            "<th>status</th><th>R²</th>"
            "<th>lags</th><th>pixels</th><th>reason</th></tr>"
            + "".join(rows)
            + "</table>"
            + "".join(f"<div>warning: {e(w)}</div>" for w in self.warnings)
            + "<small>Not interchangeable with TBS iNsight values unless calibrated.</small></div>"
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

#: Columns added by the uncertainty of every value (issue 15), appended to
#: :data:`CSV_COLUMNS`; all but ``estimator`` are floats.
UNCERTAINTY_COLUMNS: tuple[str, ...] = (
    "estimator",
    "l1_l4_se",
    "l1_l4_ci95_lo",
    "l1_l4_ci95_hi",
) + tuple(
    f"{lab}{suf}"
    for lab in ("l1", "l2", "l3", "l4")
    for suf in ("_se", "_ci95_lo", "_ci95_hi", "_snr")
)
CSV_COLUMNS = CSV_COLUMNS + UNCERTAINTY_COLUMNS
