"""End-to-end batch benchmark: scans/s per core and scaling with ``--jobs``.

Run: ``python benchmarks/bench_batch.py [--n 400] [--n-auto 100] [--jobs 1 2] [--dask]``.

Writes ``--n`` synthetic spine DICOMs the size of the bundled sample set (the four
:data:`tbscore.sim.phantom.SAMPLE_SET` geometries in turn: 200 x 160 to 400 x 300 pixels,
8/16-bit, MONOCHROME1/2, each with a side-car ``.roi.json``) to a temporary folder and
scores them:

* ``calc loop``: ``tbscore.calc`` over the files in this process (no batch machinery),
  the reference for the overhead of ``run_batch``;
* ``batch jobs=N``: ``run_batch(folder, "out.csv", jobs=N)`` into a new CSV (one
  ``fsync`` per row), wall time including process start-up, and the steady rate
  measured between the first and the last row written;
* ``batch jobs=1 no-fsync``: the same with ``fsync=False`` (the cost of durability);
* ``batch jobs=1 per-case``: the same with ``per_case_dir`` (one JSON document per
  input, written atomically: ``--per-case-dir``);
* ``auto-ROI jobs=N``: the default path, automatic L1-L4 detection (``tbscore.core.detect``),
  on a folder of the first ``--n-auto`` scans without their ROI files (the same
  images), for each ``--jobs`` value; compared with ``batch jobs=N`` (ROI files) of the
  same run;
* ``dask N``: with ``--dask``, the same on a ``distributed.LocalCluster`` of N worker
  processes with one thread each, against the process pool of N processes (``pool
  N``; for N = 1 a one-process pool, which ``--jobs 1`` never makes: it scores inline),
  alternated run by run on the same cluster, each on all ``--n`` scans and on the first
  half (for the marginal figures), ``--repeat`` times.

Ratios (``x wall``, ``x steady``: scans/s over that of ``batch jobs=1``) are rates, so
configurations with different numbers of scans compare. ``CPU s`` is the CPU
time of this process and its finished children (the ``jobs=N`` workers and their
fork server); for Dask, that of this process (which also runs the client and the
LocalCluster's scheduler and nannies) plus the worker processes' own
(``getrusage(RUSAGE_SELF)`` through ``client.run`` before and after), so
``scans/CPU-s`` shows the cost per scan even on a busy machine. Each configuration
runs ``--repeat`` times; the run with the best wall time is reported.

The Dask comparison prints, per N, ``steady`` (first to last row: a Dask task hands
back a whole chunk at once, so with big chunks this rate leaves out about one chunk's
time and flatters Dask), ``marginal`` rates (the extra scans of the full run over the
half run, per extra second and per extra CPU-second, from the best of each: start-up
and the last tasks cancel out) and the ratio lines ``dask N / pool N``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
import resource
import shutil
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

import tbscore
from tbscore.batch import iter_batch, runner
from tbscore.batch.executors import LocalExecutor, cpu_count, make_executor, stop_fork_server
from tbscore.io.write import write_secondary_capture
from tbscore.sim.phantom import SAMPLE_SET, synthetic_spine


def make_inputs(folder: Path, n: int, seed: int = 7) -> list[Path]:
    """``n`` phantom DICOMs with side-car ROI files, cycling through SAMPLE_SET.

    Returns the DICOM paths; the ROI of ``scanNNNNN.dcm`` is ``scanNNNNN.roi.json``.
    """
    import json

    streams = np.random.SeedSequence(seed).spawn(n)
    paths = []
    for i in range(n):
        spec = SAMPLE_SET[i % len(SAMPLE_SET)]
        image, truth = synthetic_spine(
            spec["hurst"],
            shape=spec["shape"],
            spacing_mm=spec["spacing_mm"],
            tilt_deg=spec["tilt_deg"],
            rng=np.random.default_rng(streams[i]),
        )
        path = folder / f"scan{i:05d}.dcm"
        write_secondary_capture(
            path,
            image,
            truth["spacing_mm"],
            photometric=spec["photometric"],
            bits=spec["bits"],
            spacing_tag=spec["spacing_tag"],
        )
        roi = {
            "format": "tbscore-roi/1",
            "units": "px",
            "vertebrae": [
                {"label": lab, "box": truth["vertebrae"][lab]["box"]}
                for lab in ("L1", "L2", "L3", "L4")
            ],
        }
        path.with_name(f"scan{i:05d}.roi.json").write_text(json.dumps(roi))
        paths.append(path)
    return paths


def _cpu() -> float:
    """CPU seconds used by this process and its (finished) children."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def time_calc_loop(paths: list[Path]) -> tuple[float, float]:
    """(wall s, CPU s) of ``tbscore.calc`` over ``paths`` in this process."""
    tbscore.calc(paths[0], roi=paths[0].with_name(paths[0].stem + ".roi.json"))  # warm
    c0, t0 = _cpu(), time.perf_counter()
    for p in paths:
        tbscore.calc(p, roi=p.with_name(p.stem + ".roi.json"))
    return time.perf_counter() - t0, _cpu() - c0


def make_auto_inputs(folder: Path, paths: list[Path]) -> list[Path]:
    """Links (or copies) of ``paths`` in ``folder`` without ROI files: automatic ROIs."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for p in paths:
        target = folder / p.name
        try:
            os.link(p, target)
        except OSError:
            shutil.copy2(p, target)
        out.append(target)
    return out


def _worker_cpu() -> tuple[int, float]:
    """(process id, CPU seconds) of this Dask worker or nanny process (``client.run``)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return os.getpid(), own.ru_utime + own.ru_stime


def _cluster_cpu(client) -> float:
    """CPU seconds of a cluster's worker and nanny processes other than this one, summed
    once per process: a LocalCluster's nannies run in this process (as its scheduler
    does), whose CPU :func:`_cpu` already counts."""
    by_pid = dict(client.run(_worker_cpu).values())
    by_pid.update(client.run(_worker_cpu, nanny=True).values())
    by_pid.pop(os.getpid(), None)
    return sum(by_pid.values())


@contextlib.contextmanager
def one_process_pool():
    """Make ``jobs=1`` batches score in a pool of one worker process (``LocalExecutor``)
    instead of inline, as ``--jobs 1`` never does: the peer of a 1-worker Dask cluster."""

    def pool_of_one(job, jobs, scheduler=None, chunk=None, detection=True, total=None):
        if scheduler is None and jobs <= 1:
            return LocalExecutor(job, 1, chunk or 2, detection)
        return make_executor(job, jobs, scheduler, chunk, detection, total)

    real = runner.make_executor
    runner.make_executor = pool_of_one
    try:
        yield
    finally:
        runner.make_executor = real


def time_batch(
    folder: Path | list[Path], out: Path, client=None, **kw
) -> tuple[float, float, int, float, Counter]:
    """(wall s, steady s between first and last row, rows, CPU s, rows per status) of
    one batch run.

    CPU includes the worker processes of ``jobs=N`` and their fork server (stopped and
    joined at the end of the run); with ``client`` (Dask), also the CPU its worker
    processes used during the run (:func:`_cluster_cpu`).
    """
    if out.exists():
        out.unlink()
    w0 = _cluster_cpu(client) if client is not None else 0.0
    c0, t0 = _cpu(), time.perf_counter()
    first = last = None
    n = 0
    statuses: Counter = Counter()
    for row in iter_batch(folder, out, progress=False, **kw):
        last = time.perf_counter()
        first = first or last
        n += 1
        statuses[row["status"]] += 1
    # the pool's fork server (and through it its workers) is waited for only when it
    # stops: stop it so that their CPU time counts in this run, start-up included
    stop_fork_server()
    wall = time.perf_counter() - t0
    cpu = _cpu() - c0
    if client is not None:
        cpu += _cluster_cpu(client) - w0
    return wall, (last - first) if n > 1 else wall, n, cpu, statuses


def compare_dask(paths: list[Path], tmp: Path, jobs_list: list[int], repeat: int) -> list:
    """Dask N workers against the pool of N processes, alternated on one cluster.

    Returns ``(N, {config: {"full": [runs], "half": [runs]}})`` per N, a run being
    :func:`time_batch`'s tuple; configs ``"pool"`` and ``"dask"``.
    """
    import distributed

    half = paths[: len(paths) // 2]
    out = []
    for jobs in jobs_list:
        runs: dict[str, dict[str, list]] = {c: {"full": [], "half": []} for c in ("pool", "dask")}
        with distributed.LocalCluster(
            n_workers=jobs, threads_per_worker=1, processes=True, dashboard_address=None
        ) as cluster:
            with distributed.Client(cluster, set_as_default=False) as client:
                # a first batch warms the fresh workers up (kernel load), as the fork
                # server does for every pool run: not counted, reported apart
                first = time_batch(paths, tmp / "d.csv", client, scheduler=client)
                print(
                    f"# dask {jobs}: first batch on the fresh cluster (worker warm-up "
                    f"included) {first[0]:.2f} s, {first[3]:.2f} CPU-s"
                )
                idle = 2.0  # what the idle cluster costs: heartbeats, monitors, profiler
                c0, w0 = _cpu(), _cluster_cpu(client)
                time.sleep(idle)
                own, workers = (_cpu() - c0) / idle, (_cluster_cpu(client) - w0) / idle
                print(
                    f"# dask {jobs}: idle cluster {own:.3f} CPU-s/s in this process (client, "
                    f"scheduler, nannies) + {workers:.3f} in the workers"
                )
                pool_ctx = one_process_pool if jobs == 1 else contextlib.nullcontext
                for _ in range(repeat):
                    for size, inputs in (("full", paths), ("half", half)):
                        with pool_ctx():
                            runs["pool"][size].append(time_batch(inputs, tmp / "p.csv", jobs=jobs))
                        runs["dask"][size].append(
                            time_batch(inputs, tmp / "d.csv", client, scheduler=client)
                        )
        for config in runs.values():
            for size, got in config.items():
                want = len(paths) if size == "full" else len(half)
                assert all(r[2] == want and r[4]["ok"] == want for r in got), got
        out.append((jobs, runs))
    return out


def marginal(runs: dict[str, list]) -> tuple[float, float]:
    """(scans/s, scans/CPU-s) of the scans the full run has beyond the half run, from
    the best (smallest) wall time and CPU time of each."""
    n_full, n_half = runs["full"][0][2], runs["half"][0][2]
    wall = min(r[0] for r in runs["full"]) - min(r[0] for r in runs["half"])
    cpu = min(r[3] for r in runs["full"]) - min(r[3] for r in runs["half"])
    extra = n_full - n_half
    # not positive: the machine's noise is larger than the half run's work (nan)
    return (extra / wall if wall > 0 else float("nan"), extra / cpu if cpu > 0 else float("nan"))


def _best(runs):
    return min(runs, key=lambda r: r[0])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=400, help="number of scans")
    ap.add_argument(
        "--n-auto",
        type=int,
        default=100,
        help="scans of the automatic-ROI configuration (0: skip it)",
    )
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--dask", action="store_true", help="also a Dask LocalCluster")
    ap.add_argument("--keep", metavar="DIR", help="write the scans here and keep them")
    args = ap.parse_args(argv)

    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tbscore-bench-"))
    folder = tmp / "scans"
    folder.mkdir(parents=True, exist_ok=True)
    n = args.n
    try:
        t0 = time.perf_counter()
        paths = make_inputs(folder, n)
        size = sum(p.stat().st_size for p in paths) / len(paths) / 1024
        print(
            f"# tbscore {tbscore.__version__} batch benchmark — {platform.machine()}, "
            f"{cpu_count()} CPUs, python {platform.python_version()}, {n} scans "
            f"({size:.0f} KiB mean), written in {time.perf_counter() - t0:.1f} s; "
            f"load average before: {os.getloadavg()[0]:.2f}"
        )
        # (name, cores, scans, wall s, steady s, CPU s or None)
        rows: list[tuple[str, int, int, float, float, float | None]] = []
        calc = _best([time_calc_loop(paths) for _ in range(args.repeat)])
        rows.append(("calc loop", 1, n, calc[0], calc[0], calc[1]))
        for jobs in args.jobs:
            r = _best([time_batch(folder, tmp / "out.csv", jobs=jobs) for _ in range(args.repeat)])
            assert r[2] == n and r[4]["ok"] == n, r
            rows.append((f"batch jobs={jobs}", jobs, n, r[0], r[1], r[3]))
        r = _best([time_batch(folder, tmp / "out.csv", fsync=False) for _ in range(args.repeat)])
        rows.append(("batch jobs=1 no-fsync", 1, n, r[0], r[1], r[3]))
        cases = tmp / "cases"
        runs = []
        for _ in range(args.repeat):
            shutil.rmtree(cases, ignore_errors=True)
            runs.append(time_batch(folder, tmp / "out.csv", per_case_dir=cases))
        r = _best(runs)
        rows.append(("batch jobs=1 per-case", 1, n, r[0], r[1], r[3]))
        n_auto = min(args.n_auto, n)
        auto_status: dict[int, Counter] = {}
        if n_auto > 0:
            auto = tmp / "auto"
            make_auto_inputs(auto, paths[:n_auto])
            for jobs in args.jobs:
                r = _best(
                    [time_batch(auto, tmp / "auto.csv", jobs=jobs) for _ in range(args.repeat)]
                )
                assert r[2] == n_auto, r
                auto_status[jobs] = r[4]
                rows.append((f"auto-ROI jobs={jobs}", jobs, n_auto, r[0], r[1], r[3]))
        compared = compare_dask(paths, tmp, args.jobs, args.repeat) if args.dask else []
        for jobs, runs in compared:
            r = _best(runs["dask"]["full"])
            rows.append((f"dask {jobs} workers", jobs, n, r[0], r[1], r[3]))

        def rates(row: tuple) -> tuple[float, float]:
            """(scans/s over the wall time, steady scans/s) of a table row."""
            name, _, count, wall, steady, _ = row
            return count / wall, ((count - 1) / steady if name != "calc loop" else count / wall)

        print(
            f"\n{'configuration':<22} {'cores':>5} {'scans':>5} {'wall s':>7} {'scans/s':>8} "
            f"{'/core':>7} {'steady/s':>9} {'x wall':>7} {'x steady':>9} {'CPU s':>6} "
            f"{'scans/CPU-s':>12}"
        )
        base = next(r for r in rows if r[0] == "batch jobs=1")
        base_rate, base_steady = rates(base)
        for row in rows:
            name, cores, count, wall, _, cpu = row
            rate, steady_rate = rates(row)
            cpu_txt = f"{cpu:6.2f} {count / cpu:12.1f}" if cpu else f"{'-':>6} {'-':>12}"
            print(
                f"{name:<22} {cores:>5} {count:>5} {wall:7.2f} {rate:8.1f} {rate / cores:7.1f} "
                f"{steady_rate:9.1f} {rate / base_rate:7.2f} {steady_rate / base_steady:9.2f} "
                f"{cpu_txt}"
            )
        print(
            f"\nbatch jobs=1 / calc loop: {calc[0] / base[3]:.2f} of the plain calc rate "
            "(content sniffing, hashing, ROI lookup, one fsync-ed CSV row per scan)"
        )
        for jobs, statuses in auto_status.items():
            roi_row = next(r for r in rows if r[0] == f"batch jobs={jobs}")
            auto_row = next(r for r in rows if r[0] == f"auto-ROI jobs={jobs}")
            (roi_rate, roi_steady), (auto_rate, auto_steady) = rates(roi_row), rates(auto_row)
            print(
                f"auto-ROI / ROI file, jobs={jobs}: {auto_rate:.1f} / {roi_rate:.1f} scans/s "
                f"= {auto_rate / roi_rate:.3f} (steady {auto_steady:.1f} / {roi_steady:.1f} "
                f"= {auto_steady / roi_steady:.3f}); auto-ROI statuses "
                + ", ".join(f"{k} {v}" for k, v in sorted(statuses.items()))
            )
        if compared:
            print(
                f"\nDask against the pool, alternated, {args.repeat} x (all {n} scans, first "
                f"{n // 2}); steady: best of the full runs; marginal: the full run's extra "
                "scans over the half run's (best wall, best CPU of each); CPU: this process "
                "(client, the LocalCluster's scheduler and nannies) + workers for Dask, "
                "this process + pool processes + fork server for the pool"
            )
            print(
                f"{'configuration':<22} {'runs':>4} {'steady/s':>9} {'marg/s':>8} "
                f"{'CPU s':>6} {'scans/CPU-s':>12} {'marg scans/CPU-s':>17}"
            )
        for jobs, runs in compared:
            got = {}
            for config in ("pool", "dask"):
                best = _best(runs[config]["full"])
                steady = (best[2] - 1) / best[1]
                m_rate, m_cpu = marginal(runs[config])
                got[config] = (steady, m_rate, m_cpu, best[2] / best[3])
                name = f"pool {jobs} process" + ("es" if jobs > 1 else "")
                if config == "dask":
                    name = f"dask {jobs} worker" + ("s" if jobs > 1 else "")
                print(
                    f"{name:<22} {len(runs[config]['full']):>4} {steady:9.1f} {m_rate:8.1f} "
                    f"{best[3]:6.2f} {best[2] / best[3]:12.1f} {m_cpu:17.1f}"
                )
            (ps, pm, pc, pw), (ds, dm, dc, dw) = got["pool"], got["dask"]
            print(
                f"dask {jobs} / pool {jobs} steady: {ds:.1f} / {ps:.1f} = {ds / ps:.2f}; "
                f"marginal scans/s {dm:.1f} / {pm:.1f} = {dm / pm:.2f}; marginal scans/CPU-s "
                f"{dc:.1f} / {pc:.1f} = {dc / pc:.2f}; whole-run scans/CPU-s "
                f"{dw:.1f} / {pw:.1f} = {dw / pw:.2f}"
            )
        print(f"load average after: {os.getloadavg()[0]:.2f}")
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
