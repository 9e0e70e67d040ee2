"""Validated, frozen settings for the TBS computation.

A :class:`Settings` object carries every parameter that changes a number. It is
validated when built, hashed for provenance (:meth:`Settings.digest`) and travels with
every result. Settings files are TOML, YAML or JSON with the same keys; unknown keys
are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from tbscore.core.estimators import ESTIMATORS
from tbscore.errors import SettingsError

__all__ = ["Settings", "DIRECTIONS", "load_settings"]

#: Lag directions as unit steps ``(d_row, d_col)``.
DIRECTIONS: dict[str, tuple[int, int]] = {
    "vertical": (1, 0),
    "horizontal": (0, 1),
    "diagonal": (1, 1),
    "antidiagonal": (1, -1),
}


@dataclass(frozen=True)
class Settings:
    """Parameters of the TBS computation.

    Attributes
    ----------
    lag_min_mm, lag_max_mm : float
        Physical lag range (mm, inclusive). Every lag vector that is a whole multiple
        of a direction step and whose length ``sqrt((dr*row_mm)**2 + (dc*col_mm)**2)``
        lies in this range is used. Defaults 0.5–3.0 mm: the shortest lags at clinical
        DXA spacings (0.5–1.05 mm), i.e. the slope "at the origin" (see docs/method.md).
    directions : tuple of str
        Lag directions, from :data:`DIRECTIONS`.
    min_pairs_per_lag : int
        A lag with fewer pixel pairs inside the ROI is dropped.
    min_lags : int
        Minimum usable lags for a vertebra to get a value.
    min_roi_pixels : int
        Minimum ROI area (pixels) for a vertebra to get a value.
    min_r2 : float
        Vertebrae whose log–log fit has a lower R² are marked invalid (0 disables).
    min_valid_vertebrae : int
        The L1–L4 value is reported only with at least this many valid vertebrae
        (2, following the vendor rule used in NHANES 2007–08).
    parallel : bool
        Run the numba kernel multi-threaded over lags. Batch runs with several
        processes should leave this off.
    estimator : str
        Slope estimator (:mod:`tbscore.core.estimators`): ``"ols"`` (default, the
        published definition), ``"nugget"`` (``V = c d^a + n``) or ``"increment"``
        (noise-cancelling increments). See docs/method.md for their bias and spread.
    """

    lag_min_mm: float = 0.5
    lag_max_mm: float = 3.0
    directions: tuple[str, ...] = ("vertical", "horizontal", "diagonal", "antidiagonal")
    min_pairs_per_lag: int = 100
    min_lags: int = 3
    min_roi_pixels: int = 200
    min_r2: float = 0.0
    min_valid_vertebrae: int = 2
    parallel: bool = False
    estimator: str = "ols"

    def __post_init__(self) -> None:
        if isinstance(self.directions, str | list):
            object.__setattr__(
                self,
                "directions",
                (self.directions,) if isinstance(self.directions, str) else tuple(self.directions),
            )
        for name in ("lag_min_mm", "lag_max_mm", "min_r2"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise SettingsError(f"{name} must be a finite number, got {v!r}")
        if self.lag_min_mm < 0 or self.lag_max_mm <= 0:
            raise SettingsError("lag_min_mm must be >= 0 and lag_max_mm > 0")
        if self.lag_min_mm > self.lag_max_mm:
            raise SettingsError(
                f"lag_min_mm ({self.lag_min_mm}) is larger than lag_max_mm ({self.lag_max_mm})"
            )
        if not 0 <= self.min_r2 <= 1:
            raise SettingsError(f"min_r2 must be within [0, 1], got {self.min_r2}")
        if not self.directions:
            raise SettingsError("directions must name at least one direction")
        unknown = [d for d in self.directions if d not in DIRECTIONS]
        if unknown:
            raise SettingsError(f"unknown direction(s) {unknown}; known: {', '.join(DIRECTIONS)}")
        if len(set(self.directions)) != len(self.directions):
            raise SettingsError("directions must not repeat")
        for name, lo in (
            ("min_pairs_per_lag", 1),
            ("min_lags", 2),
            ("min_roi_pixels", 1),
            ("min_valid_vertebrae", 2),  # L1-L4 is never one vertebra (ISCD rule)
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < lo:
                raise SettingsError(f"{name} must be an integer >= {lo}, got {v!r}")
        if self.min_valid_vertebrae > 4:
            raise SettingsError("min_valid_vertebrae must be <= 4")
        if not isinstance(self.parallel, bool):
            raise SettingsError(f"parallel must be true or false, got {self.parallel!r}")
        if self.estimator not in ESTIMATORS:
            raise SettingsError(
                f"unknown estimator {self.estimator!r}; known: {', '.join(ESTIMATORS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every parameter."""
        d = asdict(self)
        d["directions"] = list(self.directions)
        return d

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Settings:
        """Build settings from a dict, rejecting unknown keys."""
        if not isinstance(data, dict):
            raise SettingsError(f"settings must be a mapping, got {type(data).__name__}")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise SettingsError(
                f"unknown setting(s) {unknown}; known settings: {', '.join(sorted(known))}"
            )
        data = dict(data)
        for key in ("lag_min_mm", "lag_max_mm", "min_r2"):
            if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
                data[key] = float(data[key])
        return cls(**data)

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some parameters changed (validated again)."""
        return replace(self, **changes)

    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of the parameters that change numbers."""
        d = self.to_dict()
        d.pop("parallel")  # threading does not change results
        if d["estimator"] == "ols":
            # The default estimator keeps the digest it had before estimators were
            # selectable, so results computed then still match.
            d.pop("estimator")
        blob = json.dumps(d, sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()[:16]


def load_settings(path: str | Path, *, section: str | None = "tbs") -> Settings:
    """Read settings from a TOML, YAML or JSON file.

    Parameters
    ----------
    path : str or Path
        ``.toml``, ``.yaml``/``.yml`` or ``.json`` file.
    section : str, optional
        If the file has a top-level table with this name (``[tbs]`` in TOML), the
        settings are read from it; otherwise the top level is used.

    Raises
    ------
    SettingsError
        Unreadable file, unknown keys or invalid values, with the file name.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SettingsError(f"cannot read settings file ({exc.strerror})", str(path)) from exc
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(text)
        elif suffix in (".yaml", ".yml"):
            try:
                import yaml
            except ImportError as exc:
                raise SettingsError(
                    "YAML settings need PyYAML: pip install pyyaml", str(path)
                ) from exc
            data = yaml.safe_load(text) or {}
        elif suffix == ".json":
            data = json.loads(text)
        else:
            raise SettingsError("settings file must be .toml, .yaml, .yml or .json", str(path))
    except SettingsError:
        raise
    except Exception as exc:
        raise SettingsError(f"cannot parse settings ({exc})", str(path)) from exc
    if isinstance(data, dict) and section and isinstance(data.get(section), dict):
        data = data[section]
    try:
        return Settings.from_dict(data)
    except SettingsError as exc:
        raise SettingsError(exc.reason, str(path)) from exc


def resolve_settings(settings: Settings | Mapping[str, Any] | str | Path | None) -> Settings:
    """Settings from an object, a dict, a settings file, or the defaults."""
    if settings is None:
        return Settings()
    if isinstance(settings, Settings):
        return settings
    if isinstance(settings, Mapping):
        return Settings.from_dict(dict(settings))
    if isinstance(settings, str | Path):
        return load_settings(settings)
    raise SettingsError(
        f"settings must be Settings, a dict or a file path, not {type(settings).__name__}"
    )
