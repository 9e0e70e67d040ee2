"""Calibration-map files (TOML or JSON): per-scanner calibration rules.

Example ``map.toml`` (calibration files relative to the map's folder)::

    strict = false            # true: a scan no rule matches is an error row

    [[rule]]
    name = "hologic-horizon"
    manufacturer = "Hologic*"   # case-insensitive shell patterns; omit = any
    model = "Horizon*"
    software = "13.*"
    spacing_mm = [1.0, 1.0]     # optional, compared within spacing_tol_mm (0.005)
    calibration = "hologic_horizon.json"

    [[rule]]
    name = "lunar"
    manufacturer = "GE*"
    calibration = "lunar.json"
"""

from __future__ import annotations

import json
import tomllib
from pathlib import Path
from typing import Any

from tbscore.core.calibration import CalibrationError
from tbscore.core.calibration_map import CalibrationMap, CalibrationRule
from tbscore.io.calibration import load_calibration

__all__ = ["load_calibration_map", "save_calibration_map"]

_RULE_KEYS = {
    "name",
    "manufacturer",
    "model",
    "software",
    "spacing_mm",
    "spacing_tol_mm",
    "calibration",
}


def _text(rule: dict[str, Any], key: str, where: str) -> str | None:
    value = rule.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise CalibrationError(f"{where}: {key!r} must be a non-empty text")
    return value


def load_calibration_map(path: str | Path) -> CalibrationMap:
    """Read a calibration map and the calibration files it names.

    Raises
    ------
    CalibrationError
        Unreadable or malformed map, unknown keys, a calibration file that cannot be
        read.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration map ({exc.strerror})", str(path)) from None
    try:
        text = raw.decode("utf-8")
        data = json.loads(text) if path.suffix.lower() == ".json" else tomllib.loads(text)
    except (UnicodeDecodeError, ValueError) as exc:
        raise CalibrationError(
            f"calibration map is not valid TOML/JSON ({exc})", str(path)
        ) from None
    if not isinstance(data, dict):
        raise CalibrationError("calibration map must be a table", str(path))
    unknown = set(data) - {"strict", "rule"}
    if unknown:
        raise CalibrationError(f"unknown keys {sorted(unknown)} (expected strict, rule)", str(path))
    strict = data.get("strict", False)
    if not isinstance(strict, bool):
        raise CalibrationError("'strict' must be true or false", str(path))
    rules_raw = data.get("rule", [])
    if not isinstance(rules_raw, list) or not rules_raw:
        raise CalibrationError("calibration map has no [[rule]]", str(path))
    rules = []
    for i, r in enumerate(rules_raw, start=1):
        where = f"rule {i}"
        if not isinstance(r, dict):
            raise CalibrationError(f"{where} must be a table", str(path))
        extra = set(r) - _RULE_KEYS
        if extra:
            raise CalibrationError(f"{where}: unknown keys {sorted(extra)}", str(path))
        cal_file = _text(r, "calibration", where)
        if cal_file is None:
            raise CalibrationError(
                f"{where}: 'calibration' (a calibration file) is required", str(path)
            )
        cal_path = Path(cal_file)
        cal = load_calibration(cal_path if cal_path.is_absolute() else path.parent / cal_path)
        spacing = r.get("spacing_mm")
        if spacing is not None:
            if (
                not isinstance(spacing, list)
                or len(spacing) != 2
                or not all(isinstance(v, int | float) and not isinstance(v, bool) for v in spacing)
            ):
                raise CalibrationError(f"{where}: spacing_mm must be two numbers (mm)", str(path))
            spacing = (float(spacing[0]), float(spacing[1]))
        tol = r.get("spacing_tol_mm", 0.005)
        if not isinstance(tol, int | float) or isinstance(tol, bool) or not 0 <= tol < 1:
            raise CalibrationError(f"{where}: spacing_tol_mm must be a number in [0, 1)", str(path))
        try:
            rules.append(
                CalibrationRule(
                    name=_text(r, "name", where) or f"rule{i}",
                    calibration=cal,
                    manufacturer=_text(r, "manufacturer", where),
                    model=_text(r, "model", where),
                    software=_text(r, "software", where),
                    spacing_mm=spacing,
                    spacing_tol_mm=float(tol),
                )
            )
        except ValueError as exc:
            raise CalibrationError(f"{where}: {exc}", str(path)) from None
    try:
        return CalibrationMap(tuple(rules), strict=strict, source=path.name)
    except ValueError as exc:
        raise CalibrationError(str(exc), str(path)) from None


def save_calibration_map(
    rules: list[dict[str, Any]], path: str | Path, *, strict: bool = False
) -> Path:
    """Write a calibration map (TOML) from rule dicts (keys as in the file format)."""

    def value(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(float(v))
        if isinstance(v, list | tuple):
            return "[" + ", ".join(value(x) for x in v) + "]"
        return json.dumps(str(v))

    lines = [f"strict = {value(strict)}", ""]
    for r in rules:
        lines.append("[[rule]]")
        for k in (
            "name",
            "manufacturer",
            "model",
            "software",
            "spacing_mm",
            "spacing_tol_mm",
            "calibration",
        ):
            if r.get(k) is not None:
                lines.append(f"{k} = {value(r[k])}")
        lines.append("")
    path = Path(path)
    path.write_text("\n".join(lines), encoding="utf-8")
    return path
