"""The Dask executor: chunks sized by the measured time per input, crash recovery.

(Identical rows for Dask and ``--jobs 1`` on the mixed set: ``test_batch.py``,
``test_dask_local_cluster_same_rows``.)
"""

from __future__ import annotations

import math

import pytest

from tbscore.batch import iter_batch
from tbscore.batch.worker import Job
from test_batch import _stable, write_scan

distributed = pytest.importorskip("distributed")
pytest.importorskip("dask")


@pytest.fixture(scope="module")
def threads_client():
    """A client of an in-process cluster: two single-thread workers (no processes)."""
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:
            yield client


def _recording(executor) -> list[int]:
    """Make ``executor`` record the size of every chunk it would send, and send none."""
    sizes: list[int] = []
    executor._send = lambda chunk, alone=False: sizes.append(len(chunk))
    return sizes


def _chunk_sizes(executor, n: int) -> list[int]:
    """The sizes of the chunks ``executor`` would send for ``n`` inputs (none sent)."""
    sizes = _recording(executor)
    for inp in range(n):
        executor.submit(inp)
    executor._flush()
    return sizes


def test_chunk_follows_the_measured_time_per_input(threads_client):
    from tbscore.batch.executors import DaskExecutor

    ex = DaskExecutor(Job(), threads_client, detection=False)
    try:
        assert ex.slots == 2 and ex.chunk == DaskExecutor.START_CHUNK
        rows = lambda s: [{"row": {"elapsed_s": s}} for _ in range(4)]  # noqa: E731
        ex._measured(rows(0.002))
        assert ex.chunk == round(DaskExecutor.TASK_S / 0.002)
        ex._measured([{"row": {"elapsed_s": None}}] * 50)  # a crash row: no time, ignored
        assert ex.chunk == round(DaskExecutor.TASK_S / 0.002)
        ex._measured(rows(0.2) * 3)  # mean of all rows so far: (4 * 0.002 + 12 * 0.2) / 16
        assert ex.chunk == round(DaskExecutor.TASK_S / ((4 * 0.002 + 12 * 0.2) / 16))
        ex._measured(rows(60.0))  # slow inputs: one per task
        assert ex.chunk == 1
    finally:
        ex.close()
    fast = DaskExecutor(Job(), threads_client, detection=False)
    try:
        fast._measured(rows(1e-7))
        assert fast.chunk == DaskExecutor.MAX_CHUNK
    finally:
        fast.close()
    fixed = DaskExecutor(Job(), threads_client, chunk=5, detection=False)
    try:
        fixed._measured(rows(0.002))
        assert fixed.chunk == 5  # given: kept
        assert _chunk_sizes(fixed, 23) == [5, 5, 5, 5, 3]
    finally:
        fixed.close()


def test_last_chunks_shrink_so_workers_finish_together(threads_client):
    from tbscore.batch.executors import DaskExecutor

    ex = DaskExecutor(Job(), threads_client, detection=False, total=100)
    try:
        ex.chunk = 50  # as if measured: 50 inputs make TASK_S of work
        sizes = _chunk_sizes(ex, 100)
    finally:
        ex.close()
    assert sum(sizes) == 100 and ex.pending == 100
    assert sizes[0] == math.ceil(100 / (2 * 2))  # 1/(2 x slots) of the inputs left
    assert sizes == sorted(sizes, reverse=True)
    assert min(sizes[:-1]) == DaskExecutor.START_CHUNK  # not smaller, but the rest
    assert sizes[-1] <= DaskExecutor.START_CHUNK
    one = DaskExecutor(Job(), threads_client, detection=False, total=100)
    try:
        one.slots, one.chunk = 1, 30  # one worker: no one waits for it, full chunks
        sizes = _chunk_sizes(one, 100)
    finally:
        one.close()
    assert sizes == [30, 30, 30, 10]


def test_runner_window_follows_the_chunk(tmp_path, monkeypatch):
    """The runner keeps 4 x slots x chunk inputs in flight with the executor's chunk as
    it is now (a Dask executor's grows once times are measured), not as it was at the
    start; every row still comes back once."""
    from tbscore.batch import runner
    from tbscore.batch.worker import score_input

    class GrowingExecutor:
        slots, chunk = 1, 1  # window max(4 * 1 * 1, 8) = 8 at the start

        def __init__(self, job, *args):
            self.job, self.queue, self.most = job, [], 0

        @property
        def pending(self):
            return len(self.queue)

        def submit(self, inp):
            self.queue.append(inp)

        def poll(self, timeout):
            self.most = max(self.most, len(self.queue))
            self.chunk = 10  # as if measured: window 40 from now on
            inp = self.queue.pop(0)
            return [(inp, score_input(self.job, inp))]

        def close(self, cancel=False):
            pass

    for i in range(30):
        write_scan(tmp_path / f"s{i:02d}.dcm", 300 + i)
    made = []
    monkeypatch.setattr(
        runner, "make_executor", lambda *a: made.append(GrowingExecutor(*a)) or made[-1]
    )
    rows = list(iter_batch(tmp_path, progress=False))
    assert sorted(r["input"] for r in rows) == sorted(str(p) for p in tmp_path.glob("*.dcm"))
    assert made[0].most == 30 - 1  # all but the first row in flight: beyond the old 8


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_dask_worker_crash_is_one_row_the_others_as_jobs_1(tmp_path, monkeypatch, worker_hooks):
    """A worker that dies on one input: its chunk is re-sent one input per task, that
    input gets a ``worker_crashed`` row and every other row is the ``--jobs 1`` row."""
    import dask

    for i in range(6):
        write_scan(tmp_path / f"s{i}.dcm", 200 + i)
    write_scan(tmp_path / "s9_boom.dcm", 209)
    ref = {r["input"]: _stable(r) for r in iter_batch(tmp_path, progress=False)}
    monkeypatch.setenv("TBSCORE_TEST_CRASH", "boom")  # the cluster's workers exit on it
    # the first death of a worker running the task fails it (KilledWorker), not the third
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        with distributed.LocalCluster(
            n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            with distributed.Client(cluster, set_as_default=False) as client:
                out = tmp_path / "d.csv"
                rows = list(iter_batch(tmp_path, out, scheduler=client, progress=False))
    got = {r["input"]: _stable(r) for r in rows}
    assert sorted(got) == sorted(ref)
    crashed = got.pop(str(tmp_path / "s9_boom.dcm"))
    ref.pop(str(tmp_path / "s9_boom.dcm"))
    assert crashed["status"] == "error" and crashed["error_code"] == "worker_crashed"
    assert "KilledWorker" in crashed["error"]
    assert got == ref
