"""Best-of-blocks CPU time of ``detect`` and of ``tbscore.calc`` (automatic ROIs) on the
four bundled ``sample_dicom`` images: a figure less moved by other jobs on a shared
machine than a median.

Run: ``python benchmarks/bench_samples_min.py LABEL [--blocks 25]``; for a before /
after pair run it alternately with the old tree first on the path
(``PYTHONPATH=/tmp/old/src python benchmarks/bench_samples_min.py old``, then
``python benchmarks/bench_samples_min.py new``), several times, and compare the minima.

Each image: one warm-up call, then ``--blocks`` blocks of 2 calls timed with
``time.process_time`` (this process, one thread); printed per image: the minimum and
the median over the blocks (ms a call), and their means over the four images.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from pathlib import Path

SAMPLES = Path(__file__).resolve().parents[1] / "sample_dicom"


def _blocks(f: Callable[[], object], blocks: int) -> list[float]:
    """CPU ms a call of ``f``, per block of 2 calls, after one warm-up call."""
    f()
    out = []
    for _ in range(blocks):
        t0 = time.process_time()
        f()
        f()
        out.append((time.process_time() - t0) / 2 * 1e3)
    return out


def main() -> None:
    import tbscore
    from tbscore.core.detect import detect
    from tbscore.io.load import load_dicom

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("label", help="name printed in front of each line (e.g. old / new)")
    ap.add_argument("--blocks", type=int, default=25, help="timed blocks of 2 calls")
    args = ap.parse_args()
    paths = sorted(SAMPLES.glob("*.dcm"))
    images = [load_dicom(p) for p in paths]
    for mode in ("detect", "calc"):
        mins, meds = [], []
        for path, image in zip(paths, images, strict=True):
            if mode == "detect":
                times = _blocks(lambda im=image: detect(im.pixels, im.spacing_mm), args.blocks)
            else:
                times = _blocks(lambda p=path: tbscore.calc(p), args.blocks)
            mins.append(min(times))
            meds.append(statistics.median(times))
        print(
            f"{args.label} {mode} min "
            + " ".join(f"{t:.2f}" for t in mins)
            + f" mean {statistics.mean(mins):.2f} | median "
            + " ".join(f"{t:.2f}" for t in meds)
            + f" mean {statistics.mean(meds):.2f}"
        )


if __name__ == "__main__":
    main()
