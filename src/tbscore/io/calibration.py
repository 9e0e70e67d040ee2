"""Calibration files: the calibration JSON and the pairs CSV."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from tbscore.core.calibration import Calibration, CalibrationError

# --------------------------------------------------------------------------- files


def save_calibration(calibration: Calibration, path: str | Path) -> Path:
    """Write a calibration as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(calibration.to_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def load_calibration(path: str | Path) -> Calibration:
    """Read a calibration JSON file.

    Raises
    ------
    CalibrationError
        Unreadable file or not a calibration.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise CalibrationError(f"cannot read calibration ({exc.strerror})", str(path)) from exc
    except ValueError as exc:
        raise CalibrationError(f"calibration is not valid JSON ({exc})", str(path)) from exc
    try:
        return Calibration.from_dict(data)
    except CalibrationError as exc:
        raise CalibrationError(exc.reason, str(path)) from exc


def read_pairs(path: str | Path) -> list[dict[str, str]]:
    """Rows of a pairs CSV (columns ``reference`` and ``path`` and/or ``tbscore``,
    optionally ``roi``).

    Raises
    ------
    CalibrationError
        Unreadable file or missing columns.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as exc:
        raise CalibrationError(f"cannot read pairs file ({exc.strerror})", str(path)) from exc
    reader = csv.DictReader(text.splitlines())
    cols = {c.strip().lower() for c in (reader.fieldnames or [])}
    if "reference" not in cols:
        raise CalibrationError("pairs file needs a 'reference' column", str(path))
    if not cols & {"path", "tbscore"}:
        raise CalibrationError("pairs file needs a 'path' or a 'tbscore' column", str(path))
    rows = []
    for row in reader:
        rows.append({(k or "").strip().lower(): (v or "").strip() for k, v in row.items()})
    if not rows:
        raise CalibrationError("pairs file has no rows", str(path))
    return rows
