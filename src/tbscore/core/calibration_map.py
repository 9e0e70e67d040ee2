"""Per-scanner calibration: pick a calibration for a scan from its scanner attributes.

Calibrations to a reference TBS scale are specific to a scanner model (and often to
its software version and pixel spacing). A :class:`CalibrationMap` is an ordered list
of rules; the first rule whose conditions all hold for a scan selects its
calibration. Conditions compare the DICOM Manufacturer, ManufacturerModelName and
SoftwareVersions (case-insensitive shell patterns, ``fnmatch``: ``"Hologic*"``) and the
pixel spacing (mm, within ``spacing_tol_mm``). A condition left out always holds. In
``strict`` mode a scan that no rule matches is an error; otherwise it is scored
uncalibrated.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass

from tbscore.core.calibration import Calibration

__all__ = ["CalibrationRule", "CalibrationMap", "ScannerInfo"]


@dataclass(frozen=True)
class ScannerInfo:
    """Scanner attributes of one scan (from its DICOM header)."""

    manufacturer: str | None = None
    model: str | None = None
    software: str | None = None
    spacing_mm: tuple[float, float] | None = None


def _match(pattern: str | None, value: str | None) -> bool:
    if pattern is None:
        return True
    return fnmatch.fnmatchcase((value or "").strip().lower(), pattern.strip().lower())


@dataclass(frozen=True)
class CalibrationRule:
    """One rule of a :class:`CalibrationMap`.

    Attributes
    ----------
    name : str
        Rule name (shown in the ``calibration_rule`` column).
    calibration : Calibration
    manufacturer, model, software : str or None
        Shell patterns (case-insensitive); ``None``: any.
    spacing_mm : (float, float) or None
        Pixel spacing (row, column) in mm; ``None``: any.
    spacing_tol_mm : float
        Tolerance of the spacing comparison (mm).
    """

    name: str
    calibration: Calibration
    manufacturer: str | None = None
    model: str | None = None
    software: str | None = None
    spacing_mm: tuple[float, float] | None = None
    spacing_tol_mm: float = 0.005

    def matches(self, scanner: ScannerInfo) -> bool:
        """Whether every condition of the rule holds for ``scanner``."""
        if not (
            _match(self.manufacturer, scanner.manufacturer)
            and _match(self.model, scanner.model)
            and _match(self.software, scanner.software)
        ):
            return False
        if self.spacing_mm is None:
            return True
        if scanner.spacing_mm is None:
            return False
        return all(
            abs(a - b) <= self.spacing_tol_mm
            for a, b in zip(self.spacing_mm, scanner.spacing_mm, strict=True)
        )

    def describe(self) -> str:
        """The conditions, as text."""
        parts = [
            f"{k}={v!r}"
            for k, v in (
                ("manufacturer", self.manufacturer),
                ("model", self.model),
                ("software", self.software),
            )
            if v is not None
        ]
        if self.spacing_mm is not None:
            parts.append(f"spacing_mm={list(self.spacing_mm)}±{self.spacing_tol_mm:g}")
        return ", ".join(parts) or "any scanner"


@dataclass(frozen=True)
class CalibrationMap:
    """Ordered calibration rules; the first match wins.

    Attributes
    ----------
    rules : tuple of CalibrationRule
    strict : bool
        A scan no rule matches is an error (``no_calibration_match``) instead of being
        scored uncalibrated.
    source : str
        Where the map came from (a file name), for messages.
    """

    rules: tuple[CalibrationRule, ...]
    strict: bool = False
    source: str = ""

    def __post_init__(self) -> None:
        names = [r.name for r in self.rules]
        if len(set(names)) != len(names):
            raise ValueError(f"calibration map rule names repeat: {names}")
        for r in self.rules:
            if r.spacing_mm is not None and not all(
                math.isfinite(v) and v > 0 for v in r.spacing_mm
            ):
                raise ValueError(f"rule {r.name!r}: spacing_mm must be positive numbers")

    def select(self, scanner: ScannerInfo) -> CalibrationRule | None:
        """The first rule that matches ``scanner``, or ``None``."""
        return next((r for r in self.rules if r.matches(scanner)), None)

    def digest(self) -> str:
        """Short digest of the rules and their calibrations' coefficients (for the
        ``batch_options`` a resumed batch must repeat)."""
        doc = {
            "strict": self.strict,
            "rules": [
                [
                    r.name,
                    r.manufacturer,
                    r.model,
                    r.software,
                    None if r.spacing_mm is None else list(r.spacing_mm),
                    r.spacing_tol_mm,
                    r.calibration.name,
                    r.calibration.a,
                    r.calibration.b,
                ]
                for r in self.rules
            ],
        }
        text = json.dumps(doc, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    @property
    def names(self) -> Sequence[str]:
        """Rule names in order."""
        return [r.name for r in self.rules]
