"""Calibration of tbscore values against a reference TBS scale.

A calibration is a linear map ``reference = a + b * tbscore`` fitted on paired data
(the same scans measured by tbscore and by the reference, e.g. TBS iNsight). Two
fits are offered:

* ``"ols"``: ordinary least squares of the reference on tbscore, with t-based
  confidence intervals for ``a`` and ``b``;
* ``"deming"``: Deming regression, which allows for measurement error in both
  variables. ``error_ratio`` (lambda) is the ratio of the error variances,
  ``var(error of reference) / var(error of tbscore)`` on the scales of the data
  (default 1: orthogonal regression). Confidence intervals by the jackknife (SE
  from leave-one-out pseudo-values, estimate ± t(n - 2)·SE; Linnet 1990) or a
  percentile bootstrap (``n_boot`` resamples, fixed ``seed``).

Each calibration also records the residual SD (of the reference about the fitted
line), ``n``, Pearson's ``R``, the Bland–Altman statistics of the calibrated values
against the reference (and of the raw values), the tbscore range it was fitted on,
and the tbscore version and settings digest the values were computed with, so that
:func:`apply_calibration` can warn when a result was computed differently.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tbscore._version import __version__
from tbscore.core.constants import CALIBRATION_METHODS
from tbscore.core.result import json_safe as _clean
from tbscore.errors import CalibrationError

CALIBRATION_FORMAT = "tbscore-calibration/1"
METHODS: tuple[str, ...] = CALIBRATION_METHODS


# --------------------------------------------------------------------------- fits


def _t(level: float, df: int) -> float:
    from scipy import stats

    return float(stats.t.ppf(0.5 + level / 2.0, df))


def _check_xy(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(x, dtype=float).ravel()
    y = np.asarray(y, dtype=float).ravel()
    if x.shape != y.shape:
        raise CalibrationError(f"x and y differ in length ({x.size} vs {y.size})")
    if x.size < 3:
        raise CalibrationError(f"a calibration needs at least 3 pairs, got {x.size}")
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise CalibrationError("paired values must be finite numbers")
    if np.ptp(x) == 0 or np.ptp(y) == 0:
        raise CalibrationError("tbscore or reference values are all equal: no line to fit")
    return x, y


def fit_ols(x: Any, y: Any, *, level: float = 0.95) -> dict[str, Any]:
    """Ordinary least squares ``y = a + b x`` with t-based confidence intervals.

    Parameters
    ----------
    x, y : array_like
        tbscore values and reference values.
    level : float
        Confidence level.

    Returns
    -------
    dict
        ``a``, ``b``, ``a_ci``, ``b_ci``, ``a_se``, ``b_se``, ``ci_method``.
    """
    x, y = _check_xy(x, y)
    n = x.size
    mx, my = x.mean(), y.mean()
    sxx = float(np.sum((x - mx) ** 2))
    b = float(np.sum((x - mx) * (y - my)) / sxx)
    a = float(my - b * mx)
    resid = y - (a + b * x)
    s2 = float(np.sum(resid**2) / (n - 2))
    b_se = math.sqrt(s2 / sxx)
    a_se = math.sqrt(s2 * (1.0 / n + mx**2 / sxx))
    t = _t(level, n - 2)
    return {
        "a": a,
        "b": b,
        "a_se": a_se,
        "b_se": b_se,
        "a_ci": (a - t * a_se, a + t * a_se),
        "b_ci": (b - t * b_se, b + t * b_se),
        "ci_method": f"t ({n - 2} df)",
    }


def _deming_point(x: np.ndarray, y: np.ndarray, lam: float) -> tuple[float, float]:
    mx, my = x.mean(), y.mean()
    sxx = float(np.mean((x - mx) ** 2))
    syy = float(np.mean((y - my) ** 2))
    sxy = float(np.mean((x - mx) * (y - my)))
    if sxy == 0:
        raise CalibrationError("tbscore and reference values are uncorrelated: no Deming fit")
    d = syy - lam * sxx
    root = math.sqrt(d * d + 4.0 * lam * sxy * sxy)
    # two algebraically equal forms; the second avoids cancellation when d < 0
    b = (d + root) / (2.0 * sxy) if d >= 0 else 2.0 * lam * sxy / (root - d)
    return float(my - b * mx), float(b)


def fit_deming(
    x: Any,
    y: Any,
    *,
    error_ratio: float = 1.0,
    level: float = 0.95,
    ci: str = "jackknife",
    n_boot: int = 2000,
    seed: int = 0,
) -> dict[str, Any]:
    """Deming regression ``y = a + b x`` with jackknife or bootstrap intervals.

    Parameters
    ----------
    x, y : array_like
        tbscore values and reference values.
    error_ratio : float
        lambda = var(error in y) / var(error in x) (1: orthogonal regression).
    level : float
        Confidence level.
    ci : {"jackknife", "bootstrap"}
        Jackknife: SE from leave-one-out pseudo-values, estimate ± t(n-2)·SE. Bootstrap:
        percentile interval of ``n_boot`` case resamples drawn with
        ``numpy.random.default_rng(seed)``.
    n_boot : int
        Bootstrap resamples.
    seed : int
        Bootstrap seed (results are reproducible).

    Returns
    -------
    dict
        ``a``, ``b``, ``a_ci``, ``b_ci``, ``a_se``, ``b_se``, ``ci_method``.
    """
    x, y = _check_xy(x, y)
    if not (
        isinstance(error_ratio, int | float) and math.isfinite(error_ratio) and error_ratio > 0
    ):
        raise CalibrationError(f"error_ratio must be a positive number, got {error_ratio!r}")
    n = x.size
    a, b = _deming_point(x, y, error_ratio)
    if ci == "jackknife":
        keep = ~np.eye(n, dtype=bool)
        loo = np.array([_deming_point(x[k], y[k], error_ratio) for k in keep])
        pseudo = n * np.array([a, b]) - (n - 1) * loo
        se = pseudo.std(axis=0, ddof=1) / math.sqrt(n)
        t = _t(level, n - 2)
        return {
            "a": a,
            "b": b,
            "a_se": float(se[0]),
            "b_se": float(se[1]),
            "a_ci": (a - t * float(se[0]), a + t * float(se[0])),
            "b_ci": (b - t * float(se[1]), b + t * float(se[1])),
            "ci_method": f"jackknife (t, {n - 2} df)",
        }
    if ci == "bootstrap":
        rng = np.random.default_rng(seed)
        boots = []
        for _ in range(int(n_boot)):
            idx = rng.integers(0, n, n)
            if np.ptp(x[idx]) == 0:
                continue
            try:
                boots.append(_deming_point(x[idx], y[idx], error_ratio))
            except CalibrationError:
                continue
        if len(boots) < 10:
            raise CalibrationError("too few usable bootstrap resamples")
        arr = np.array(boots)
        lo, hi = 50.0 * (1 - level), 50.0 * (1 + level)
        qa = np.percentile(arr[:, 0], [lo, hi])
        qb = np.percentile(arr[:, 1], [lo, hi])
        sd = arr.std(axis=0, ddof=1)
        return {
            "a": a,
            "b": b,
            "a_se": float(sd[0]),
            "b_se": float(sd[1]),
            "a_ci": (float(qa[0]), float(qa[1])),
            "b_ci": (float(qb[0]), float(qb[1])),
            "ci_method": f"percentile bootstrap ({len(boots)} resamples, seed {seed})",
        }
    raise CalibrationError(f"ci must be 'jackknife' or 'bootstrap', got {ci!r}")


def bland_altman(measured: Any, reference: Any) -> dict[str, float]:
    """Bland–Altman statistics of ``measured - reference``.

    Returns
    -------
    dict
        ``mean_diff`` (bias), ``sd_diff``, ``loa_low`` and ``loa_high``
        (``mean_diff ± 1.96 sd_diff``), ``n``.
    """
    m = np.asarray(measured, dtype=float)
    r = np.asarray(reference, dtype=float)
    d = m - r
    md = float(d.mean())
    sd = float(d.std(ddof=1)) if d.size > 1 else 0.0
    return {
        "n": int(d.size),
        "mean_diff": md,
        "sd_diff": sd,
        "loa_low": md - 1.96 * sd,
        "loa_high": md + 1.96 * sd,
    }


# --------------------------------------------------------------------------- object


def _check_fields(kw: Mapping[str, Any]) -> None:
    """Types of every calibration field (a schema check before the object is built)."""

    def number(v: Any, *, null: bool) -> bool:
        if v is None:
            return null
        return isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)

    def bad(key: str, what: str) -> CalibrationError:
        return CalibrationError(f"{key} must be {what}, got {repr(kw[key])[:40]}")

    for key in ("name", "method", "ci_method", "created", "tbscore_version", "values_source"):
        if key in kw and not isinstance(kw[key], str):
            raise bad(key, "a string")
    for key in ("notes", "settings_digest"):
        if kw.get(key) is not None and not isinstance(kw[key], str):
            raise bad(key, "a string or null")
    for key in ("a", "b", "r", "residual_sd", "ci_level"):
        if key in kw and not number(kw[key], null=key in ("r", "residual_sd")):
            raise bad(key, "a finite number")
    if "error_ratio" in kw and not number(kw["error_ratio"], null=True):
        raise bad("error_ratio", "a finite number or null")
    if isinstance(kw.get("n"), bool) or not isinstance(kw.get("n"), int) or kw["n"] < 0:
        raise bad("n", "an integer >= 0")
    for key in ("a_ci", "b_ci", "x_range"):
        if key in kw and (
            not isinstance(kw[key], list | tuple)
            or len(kw[key]) != 2
            or not all(number(v, null=True) for v in kw[key])
        ):
            raise bad(key, "a list of two numbers (or nulls)")
    for key in ("bland_altman", "bland_altman_raw"):
        if key in kw and not isinstance(kw[key], dict):
            raise bad(key, "an object")
        if key in kw and not all(number(v, null=True) for v in kw[key].values()):
            raise bad(key, "an object of numbers")
    if kw.get("settings") is not None and not isinstance(kw["settings"], dict):
        raise bad("settings", "an object or null")


@dataclass(frozen=True)
class Calibration:
    """A fitted linear map ``reference = a + b * tbscore``.

    Attributes
    ----------
    name : str
        Shown in reports and CSV rows (``result.calibration["name"]``).
    method : str
        ``"ols"`` or ``"deming"``.
    a, b : float
        Intercept and slope.
    a_ci, b_ci : (float, float)
        Confidence intervals at ``ci_level``.
    ci_level : float
    ci_method : str
        How the intervals were computed.
    n : int
        Number of pairs.
    r : float
        Pearson correlation of tbscore and reference values.
    residual_sd : float
        SD of ``reference - (a + b tbscore)`` (``n - 2`` denominator).
    error_ratio : float or None
        Deming lambda (``None`` for OLS).
    bland_altman : dict
        Of the calibrated values against the reference (see :func:`bland_altman`).
    bland_altman_raw : dict
        Of the raw tbscore values against the reference.
    x_range : (float, float)
        tbscore range of the pairs; applying outside it extrapolates.
    created : str
        ISO timestamp.
    tbscore_version : str
        Version that computed the tbscore values (or fitted, if supplied).
    settings_digest : str or None
        :meth:`tbscore.core.settings.Settings.digest` of the settings that computed the
        tbscore values; ``None`` if the values were supplied in the pairs file.
    settings : dict or None
    values_source : str
        ``"computed"``, ``"supplied"`` or ``"mixed"``.
    notes : str
    """

    name: str
    method: str
    a: float
    b: float
    a_ci: tuple[float, float]
    b_ci: tuple[float, float]
    n: int
    r: float
    residual_sd: float
    ci_level: float = 0.95
    ci_method: str = ""
    error_ratio: float | None = None
    bland_altman: dict = field(default_factory=dict)
    bland_altman_raw: dict = field(default_factory=dict)
    x_range: tuple[float, float] = (math.nan, math.nan)
    created: str = ""
    tbscore_version: str = __version__
    settings_digest: str | None = None
    settings: dict | None = None
    values_source: str = "computed"
    notes: str = ""

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise CalibrationError(f"method must be one of {METHODS}, got {self.method!r}")
        for name in ("a", "b"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise CalibrationError(f"{name} must be a finite number, got {v!r}")
        for name in ("a_ci", "b_ci", "x_range"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))

    def predict(self, x: Any) -> Any:
        """``a + b * x`` (scalar or array)."""
        if np.isscalar(x):
            return self.a + self.b * float(x)
        return self.a + self.b * np.asarray(x, dtype=float)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``format``: ``tbscore-calibration/1``)."""
        d: dict[str, Any] = {"format": CALIBRATION_FORMAT}
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            d[f.name] = list(v) if isinstance(v, tuple) else v
        return _clean(d)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Calibration:
        """Rebuild from :meth:`to_dict` output.

        Raises
        ------
        CalibrationError
            Not a calibration document, or invalid values.
        """
        if not isinstance(data, Mapping) or data.get("format") != CALIBRATION_FORMAT:
            raise CalibrationError(f"not a {CALIBRATION_FORMAT} document")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        missing = {"name", "method", "a", "b", "a_ci", "b_ci", "n", "r", "residual_sd"} - set(kw)
        if missing:
            raise CalibrationError(f"calibration lacks {sorted(missing)}")
        _check_fields(kw)
        for key in ("a_ci", "b_ci", "x_range"):
            if key in kw:
                kw[key] = tuple(math.nan if v is None else float(v) for v in kw[key])
        try:
            return cls(**kw)
        except TypeError as exc:
            raise CalibrationError(f"invalid calibration ({exc})") from exc

    def summary(self) -> str:
        """A few lines of text."""
        ba = self.bland_altman
        lines = [
            f"calibration {self.name!r}: reference = {self.a:.4f} + {self.b:.4f} * tbscore "
            f"({self.method}"
            + (f", lambda {self.error_ratio:g}" if self.error_ratio is not None else "")
            + ")",
            f"  a {self.a:.4f}  {self.ci_level:.0%} CI [{self.a_ci[0]:.4f}, {self.a_ci[1]:.4f}]",
            f"  b {self.b:.4f}  {self.ci_level:.0%} CI [{self.b_ci[0]:.4f}, {self.b_ci[1]:.4f}]"
            f"  ({self.ci_method})",
            f"  n {self.n}  R {self.r:.4f}  residual SD {self.residual_sd:.4f}  "
            f"tbscore range {self.x_range[0]:.3f}-{self.x_range[1]:.3f}",
        ]
        if ba:
            lines.append(
                f"  Bland-Altman (calibrated - reference): bias {ba['mean_diff']:+.4f}, "
                f"LoA [{ba['loa_low']:+.4f}, {ba['loa_high']:+.4f}]"
            )
        raw = self.bland_altman_raw
        if raw:
            lines.append(
                f"  Bland-Altman (raw - reference): bias {raw['mean_diff']:+.4f}, "
                f"LoA [{raw['loa_low']:+.4f}, {raw['loa_high']:+.4f}]"
            )
        lines.append(
            f"  tbscore {self.tbscore_version}, settings {self.settings_digest or 'unknown'} "
            f"({self.values_source} values)"
        )
        return "\n".join(lines) + "\n"


def fit_calibration(
    tbscore: Any,
    reference: Any,
    *,
    method: str = "deming",
    error_ratio: float = 1.0,
    level: float = 0.95,
    ci: str = "jackknife",
    n_boot: int = 2000,
    seed: int = 0,
    name: str | None = None,
    settings: Any = None,
    values_source: str = "computed",
    tbscore_version: str = __version__,
    notes: str = "",
) -> Calibration:
    """Fit ``reference = a + b * tbscore``.

    Parameters
    ----------
    tbscore, reference : array_like
        Paired values.
    method : {"deming", "ols"}
    error_ratio : float
        Deming lambda, ``var(reference error) / var(tbscore error)``.
    level : float
        Confidence level of the intervals.
    ci : {"jackknife", "bootstrap"}
        Deming interval method (OLS always uses t intervals).
    n_boot, seed : int
        Bootstrap resamples and seed.
    name : str, optional
        Calibration name (default ``"<method> <date>"``).
    settings : tbscore.core.settings.Settings or dict, optional
        Settings the tbscore values were computed with (digest recorded).
    values_source : str
        ``"computed"`` / ``"supplied"`` / ``"mixed"``.
    tbscore_version : str
    notes : str

    Returns
    -------
    Calibration

    Raises
    ------
    CalibrationError
        Fewer than 3 pairs, non-finite or constant values, unknown method.
    """
    if method not in METHODS:
        raise CalibrationError(f"method must be one of {METHODS}, got {method!r}")
    if not 0 < level < 1:
        raise CalibrationError(f"level must be in (0, 1), got {level}")
    x, y = _check_xy(tbscore, reference)
    if method == "ols":
        fit = fit_ols(x, y, level=level)
    else:
        fit = fit_deming(
            x, y, error_ratio=error_ratio, level=level, ci=ci, n_boot=n_boot, seed=seed
        )
    a, b = fit["a"], fit["b"]
    pred = a + b * x
    resid_sd = float(math.sqrt(np.sum((y - pred) ** 2) / (x.size - 2)))
    r = float(np.corrcoef(x, y)[0, 1])
    digest = None
    settings_dict = None
    if settings is not None:
        from tbscore.core.settings import resolve_settings

        cfg = resolve_settings(settings)
        digest = cfg.digest()
        settings_dict = cfg.to_dict()
    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0)
    return Calibration(
        name=name or f"{method} {now.date().isoformat()}",
        method=method,
        a=float(a),
        b=float(b),
        a_ci=tuple(fit["a_ci"]),
        b_ci=tuple(fit["b_ci"]),
        n=int(x.size),
        r=r,
        residual_sd=resid_sd,
        ci_level=float(level),
        ci_method=fit["ci_method"],
        error_ratio=float(error_ratio) if method == "deming" else None,
        bland_altman=bland_altman(pred, y),
        bland_altman_raw=bland_altman(x, y),
        x_range=(float(x.min()), float(x.max())),
        created=now.isoformat(),
        tbscore_version=tbscore_version,
        settings_digest=digest,
        settings=settings_dict,
        values_source=values_source,
        notes=notes,
    )


def _as_calibration(calibration: Any) -> Calibration:
    if isinstance(calibration, Calibration):
        return calibration
    if isinstance(calibration, Mapping):
        return Calibration.from_dict(calibration)
    raise CalibrationError(
        f"calibration must be a Calibration or a dict (read files with "
        f"tbscore.io.calibration.load_calibration), not "
        f"{type(calibration).__name__}"
    )


def apply_calibration(result: Any, calibration: Calibration | Mapping) -> Any:
    """Attach calibrated values ``a + b * value`` to a result.

    The raw values stay; calibrated values go to ``VertebraResult.calibrated_value``
    and ``TBSResult.l1_l4_calibrated``, and ``result.calibration`` records the
    calibration (its ``name`` is shown in reports and CSV rows). Warnings are added
    when the result's settings digest or tbscore version differ from the
    calibration's, or when a value lies outside the calibrated tbscore range.

    Parameters
    ----------
    result : tbscore.core.result.TBSResult
    calibration : Calibration, dict or path

    Returns
    -------
    tbscore.core.result.TBSResult
        A new result.
    """
    cal = _as_calibration(calibration)
    values: dict[str, float | None] = {}
    for v in result.vertebrae:
        values[v.label] = (
            None if v.value is None or v.status != "ok" else float(cal.predict(v.value))
        )
    l14 = None if result.l1_l4 is None else float(cal.predict(result.l1_l4))
    warnings = list(result.warnings)
    digest = result.settings.digest()
    if cal.settings_digest and cal.settings_digest != digest:
        warnings.append(
            f"calibration {cal.name!r} was fitted on values computed with settings "
            f"{cal.settings_digest}, this result used {digest}: calibrated values may be off"
        )
    elif not cal.settings_digest:
        warnings.append(
            f"calibration {cal.name!r} does not record the settings its values were computed with"
        )
    if (
        cal.tbscore_version
        and result.tbscore_version
        and cal.tbscore_version != result.tbscore_version
    ):
        warnings.append(
            f"calibration {cal.name!r} was made with tbscore {cal.tbscore_version}, this "
            f"result with {result.tbscore_version}"
        )
    lo, hi = cal.x_range
    if (
        result.l1_l4 is not None
        and math.isfinite(lo)
        and math.isfinite(hi)
        and not lo <= result.l1_l4 <= hi
    ):
        warnings.append(
            f"L1-L4 value {result.l1_l4:.3f} outside the calibrated range "
            f"{lo:.3f}-{hi:.3f}: extrapolated"
        )
    out = result.with_calibration(cal.to_dict(), values, l14)
    return dataclasses.replace(out, warnings=tuple(warnings))
