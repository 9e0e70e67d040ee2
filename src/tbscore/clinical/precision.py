"""Site precision from repeat scans (ISCD method) and the follow-up change call.

Pure computation, no I/O. The ISCD precision assessment (e.g. 30 patients scanned twice,
or 15 patients three times, with repositioning between scans) gives

* RMS-SD = sqrt( Σ_j Σ_i (x_ij − x̄_j)² / Σ_j (n_j − 1) ), the root-mean-square of the
  per-patient standard deviations (pooled over the degrees of freedom, so unequal numbers
  of repeats are weighted correctly; with equal numbers it is sqrt(mean SD_j²));
* RMS-CV % = 100 · sqrt( mean_j (SD_j / x̄_j)² );
* LSC = 2.77 × RMS-SD, the least significant change at 95 % confidence
  (2.77 = 1.96 · √2, for the difference of two measurements).

ISCD asks for at least 30 degrees of freedom; fewer are reported as a warning.
Reference: International Society for Clinical Densitometry, 2023 Official Positions —
Adult (precision assessment); Glüer CC et al., Osteoporos Int 1995;5:262–270.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tbscore.errors import PrecisionError

__all__ = [
    "PRECISION_FORMAT",
    "LSC_FACTOR",
    "MIN_DOF",
    "Precision",
    "precision",
    "Change",
    "compare",
]

PRECISION_FORMAT = "tbscore-precision/1"

#: LSC at 95 % confidence = 1.96 · √2 · RMS-SD, rounded as ISCD states it.
LSC_FACTOR = 2.77

#: Degrees of freedom ISCD asks for (30 patients × 2 scans or 15 × 3).
MIN_DOF = 30

CITATION = (
    "International Society for Clinical Densitometry. 2023 ISCD Official Positions — Adult: "
    "precision assessment (RMS-SD, LSC = 2.77 × RMS-SD). Glüer CC, Blake G, Lu Y, et al. "
    "Accurate assessment of precision errors: how to measure the reproducibility of bone "
    "densitometry techniques. Osteoporos Int 1995;5:262-270."
)


@dataclass(frozen=True)
class Precision:
    """A site's precision for one quantity (``tbscore-precision/1``).

    Attributes
    ----------
    rms_sd : float
        Root-mean-square SD (units of the index; dimensionless for TBS).
    rms_cv_percent : float
        Root-mean-square coefficient of variation (%).
    lsc : float
        Least significant change, 2.77 × RMS-SD (units of the index).
    n_patients, n_scans, dof : int
        Patients with ≥ 2 scans, scans used, degrees of freedom Σ (n_j − 1).
    quantity : str
        What was measured, e.g. ``"raw L1-L4 tbscore index"``.
    warnings : tuple of str
    """

    rms_sd: float
    rms_cv_percent: float
    lsc: float
    n_patients: int
    n_scans: int
    dof: int
    quantity: str = "raw L1-L4 tbscore index"
    warnings: tuple[str, ...] = field(default_factory=tuple)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (``format`` = :data:`PRECISION_FORMAT`)."""
        return {
            "format": PRECISION_FORMAT,
            "quantity": self.quantity,
            "rms_sd": self.rms_sd,
            "rms_cv_percent": self.rms_cv_percent,
            "lsc": self.lsc,
            "lsc_factor": LSC_FACTOR,
            "n_patients": self.n_patients,
            "n_scans": self.n_scans,
            "dof": self.dof,
            "warnings": list(self.warnings),
            "citation": CITATION,
        }

    @classmethod
    def from_dict(cls, data: Any) -> Precision:
        """Rebuild from :meth:`to_dict`.

        Raises
        ------
        PrecisionError
            Not a precision document, or a non-positive LSC.
        """
        if not isinstance(data, dict) or data.get("format") != PRECISION_FORMAT:
            raise PrecisionError(f"not a {PRECISION_FORMAT} document")
        try:
            out = cls(
                rms_sd=float(data["rms_sd"]),
                rms_cv_percent=float(data["rms_cv_percent"]),
                lsc=float(data["lsc"]),
                n_patients=int(data["n_patients"]),
                n_scans=int(data["n_scans"]),
                dof=int(data["dof"]),
                quantity=str(data.get("quantity") or ""),
                warnings=tuple(str(w) for w in data.get("warnings") or ()),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise PrecisionError(f"malformed {PRECISION_FORMAT} document ({exc})") from exc
        if not (math.isfinite(out.lsc) and out.lsc > 0):
            raise PrecisionError(f"LSC must be a positive number, got {out.lsc!r}")
        return out


def precision(
    groups: Mapping[str, Sequence[float]], *, quantity: str = "raw L1-L4 tbscore index"
) -> Precision:
    """ISCD precision from repeat measurements grouped by patient.

    Parameters
    ----------
    groups : mapping of str to sequence of float
        Patient key → the repeat values (same quantity, same scanner). Patients with a
        single value are ignored.
    quantity : str
        Label stored with the result.

    Returns
    -------
    Precision

    Raises
    ------
    PrecisionError
        No patient with two or more finite values, a non-finite value, or a mean ≤ 0
        (CV undefined).
    """
    sq_sum = 0.0
    dof = 0
    cv2: list[float] = []
    n_scans = 0
    for key, values in groups.items():
        x = np.asarray(list(values), dtype=float)
        if not np.all(np.isfinite(x)):
            raise PrecisionError(f"patient {key!r} has a non-finite value")
        if x.size < 2:
            continue
        mean = float(x.mean())
        if mean <= 0:
            raise PrecisionError(f"patient {key!r} has mean {mean:.3f} ≤ 0: CV undefined")
        ss = float(np.sum((x - mean) ** 2))
        sq_sum += ss
        dof += x.size - 1
        cv2.append(ss / (x.size - 1) / mean**2)
        n_scans += int(x.size)
    if dof == 0:
        raise PrecisionError("no patient has two or more scans: precision needs repeat scans")
    rms_sd = math.sqrt(sq_sum / dof)
    warnings = []
    if dof < MIN_DOF:
        warnings.append(
            f"{dof} degrees of freedom (ISCD asks for at least {MIN_DOF}, e.g. 30 patients "
            "× 2 scans or 15 × 3): the LSC is uncertain."
        )
    return Precision(
        rms_sd=rms_sd,
        rms_cv_percent=100.0 * math.sqrt(float(np.mean(cv2))),
        lsc=LSC_FACTOR * rms_sd,
        n_patients=len(cv2),
        n_scans=n_scans,
        dof=dof,
        quantity=quantity,
        warnings=tuple(warnings),
    )


@dataclass(frozen=True)
class Change:
    """A follow-up change against a prior value.

    Attributes
    ----------
    current, prior, delta : float
        Values and ``current − prior`` (units of the index).
    percent : float
        ``100 · delta / prior``.
    lsc : float or None
        The LSC used (None: not known, significance not assessed).
    significant : bool or None
        ``|delta| > lsc``; None without an LSC.
    statement : str
    """

    current: float
    prior: float
    delta: float
    percent: float
    lsc: float | None
    significant: bool | None
    statement: str


def compare(current: float, prior: float, lsc: float | None) -> Change:
    """Change call of a follow-up value against a prior one.

    Parameters
    ----------
    current, prior : float
        The same quantity (e.g. the raw L1–L4 index), from the same scanner.
    lsc : float or None
        The site's least significant change (:attr:`Precision.lsc`).

    Raises
    ------
    PrecisionError
        A non-finite value, a prior ≤ 0, or an LSC that is not a positive number.
    """
    if not (math.isfinite(current) and math.isfinite(prior)) or prior <= 0:
        raise PrecisionError("values to compare must be finite and the prior positive")
    if lsc is not None and not (math.isfinite(lsc) and lsc > 0):
        raise PrecisionError(f"LSC must be a positive number, got {lsc!r}")
    delta = current - prior
    percent = 100.0 * delta / prior
    if lsc is None:
        significant = None
        statement = (
            f"change {delta:+.3f} ({percent:+.1f} %); no site LSC known, significance not assessed"
        )
    else:
        significant = abs(delta) > lsc
        if significant:
            word = "increase" if delta > 0 else "decrease"
            statement = f"significant {word}: {delta:+.3f} exceeds the LSC {lsc:.3f}"
        else:
            statement = f"no significant change: |{delta:+.3f}| is within the LSC {lsc:.3f}"
    return Change(
        current=float(current),
        prior=float(prior),
        delta=delta,
        percent=percent,
        lsc=lsc,
        significant=significant,
        statement=statement,
    )
