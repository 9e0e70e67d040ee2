"""Issue 14, every target row before and after: a peer source tree against this one.

Run: ``python benchmarks/bench_issue14.py --peer /tmp/base/src [--rounds 3]``, where the
peer is an earlier tree (``git archive bacdbed src | tar -x -C /tmp/base``: the commit
issue 14 was measured on). Every figure is CPU time, measured in a fresh subprocess with
``PYTHONPATH`` set to one tree or the other, the two trees alternated ``--rounds``
times (old, new, old, new ...), so that both meet the same machine load; the table gives
the best and the median round of each side and their ratio. Only public calls that
both trees have are timed:

* ``calc + ROI file``: ``tbscore.calc(path, roi)``, median CPU of 10 blocks of 2 calls
  per bundled sample after one warm call, mean of the 4 samples (ms per scan);
* ``calc automatic ROIs``: ``tbscore.calc(path)``, the same (ms per scan);
* ``kernel``: ``variogram_sums`` on a solid 300 x 200 uint16 ROI with the default lags
  at 1 mm (``select_lags``), median of 7 blocks (G pairs/s);
* ``write_sr``: ``tbscore.io.sr.write_sr(result, path, out)`` (the file read again),
  mean of the 4 samples (ms per scan);
* ``batch``: ``run_batch(folder, out.csv, jobs=1)`` (what ``tbscore batch --jobs 1``
  runs: discovery, sniffing, hashing, ROI look-up, one fsync-ed CSV row per scan) over
  ``--n`` scans with ROI files, and over ``--n-auto`` of them without (automatic ROIs),
  in a process warmed by a one-scan batch: scans per CPU-s of the least of 3 runs
  into a new CSV (imports and kernel loading not counted: the marginal rate);
* ``fresh worker warm-up``: a new interpreter that imports ``tbscore.batch.worker`` and
  runs ``warm_up()``, less a bare interpreter (CPU-s). A pool worker forked from the
  warm fork server pays much less (``bench_scan.py`` prints it); this row is what a
  worker started from nothing pays (a Dask worker process, or ``spawn``).

The numba caches of both trees should be warm (run once before; the first round of
each side is also a warm-up that is not reported when ``--rounds`` >= 3).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _timing import child_cpu

HERE = Path(__file__).resolve().parent
SAMPLES = HERE.parent / "sample_dicom"
SRC = HERE.parent / "src"

# The snippets run in a fresh interpreter with PYTHONPATH = the tree measured and this
# folder first on sys.path (_snippet), for _timing.cpu_median.
_CALC = r"""
import json, sys
from pathlib import Path
import tbscore
from _timing import cpu_median
paths = sorted(Path(sys.argv[1]).glob("*.dcm"))
auto = sys.argv[2] == "auto"
vals = []
for p in paths:
    roi = None if auto else p.with_name(p.stem + ".roi.json")
    vals.append(cpu_median(lambda p=p, roi=roi: tbscore.calc(p, roi), 2, 10))
print(json.dumps(1e3 * sum(vals) / len(vals)))
"""

_KERNEL = r"""
import json
import numpy as np
from tbscore.core.settings import Settings
from tbscore.core.tbs import select_lags
from tbscore.core.variogram import variogram_sums
from _timing import cpu_median
s = Settings()
lags, _ = select_lags((1.0, 1.0), s.lag_min_mm, s.lag_max_mm, s.directions)
img = np.random.default_rng(0).integers(0, 4096, (300, 200)).astype(np.uint16)
mask = np.ones(img.shape, bool)
sums, counts = variogram_sums(img, mask, lags)
pairs = float(np.sum(counts))
print(json.dumps(pairs / cpu_median(lambda: variogram_sums(img, mask, lags), 200, 7) / 1e9))
"""

_SR = r"""
import json, sys, tempfile
from pathlib import Path
import tbscore
from tbscore.io.sr import write_sr
from _timing import cpu_median
paths = sorted(Path(sys.argv[1]).glob("*.dcm"))
vals = []
with tempfile.TemporaryDirectory() as tmp:
    for p in paths:
        res = tbscore.calc(p, p.with_name(p.stem + ".roi.json"))
        out = Path(tmp) / (p.stem + ".sr.dcm")
        vals.append(cpu_median(lambda res=res, p=p, out=out: write_sr(res, p, out), 2, 5))
print(json.dumps(1e3 * sum(vals) / len(vals)))
"""


_BATCH = r"""
import json, sys, time
from pathlib import Path
from tbscore.batch.runner import run_batch
big, n, one, work = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3]), Path(sys.argv[4])
def run(folder):
    out = work / "out.csv"
    for stale in (out, work / "out.journal.csv"):
        stale.unlink(missing_ok=True)
    t0 = time.process_time()
    run_batch(folder, out, jobs=1, progress=False)
    return time.process_time() - t0
run(one)  # imports, kernels, the first scan
print(json.dumps(n / min(run(big) for _ in range(3))))
"""


def _env(src: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join((str(src), str(HERE)))
    return env


def _snippet(code: str, src: Path, *args: str) -> float:
    out = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=_env(src),
        cwd=tempfile.gettempdir(),
        check=True,
        capture_output=True,
        text=True,
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def _batch_rate(src: Path, big: Path, n: int, one: Path, work: Path) -> float:
    """Scans per CPU-s of ``run_batch(folder, out, jobs=1)`` over ``n`` scans in a warm
    process (:data:`_BATCH`)."""
    return _snippet(_BATCH, src, str(big), str(n), str(one), str(work))


def _warm_up(src: Path) -> float:
    code = "from tbscore.batch.worker import warm_up; warm_up()"
    env = _env(src)
    cwd = Path(tempfile.gettempdir())
    warm = min(child_cpu([sys.executable, "-c", code], env, cwd) for _ in range(3))
    bare = min(child_cpu([sys.executable, "-c", "pass"], env, cwd) for _ in range(3))
    return warm - bare


def _inputs(work: Path, n: int, n_auto: int) -> tuple[Path, Path, Path, Path]:
    """Folders of ``n`` and 1 scans with ROI files, and of ``n_auto`` and 1 of them
    without (this tree's phantom writer: :func:`bench_batch.make_inputs`)."""
    from bench_batch import make_auto_inputs, make_inputs

    roi, roi1 = work / "roi", work / "roi1"
    roi.mkdir()
    roi1.mkdir()
    paths = make_inputs(roi, n)
    for q in (paths[0], paths[0].with_name(paths[0].stem + ".roi.json")):
        os.link(q, roi1 / q.name)
    auto, auto1 = work / "auto", work / "auto1"
    make_auto_inputs(auto, paths[:n_auto])
    make_auto_inputs(auto1, paths[:1])
    return roi, roi1, auto, auto1


#: (row, unit, better: "low" or "high", target as text)
ROWS = (
    ("calc + ROI file, per scan", "ms", "low", "<= 1.5 ms"),
    ("calc automatic ROIs, per scan", "ms", "low", "<= 12 ms"),
    ("kernel 300x200 solid uint16, default lags", "G pairs/s", "high", ">= 2.0"),
    ("write_sr (reads the file), per scan", "ms", "low", "<= 30 ms"),
    ("batch --jobs 1, ROI files, marginal", "scans/CPU-s", "high", ">= 400"),
    ("batch --jobs 1, automatic ROIs, marginal", "scans/CPU-s", "high", ">= 80"),
    (
        "fresh worker warm-up (beyond a bare python)",
        "CPU-s",
        "low",
        "<= 0.5 per worker (a forked pool worker: bench_scan.py)",
    ),
)


def measure(
    src: Path, data: tuple[Path, Path, Path, Path], n: int, n_auto: int, work: Path
) -> list[float]:
    """One round of every row for the tree ``src``."""
    roi, roi1, auto, auto1 = data
    return [
        _snippet(_CALC, src, str(SAMPLES), "roi"),
        _snippet(_CALC, src, str(SAMPLES), "auto"),
        _snippet(_KERNEL, src),
        _snippet(_SR, src, str(SAMPLES)),
        _batch_rate(src, roi, n, roi1, work),
        _batch_rate(src, auto, n_auto, auto1, work),
        _warm_up(src),
    ]


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--peer", required=True, type=Path, help="the earlier tree's src/ folder")
    ap.add_argument("--rounds", type=int, default=3, help="alternated rounds per side")
    ap.add_argument("--n", type=int, default=400, help="scans per batch run, ROI files")
    ap.add_argument("--n-auto", type=int, default=100, help="scans per batch run, automatic ROIs")
    args = ap.parse_args(argv)
    trees = {"peer": args.peer.resolve(), "this": SRC}
    with tempfile.TemporaryDirectory(prefix="tbscore-i14-") as tmp:
        work = Path(tmp)
        n_auto = min(args.n_auto, args.n)
        data = _inputs(work, args.n, n_auto)
        runs: dict[str, list[list[float]]] = {"peer": [], "this": []}
        for r in range(args.rounds):
            for side in ("peer", "this"):
                runs[side].append(measure(trees[side], data, args.n, n_auto, work))
                print(f"round {r + 1} {side}: " + ", ".join(f"{v:.4g}" for v in runs[side][-1]))
    keep = slice(1, None) if args.rounds >= 3 else slice(None)
    print(
        f"\n# issue 14 before/after — {platform.machine()}, python {platform.python_version()}, "
        f"load average {os.getloadavg()[0]:.2f}; peer {trees['peer']}; "
        f"{args.rounds} alternated rounds" + (" (first not counted)" if args.rounds >= 3 else "")
    )
    print("| measure | unit | peer best / median | this best / median | this/peer | target |")
    print("|---|---|---|---|---|---|")
    for i, (name, unit, better, target) in enumerate(ROWS):
        cols = []
        best = {}
        for side in ("peer", "this"):
            vals = [run[i] for run in runs[side][keep]]
            best[side] = min(vals) if better == "low" else max(vals)
            cols.append(f"{best[side]:.4g} / {statistics.median(vals):.4g}")
        ratio = best["this"] / best["peer"]
        print(f"| {name} | {unit} | {cols[0]} | {cols[1]} | {ratio:.2f} | {target} |")


if __name__ == "__main__":
    main()
