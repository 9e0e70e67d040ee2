"""Validated, frozen settings for the TBS computation.

A :class:`Settings` object carries every parameter that changes a number. It is
validated when built, hashed for provenance (:meth:`Settings.digest`) and travels with
every result. Settings files are TOML, YAML or JSON with the same keys; unknown keys
are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from tbscore.core.constants import (
    DEFAULT_ROI_INSET_MM,
    ESTIMATORS,
    MIN_CONFIDENCE,
    MIN_VERTEBRA_CONFIDENCE,
)
from tbscore.errors import SettingsError

__all__ = [
    "Settings",
    "DIRECTIONS",
    "DETECTION_DEFAULTS",
    "MAX_LAG_MM",
    "MAX_ROI_INSET_MM",
    "load_settings",
    "resolve_settings",
]

#: Lag directions as unit steps ``(d_row, d_col)``.
DIRECTIONS: dict[str, tuple[int, int]] = {
    "vertical": (1, 0),
    "horizontal": (0, 1),
    "diagonal": (1, 1),
    "antidiagonal": (1, -1),
}


#: Largest ``lag_max_mm`` accepted (mm): longer than any DXA image, so a larger value is
#: a typo (1e9 would build billions of lags).
MAX_LAG_MM = 1000.0

#: Integer settings and their accepted range (inclusive).
_INT_RANGES: tuple[tuple[str, int, int], ...] = (
    ("min_pairs_per_lag", 1, 10**9),
    ("min_lags", 2, 10_000),
    ("min_roi_pixels", 1, 10**9),
    ("min_valid_vertebrae", 2, 4),  # L1-L4 is never one vertebra (ISCD rule)
)

#: Largest ``roi_inset_mm`` accepted (mm): half the smallest plausible vertebral body
#: (15 mm high, docs/detection.md); more would leave nothing of any body.
MAX_ROI_INSET_MM = 7.5

#: Float settings (besides the lag range) and their accepted range (inclusive).
_FLOAT_RANGES: tuple[tuple[str, float, float], ...] = (
    ("min_r2", 0.0, 1.0),
    ("roi_inset_mm", 0.0, MAX_ROI_INSET_MM),
    ("min_confidence", 0.0, 1.0),
    ("min_vertebra_confidence", 0.0, 1.0),
)

#: The detection parameters (passed to :func:`tbscore.core.detect.detect`) with their
#: defaults; a default is left out of the digest, so results computed before these
#: were settings keep their digest.
DETECTION_DEFAULTS: dict[str, float | bool] = {
    "roi_inset_mm": DEFAULT_ROI_INSET_MM,
    "min_confidence": MIN_CONFIDENCE,
    "min_vertebra_confidence": MIN_VERTEBRA_CONFIDENCE,
    "allow_inverted": True,
}


def _show(value: Any) -> str:
    """A short repr of a bad value for an error message."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


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
    roi_inset_mm : float
        Automatic detection only: the ROI is the detected body outline shrunk by this
        distance (mm, 0-7.5; default 3). Unused when ROIs are supplied.
    min_confidence : float
        Automatic detection only: below this overall confidence (0-1, default 0.4)
        detection fails with :class:`tbscore.errors.DetectionError`.
    min_vertebra_confidence : float
        Automatic detection only: a vertebra below this confidence (0-1, default 0.3)
        is excluded, with the reason.
    allow_inverted : bool
        Automatic detection only: when no spine is found, try the inverted image
        (bone dark), with a warning (default true).

    See docs/detection.md for what the four detection parameters do.
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
    roi_inset_mm: float = DEFAULT_ROI_INSET_MM
    min_confidence: float = MIN_CONFIDENCE
    min_vertebra_confidence: float = MIN_VERTEBRA_CONFIDENCE
    allow_inverted: bool = True

    def __post_init__(self) -> None:
        if isinstance(self.directions, str | list):
            object.__setattr__(
                self,
                "directions",
                (self.directions,) if isinstance(self.directions, str) else tuple(self.directions),
            )
        for name in ("lag_min_mm", "lag_max_mm", *(f[0] for f in _FLOAT_RANGES)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                raise SettingsError(f"{name} must be a finite number, got {_show(v)}")
        if self.lag_min_mm < 0 or self.lag_max_mm <= 0:
            raise SettingsError("lag_min_mm must be >= 0 and lag_max_mm > 0")
        if self.lag_max_mm > MAX_LAG_MM:
            raise SettingsError(
                f"lag_max_mm must be <= {MAX_LAG_MM:g} mm (longer than any DXA image), "
                f"got {self.lag_max_mm:g}"
            )
        if self.lag_min_mm > self.lag_max_mm:
            raise SettingsError(
                f"lag_min_mm ({self.lag_min_mm}) is larger than lag_max_mm ({self.lag_max_mm})"
            )
        for name, lo, hi in _FLOAT_RANGES:
            v = getattr(self, name)
            if not lo <= v <= hi:
                raise SettingsError(f"{name} must be within [{lo:g}, {hi:g}], got {v:g}")
        if not isinstance(self.directions, tuple) or not all(
            isinstance(d, str) for d in self.directions
        ):
            raise SettingsError(
                f"directions must be a list of direction names ({', '.join(DIRECTIONS)}), "
                f"got {_show(self.directions)}"
            )
        if not self.directions:
            raise SettingsError("directions must name at least one direction")
        unknown = [d for d in self.directions if d not in DIRECTIONS]
        if unknown:
            raise SettingsError(f"unknown direction(s) {unknown}; known: {', '.join(DIRECTIONS)}")
        if len(set(self.directions)) != len(self.directions):
            raise SettingsError("directions must not repeat")
        for name, lo, hi in _INT_RANGES:
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise SettingsError(f"{name} must be an integer in {lo}-{hi}, got {_show(v)}")
        for name in ("parallel", "allow_inverted"):
            if not isinstance(getattr(self, name), bool):
                raise SettingsError(
                    f"{name} must be true or false, got {_show(getattr(self, name))}"
                )
        if self.estimator not in ESTIMATORS:
            raise SettingsError(
                f"unknown estimator {self.estimator!r}; known: {', '.join(ESTIMATORS)}"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict of every parameter."""
        # every field is a number, a bool, a str or (directions) a tuple of str: the
        # values as they are, which is what asdict's deep copy gave, at a tenth of its cost
        d = {f.name: getattr(self, f.name) for f in _FIELDS}
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
        for key in ("lag_min_mm", "lag_max_mm", *(f[0] for f in _FLOAT_RANGES)):
            if isinstance(data.get(key), int) and not isinstance(data.get(key), bool):
                try:
                    data[key] = float(data[key])
                except OverflowError:
                    raise SettingsError(f"{key} is too large: {_show(data[key])}") from None
        return cls(**data)

    def detection_kwargs(self) -> dict[str, Any]:
        """The keyword arguments of :func:`tbscore.core.detect.detect` set here."""
        return {key: getattr(self, key) for key in DETECTION_DEFAULTS}

    def replace(self, **changes: Any) -> Settings:
        """Return a copy with some parameters changed (validated again)."""
        return replace(self, **changes)

    def digest(self) -> str:
        """SHA-256 (first 16 hex digits) of the parameters that change numbers."""
        # settings are frozen: computed once per instance (a batch asks it several times
        # per input), kept beside the fields (not one of them: equality, hashing,
        # to_dict and replace do not see it)
        cached = self.__dict__.get("_digest")
        if cached is None:
            cached = _digest(self)
            object.__setattr__(self, "_digest", cached)
        return cached


_FIELDS = fields(Settings)


def _digest(settings: Settings) -> str:
    """:meth:`Settings.digest`, computed."""
    d = settings.to_dict()
    d.pop("parallel")  # threading does not change results
    if d["estimator"] == "ols":
        # The default estimator keeps the digest it had before estimators were
        # selectable, so results computed then still match.
        d.pop("estimator")
    for key, default in DETECTION_DEFAULTS.items():
        if d[key] == default and type(d[key]) is type(default):
            d.pop(key)  # like the estimator: defaults keep the older digests
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
    except UnicodeDecodeError:
        raise SettingsError("not a text file (settings are UTF-8 text)", str(path)) from None
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


@functools.cache
def _default_settings() -> Settings:
    """The default :class:`Settings`, made once: frozen, so every call without settings
    shares it (and the digest it caches)."""
    return Settings()


def resolve_settings(settings: Settings | Mapping[str, Any] | str | Path | None) -> Settings:
    """Settings from an object, a dict, a settings file, or the defaults (one shared,
    frozen instance)."""
    if settings is None:
        return _default_settings()
    if isinstance(settings, Settings):
        return settings
    if isinstance(settings, Mapping):
        return Settings.from_dict(dict(settings))
    if isinstance(settings, str | Path):
        return load_settings(settings)
    raise SettingsError(
        f"settings must be Settings, a dict or a file path, not {type(settings).__name__}"
    )


def parse_setting_assignments(items: Iterable[str]) -> dict[str, Any]:
    """Parse ``KEY=VALUE`` assignments (the CLI's ``-s``) into a settings dict.

    ``VALUE`` is read as a TOML value (``0.5``, ``true``, ``["vertical"]``,
    ``"text"``); a bare word that is not TOML is taken as text. Keys and types are
    validated later by :meth:`Settings.from_dict`.

    Raises
    ------
    SettingsError
        An item without ``=`` or with an empty key, or a key given twice.
    """
    import tomllib

    out: dict[str, Any] = {}
    for item in items:
        key, sep, raw = str(item).partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not key:
            raise SettingsError(f"-s expects KEY=VALUE, got {item!r}")
        if key in out:
            raise SettingsError(f"setting {key!r} given twice with -s")
        raw = raw.strip()
        try:
            value = tomllib.loads(f"v = {raw}")["v"]
        except tomllib.TOMLDecodeError:
            value = raw
        out[key] = value
    return out
