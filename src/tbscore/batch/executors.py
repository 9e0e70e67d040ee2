"""Where inputs are scored: inline, a local process pool, or a Dask cluster.

All three have the same small interface: ``submit(input)``, ``poll(timeout)`` (the
outcomes that completed, as ``(input, outcome)`` pairs), ``pending`` (inputs
submitted and not yet returned), ``slots`` (parallel workers), ``chunk`` and
``close``. Outcomes are the dicts returned by :func:`tbscore.batch.worker.score_input`.

The pool and the cluster receive inputs in chunks of ``chunk`` (one task per chunk,
less scheduling overhead per scan); a chunk is sent when full or at the next
``poll``. On Dask, where a task costs milliseconds of scheduler, client and worker
time, the chunk follows the measured time per input (:class:`DaskExecutor`); the
runner reads ``chunk`` again on every round, so its in-flight window follows too.
"""

from __future__ import annotations

import concurrent.futures as cf
import math
import multiprocessing
import os
import queue
import time
import uuid
from collections import deque
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from tbscore.batch.discover import Input
from tbscore.batch.output import BatchError
from tbscore.batch.worker import (
    Job,
    failure_row,
    hard_limit_s,
    score_chunk,
    score_input,
    start_watchdog,
    timeout_reason,
    warm_up,
)

__all__ = ["InlineExecutor", "LocalExecutor", "DaskExecutor", "make_executor", "cpu_count"]

Outcome = dict[str, Any]
Chunk = tuple[Input, ...]

CRASH_REASON = (
    "the worker process died while scoring this file (crash in a decoder, or out of "
    "memory); it was retried alone and died again"
)


def cpu_count() -> int:
    """CPUs this process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def _crash_outcome(
    job: Job, inp: Input, reason: str = CRASH_REASON, code: str = "worker_crashed"
) -> Outcome:
    row = failure_row(job, inp, "error", code, reason)
    row["elapsed_s"] = None
    return {"index": inp.index, "row": row, "result": None}


def _worker_init(parent_pid: int | None = None, detection: bool = True) -> None:
    """Worker-process initializer: leave Ctrl-C and SIGTERM to the parent (which shuts
    the workers down), exit when the parent dies (:func:`start_watchdog`), load the
    kernels once (already loaded in a worker forked from the warm fork server).

    ``parent_pid`` is the batch process: this worker's parent (``spawn``) or the parent
    of its fork server (``forkserver``). ``detection``: also load the detector's
    kernels (:func:`~tbscore.batch.worker.warm_up`); without, they load on a worker's
    first detection."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    start_watchdog(parent_pid if parent_pid is not None else os.getppid())
    warm_up(detection=detection)


#: The module the fork server imports before forking workers (:mod:`.preload`): the
#: kernels of scoring and of automatic detection.
PRELOAD = "tbscore.batch.preload"
#: The fork server's preload for batches whose inputs have ROI files
#: (:mod:`.preload_rois`): the scoring kernels only, not the detector's (about
#: 0.3 CPU-s).
PRELOAD_ROIS = "tbscore.batch.preload_rois"

#: The environment and preload the running fork server was started with (see
#: :func:`_context`).
_SERVER_ENV: list[tuple[tuple[tuple[str, str], ...], str] | None] = [None]


def fork_server_pid() -> int | None:
    """The process id of this process's running fork server, or None."""
    import multiprocessing.forkserver as mpfs

    return getattr(getattr(mpfs, "_forkserver", None), "_forkserver_pid", None)


def stop_fork_server() -> None:
    """Stop this process's fork server if one runs (the next pool starts a new one).

    Its workers must have ended (pools closed); the server is waited for, so its CPU
    time and that of its workers count in ``RUSAGE_CHILDREN`` of this process.
    """
    import multiprocessing.forkserver as mpfs

    server = getattr(mpfs, "_forkserver", None)
    stop = getattr(server, "_stop", None)
    if stop is not None and fork_server_pid() is not None:
        try:
            stop()
        except OSError:  # pragma: no cover - already gone
            pass


def _context(detection: bool = True) -> multiprocessing.context.BaseContext:
    """The start method of the worker processes: ``forkserver`` where there is one.

    The fork server is started (once per batch process, by multiprocessing, on first
    use) with :data:`PRELOAD` (``detection``) or :data:`PRELOAD_ROIS`, so workers are
    forked warm. It keeps the environment and preload it was started with; when
    ``os.environ`` has changed since (a second batch in one process with other
    variables) or the other preload is wanted, the old server is stopped so that the
    next pool starts a new one in the current environment, as ``spawn`` workers would
    see it. Elsewhere (no ``forkserver``: Windows) workers are spawned and warm up
    themselves.
    """
    if "forkserver" not in multiprocessing.get_all_start_methods():  # pragma: no cover
        return multiprocessing.get_context("spawn")
    preload = PRELOAD if detection else PRELOAD_ROIS
    key = (tuple(sorted(os.environ.items())), preload)
    if _SERVER_ENV[0] != key:
        stop_fork_server()
        _SERVER_ENV[0] = key
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload([preload])
    return ctx


def _kill_pool(pool: cf.ProcessPoolExecutor) -> None:
    """Shut a pool down now: cancel what waits, kill the worker processes (they ignore
    SIGTERM), reap them (bounded wait)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        try:
            proc.kill()
        except (OSError, ValueError):  # already gone
            pass
    for proc in procs:
        try:
            proc.join(5)
        except (OSError, ValueError, AssertionError):
            pass


class InlineExecutor:
    """Score in this process, one input per :meth:`poll` (``jobs=1``)."""

    slots = 1
    chunk = 1

    def __init__(self, job: Job) -> None:
        self.job = job
        self._queue: deque[Input] = deque()
        warm_up(detection=False)  # the detector's kernels load on the first detection

    @property
    def pending(self) -> int:
        return len(self._queue)

    def submit(self, inp: Input) -> None:
        self._queue.append(inp)

    def poll(self, timeout: float) -> list[tuple[Input, Outcome]]:
        if not self._queue:
            return []
        inp = self._queue.popleft()
        return [(inp, score_input(self.job, inp))]

    def close(self, cancel: bool = False) -> None:
        self._queue.clear()


class _Chunked:
    """Chunking and bookkeeping shared by the pool and the Dask executors."""

    def __init__(self, job: Job, chunk: int) -> None:
        self.job = job
        self.chunk = max(1, chunk)
        self._batch: list[Input] = []
        self._futures: dict[Any, Chunk] = {}
        self._pending = 0

    @property
    def pending(self) -> int:
        return self._pending

    def submit(self, inp: Input) -> None:
        self._batch.append(inp)
        self._pending += 1
        if len(self._batch) >= self._chunk_now():
            self._flush()

    def _chunk_now(self) -> int:
        """The size at which the chunk being filled is sent."""
        return self.chunk

    def _flush(self) -> None:
        if self._batch:
            chunk, self._batch = tuple(self._batch), []
            self._send(chunk)

    def _send(self, chunk: Chunk) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _returned(self, chunk: Chunk, outcomes: list[Outcome]) -> list[tuple[Input, Outcome]]:
        self._pending -= len(chunk)
        return list(zip(chunk, outcomes, strict=True))


class LocalExecutor(_Chunked):
    """A pool of ``jobs`` worker processes, forked warm from a fork server that has
    imported and loaded everything once (:func:`_context`; ``spawn`` where there is no
    fork server), each with its watchdog (:func:`~tbscore.batch.worker.start_watchdog`).

    If a worker process dies (the pool breaks), the inputs that were in flight are
    scored again one at a time in a fresh pool; an input that kills the pool while
    alone gets an ``error`` row with code ``worker_crashed``, the others their
    normal rows, and the batch goes on.

    ``detection=False`` (every input has an ROI file, as far as the runner looked:
    :func:`~tbscore.batch.worker.may_detect`): the fork server and the workers do not
    load the detector's kernels; a worker that still has to detect loads them then.
    """

    def __init__(self, job: Job, jobs: int, chunk: int = 2, detection: bool = True) -> None:
        super().__init__(job, chunk)
        self.slots = jobs
        self.detection = detection
        self._waiting: list[Input] = []  # sent while the pool was broken
        self._pool = self._new_pool()

    def _new_pool(self) -> cf.ProcessPoolExecutor:
        """A started pool; :class:`BatchError` if worker processes cannot start at all."""
        pool = cf.ProcessPoolExecutor(
            max_workers=self.slots,
            mp_context=_context(self.detection),
            initializer=_worker_init,
            initargs=(os.getpid(), self.detection),
        )
        try:
            pool.submit(os.getpid).result()
        except BrokenProcessPool as exc:
            pool.shutdown(wait=False, cancel_futures=True)
            raise BatchError(
                "worker processes could not start (see the messages above; a script read "
                "from stdin cannot use worker processes); run with --jobs 1"
            ) from exc
        return pool

    def _send(self, chunk: Chunk) -> None:
        if not self._waiting:
            try:
                self._futures[self._pool.submit(score_chunk, self.job, chunk)] = chunk
                return
            except BrokenProcessPool:
                pass
        self._waiting.extend(chunk)  # scored after the recovery in poll()

    def poll(self, timeout: float) -> list[tuple[Input, Outcome]]:
        self._flush()
        out: list[tuple[Input, Outcome]] = []
        broken = bool(self._waiting)
        if self._futures:
            done, _ = cf.wait(list(self._futures), timeout=timeout, return_when=cf.FIRST_COMPLETED)
            for fut in done:
                exc = fut.exception()
                if exc is None:
                    out += self._returned(self._futures.pop(fut), fut.result())
                elif isinstance(exc, BrokenProcessPool):
                    broken = True  # stays in self._futures: re-run by _recover
                else:  # pragma: no cover - score_chunk does not raise
                    chunk = self._futures.pop(fut)
                    out += self._returned(
                        chunk, [_crash_outcome(self.job, i, repr(exc)) for i in chunk]
                    )
        if broken:
            out += self._recover()
        return out

    def _recover(self) -> list[tuple[Input, Outcome]]:
        """The pool broke: re-run every in-flight input alone in fresh pools."""
        out = []
        suspects: list[Input] = []
        for fut, chunk in self._futures.items():
            if fut.done() and not fut.cancelled() and fut.exception() is None:
                out += self._returned(chunk, fut.result())  # finished before the break
            else:
                suspects += chunk
        self._futures.clear()
        _kill_pool(self._pool)
        self._pool = self._new_pool()
        limit = self.job.timeout
        # backstop if even the worker's watchdog cannot end it
        wait_s = None if not limit else hard_limit_s(limit) + 30.0
        for inp in sorted(suspects, key=lambda i: i.index):
            t0 = time.monotonic()
            try:
                outcome = self._pool.submit(score_input, self.job, inp).result(timeout=wait_s)
            except (BrokenProcessPool, cf.TimeoutError):
                if limit and time.monotonic() - t0 >= limit:  # ended by the time limit
                    outcome = _crash_outcome(self.job, inp, timeout_reason(limit), "timeout")
                else:
                    outcome = _crash_outcome(self.job, inp)
                _kill_pool(self._pool)
                self._pool = self._new_pool()
            out += self._returned((inp,), [outcome])
        waiting, self._waiting = self._waiting, []
        for i in range(0, len(waiting), self.chunk):
            self._send(tuple(waiting[i : i + self.chunk]))
        return out

    def close(self, cancel: bool = False) -> None:
        if cancel:  # Ctrl-C, SIGTERM: do not wait for the inputs in flight
            _kill_pool(self._pool)
        else:
            self._pool.shutdown(wait=True)
        self._futures.clear()
        self._waiting.clear()
        self._batch.clear()


class DaskExecutor(_Chunked):
    """Score on an existing Dask cluster (``distributed``).

    A chunk whose task fails (a worker died: ``KilledWorker``...) is re-sent one
    input per task, one such task at a time (other chunks go on meanwhile); an input
    whose own task fails gets an ``error`` row with code ``worker_crashed``. Each
    chunk's rows are handed back (and written) as soon as its task returns.

    Without ``chunk``, the chunk size follows the work: the first tasks take
    :data:`START_CHUNK` inputs; then a chunk holds about :data:`TASK_S` seconds of
    scoring, from the mean ``elapsed_s`` of the rows returned so far (at most
    :data:`MAX_CHUNK` inputs), as Dask's best practices advise against many tiny
    tasks: each one costs scheduler, client and worker time (4-10 ms of CPU on a 2-core
    machine, measured in benchmarks/README.md, "Issue 14, h14t"), against ~1.6 ms to
    score a scan with an ROI file. With ``total`` (the inputs of the batch) and two
    slots or more, a chunk also takes at most 1/(2 x slots) of the inputs not yet sent
    (guided self-scheduling; not below :data:`START_CHUNK`), so that the last tasks are
    small and the workers finish together. A batch process killed mid-run loses at
    most the chunks in flight (a few x ``TASK_S`` of work per worker; they are scored
    again on resume).

    Parameters
    ----------
    job : Job
    scheduler : str or distributed.Client
        Scheduler address (``tcp://host:8786``) or a connected client (not closed
        here). Worker machines must have tbscore installed and see the input files
        (and ROI files) at the same paths.
    chunk : int, optional
        Inputs per Dask task, fixed; ``None``: sized by the measured time per input.
    detection : bool
        Warm the workers up with the detector's kernels too (see :class:`LocalExecutor`).
    total : int, optional
        Inputs the runner will submit (sizes the last chunks).
    """

    #: Inputs per task before any time per input is known.
    START_CHUNK = 8
    #: Seconds of scoring per task once the time per input is known.
    TASK_S = 0.2
    #: Largest chunk (inputs per task) when sized by time.
    MAX_CHUNK = 256

    def __init__(
        self,
        job: Job,
        scheduler: Any,
        chunk: int | None = None,
        detection: bool = True,
        total: int | None = None,
    ) -> None:
        super().__init__(job, chunk or self.START_CHUNK)
        self._adaptive = chunk is None
        self._unsent = total  # inputs the runner has still to submit, if known
        self._work_s = 0.0  # elapsed_s summed over the rows returned so far
        self._work_n = 0
        try:
            import distributed
        except ImportError as exc:
            raise BatchError("--scheduler needs Dask: pip install 'tbscore[dask]'") from exc
        if isinstance(scheduler, distributed.Client):
            self._client, self._own = scheduler, False
        else:
            try:
                self._client = distributed.Client(str(scheduler), set_as_default=False)
            except Exception as exc:
                raise BatchError(
                    f"cannot connect to the Dask scheduler ({type(exc).__name__}: {exc})",
                    str(scheduler),
                ) from exc
            self._own = True
        try:
            threads = sum(self._client.nthreads().values())
        except Exception:  # pragma: no cover
            threads = 1
        self.slots = max(1, threads)
        try:
            self._client.run(warm_up, detection)
        except Exception:  # pragma: no cover - warm-up is best effort
            pass
        self._prefix = f"tbscore-batch-{uuid.uuid4().hex[:8]}"
        self._n = 0
        self._alone: set[Any] = set()
        self._suspects: deque[Input] = deque()  # inputs of failed chunks, re-sent alone
        self._done: queue.Queue[Any] = queue.Queue()

    def submit(self, inp: Input) -> None:
        if self._unsent is not None:
            self._unsent = max(0, self._unsent - 1)
        super().submit(inp)

    def _chunk_now(self) -> int:
        if not self._adaptive or self._unsent is None or self.slots < 2:
            return self.chunk  # one worker: nobody to wait for it at the end
        # guided self-scheduling: the inputs not yet sent (this chunk's included) shared
        # over twice the slots, so that the last tasks shrink and no worker waits long;
        # not below START_CHUNK, where the per-task cost would show again
        left = self._unsent + len(self._batch)
        share = math.ceil(left / (2 * self.slots))
        return min(self.chunk, max(share, self.START_CHUNK))

    def _measured(self, outcomes: list[Outcome]) -> None:
        """Size the next chunks from the scoring time of these rows (``elapsed_s``)."""
        for outcome in outcomes:
            elapsed = outcome["row"].get("elapsed_s")
            if isinstance(elapsed, int | float) and elapsed >= 0:
                self._work_s += elapsed
                self._work_n += 1
        if self._adaptive and self._work_n:
            per_input = max(self._work_s / self._work_n, 1e-6)
            self.chunk = max(1, min(self.MAX_CHUNK, round(self.TASK_S / per_input)))

    def _send(self, chunk: Chunk, alone: bool = False) -> None:
        self._n += 1
        fut = self._client.submit(
            score_chunk, self.job, chunk, pure=False, key=f"{self._prefix}-{self._n}"
        )
        self._futures[fut] = chunk
        if alone:
            self._alone.add(fut)
        fut.add_done_callback(self._done.put)

    def poll(self, timeout: float) -> list[tuple[Input, Outcome]]:
        self._flush()
        if not self._futures:
            return []
        try:
            ready = [self._done.get(timeout=timeout)]
        except queue.Empty:
            return []
        while True:
            try:
                ready.append(self._done.get_nowait())
            except queue.Empty:
                break
        out = []
        for fut in ready:
            chunk = self._futures.pop(fut, None)
            if chunk is None:  # pragma: no cover - cancelled and already forgotten
                continue
            alone = fut in self._alone
            self._alone.discard(fut)
            try:
                outcomes = fut.result()
            except Exception as exc:  # KilledWorker, lost data, ...
                if len(chunk) > 1 or not alone:
                    self._suspects.extend(chunk)  # find the culprit: one input per task
                    fut.release()
                    continue
                reason = f"the Dask task failed ({type(exc).__name__}: {exc})"
                outcomes = [_crash_outcome(self.job, chunk[0], reason)]
            fut.release()
            self._measured(outcomes)
            out += self._returned(chunk, outcomes)
        if self._suspects and not self._alone:
            # one suspect at a time: a task queued on the worker that a culprit kills
            # fails with it (KilledWorker), so two suspects must never share a worker
            self._send((self._suspects.popleft(),), alone=True)
        return out

    def close(self, cancel: bool = False) -> None:
        if cancel and self._futures:
            try:
                self._client.cancel(list(self._futures))
            except Exception:  # pragma: no cover
                pass
        self._futures.clear()
        self._batch.clear()
        self._suspects.clear()
        if self._own:
            self._client.close()


def make_executor(
    job: Job,
    jobs: int,
    scheduler: Any = None,
    chunk: int | None = None,
    detection: bool = True,
    total: int | None = None,
):
    """The executor for ``scheduler`` (Dask) or ``jobs`` (1: inline, more: processes).

    ``chunk`` (inputs per task) defaults to 2 for processes; on Dask it is sized by the
    measured time per input (:class:`DaskExecutor`) unless given. ``detection``:
    workers load the detector's kernels before the first input (the inline executor
    never does: they load on its first detection). ``total``: the inputs the runner
    will submit (Dask sizes its last chunks with it).
    """
    if scheduler is not None:
        return DaskExecutor(job, scheduler, chunk, detection, total)
    if jobs <= 1:
        return InlineExecutor(job)
    return LocalExecutor(job, jobs, chunk or 2, detection)
