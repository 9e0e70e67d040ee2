"""Scoring one input: runs in the worker processes (or Dask workers, or inline).

:func:`score_input` never raises: every outcome, including unexpected exceptions, is
a row (see :data:`tbscore.batch.output.COLUMNS`). Nothing here is for tests: the
batch tests slow down, crash or hang worker processes from a test-only
``sitecustomize`` that wraps :func:`_score` (``tests/conftest.py``, ``worker_hooks``).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tbscore._version import __version__
from tbscore.batch.discover import (
    Input,
    file_sha256,
    head_is_dicom,
    header_truncation,
    read_head,
)
from tbscore.batch.naming import safe_path
from tbscore.core.constants import LABELS
from tbscore.core.settings import Settings
from tbscore.errors import ColourImageError, NotAnImageError, TBSError
from tbscore.io.paths import format_path
from tbscore.log import audit

if TYPE_CHECKING:
    from tbscore.core.calibration import Calibration
    from tbscore.core.calibration_map import CalibrationMap, ScannerInfo
    from tbscore.core.result import TBSResult
    from tbscore.io.load import DicomMetadata, DXAImage

__all__ = [
    "Job",
    "score_input",
    "score_chunk",
    "failure_row",
    "find_roi",
    "sr_name",
    "write_sr_atomic",
    "warm_up",
    "may_detect",
    "audit_row",
    "result_key",
    "start_watchdog",
    "hard_limit_s",
    "DEFAULT_TIMEOUT_S",
]

#: Default per-input time limit of a batch (seconds, ``--timeout``).
DEFAULT_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class Job:
    """What every input of a batch is scored with (sent to the workers with each input).

    Attributes
    ----------
    settings : Settings
    spacing : (float, float) or None
        Pixel spacing (mm) for files without one.
    override_spacing : bool
    exclude : tuple of (label, reason)
        Vertebrae excluded in every scan.
    roi_dir : str or None
    want_result : bool
        Return ``TBSResult.to_dict(include_phi=False)`` too (for per-case JSON).
    calibration : tbscore.calibrate.Calibration or None
        Applied to every result (calibrated values beside the raw ones).
    sr_dir : str or None
        Write a DICOM SR (TID 1500) of every result into this folder
        (:func:`sr_name`).
    calibration_map : tbscore.core.calibration_map.CalibrationMap or None
        Per-scanner calibrations (first matching rule); exclusive with
        ``calibration``.
    path_format : str or None
        How the ``source`` column and result paths show the input
        (:func:`tbscore.io.paths.format_path`); ``input`` keeps the path as given.
    timeout : float or None
        Time limit per input in seconds (``None``: none); an input that takes longer
        gets an ``error`` row with code ``timeout`` (see docs/batch.md). Not part of
        :attr:`options`: it does not change any value.
    """

    settings: Settings = field(default_factory=Settings)
    spacing: tuple[float, float] | None = None
    override_spacing: bool = False
    exclude: tuple[tuple[str, str], ...] = ()
    roi_dir: str | None = None
    want_result: bool = False
    calibration: Calibration | None = None
    sr_dir: str | None = None
    calibration_map: CalibrationMap | None = None
    path_format: str | None = None
    timeout: float | None = DEFAULT_TIMEOUT_S

    @functools.cached_property
    def options(self) -> str:
        """Options besides the settings that change numbers, as compact JSON.

        Stored in the ``batch_options`` column; a resumed batch must use the same.
        Computed once per job (it is frozen; every row asks for it twice).
        ``calibration`` (name, a, b) and ``"sr": true`` appear only when a calibration
        or an SR folder is given, so outputs written without them still resume; a
        resume that adds or drops either is refused (its rows would differ).
        """
        opts: dict[str, Any] = {
            "exclude": dict(self.exclude),
            "override_spacing": self.override_spacing,
            "spacing": None if self.spacing is None else list(self.spacing),
        }
        if self.calibration is not None:  # only when given: older outputs still resume
            cal = self.calibration
            opts["calibration"] = {"name": cal.name, "a": cal.a, "b": cal.b}
        if self.sr_dir is not None:  # only when given, like the calibration
            opts["sr"] = True
        if self.calibration_map is not None:  # only when given, like the calibration
            opts["calibration_map"] = self.calibration_map.digest()
        return json.dumps(opts, sort_keys=True, separators=(",", ":"))


def find_roi(inp: Input, sop_instance_uid: str | None, roi_dir: str | None) -> Path | None:
    """The ROI file of an input, or ``None`` (automatic detection).

    The one side-car rule, :func:`tbscore.io.sidecar.find_roi_file` (also used by
    ``tbscore calibrate`` and ``tbscore export``), with the input's folder relative to
    the walked folder: ``ROI_DIR/<rel>/STEM.roi.*``, ``ROI_DIR/STEM.roi.*``,
    ``ROI_DIR/<SOPInstanceUID>.roi.*``, then ``STEM.roi.*`` beside the file.
    """
    from tbscore.io.sidecar import find_roi_file

    return find_roi_file(
        inp.path, roi_dir=roi_dir, rel_parent=inp.rel_parent, sop_instance_uid=sop_instance_uid
    )


#: Inputs :func:`may_detect` looks at, at most (a few stats each).
MAY_DETECT_LOOKS = 256


def may_detect(job: Job, inputs: Sequence[Input], looks: int = MAY_DETECT_LOOKS) -> bool:
    """Whether the workers should load the detector's kernels before the first input.

    False when each of the first ``looks`` inputs has its ROI (a manifest ``roi``, or
    an ROI file by the rules of :func:`find_roi` that need no header: with a
    ``roi_dir``, an input found only by its SOPInstanceUID counts as one that may need
    detection). Only a warm-up decision: an input that needs detection anyway (a later
    input, an ROI file removed meanwhile) is detected, its worker loading the kernels
    then.
    """
    for inp in inputs[:looks]:
        if not inp.roi and find_roi(inp, None, job.roi_dir) is None:
            return True
    return False


def scanner_info(image: DXAImage) -> ScannerInfo:
    """The scanner attributes of an image, for :class:`CalibrationMap` selection."""
    from tbscore.core.calibration_map import ScannerInfo

    meta = image.metadata
    return ScannerInfo(
        manufacturer=meta.manufacturer,
        model=meta.model,
        software=meta.software_versions,
        spacing_mm=(float(image.spacing_mm[0]), float(image.spacing_mm[1])),
    )


def patient_key(patient_id: str | None) -> str:
    """A pseudonymous subject key: 16 hex digits of SHA-256 of the PatientID (``""``
    without one). Pseudonymous, not anonymous: whoever has the PatientID can compute
    it. Used to follow a patient across visits when a manifest has no ``subject``."""
    if not patient_id:
        return ""
    return hashlib.sha256(patient_id.strip().encode("utf-8")).hexdigest()[:16]


def scanner_columns(meta: DicomMetadata) -> dict[str, Any]:
    """Scanner and patient-characteristic columns of a row (no name, no ID)."""
    return {
        "manufacturer": meta.manufacturer or "",
        "model": meta.model or "",
        "software_versions": meta.software_versions or "",
        "study_date": meta.study_date or "",
        "age_years": meta.age_years,
        "sex": meta.sex or "",
        "bmi": meta.bmi,
        "patient_key": patient_key(meta.patient_id),
    }


def _base_row(job: Job, inp: Input) -> dict[str, Any]:
    return {
        "input": inp.path,
        "source": format_path(inp.path, job.path_format),
        "settings_digest": job.settings.digest(),
        "tbscore_version": __version__,
        "batch_options": job.options,
        "file_size": inp.size,
        "file_mtime_ns": inp.mtime_ns,
    }


def _reason(exc: TBSError, path: str) -> str:
    where = f" (in {exc.source})" if exc.source and exc.source != path else ""
    return f"{path}: {exc.reason}{where}"


def failure_row(
    job: Job, inp: Input, status: str, code: str, reason: str, **extra: Any
) -> dict[str, Any]:
    """A row for an input that produced no result (``reason`` without the path)."""
    row = _base_row(job, inp)
    row.update(status=status, error_code=code, error=f"{inp.path}: {reason}", **extra)
    return row


def _error_row(job: Job, inp: Input, status: str, exc: TBSError, **extra: Any) -> dict[str, Any]:
    row = failure_row(job, inp, status, exc.code, exc.reason, **extra)
    row["error"] = _reason(exc, inp.path)
    return row


class _Timeout(BaseException):
    """Raised by the SIGALRM handler when an input runs past its time limit.

    A ``BaseException`` (like ``KeyboardInterrupt``) so that no ``except Exception``
    on the way (the loader turns unexpected exceptions into read errors) can swallow it.
    """


#: The input this process is scoring: ``(start, limit)`` in ``time.monotonic``
#: seconds, read by the watchdog thread of worker processes (:func:`start_watchdog`).
_CURRENT: list[tuple[float, float] | None] = [None]


def hard_limit_s(timeout: float) -> float:
    """Seconds after which a worker process still busy with one input is ended.

    The soft limit (``timeout``, SIGALRM) stops Python code; native code that does not
    return (a decoder, a numba kernel) is stopped by the worker's watchdog at
    ``timeout + max(1, timeout / 4)`` seconds, by ending the process.
    """
    return timeout + max(1.0, 0.25 * timeout)


@contextmanager
def _time_limit(seconds: float | None) -> Iterator[None]:
    """Raise :class:`_Timeout` in this block after ``seconds`` (main thread, POSIX).

    Elsewhere (a thread, Windows) there is no soft limit; the watchdog of worker
    processes still applies.
    """
    usable = (
        seconds is not None
        and seconds > 0
        and hasattr(signal, "setitimer")
        and threading.current_thread() is threading.main_thread()
    )
    _CURRENT[0] = (time.monotonic(), seconds) if seconds else None
    if not usable:
        try:
            yield
        finally:
            _CURRENT[0] = None
        return

    def _alarm(signum: int, frame: Any) -> None:
        raise _Timeout

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, float(seconds))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)
        _CURRENT[0] = None


def timeout_reason(timeout: float | None) -> str:
    """The ``error`` text of a ``timeout`` row (without the path)."""
    return (
        f"scoring took longer than the time limit of {timeout:g} s (--timeout); "
        "the input was stopped and the batch went on"
    )


def _gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (no such process, or a zombie not yet reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except OSError:  # exists, not ours to signal
        return False
    try:  # Linux: a killed process stays a zombie until its own parent reaps it
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2 :].startswith("Z")


def start_watchdog(parent_pid: int, poll_s: float = 0.25) -> threading.Thread:
    """Start the watchdog thread of a worker process.

    Every ``poll_s`` seconds it checks (1) that the batch process ``parent_pid`` is
    still there: this process's parent (``spawn`` workers), or its grandparent through
    the fork server (``forkserver`` workers; the server outlives the batch process while
    its workers run); when the batch process died (``kill -9``) or the parent changed,
    the worker exits at once instead of waiting forever for work; (2) that the current
    input has not run past :func:`hard_limit_s` of its time limit (native code the
    soft limit cannot stop): then the worker exits, the parent sees the pool break
    and scores the inputs that were in flight again, one at a time (the stuck one gets
    a ``timeout`` row).
    """
    direct = os.getppid()

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if os.getppid() != direct or (parent_pid != direct and _gone(parent_pid)):
                os._exit(0)
            current = _CURRENT[0]
            if current is not None and time.monotonic() - current[0] > hard_limit_s(current[1]):
                os._exit(75)

    thread = threading.Thread(target=watch, name="tbscore-batch-watchdog", daemon=True)
    thread.start()
    return thread


def score_input(job: Job, inp: Input) -> dict[str, Any]:
    """Score one input; return ``{"index", "row", "result"}``. Never raises.

    ``row`` has the batch columns (not yet normalised), ``result`` is the
    ``TBSResult.to_dict(include_phi=False)`` when ``job.want_result`` and a result
    exists, else ``None``. An input still running after ``job.timeout`` seconds is
    stopped and gets an ``error`` row with code ``timeout``.
    """
    t0 = time.perf_counter()
    result_doc = None
    try:
        with _time_limit(job.timeout):
            row = _score(job, inp)
        if job.want_result and row.get("_result") is not None:
            result_doc = row["_result"].to_dict(include_phi=False)
    except _Timeout:
        row = failure_row(job, inp, "error", "timeout", timeout_reason(job.timeout))
    except Exception as exc:  # a bug: still a row, with the traceback's last frame
        tb = traceback.extract_tb(exc.__traceback__)
        where = f" at {Path(tb[-1].filename).name}:{tb[-1].lineno}" if tb else ""
        reason = f"internal error {type(exc).__name__}: {exc}{where}"
        row = failure_row(job, inp, "error", "internal_error", reason)
    row.pop("_result", None)
    row["elapsed_s"] = round(time.perf_counter() - t0, 6)
    return {"index": inp.index, "row": row, "result": result_doc}


def audit_row(row: dict[str, Any]) -> None:
    """The audit line of one batch row (:func:`tbscore.log.audit`; no path, no PHI).

    Called by the batch parent as each row is written, so that rows scored in worker
    processes or on Dask are audited where the log handlers are.
    """
    value = row.get("l1_l4")
    audit(
        input_sha256=row.get("file_sha256") or None,
        outcome=row["status"] + (f":{row['error_code']}" if row.get("error_code") else ""),
        value=value if isinstance(value, int | float) and not isinstance(value, bool) else None,
        settings_digest=row.get("settings_digest") or None,
        command="batch",
    )


def score_chunk(job: Job, inputs: tuple[Input, ...]) -> list[dict[str, Any]]:
    """:func:`score_input` for several inputs (one task, less scheduling overhead)."""
    return [score_input(job, inp) for inp in inputs]


def _score(job: Job, inp: Input) -> dict[str, Any]:
    from tbscore.api import as_image, calc

    path = inp.path
    try:
        st = os.stat(path)
        inp = dataclasses.replace(inp, size=st.st_size, mtime_ns=st.st_mtime_ns)
        head = read_head(path)
    except OSError as exc:
        return failure_row(
            job, inp, "error", "unreadable_file", f"cannot read file ({exc.strerror or exc})"
        )
    if not head_is_dicom(path, head):
        return failure_row(
            job,
            inp,
            "error" if inp.explicit else "excluded",
            "not_dicom",
            "not a DICOM file (no 'DICM' after a 128-byte preamble, and no DICOM data "
            "elements at the start)",
            file_sha256=file_sha256(path),
        )
    try:
        image = as_image(path, spacing=job.spacing, override_spacing=job.override_spacing)
    except NotAnImageError as exc:
        cut = header_truncation(path)  # a cut image is an error, not an SR or DICOMDIR
        if cut is not None:
            return failure_row(
                job, inp, "error", "dicom_read_error", cut, file_sha256=file_sha256(path)
            )
        return _error_row(job, inp, "excluded", exc, file_sha256=file_sha256(path))
    except ColourImageError as exc:  # a report screenshot: not a scan when found in a folder
        status = "error" if inp.explicit else "excluded"
        return _error_row(job, inp, status, exc, file_sha256=file_sha256(path))
    except TBSError as exc:
        return _error_row(job, inp, "error", exc, file_sha256=file_sha256(path))
    ident = {
        "file_sha256": image.file_sha256 or file_sha256(path),
        "pixel_sha256": image.pixel_sha256,
        "sop_instance_uid": image.metadata.sop_instance_uid,
    }
    ident.update(scanner_columns(image.metadata))
    calibration = job.calibration
    if job.calibration_map is not None:
        rule = job.calibration_map.select(scanner_info(image))
        if rule is None and job.calibration_map.strict:
            return failure_row(
                job,
                inp,
                "error",
                "no_calibration_match",
                f"no rule of the calibration map {job.calibration_map.source!r} matches this "
                f"scanner ({scanner_info(image)}) and the map is strict",
                **ident,
            )
        calibration = None if rule is None else rule.calibration
        ident["calibration_rule"] = "" if rule is None else rule.name
    try:
        roi = (
            Path(inp.roi)
            if inp.roi
            else find_roi(inp, image.metadata.sop_instance_uid, job.roi_dir)
        )
        ident["result_key"] = result_key(job, image, roi)
        result = calc(
            image,
            roi=roi,
            settings=job.settings,
            exclude=dict(job.exclude) or None,
            calibration=calibration,
            path_format=job.path_format,
        )
    except TBSError as exc:
        return _error_row(job, inp, "error", exc, **ident)
    sr_error = None
    if job.sr_dir is not None:
        try:
            ident["sr_file"] = write_sr_atomic(job.sr_dir, result, image, path).name
        except TBSError as exc:
            sr_error = exc
    row = _base_row(job, inp)
    row.update(result.csv_row())
    row.update(ident)
    row["input"] = path
    row["warnings"] = "; ".join(result.warnings)
    if sr_error is not None:
        row.update(status="error", error_code="sr_error", error=_reason(sr_error, path))
    elif result.status == "ok":
        row.update(status="ok", error_code="", error="")
    else:
        row.update(
            status="incomplete",
            error_code="no_l1_l4_value",
            error=f"{path}: no L1-L4 value: {result.l1_l4_reason}",
        )
    row["_result"] = result
    return row


def result_key(job: Job, image: DXAImage, roi: Path | None) -> str:
    """SHA-256 of everything that decides an input's result (the duplicate key).

    The gray levels as scored, the pixel spacing used, the content of the ROI file
    (or automatic detection), the settings digest and the batch options (exclusions,
    spacing options, calibration). Two inputs with one key give the same result; a
    change in any of these gives another key.

    The gray levels enter by what decides them: for a loaded DICOM image, the SHA-256
    of its stored pixels with their dtype and shape (``image.pixel_sha256``, computed
    by the loader) and the loader's arguments to :func:`tbscore.io.load.gray_levels`
    (``image.pixel_transform``: MONOCHROME1 inversion, BitsStored, RescaleSlope and
    RescaleIntercept, floats by their ``repr``), which decide the float64 gray levels
    bit for bit, so no hash of the (4-8 times larger) gray levels themselves is needed;
    for an image made from an array (no transform), the SHA-256 of the gray levels
    with their shape and dtype.
    """
    pixels = image.pixels
    parts: dict[str, Any] = {
        "shape": list(pixels.shape),
        "dtype": str(pixels.dtype),
        "spacing_mm": [repr(float(v)) for v in image.spacing_mm],
        "roi": "detect" if roi is None else (file_sha256(roi) or f"unreadable:{roi}"),
        "settings": job.settings.digest(),
        "options": job.options,
    }
    transform = image.pixel_transform
    if transform is not None and image.pixel_sha256:
        inverted, bits, slope, intercept = transform
        parts["stored_pixels"] = image.pixel_sha256
        parts["gray_levels"] = [bool(inverted), bits, repr(float(slope)), repr(float(intercept))]
    else:
        import numpy as np

        parts["pixels"] = hashlib.sha256(np.ascontiguousarray(pixels).data).hexdigest()  # no copy
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


def sr_name(sop_instance_uid: str | None, pixel_sha256: str, file_sha256: str | None) -> str:
    """File name stem of the SR of an input: ``<SOPInstanceUID>--<12 hex digits of the
    pixel-data SHA-256>`` (the file SHA-256 when the input has no UID).

    Deterministic, so a resumed or repeated batch rewrites the same file rather than
    adding one, and two inputs that share a UID but not their pixels get two files.
    The UID is untrusted text: the name is passed through
    :func:`~tbscore.batch.naming.safe_filename` by :func:`write_sr_atomic`.
    """
    return f"{sop_instance_uid or file_sha256 or 'no-uid'}--{pixel_sha256[:12]}"


def write_sr_atomic(folder: str, result: TBSResult, image: DXAImage, path: str) -> Path:
    """Write the DICOM SR of ``result`` into ``folder`` atomically; return its path.

    The SR references the source image: the header the loader kept
    (``image.header``), or, for an image without one, the file at ``path``. Written to a hidden
    temporary name in ``folder`` and renamed, so a killed worker never leaves a truncated
    SR under the final name.

    Raises
    ------
    tbscore.io.sr.SRError, tbscore.batch.naming.UnsafePathError
    """
    from tbscore.io.sr import write_sr

    stem = sr_name(image.metadata.sop_instance_uid, image.pixel_sha256, image.file_sha256)
    target = safe_path(folder, stem, ".sr.dcm")
    source = image.header if getattr(image, "header", None) is not None else path
    return write_sr(result, source, target)  # atomic (tbscore.io.atomic.atomic_file)


#: The warm-ups this process has done (``"scoring"``, ``"detection"``): a later
#: :func:`warm_up` (a second batch in one process, a worker forked from the warm fork
#: server, which inherits the set) skips what is loaded already.
_WARMED: set[str] = set()


def warm_up(detection: bool = True) -> None:
    """Run one tiny computation so that the numba kernels are loaded in this process.

    The kernels are compiled with ``cache=True``: the first process compiles and
    stores them, later processes load them from the cache. Used as the worker
    initializer, so no input pays for it. Once per process: what an earlier call
    loaded (:data:`_WARMED`) is not run again.

    Parameters
    ----------
    detection : bool
        Also load the automatic detector's kernels (about 0.3 CPU-s from the cache;
        :func:`tbscore.core.detect.warm_up_kernels`). The fork server does, so every
        forked worker has them; the in-process executor (``jobs=1``) does not: there
        they load on the first detection, and a batch of ROI files never pays for them.
    """
    if "scoring" not in _WARMED:
        _warm_up_scoring()
    if detection and "detection" not in _WARMED:
        # the detector's kernels, which the ROI-file calc does not run
        from tbscore.core.detect import warm_up_kernels

        warm_up_kernels()
        _WARMED.add("detection")


def _warm_up_scoring() -> None:
    """The scoring part of :func:`warm_up`: one ``calc`` with an ROI file on a tiny
    texture (boxes and a slanted quadrilateral)."""
    import numpy as np

    from tbscore.api import calc

    rng = np.random.default_rng(0)
    # A rough texture (integrated noise) so every vertebra gets a plausible fit and its
    # interval: white noise has a flat variogram, an implausible fit and no interval.
    image = 1000.0 + np.cumsum(np.cumsum(rng.normal(0.0, 1.0, (96, 64)), axis=0), axis=1)
    roi = {
        "format": "tbscore-roi/1",
        "units": "px",
        "vertebrae": [
            {"label": lab, "box": [4 + 23 * i, 4, 24 + 23 * i, 60]} for i, lab in enumerate(LABELS)
        ],
    }
    # The last vertebra as a slanted quadrilateral, as detection draws them, so that the
    # kernels of non-rectangular ROIs (row runs, run-based covariance) are loaded too.
    roi["vertebrae"][-1] = {
        "label": LABELS[-1],
        "polygon": [[71.0, 8.0], [75.0, 58.0], [93.0, 56.0], [89.0, 6.0]],
    }
    try:
        calc(image, roi=roi, spacing=(1.0, 1.0), settings=Settings(parallel=False))
    except TBSError:  # pragma: no cover - warm-up is best effort: tried again next time
        return
    from tbscore.io.load import gray_levels

    for dtype in (np.uint16, np.uint8):  # the loader's pass for the common stored values
        gray_levels(np.zeros((8, 8), dtype), False, None, 1.0, 0.0)
    _WARMED.add("scoring")
