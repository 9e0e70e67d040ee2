"""What ``tbscore batch`` adds per scan to ``calc``, ROI files, ``--jobs 1``: min of rounds.

Run: ``python benchmarks/bench_batch_rows.py [--n 200] [--rounds 10] [--keep DIR]``.

Writes ``--n`` phantom scans with side-car ROI files (``bench_batch.make_inputs``) and,
``--rounds`` times in turn, times a ``tbscore.calc`` loop over them, ``run_batch`` into a
new CSV (one ``fsync`` per row) and ``run_batch(fsync=False)``, all in this process
(warm). Each figure is the minimum CPU time (``time.process_time``) over the rounds --
the least disturbed one on a shared machine, where single runs move by 10 % -- as
scans/CPU-s, with the batch's extra CPU per scan over the calc loop of the same run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import tbscore
from tbscore.batch import run_batch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_batch import make_inputs  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200, help="number of scans")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--keep", metavar="DIR", help="write the scans here and keep them")
    args = ap.parse_args(argv)
    tmp = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="tbscore-rows-"))
    folder = tmp / "scans"
    folder.mkdir(parents=True, exist_ok=True)
    try:
        paths = sorted(folder.glob("*.dcm")) or make_inputs(folder, args.n)
        rois = [p.with_name(p.stem + ".roi.json") for p in paths]
        out = tmp / "out.csv"

        def calc_loop() -> float:
            c = time.process_time()
            for p, r in zip(paths, rois, strict=True):
                tbscore.calc(p, roi=r)
            return time.process_time() - c

        def batch(**kw) -> float:
            if out.exists():
                out.unlink()
            c = time.process_time()
            run_batch(folder, out, progress=False, **kw)
            return time.process_time() - c

        calc_loop(), batch()  # warm
        load = os.getloadavg()[0]
        best = {"calc loop": 1e9, "batch": 1e9, "batch no-fsync": 1e9}
        for _ in range(args.rounds):
            best["calc loop"] = min(best["calc loop"], calc_loop())
            best["batch"] = min(best["batch"], batch())
            best["batch no-fsync"] = min(best["batch no-fsync"], batch(fsync=False))
        n = len(paths)
        print(
            f"# tbscore {tbscore.__version__}: {n} scans, min CPU of {args.rounds} rounds; "
            f"load average {load:.2f} before, {os.getloadavg()[0]:.2f} after"
        )
        for name, cpu in best.items():
            extra = 1e3 * (cpu - best["calc loop"]) / n
            print(
                f"{name:<16} {n / cpu:8.1f} scans/CPU-s {1e3 * cpu / n:6.3f} ms/scan +{extra:.3f}"
            )
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
