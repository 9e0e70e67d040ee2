"""Fit a calibration from a pairs CSV, computing tbscore values where needed."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
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
    where: Mapping[str, str] | None = None,
) -> tuple[Calibration, list[dict[str, Any]]]:
    """Fit a calibration from a pairs CSV, computing tbscore values where needed.

    ``where`` keeps only the rows whose columns equal the given values
    (``{"manufacturer": "Hologic", "model": "Horizon A"}``, case-insensitive), for
    one calibration per scanner group (:func:`calibrate_groups`).

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
    if where:
        rows = [r for r in rows if _in_group(r, where)]
        if not rows:
            raise CalibrationError(f"no pairs row matches {dict(where)}", str(pairs))
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
        errors = "; ".join(f"row {r['row']}: {r['error']}" for r in records if r["error"])
        if len(errors) > 500:
            errors = errors[:497].rstrip("; ") + "..."
        raise CalibrationError(
            f"only {len(xs)} usable pairs (need at least 3)" + (f"; {errors}" if errors else ""),
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


#: Pairs-CSV columns that can define scanner groups (they become calibration-map rules).
GROUP_COLUMNS: tuple[str, ...] = ("manufacturer", "model", "software")


def _in_group(row: Mapping[str, str], where: Mapping[str, str]) -> bool:
    return all(
        (row.get(k) or "").strip().lower() == (v or "").strip().lower() for k, v in where.items()
    )


def scanner_groups(pairs: str | Path, group_by: Sequence[str]) -> list[dict[str, str]]:
    """The distinct scanner groups of a pairs CSV, in first-seen order.

    Raises
    ------
    CalibrationError
        A group column that is not one of :data:`GROUP_COLUMNS` or not in the file,
        or a row with an empty group value.
    """
    bad = [g for g in group_by if g not in GROUP_COLUMNS]
    if bad or not group_by:
        raise CalibrationError(
            f"--group-by takes columns among {GROUP_COLUMNS}, got {list(group_by)}", str(pairs)
        )
    rows = read_pairs(pairs)
    missing = [g for g in group_by if g not in rows[0]]
    if missing:
        raise CalibrationError(f"the pairs file has no column(s) {missing}", str(pairs))
    groups: list[dict[str, str]] = []
    for i, r in enumerate(rows, start=1):
        key = {g: (r.get(g) or "").strip() for g in group_by}
        if not all(key.values()):
            raise CalibrationError(f"row {i}: empty scanner group value {key}", str(pairs))
        if not any(_in_group(key, k) for k in groups):
            groups.append(key)
    return groups


def calibrate_groups(
    pairs: str | Path, group_by: Sequence[str], **kwargs: Any
) -> list[tuple[dict[str, str], Calibration, list[dict[str, Any]]]]:
    """One calibration per scanner group of a pairs CSV (:func:`calibrate_pairs` on each
    group's rows; keyword arguments as there, ``name`` used as a prefix).

    Returns
    -------
    list of (group, Calibration, records)
    """
    prefix = kwargs.pop("name", None)
    out = []
    for group in scanner_groups(pairs, group_by):
        label = " ".join(group.values())
        cal, records = calibrate_pairs(
            pairs, where=group, name=f"{prefix} {label}" if prefix else label, **kwargs
        )
        out.append((group, cal, records))
    return out
