"""Result objects: per-vertebra values, the L1–L4 value, and their provenance.

Results are frozen dataclasses that serialise to JSON (``to_json`` / ``from_json``)
and CSV rows, and render as an HTML table in notebooks. A result records everything
that produced it: settings, pixel spacing and its source, the lag range in mm, the
method, the tbscore version, the input hashes, the ROI source and the CPT code of the
service (77091 for the technical calculation).
"""

from __future__ import annotations

import functools
import html
import itertools
import json
import math
from collections.abc import Callable
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
    if isinstance(obj, dict):  # plain leaves kept in place, the rest cleaned
        plain, isfinite = _PLAIN, math.isfinite
        return {
            k: v if (tv := type(v)) in plain or (tv is float and isfinite(v)) else json_safe(v)
            for k, v in obj.items()
        }
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


#: Exact leaf types the C encoder writes as ``json.dumps`` with ``indent`` writes them
#: (``float.__repr__``, ``int.__repr__``, ``true`` / ``false`` / ``null``, ASCII strings).
_LEAF = frozenset({str, int, float, bool, type(None)})
_SEQ = frozenset({list, tuple})
_INT = frozenset({int})
_STR = frozenset({str})
#: Item separator of the C encoder: an encoded (ASCII-escaped) string never holds a
#: line feed, so in its output every ``"\n"`` is one of these separators.
_SEP = ",\n"
_chain = itertools.chain.from_iterable


@functools.cache
def _leaf_encoder(allow_nan: bool) -> Callable[[Any], str]:
    """The C encoder ``json.dumps`` uses when no ``indent`` is given (the one
    :meth:`json.JSONEncoder.iterencode` builds), with the separators ``",\\n"`` and
    ``": "``; returns the text of one container of leaves."""
    c_make_encoder = json.encoder.c_make_encoder
    if c_make_encoder is None:  # pragma: no cover - CPython always has _json
        raise _NotPlain
    try:  # the arguments JSONEncoder.iterencode passes (CPython 3.8-3.14)
        enc = c_make_encoder(
            None, None, json.encoder.encode_basestring_ascii, None, ": ", _SEP, False, False,
            allow_nan,
        )  # fmt: skip
    except TypeError:  # pragma: no cover - another signature: plain json.dumps instead
        raise _NotPlain from None
    return lambda o: enc(o, 0)[0]


def _indented(
    o: Any,
    level: int,
    ind: str,
    leaf: Callable[[Any], str],
    memo: dict[Any, str],
    safe: bool = False,
) -> str:
    """The text ``json.dumps(o, indent=ind)`` writes for the container ``o`` at nesting
    ``level``: each run of leaves written by the C encoder (``leaf``) in one call, its
    separators re-indented, the containers within recursed. ``memo``: the text of lists
    of numbers already written in this call (the lag distances, the same for
    every vertebra), by value and ``level``: equal ints are written alike,
    equal floats too except 0.0 and -0.0 (lists holding a zero get no key; nan equals
    only itself, written alike), and ints and floats are kept apart.

    ``safe``: the text of ``json_safe(o)`` instead (``leaf`` then refuses non-finite
    floats): a container the C encoder refuses (a nan, a numpy scalar) is cleaned by
    :func:`json_safe` and written again; the others are already what it would return.
    """
    try:
        t = type(o)
        close = "\n" + ind * level
        nl = close + ind
        if t is list or t is tuple:
            if not o:
                return "[]"
            kinds = set(map(type, o))
            if kinds <= _LEAF:  # a list of numbers or strings: one call
                if kinds == _INT:
                    key: Any = (tuple(o), "int", level)
                elif kinds == _FLOAT and 0 not in o:
                    key = (tuple(o), "float", level)
                else:
                    key = None
                if key is not None:
                    text = memo.get(key)
                    if text is not None:
                        return text
                text = "[" + nl + leaf(o)[1:-1].replace("\n", nl) + close + "]"
                if key is not None:
                    memo[key] = text
                return text
            if kinds <= _SEQ and all(o) and set(map(type, _chain(o))) <= _LEAF:
                # non-empty lists of leaves (the lag vectors): one call; an item ends with
                # a digit, a letter or a quote, so "],\n[" only separates the inner lists
                # (marked by NUL, which an encoded string never holds) and the other line
                # feeds separate the items of one inner list
                nl2 = nl + ind
                inner = leaf(o)[2:-2].replace("],\n[", "\0").replace("\n", nl2)
                inner = inner.replace("\0", nl + "]," + nl + "[" + nl2)
                return "[" + nl + "[" + nl2 + inner + nl + "]" + close + "]"
            items = leaf([v if type(v) in _LEAF else None for v in o])[1:-1].split(_SEP)
            for i, v in enumerate(o):
                if type(v) not in _LEAF:
                    items[i] = _indented(v, level + 1, ind, leaf, memo, safe)
            return "[" + nl + ("," + nl).join(items) + close + "]"
        if t is dict:
            if not o:
                return "{}"
            if set(map(type, o)) != _STR:
                raise _NotPlain  # json.dumps converts or refuses other keys
            if set(map(type, o.values())) <= _LEAF:  # a dict of leaves: one call
                return "{" + nl + leaf(o)[1:-1].replace("\n", nl) + close + "}"
            # the containers stood in for by null, written after: '"key": null' -> '"key": ...'
            flat = dict(o)
            nested = []
            for i, (k, v) in enumerate(o.items()):
                if type(v) not in _LEAF:
                    nested.append((i, v))
                    flat[k] = None
            items = leaf(flat)[1:-1].split(_SEP)
            for i, v in nested:
                items[i] = items[i][:-4] + _indented(v, level + 1, ind, leaf, memo, safe)
            return "{" + nl + ("," + nl).join(items) + close + "}"
        raise _NotPlain
    except (_NotPlain, ValueError):
        if not safe:
            raise
        clean = json_safe(o)
        if type(clean) in _LEAF:
            return leaf([clean])[1:-1]
        return _indented(clean, level, ind, leaf, memo, False)


def dumps_indented(obj: Any, indent: int | str | None = 2, **kwargs: Any) -> str:
    """``json.dumps(obj, indent=indent, **kwargs)``, the same text, without the
    pure-Python encoder's generator chain that ``json`` uses whenever ``indent`` is given.

    For plain JSON trees (dicts with str keys, lists, tuples, str, int, float, bool,
    None; exact types): the leaves of each container are written by the C encoder that
    ``json.dumps`` uses without ``indent`` (same ``repr`` of numbers, same string
    escapes), in one call per container, and the indentation put between them.
    Anything else (and ``indent=None``, and keyword arguments other than ``allow_nan``
    and ``default``) goes to :func:`json.dumps` itself, which also raises its errors
    (a non-finite float with ``allow_nan=False``) and calls ``default``.
    :func:`dumps_indented_reference` is that call.
    """
    if indent is None or not kwargs.keys() <= {"allow_nan", "default"}:
        return json.dumps(obj, indent=indent, **kwargs)
    ind = " " * indent if isinstance(indent, int) else str(indent)
    try:
        if type(obj) in _LEAF:
            return _leaf_encoder(kwargs.get("allow_nan", True))([obj])[1:-1]
        return _indented(obj, 0, ind, _leaf_encoder(kwargs.get("allow_nan", True)), {})
    except (_NotPlain, ValueError, RecursionError):
        return json.dumps(obj, indent=indent, **kwargs)


def dumps_json_safe(obj: Any, indent: int | str = 2) -> str:
    """``dumps_indented(json_safe(obj), indent)``, the same text, without the copy
    :func:`json_safe` makes: the tree is written as it is, and only a container holding
    what ``json_safe`` changes (a non-finite float, a numpy scalar) is cleaned first.
    The result JSON (:meth:`TBSResult.to_json`)."""
    try:
        if type(obj) in _LEAF or type(obj) not in (dict, list, tuple):
            raise _NotPlain
        ind = " " * indent if isinstance(indent, int) else str(indent)
        return _indented(obj, 0, ind, _leaf_encoder(False), {}, True)
    except (_NotPlain, ValueError, RecursionError):
        return dumps_indented(json_safe(obj), indent)


def dumps_indented_reference(obj: Any, indent: int | str | None = 2, **kwargs: Any) -> str:
    """``json.dumps(obj, indent=indent, **kwargs)``: what :func:`dumps_indented` must
    give, the reference of its property tests."""
    return json.dumps(obj, indent=indent, **kwargs)


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


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    """The field names of a data class, in order (``dataclasses.fields``, once per class)."""
    return tuple(f.name for f in fields(cls))


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
        return _clean(self._document(include_phi))

    def _document(self, include_phi: bool) -> dict[str, Any]:
        """:meth:`to_dict` before :func:`json_safe` (its values as the result holds them)."""
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
        return d

    def to_json(
        self, path: str | Path | None = None, *, include_phi: bool = True, indent: int = 2
    ) -> str:
        """Serialise to JSON; also write it to ``path`` when given."""
        text = dumps_json_safe(self._document(include_phi), indent) + "\n"  # = to_dict's text
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
