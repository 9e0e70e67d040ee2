"""Dry run of a batch (``tbscore batch --validate``): check everything, compute nothing.

Checks the settings, the calibration or calibration map, the manifest, every input
(DICOM header only: pixel data is neither read nor decoded), its ROI file and the
output path, and reports what a real run would do: how many inputs would be scored,
resumed from the output, or fail, and why. Nothing is written: no output, no journal,
no folder.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tbscore.batch.discover import Input, discover, head_is_dicom, read_head
from tbscore.batch.output import COLUMNS, BatchError, _csv_line
from tbscore.batch.worker import find_roi
from tbscore.core.settings import resolve_settings
from tbscore.errors import TBSError

__all__ = ["BatchPlan", "validate_batch"]

#: Exit code of a dry run that found problems (as a batch with failed inputs).
EXIT_PROBLEMS = 1


@dataclass
class BatchPlan:
    """What a batch would do (:func:`validate_batch`).

    Attributes
    ----------
    n_inputs : int
    outcomes : Counter
        ``would_score``, ``would_resume``, ``error``, ``excluded`` per input.
    problems : list of str
        One line per input or manifest line that would fail, with the reason.
    notes : list of str
        What was checked and found fine (settings digest, calibration, output).
    calibrations : Counter
        Calibration (rule) each scorable input would get.
    """

    n_inputs: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    calibrations: Counter[str] = field(default_factory=Counter)

    @property
    def exit_code(self) -> int:
        """0 when nothing would fail, 1 otherwise."""
        return EXIT_PROBLEMS if self.problems else 0

    def format(self) -> str:
        """Readable report."""
        lines = [f"tbscore batch --validate: {self.n_inputs} input(s); nothing computed or written"]
        for k in ("would_score", "would_resume", "error", "excluded"):
            if self.outcomes.get(k):
                lines.append(f"  {k:<13} {self.outcomes[k]}")
        if self.calibrations:
            lines.append("  calibration per input:")
            for name, n in sorted(self.calibrations.items()):
                lines.append(f"    {name or '(none: uncalibrated)':<32} {n}")
        lines += [f"  ok: {n}" for n in self.notes]
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


def _check_output(
    output: str | os.PathLike[str] | None, derived: bool, plan: BatchPlan, settings_digest: str
) -> tuple[set[str], Path | None]:
    """Check the output can be written or resumed; the input paths already in it."""
    if output is None:
        return set(), None
    from tbscore.batch.runner import journal_path
    from tbscore.batch.table import TABLE_SUFFIXES

    out = Path(output)
    if out.suffix.lower() not in TABLE_SUFFIXES:
        raise BatchError(f"output must end in one of {TABLE_SUFFIXES}", str(out))
    parent = out.resolve().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise BatchError(f"cannot write into {probe}", str(out))
    jp = journal_path(out, derived=derived)
    done: set[str] = set()
    if jp.exists():
        import csv

        with open(jp, encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is not None and _csv_line(header) != _csv_line(COLUMNS):
                raise BatchError(
                    "not a tbscore batch output of this version (columns differ); "
                    "a real run would refuse it",
                    str(jp),
                )
            digests = set()
            for row in reader:
                if len(row) == len(COLUMNS):
                    rec = dict(zip(COLUMNS, row, strict=True))
                    done.add(rec["input"])
                    if rec["settings_digest"]:
                        digests.add(rec["settings_digest"])
        if digests - {settings_digest}:
            raise BatchError(
                f"the output holds rows computed with other settings "
                f"({sorted(digests)}, now {settings_digest}); a real run would "
                "refuse to resume it",
                str(jp),
            )
        plan.notes.append(f"output {out} exists: {len(done)} row(s) would be resumed")
    else:
        plan.notes.append(f"output {out} would be created")
    return done, jp


def validate_batch(
    paths: Iterable[str | os.PathLike[str]],
    output: str | os.PathLike[str] | None = None,
    *,
    manifest: str | os.PathLike[str] | None = None,
    roi_dir: str | os.PathLike[str] | None = None,
    settings: Any = None,
    calibration: Any = None,
    calibration_map: Any = None,
    spacing: Sequence[float] | None = None,
    override_spacing: bool = False,
    ignore: Sequence[str] = (),
) -> BatchPlan:
    """Check a batch without computing or writing anything.

    Parameters are those of :func:`tbscore.batch.run_batch`.

    Returns
    -------
    BatchPlan

    Raises
    ------
    TBSError
        What would stop the batch before any work: bad settings, calibration (map),
        manifest, missing path, an output that cannot be written or resumed.
    """
    from tbscore.core.roi import read_rois
    from tbscore.io.load import inspect_dicom

    plan = BatchPlan()
    cfg = resolve_settings(settings)
    plan.notes.append(f"settings valid (digest {cfg.digest()})")
    cal_map = None
    if calibration is not None and calibration_map is not None:
        raise BatchError("give either a calibration or a calibration map, not both")
    if calibration is not None:
        from tbscore.io.calibration import load_calibration

        cal = load_calibration(calibration)
        plan.notes.append(f"calibration {cal.name!r} readable")
    if calibration_map is not None:
        from tbscore.io.calibration_map import load_calibration_map

        cal_map = load_calibration_map(calibration_map)
        plan.notes.append(
            f"calibration map {cal_map.source!r}: {len(cal_map.rules)} rule(s)"
            + (" (strict)" if cal_map.strict else "")
        )
    if roi_dir is not None and not Path(roi_dir).is_dir():
        raise BatchError("ROI folder does not exist", str(roi_dir))
    inputs: list[Input]
    if manifest is not None:
        from tbscore.batch.manifest import read_manifest
        from tbscore.batch.runner import _manifest_inputs

        m = read_manifest(manifest)
        for row in m.rows:
            if row.error is not None:
                plan.outcomes["error"] += 1
                plan.problems.append(f"manifest {row.error}")
        plan.problems += [f"manifest {w}" for w in m.warnings if "duplicate" in w]
        plan.notes.append(
            f"manifest {m.path.name}: {len(m.rows)} line(s), pass-through columns {list(m.columns)}"
        )
        inputs = _manifest_inputs(m)
        plan.n_inputs = len(m.rows)
    else:
        inputs = discover(list(paths), ignore=tuple(ignore))
        plan.n_inputs = len(inputs)
    derived = manifest is not None or (
        output is not None and Path(output).suffix.lower() == ".jsonl"
    )
    done, _ = _check_output(output, derived, plan, cfg.digest())
    user_spacing = None if spacing is None else (float(spacing[0]), float(spacing[1]))
    for inp in inputs:
        if inp.path in done:
            plan.outcomes["would_resume"] += 1
            continue
        try:
            head = read_head(inp.path)
        except OSError as exc:
            plan.outcomes["error"] += 1
            plan.problems.append(f"{inp.path}: cannot read file ({exc.strerror or exc})")
            continue
        if not head_is_dicom(inp.path, head):
            plan.outcomes["error" if inp.explicit else "excluded"] += 1
            if inp.explicit:
                plan.problems.append(f"{inp.path}: not a DICOM file")
            continue
        try:
            meta, spacing_mm, _src = inspect_dicom(
                inp.path, spacing=user_spacing, override_spacing=override_spacing
            )
            roi = (
                Path(inp.roi)
                if inp.roi
                else find_roi(
                    inp,
                    meta.sop_instance_uid,
                    None if roi_dir is None else os.path.abspath(roi_dir),
                )
            )
            if roi is not None:
                import pydicom

                ds = pydicom.dcmread(inp.path, stop_before_pixels=True, force=True)
                read_rois(roi, (int(ds.Rows), int(ds.Columns)), spacing_mm)
        except TBSError as exc:
            code = getattr(exc, "code", "error")
            status = "excluded" if code in ("not_an_image",) and not inp.explicit else "error"
            plan.outcomes[status] += 1
            if status == "error":
                plan.problems.append(f"{inp.path}: {exc.reason}")
            continue
        if cal_map is not None:
            from tbscore.core.calibration_map import ScannerInfo

            rule = cal_map.select(
                ScannerInfo(meta.manufacturer, meta.model, meta.software_versions, spacing_mm)
            )
            if rule is None and cal_map.strict:
                plan.outcomes["error"] += 1
                plan.problems.append(
                    f"{inp.path}: no calibration rule matches "
                    f"({meta.manufacturer} {meta.model}) and the map is strict"
                )
                continue
            plan.calibrations[rule.name if rule else ""] += 1
        plan.outcomes["would_score"] += 1
    return plan
