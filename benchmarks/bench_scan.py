"""Per-scan cost of ``tbscore.calc``, of writing a DICOM SR, and of warming a worker.

Run: ``python benchmarks/bench_scan.py [--repeat 100]``.

All figures are CPU time of this process (``time.process_time``), in-process, warm
(one call before timing), on the bundled ``sample_dicom`` images (the four
:data:`tbscore.sim.phantom.SAMPLE_SET` geometries, 200 x 160 to 400 x 300 pixels):

* ``calc + ROI file``: ``tbscore.calc(path, roi=path.roi.json)`` per scan (load,
  ROI file, kernel, fit, result) and ``to_json()`` of the result;
* ``calc automatic ROIs``: ``tbscore.calc(path)`` (detection included);
* ``write_sr``: :func:`tbscore.io.sr.write_sr` of that result into a temporary folder
  (needs the ``sr`` extra), from the file path (the file read again) and from the
  header :class:`~tbscore.io.load.DXAImage` keeps (what ``tbscore calc --sr`` and batch
  pass);
* ``pool worker start``: CPU seconds of one batch pool worker forked from the warm
  fork server (:class:`tbscore.batch.executors.LocalExecutor`), from the fork to its
  first task (its own ``getrusage``), and those of the fork server itself, paid once
  per batch whatever the number of workers; for a server with the detector's kernels
  (a batch that may detect) and one without (every input has an ROI file);
* ``worker warm-up``: CPU seconds of a fresh ``python -c`` process that imports
  :mod:`tbscore.batch.worker` and runs :func:`~tbscore.batch.worker.warm_up` (numba
  cache already populated), minus that of a bare ``python -c pass`` measured in the same
  run (the interpreter itself).

The peer for each row is the same work done by the reference path in this run where
one exists (the numpy variogram reference for the kernel share; see
``bench_kernel.py``); the ratios in ``benchmarks/README.md`` come from this script and
the others, run side by side.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np

import tbscore
from _timing import child_cpu, cpu_median, cpu_min

SAMPLES = Path(__file__).resolve().parents[1] / "sample_dicom"


def _cpu_per_call(fn, repeat: int) -> float:
    """Median CPU seconds per call of ``fn`` (10 blocks of calls, after one warm-up)."""
    return cpu_median(fn, max(1, repeat // 10), 10)


def _child_cpu(code: str, runs: int = 5) -> float:
    """Median CPU seconds (user + system) of ``python -c code`` in a fresh process."""
    return statistics.median(child_cpu([sys.executable, "-c", code]) for _ in range(runs))


def pool_start(runs: int = 3) -> None:
    """Print the CPU seconds of a pool worker and of the fork server (median of runs),
    for a server that loads the detector's kernels (a batch that may detect) and one
    that does not (every input has an ROI file)."""
    from tbscore.batch.executors import LocalExecutor, fork_server_pid, stop_fork_server
    from tbscore.batch.worker import Job

    for detection in (True, False):
        workers, servers = [], []
        for _ in range(runs):
            stop_fork_server()  # a fresh server each run
            try:
                ex = LocalExecutor(Job(), jobs=1, detection=detection)
            except TypeError:  # a tbscore before the choice (an old/new comparison)
                if not detection:
                    return
                ex = LocalExecutor(Job(), jobs=1)
            use = ex._pool.submit(resource.getrusage, resource.RUSAGE_SELF).result()
            workers.append(use.ru_utime + use.ru_stime)  # the child's own, since its fork
            pid = fork_server_pid()
            if pid is not None:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
                servers.append((int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK"))
            ex.close()
        stop_fork_server()
        server = f"{statistics.median(servers):.3f}" if servers else "n/a"
        what = "with the detector's kernels" if detection else "ROI files only, no detector"
        print(
            f"pool worker start ({what}): {statistics.median(workers):.3f} CPU-s per worker "
            f"forked from the warm fork server; the fork server itself {server} CPU-s once "
            "per batch"
        )


def stages() -> None:
    """Print ``calc`` + ROI file and its stages per sample, isolated and warm (CPU ms).

    ``calc(image, rois)`` is ``calc`` on an already loaded image with resolved ROIs, and
    its ``glue`` row that less ``compute_vertebrae`` (both measured in this run): the
    finite check, the L1-L4 mean and interval, the warnings, the result object and its
    metadata, the path format.
    """
    import hashlib

    from tbscore.api import as_image, resolve_rois, resolve_settings
    from tbscore.core.tbs import compute_vertebrae
    from tbscore.io.load import _decode, _metadata, _Values, load_dicom
    from tbscore.io.sniff import read_dicom_bytes

    def digests(data: bytes, stored: np.ndarray) -> None:
        hashlib.sha256(data).hexdigest()
        digest = hashlib.sha256(f"{stored.dtype.str}{stored.shape}".encode())
        digest.update(np.ascontiguousarray(stored).data)
        digest.hexdigest()

    cfg = resolve_settings(None)
    paths = sorted(SAMPLES.glob("*.dcm"))
    rows: dict[str, list[float]] = {}
    for p in paths:
        roi = p.with_name(p.stem + ".roi.json")
        image = as_image(p)
        rois = resolve_rois(roi, image, cfg)
        result = tbscore.calc(p, roi)
        ds, data = read_dicom_bytes(p)
        stored = _decode(_Values(ds), str(p))
        for name, fn in (
            ("calc + ROI file", lambda p=p, r=roi: tbscore.calc(p, r)),
            ("load_dicom", lambda p=p: load_dicom(p)),
            ("  of it: read + dcmread", lambda p=p: read_dicom_bytes(p)),
            ("  of it: SHA-256 file, pixels", lambda d=data, s=stored: digests(d, s)),
            ("  of it: header values", lambda ds=ds: _metadata(_Values(ds))),
            ("resolve_rois", lambda r=roi, i=image: resolve_rois(r, i, cfg)),
            (
                "compute_vertebrae",
                lambda i=image, r=rois: compute_vertebrae(i.pixels, r, i.spacing_mm, cfg),
            ),
            ("to_json", result.to_json),
            ("calc(image, rois)", lambda i=image, r=rois: tbscore.calc(i, r)),
        ):
            rows.setdefault(name, []).append(cpu_min(fn, 40, 15))
        # what calc does besides its stages: finite check, L1-L4 mean and interval,
        # warnings, the result object and its metadata dict, path format (the two
        # rows above, in this run: calc on a loaded image and given ROIs, less the
        # vertebra maths alone)
        rows.setdefault("  of it: glue (less vertebrae)", []).append(
            rows["calc(image, rois)"][-1] - rows["compute_vertebrae"][-1]
        )
    print(
        f"\n{'stage (CPU ms, min of 15 x 40)':<32}" + "".join(f"{p.stem[:18]:>20}" for p in paths)
    )
    for name, values in rows.items():
        print(
            f"{name:<32}"
            + "".join(f"{1e3 * v:20.3f}" for v in values)
            + f"   mean {1e3 * float(np.mean(values)):.3f}"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=100, help="timed calls per figure")
    ap.add_argument("--no-warm", action="store_true", help="skip the worker warm-up row")
    ap.add_argument(
        "--stages",
        action="store_true",
        help="only calc + ROI file and its stages (load, ROIs, vertebrae, to_json, calc on "
        "a loaded image and its glue) per sample, isolated, minimum over blocks",
    )
    args = ap.parse_args(argv)
    if args.stages:
        stages()
        return
    print(
        f"# tbscore {tbscore.__version__} per-scan benchmark — "
        f"{platform.processor() or platform.machine()}, python {platform.python_version()}, "
        f"numpy {np.__version__}; load average {os.getloadavg()[0]:.2f}"
    )
    paths = sorted(SAMPLES.glob("*.dcm"))
    print(f"\n{'measure (CPU ms per scan)':<32}" + "".join(f"{p.stem[:18]:>20}" for p in paths))
    rows: dict[str, list[float]] = {"calc + ROI file": [], "to_json": [], "calc automatic ROIs": []}
    results = []
    for p in paths:
        roi = p.with_name(p.stem + ".roi.json")
        rows["calc + ROI file"].append(
            _cpu_per_call(lambda p=p, r=roi: tbscore.calc(p, r), args.repeat)
        )
        res = tbscore.calc(p, roi)
        results.append(res)
        rows["to_json"].append(_cpu_per_call(res.to_json, args.repeat))
        rows["calc automatic ROIs"].append(
            _cpu_per_call(lambda p=p: tbscore.calc(p), max(10, args.repeat // 5))
        )
    try:
        from tbscore.io.sr import write_sr
    except ImportError:  # pragma: no cover
        write_sr = None
    if write_sr is not None:
        from tbscore.api import as_image

        rows["write_sr (reads the file)"] = []
        rows["write_sr (kept header)"] = []
        with tempfile.TemporaryDirectory() as tmp:
            for p, res in zip(paths, results, strict=True):
                out = Path(tmp) / (p.stem + ".sr.dcm")
                header = as_image(p).header  # what calc / batch now hand to write_sr
                for key, src in (
                    ("write_sr (reads the file)", p),
                    ("write_sr (kept header)", header),
                ):
                    rows[key].append(
                        _cpu_per_call(
                            lambda res=res, src=src, out=out: write_sr(res, src, out),
                            max(10, args.repeat // 5),
                        )
                    )
    for name, values in rows.items():
        print(f"{name:<32}" + "".join(f"{1e3 * v:20.2f}" for v in values))
    print()
    for name, values in rows.items():
        print(f"{name}: mean {1e3 * float(np.mean(values)):.2f} ms/scan over {len(values)} images")
    if not args.no_warm:
        pool_start()
        bare = _child_cpu("pass")
        warm = _child_cpu("from tbscore.batch.worker import warm_up; warm_up()")
        print(
            f"worker warm-up: {warm:.3f} CPU-s in a fresh process, {warm - bare:.3f} CPU-s "
            f"beyond a bare interpreter ({bare:.3f} CPU-s)"
        )


if __name__ == "__main__":
    main()
