"""T- and Z-scores against reference tables shipped as versioned data files.

tbscore ships **no** reference table: a table is only usable when it is transcribed from
its primary source and cited. The format (``tbscore-reference/1``, read by
:func:`tbscore.io.reference.load_reference_table`) is::

    {
      "format": "tbscore-reference/1",
      "name": "site_tbs_female", "version": "2026-01",
      "quantity": "L1-L4 TBS", "unit": "1", "sex": "female",
      "citation": "Author et al. Journal Year;Vol:Pages (table N)",
      "young_adult": {"mean": 1.40, "sd": 0.09},
      "age_bands": [{"age_min": 40, "age_max": 50, "mean": 1.38, "sd": 0.09}, ...]
    }

T = (value − young-adult mean) / young-adult SD; Z = (value − age-band mean) / age-band
SD, the band with ``age_min <= age < age_max``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from tbscore.errors import ReferenceTableError

__all__ = ["REFERENCE_FORMAT", "ReferenceTableError", "ReferenceTable"]

REFERENCE_FORMAT = "tbscore-reference/1"


def _pos(value: Any, what: str) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise ReferenceTableError(f"{what} must be a number, got {value!r}") from None
    if not math.isfinite(x):
        raise ReferenceTableError(f"{what} must be finite")
    return x


@dataclass(frozen=True)
class ReferenceTable:
    """A validated reference table (see the module docstring for the format).

    Attributes
    ----------
    name, version, quantity, unit, sex, citation : str
    young_mean, young_sd : float
        Young-adult reference (T-score).
    bands : tuple of (age_min, age_max, mean, sd)
        Age bands in years, half-open ``[age_min, age_max)`` (Z-score).
    """

    name: str
    version: str
    quantity: str
    unit: str
    sex: str
    citation: str
    young_mean: float
    young_sd: float
    bands: tuple[tuple[float, float, float, float], ...]

    @classmethod
    def from_dict(cls, data: Any) -> ReferenceTable:
        """Validate a ``tbscore-reference/1`` document.

        Raises
        ------
        ReferenceTableError
            Wrong format, a missing citation or version, a non-positive SD, overlapping
            or empty age bands.
        """
        if not isinstance(data, dict) or data.get("format") != REFERENCE_FORMAT:
            raise ReferenceTableError(f"not a {REFERENCE_FORMAT} document")
        for key in ("name", "version", "quantity", "sex", "citation"):
            if not str(data.get(key) or "").strip():
                raise ReferenceTableError(f"reference table needs a non-empty {key!r}")
        young = data.get("young_adult") or {}
        ym, ysd = (
            _pos(young.get("mean"), "young_adult.mean"),
            _pos(young.get("sd"), "young_adult.sd"),
        )
        if ysd <= 0:
            raise ReferenceTableError("young_adult.sd must be positive")
        bands = []
        for i, b in enumerate(data.get("age_bands") or []):
            lo, hi = (
                _pos(b.get("age_min"), f"band {i} age_min"),
                _pos(b.get("age_max"), f"band {i} age_max"),
            )
            mean, sd = _pos(b.get("mean"), f"band {i} mean"), _pos(b.get("sd"), f"band {i} sd")
            if not lo < hi or sd <= 0:
                raise ReferenceTableError(f"band {i}: needs age_min < age_max and sd > 0")
            bands.append((lo, hi, mean, sd))
        bands.sort()
        for (_, hi0, _, _), (lo1, _, _, _) in zip(bands, bands[1:], strict=False):
            if lo1 < hi0:
                raise ReferenceTableError("age bands overlap")
        return cls(
            name=str(data["name"]),
            version=str(data["version"]),
            quantity=str(data["quantity"]),
            unit=str(data.get("unit") or ""),
            sex=str(data["sex"]),
            citation=str(data["citation"]),
            young_mean=ym,
            young_sd=ysd,
            bands=tuple(bands),
        )

    def t_score(self, value: float) -> float:
        """(value − young-adult mean) / young-adult SD."""
        return (float(value) - self.young_mean) / self.young_sd

    def z_score(self, value: float, age: float) -> float:
        """(value − band mean) / band SD for the band containing ``age`` (years).

        Raises
        ------
        ReferenceTableError
            No band contains the age.
        """
        for lo, hi, mean, sd in self.bands:
            if lo <= age < hi:
                return (float(value) - mean) / sd
        raise ReferenceTableError(f"{self.name} {self.version} has no age band for {age:g} years")
