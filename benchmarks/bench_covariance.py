"""CPU cost of the exact variogram covariance (the 95 % interval) per path.

Run: ``python benchmarks/bench_covariance.py [--repeat 20] [--no-sweep]``.

Two tables, CPU time of this process (``time.process_time``), warm (one call before
timing), each path against the FFT path as peer in the same run, on the same input:

* per ``sample_dicom`` image, the covariance calls ``tbscore.calc(path)`` makes on its
  automatically detected ROIs (captured from one ``calc``, then timed alone):
  ``method="auto"`` (closed form on full boxes, row runs on detected rounded or rotated
  ROIs) vs ``method="fft"``, CPU ms per scan, and the largest difference between
  the paths' values (relative to the largest covariance);
* a sweep of random masks (a box less a share ``p`` of its pixels, scattered), 10 and 20
  lags: row-run path vs FFT path, and the run-cost ratio that
  ``tbscore.core.uncertainty.RUNS_PER_CELL`` is compared to when choosing the path
  (the ratio where the two cost the same is the crossover the default is set below).
"""

from __future__ import annotations

import argparse
import os
import platform
from pathlib import Path

import numpy as np

from _timing import cpu_per_call, spy_calls

SAMPLES = Path(__file__).resolve().parents[1] / "sample_dicom"


def _captured_calls(path: Path) -> list[tuple]:
    """Arguments of every variogram_covariance call made by ``tbscore.calc(path)``."""
    import tbscore
    import tbscore.core.uncertainty as unc

    return spy_calls(unc, "variogram_covariance", lambda: tbscore.calc(path))


def samples(repeat: int) -> None:
    from tbscore.core.uncertainty import variogram_covariance

    print(
        f"{'image':<28}{'ROIs':>5}{'boxes':>6}{'auto ms':>9}{'fft ms':>9}{'fft/auto':>9}"
        "  max rel. diff (auto vs fft, runs)"
    )
    for path in sorted(SAMPLES.glob("*.dcm")):
        calls = _captured_calls(path)
        boxes = sum(
            bool(np.asarray(m)[np.ix_(np.asarray(m).any(1), np.asarray(m).any(0))].all())
            for m, *_ in calls
        )

        def run(method, calls=calls):
            for args in calls:
                variogram_covariance(*args, method=method)

        auto, fft = (
            cpu_per_call(lambda: run("auto"), repeat),
            cpu_per_call(lambda: run("fft"), repeat),
        )
        diff = max(
            float(np.max(np.abs(variogram_covariance(*a) - variogram_covariance(*a, method=m))))
            / float(np.max(np.abs(variogram_covariance(*a, method="fft"))))
            for a in calls
            for m in ("fft", "runs")
        )
        print(
            f"{path.stem[:27]:<28}{len(calls):>5}{boxes:>6}{auto * 1e3:>9.2f}"
            f"{fft * 1e3:>9.2f}{fft / auto:>9.1f}  {diff:.1e}"
        )


def sweep(repeat: int) -> None:
    import tbscore.core.uncertainty as unc
    from tbscore.core.tbs import select_lags

    rng = np.random.default_rng(1)
    print(
        f"\n{'lags':>4}{'shape':>11}{'p':>7}{'ratio':>8}{'runs ms':>9}{'fft ms':>9}{'fft/runs':>9}"
    )
    for spacing in ((1.0, 1.0), (0.5, 0.5)):
        lags, _ = select_lags(spacing, 0.5, 3.0)
        lags = np.asarray(lags, np.int64)
        for shape in ((30, 45), (60, 90), (120, 160)):
            for p in (0.002, 0.01, 0.03, 0.1):
                mask = rng.random(shape) >= p
                mask[0, 0] = False
                _, roff, _ = unc._lag_runs(mask, lags)
                t = np.diff(roff).astype(float)
                k = t.size
                grid = (2 * shape[0] - 1) * (2 * shape[1] - 1)
                ratio = (t.sum() ** 2 + (t**2).sum()) / 2 / (k * (k + 1) / 2 * grid)
                rep = max(1, repeat // 10 if shape[0] > 60 else repeat // 4)
                args = (mask, lags, spacing, 1.0, 1.0, 0.1)
                tr, tf = (
                    cpu_per_call(lambda m=m, a=args: unc.variogram_covariance(*a, method=m), rep)
                    for m in ("runs", "fft")
                )
                print(
                    f"{k:>4}{str(shape):>11}{p:>7}{ratio:>8.2f}{tr * 1e3:>9.2f}"
                    f"{tf * 1e3:>9.2f}{tf / tr:>9.2f}"
                )
    print(f"\nRUNS_PER_CELL = {unc.RUNS_PER_CELL} (run path below this ratio)")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=20, help="timed calls per figure")
    ap.add_argument("--no-sweep", action="store_true", help="skip the random-mask sweep")
    args = ap.parse_args(argv)
    import tbscore

    print(
        f"# tbscore {tbscore.__version__} covariance benchmark — {platform.machine()}, "
        f"numpy {np.__version__}; load average {os.getloadavg()[0]:.2f}\n"
    )
    samples(args.repeat)
    if not args.no_sweep:
        sweep(args.repeat)


if __name__ == "__main__":
    main()
