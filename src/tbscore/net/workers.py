"""Supervised scoring worker processes.

The node never scores in the thread that received the image: the C-STORE handler
writes the instance to the spool and records it; a :class:`Supervisor` thread hands
waiting instances to worker processes, one job at a time each, and

* kills a worker whose job runs longer than ``job_timeout_s`` and sets the job aside
  (code ``job_timeout``),
* sets aside the job of a worker that died (code ``worker_died``),
* restarts a worker in both cases, warmed up before it gets the next job,
* treats a full disk while writing the result as temporary: the job waits and is
  tried again, the worker lives on.

Each worker warms up (imports, numba kernels, highdicom) before it reports ready,
and the node opens its port only when every worker is ready.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any

from tbscore.net.ledger import Ledger
from tbscore.net.spool import Spool

__all__ = ["Supervisor", "score_job", "sr_uids"]

log = logging.getLogger("tbscore.net")

#: Seconds a job waits before another try after the disk was full.
DISK_FULL_RETRY_S = 5.0


def sr_uids(
    sop_instance_uid: str, study_instance_uid: str, settings_digest: str
) -> tuple[str, str]:
    """Deterministic ``(SOP Instance UID, Series Instance UID)`` of the result SR of an
    image: the same image scored again with the same settings gets the same UIDs, so a
    PACS never holds two results for one computation."""
    from pydicom.uid import generate_uid

    sop = generate_uid(entropy_srcs=["tbscore-net-sr", sop_instance_uid, settings_digest])
    series = generate_uid(entropy_srcs=["tbscore-net-sr-series", study_instance_uid])
    return str(sop), str(series)


def _pixel_count(path: str) -> int:
    """Pixels of a spooled image from its header (the size gate before decoding).

    Raises
    ------
    tbscore.errors.DicomReadError
        By the one DICOM read rule (:func:`tbscore.io.sniff.read_dicom`), naming the file.
    """
    from tbscore.io.sniff import read_dicom

    ds = read_dicom(path, stop_before_pixels=True)
    rows = int(ds.get("Rows", 0) or 0)
    cols = int(ds.get("Columns", 0) or 0)
    frames = int(str(ds.get("NumberOfFrames", 1) or 1).strip() or 1)
    return rows * cols * max(frames, 1)


def score_job(job: dict[str, Any], cfg: dict[str, Any]) -> dict[str, Any]:
    """Score one spooled instance; never raises.

    Returns ``{"outcome": "scored", "sr_path", "l1_l4", "code", "reason"}``,
    ``{"outcome": "set_aside", "code", "reason"}`` or ``{"outcome": "retry", "reason"}``
    (temporary: disk full).
    """
    from tbscore.api import as_image, calc
    from tbscore.errors import TBSError
    from tbscore.io.sr import write_sr

    uid, path, sr_path = job["uid"], job["path"], job["sr_path"]
    try:
        n = _pixel_count(path)
        if cfg["max_pixels"] and n > cfg["max_pixels"]:
            return {
                "outcome": "set_aside",
                "code": "image_too_large",
                "reason": f"{n} pixels, more than the limit of {cfg['max_pixels']} (--max-pixels)",
            }
        image = as_image(path)
        result = calc(image, settings=cfg.get("settings"), calibration=cfg.get("calibration"))
        # the header the loader kept: the spooled file is not read a second time
        src = image.header if image.header is not None else path
        study = str(image.header.get("StudyInstanceUID", "")) if image.header is not None else ""
        sop, series = sr_uids(uid, study, result.settings.digest())
        target = Path(sr_path)
        # write_sr writes atomically itself (tbscore.io.atomic: temporary file, fsync,
        # rename): a full disk or a kill never leaves a partial result file
        write_sr(result, src, target, sop_instance_uid=sop, series_instance_uid=series)
        # the full result beside it (about 10 KiB, within the reserve), so the reading
        # station lists and opens the study without scoring it again
        from tbscore.io.atomic import atomic_file
        from tbscore.net.spool import result_json_beside

        with atomic_file(result_json_beside(target)) as tmp:
            result.to_json(tmp)
        pdf_path, report_error = None, None
        if cfg.get("report_pdf") and job.get("pdf_path") and image.header is not None:
            try:
                pdf_path = str(_write_report_pdf(result, image, uid, Path(job["pdf_path"])))
            except TBSError as exc:  # the SR still goes; the record says why no report
                report_error = exc.reason
    except TBSError as exc:
        return {"outcome": "set_aside", "code": exc.code, "reason": exc.reason}
    except OSError as exc:
        from tbscore.net.spool import Spool

        if Spool.is_disk_full(exc):
            return {"outcome": "retry", "reason": f"disk full writing the result ({exc.strerror})"}
        return {"outcome": "set_aside", "code": "io_error", "reason": f"{exc.strerror or exc}"}
    except Exception as exc:  # a bug or an unreadable file pydicom chokes on
        return {
            "outcome": "set_aside",
            "code": "internal_error",
            "reason": f"{type(exc).__name__}: {exc}",
        }
    code = None if result.l1_l4 is not None else "incomplete"
    reason = result.l1_l4_reason if result.l1_l4 is None else None
    if report_error is not None and code is None:
        code, reason = "report_failed", f"no PDF report: {report_error}"
    return {
        "outcome": "scored",
        "sr_path": str(target),
        "pdf_path": pdf_path,
        "l1_l4": result.l1_l4,
        "code": code,
        "reason": reason,
    }


def _write_report_pdf(result: Any, image: Any, uid: str, target: Path) -> Path:
    """The 77089 report (interpretation from the DICOM header's age and sex, when
    present) as DICOM Encapsulated PDF in the image's study, written atomically to
    ``target`` once (its SOP Instance UID derives from the image's and the settings
    digest, so a rescore would give the same UID).

    Raises
    ------
    TBSError
        ReportError without xhtml2pdf, PdfDicomError, or an interpretation error.
    """
    from datetime import UTC, datetime

    from pydicom.uid import generate_uid

    from tbscore.clinical.interpret import interpret_result, reported_tbs
    from tbscore.io.atomic import atomic_file
    from tbscore.io.pdf_dicom import encapsulated_pdf
    from tbscore.render.report import build_report, render_pdf

    interp = interpret_result(result, use_metadata=True) if reported_tbs(result)[0] else None
    report = build_report(result, interp, image=image, service="score", include_phi=True)
    sop = generate_uid(entropy_srcs=["tbscore-net-pdf", uid, result.settings.digest()])
    ds = encapsulated_pdf(
        render_pdf(report),
        image.header,
        title="Trabecular Bone Score report (CPT 77089)",
        when=datetime.now(UTC),
        sop_instance_uid=str(sop),
    )
    with atomic_file(target) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return target


def _warm_up(report_pdf: bool = False) -> None:
    """Load every library and JIT kernel the first job needs: one detection-free
    computation and one SR written to a temporary folder."""
    import tempfile

    import numpy as np

    from tbscore.api import calc
    from tbscore.batch.worker import warm_up
    from tbscore.io.sr import write_sr
    from tbscore.io.write import write_secondary_capture

    warm_up()
    if report_pdf:
        try:  # xhtml2pdf and reportlab take a second to import
            import xhtml2pdf.pisa  # noqa: F401

            import tbscore.render.report  # noqa: F401
        except ImportError:
            pass
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="tbscore-warm-") as tmp:
        src = write_secondary_capture(
            Path(tmp) / "warm.dcm", rng.normal(1000.0, 50.0, (96, 64)), (1.0, 1.0)
        )
        roi = {
            "format": "tbscore-roi/1",
            "units": "px",
            "vertebrae": [
                {"label": lab, "box": [4 + 23 * i, 4, 24 + 23 * i, 60]}
                for i, lab in enumerate(("L1", "L2", "L3", "L4"))
            ],
        }
        try:
            result = calc(src, roi=roi)
            write_sr(result, src, Path(tmp) / "warm.sr.dcm")
        except Exception:  # pragma: no cover - warm-up is best effort
            pass
        try:  # the detector's code path (fails on noise, which is fine)
            calc(src)
        except Exception:
            pass


def worker_main(conn: Connection, cfg: dict[str, Any]) -> None:
    """Entry point of a worker process: warm up, report ready, then score jobs."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    _warm_up(bool(cfg.get("report_pdf")))
    conn.send(("ready", os.getpid()))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        conn.send(("done", job["uid"], score_job(job, cfg)))


def _exit_text(code: int | None) -> str:
    """A worker's exit status in words: ``exit code 3``, ``killed by signal 9 (SIGKILL)``."""
    import signal

    if code is None:
        return "still running"
    if code < 0:
        try:
            return f"killed by signal {-code} ({signal.Signals(-code).name})"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


@dataclass
class _Worker:
    proc: Any
    conn: Connection
    ready: bool = False
    job: str | None = None
    started: float = 0.0
    spawned: float = field(default_factory=time.monotonic)


class Supervisor:
    """Hands recorded jobs to ``n_workers`` worker processes and watches them.

    Parameters
    ----------
    ledger, spool
        The node's record and spool.
    destinations : list of str
        ``AET@HOST:PORT`` strings every result is queued for.
    n_workers : int
        Worker processes.
    job_timeout_s : float
        Longest time one job may take (s) before its worker is killed.
    cfg : dict
        ``max_pixels``, ``settings`` and ``calibration`` passed to :func:`score_job`.
    on_scored : callable, optional
        Called after a result was recorded (wakes the senders).
    """

    def __init__(
        self,
        ledger: Ledger,
        spool: Spool,
        destinations: list[str],
        *,
        n_workers: int,
        job_timeout_s: float,
        cfg: dict[str, Any],
        on_scored: Any = None,
    ) -> None:
        self.ledger = ledger
        self.spool = spool
        self.destinations = list(destinations)
        self.n_workers = max(1, int(n_workers))
        self.job_timeout_s = float(job_timeout_s)
        self.cfg = dict(cfg)
        self.on_scored = on_scored
        self._ctx = mp.get_context("spawn")
        self._workers: list[_Worker] = []
        # self-pipe: notify() wakes the loop at once (wait() also watches it)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.restarts = 0
        # (uid, outcome) of finished jobs the record could not take yet (disk full)
        self._unrecorded: list[tuple[str, dict[str, Any]]] = []

    # ------------------------------------------------------------- processes
    def _spawn(self) -> _Worker:
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=worker_main, args=(child, self.cfg), name="tbscore-worker", daemon=True
        )
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def start(self, ready_timeout_s: float = 300.0) -> None:
        """Start the workers and wait until each one is warmed up (bounded).

        Raises
        ------
        tbscore.errors.NetError
            A worker died while warming up (its exit code or signal named) or did not
            warm up within ``ready_timeout_s`` (s); every worker started is stopped.
        """
        from tbscore.errors import NetError

        self._workers = [self._spawn() for _ in range(self.n_workers)]
        deadline = time.monotonic() + ready_timeout_s
        try:
            for w in self._workers:
                left = max(0.0, deadline - time.monotonic())
                if not w.conn.poll(left):
                    raise NetError(
                        f"scoring worker {w.proc.pid} did not warm up in {ready_timeout_s:g} s"
                    )
                try:
                    msg = w.conn.recv()
                except (EOFError, OSError):  # the pipe closed: the worker is gone
                    w.proc.join(timeout=5.0)
                    raise NetError(
                        f"scoring worker {w.proc.pid} died while warming up "
                        f"({_exit_text(w.proc.exitcode)}; its error is on the node's stderr)"
                    ) from None
                w.ready = msg[0] == "ready"
        except NetError:
            self._kill_workers()
            raise
        self._thread = threading.Thread(target=self._loop, name="tbscore-supervisor", daemon=True)
        self._thread.start()

    def _kill_workers(self) -> None:
        for w in self._workers:
            if w.proc.is_alive():
                w.proc.kill()
            w.proc.join(timeout=5.0)
            w.conn.close()

    def worker_pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers]

    def notify(self) -> None:
        """New work was recorded."""
        try:
            self._wake_w.send(b"x")
        except OSError:  # buffer full: the loop is awake anyway
            pass

    def stop(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self.notify()
        if self._thread is not None:
            self._thread.join(timeout_s)
        for w in self._workers:
            try:
                w.conn.send(None)
            except OSError:
                pass
        for w in self._workers:
            w.proc.join(timeout=2.0)
            if w.proc.is_alive():
                w.proc.kill()
                w.proc.join(timeout=2.0)
            w.conn.close()

    # ------------------------------------------------------------- loop
    def _replace(self, w: _Worker, code: str, reason: str) -> None:
        if w.job is not None:
            log.warning("job %s set aside: %s", w.job, reason)
            self.ledger.set_aside(w.job, code, reason)
        if w.proc.is_alive():
            w.proc.kill()
        w.proc.join(timeout=5.0)
        w.conn.close()
        self.restarts += 1
        self._workers[self._workers.index(w)] = self._spawn()

    def _finish(self, w: _Worker, uid: str, out: dict[str, Any]) -> None:
        w.job = None
        try:
            self._record(uid, out)
        except Exception as exc:  # record full or locked: keep the outcome, retry later
            log.warning("cannot record the outcome of %s yet: %s", uid, exc)
            self._unrecorded.append((uid, out))

    def _record_pending(self) -> None:
        """Record outcomes a full disk kept out of the record before (oldest first)."""
        while self._unrecorded:
            uid, out = self._unrecorded[0]
            self._record(uid, out)  # raises again while the disk is still full
            self._unrecorded.pop(0)

    def _record(self, uid: str, out: dict[str, Any]) -> None:
        if out["outcome"] == "scored":
            self.ledger.scored(
                uid,
                out["sr_path"],
                out["l1_l4"],
                self.destinations,
                code=out["code"],
                reason=out["reason"],
                extra_paths=[out["pdf_path"]] if out.get("pdf_path") else [],
            )
            if self.on_scored is not None:
                self.on_scored()
        elif out["outcome"] == "retry":
            self.ledger.delay_job(uid, DISK_FULL_RETRY_S, out["reason"])
        else:
            self.ledger.set_aside(uid, out["code"], out["reason"])

    def _dispatch(self) -> None:
        idle = [w for w in self._workers if w.ready and w.job is None]
        if not idle:
            return
        for w, job in zip(idle, self.ledger.next_jobs(len(idle)), strict=False):
            uid = job["sop_instance_uid"]
            self.ledger.start_job(uid, w.proc.pid)
            w.job, w.started = uid, time.monotonic()
            try:
                w.conn.send(
                    {
                        "uid": uid,
                        "path": job["path"],
                        "sr_path": str(self.spool.result_path(uid)),
                        "pdf_path": str(self.spool.report_path(uid)),
                    }
                )
            except OSError:
                pass  # a dead worker: found by its sentinel below

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self._record_pending()
                self._dispatch()
                waitables: list[Any] = [self._wake_r]
                for w in self._workers:
                    waitables += [w.conn, w.proc.sentinel]
                ready = wait(waitables, timeout=0.25)
                if self._wake_r in ready:
                    try:
                        while self._wake_r.recv(4096):
                            pass
                    except OSError:
                        pass
                for w in list(self._workers):
                    if w.conn in ready:
                        try:
                            msg = w.conn.recv()
                        except (EOFError, OSError):
                            msg = None
                        if msg is not None and msg[0] == "ready":
                            w.ready = True
                        elif msg is not None and msg[0] == "done":
                            self._finish(w, msg[1], msg[2])
                    if w.proc.sentinel in ready or not w.proc.is_alive():
                        w.proc.join(timeout=5.0)
                        code = w.proc.exitcode
                        how = f"signal {-code}" if code is not None and code < 0 else f"exit {code}"
                        self._replace(
                            w, "worker_died", f"the worker process died ({how}); restarted"
                        )
                    elif w.job is not None and time.monotonic() - w.started > self.job_timeout_s:
                        self._replace(
                            w,
                            "job_timeout",
                            f"scoring took longer than {self.job_timeout_s:g} s; worker restarted",
                        )
                    elif not w.ready and time.monotonic() - w.spawned > 300:
                        self._replace(w, "worker_died", "worker did not warm up")
            except Exception:  # keep supervising; a bug here must not stop the node
                log.exception("supervisor error")
                time.sleep(0.5)
