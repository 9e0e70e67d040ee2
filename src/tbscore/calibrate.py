"""Fit a calibration from a pairs CSV, computing tbscore values where needed."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from tbscore.core.calibration import Calibration, CalibrationError, fit_calibration
from tbscore.errors import TBSError
from tbscore.io.calibration import read_pairs


def calibrate_pairs(
    pairs: str | Path,
    *,
    method: str = "deming",
    error_ratio: float = 1.0,
    level: float = 0.95,
    ci: str = "jackknife",
    n_boot: int = 2000,
    seed: int = 0,
    name: str | None = None,
    settings: Any = None,
    roi_dir: str | Path | None = None,
    spacing: tuple[float, float] | None = None,
    override_spacing: bool = False,
) -> tuple[Calibration, list[dict[str, Any]]]:
    """Fit a calibration from a pairs CSV, computing tbscore values where needed.

    Each row needs ``reference`` and either ``tbscore`` (a value, used as is) or
    ``path`` (a DICOM file, relative to the CSV's folder; its L1–L4 value is
    computed with ``settings``). The ROI is the row's ``roi`` (relative to the CSV's
    folder), else the file :func:`tbscore.io.sidecar.find_roi_file` finds (the rule of
    ``tbscore batch``: ``roi_dir``, then the side-car beside the DICOM), else
    automatic detection. Rows that fail are left out and reported.

    Returns
    -------
    (Calibration, list of dict)
        The calibration and one record per row (``row``, ``tbscore``,
        ``reference``, ``status``, ``error``) without file paths.

    Raises
    ------
    CalibrationError
        Bad file, or fewer than 3 usable pairs.
    """
    from tbscore.api import as_image, calc
    from tbscore.core.settings import resolve_settings
    from tbscore.io.sidecar import find_roi_file

    pairs = Path(pairs)
    base = pairs.parent
    cfg = resolve_settings(settings)
    rows = read_pairs(pairs)
    xs: list[float] = []
    ys: list[float] = []
    records: list[dict[str, Any]] = []
    computed = supplied = 0
    for i, row in enumerate(rows, start=1):
        rec: dict[str, Any] = {
            "row": i,
            "tbscore": None,
            "reference": None,
            "status": "ok",
            "error": "",
        }
        try:
            try:
                ref = float(row.get("reference", ""))
            except ValueError as exc:
                raise CalibrationError(
                    f"reference {row.get('reference')!r} is not a number"
                ) from exc
            if not math.isfinite(ref):
                raise CalibrationError("reference is not finite")
            rec["reference"] = ref
            if row.get("tbscore"):
                try:
                    x = float(row["tbscore"])
                except ValueError as exc:
                    raise CalibrationError(f"tbscore {row['tbscore']!r} is not a number") from exc
                supplied += 1
            elif row.get("path"):
                dcm = base / row["path"]
                image = as_image(dcm, spacing=spacing, override_spacing=override_spacing)
                roi: Path | None = None
                if row.get("roi"):
                    roi = base / row["roi"]
                else:  # the rule batch and export use
                    roi = find_roi_file(
                        dcm,
                        roi_dir=roi_dir,
                        rel_parent=Path(row["path"]).parent,
                        sop_instance_uid=image.metadata.sop_instance_uid,
                    )
                result = calc(image, roi=roi, settings=cfg)
                if result.l1_l4 is None:
                    raise CalibrationError(f"no L1-L4 value ({result.l1_l4_reason})")
                x = float(result.l1_l4)
                computed += 1
            else:
                raise CalibrationError("row has neither 'tbscore' nor 'path'")
            if not math.isfinite(x):
                raise CalibrationError("tbscore value is not finite")
            rec["tbscore"] = x
            xs.append(x)
            ys.append(ref)
        except TBSError as exc:
            rec["status"] = "error"
            rec["error"] = f"{exc.code}: {exc.reason}"
        records.append(rec)
    if len(xs) < 3:
        raise CalibrationError(
            f"only {len(xs)} usable pairs (need at least 3); "
            + "; ".join(f"row {r['row']}: {r['error']}" for r in records if r["error"])[:500],
            str(pairs),
        )
    source = "computed" if supplied == 0 else "supplied" if computed == 0 else "mixed"
    failed = sum(r["status"] != "ok" for r in records)
    cal = fit_calibration(
        xs,
        ys,
        method=method,
        error_ratio=error_ratio,
        level=level,
        ci=ci,
        n_boot=n_boot,
        seed=seed,
        name=name,
        settings=cfg if computed else None,
        values_source=source,
        notes=f"{len(rows)} rows, {failed} left out" if failed else "",
    )
    return cal, records
