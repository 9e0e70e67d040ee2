"""Variogram kernel benchmark: numba kernel vs numpy reference vs gstools.

Run: ``python benchmarks/bench_kernel.py`` (needs the ``bench`` extra for gstools).

Two workloads on the same 300 x 200 masked ROI (an elliptical vertebra-like mask on a
fractional-Brownian-like texture, float64 and uint16):

1. TBS lags: 20 lag vectors (5 each along rows, columns and both diagonals), the
   workload of one vertebra. numba (1 thread) vs the numpy reference.
2. Axis lags: every lag along rows and along columns (299 + 199 lags), the workload
   gstools' ``vario_estimate_axis`` computes; numba vs numpy vs gstools, after checking
   that all three agree (gstools returns the semivariogram, i.e. half our V).

All timings are the median of repeated calls in this one run, and the claims are the
ratios between them. Numba is single-threaded here (``parallel=False``) unless
``--threads N`` is given.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import numpy as np

from tbscore.core.variogram import variogram_sums, variogram_sums_reference


def _time(fn, repeat: int) -> float:
    fn()  # warm-up (and numba compilation / cache load)
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


def _case(dtype, seed: int = 0, holes: bool = False) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, cols = 300, 200
    field = np.cumsum(np.cumsum(rng.normal(size=(rows, cols)), 0), 1)
    field = (field - field.min()) / np.ptp(field)
    img = (field * 50000 + rng.normal(scale=500, size=field.shape)).clip(0, 65535)
    rr, cc = np.mgrid[:rows, :cols]
    mask = ((rr - 150) / 145) ** 2 + ((cc - 100) / 97) ** 2 <= 1
    if holes:  # 10 % of pixels excluded at random (e.g. masked artefacts)
        mask &= rng.random(mask.shape) > 0.1
    return img.astype(dtype), mask


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=30)
    ap.add_argument("--threads", type=int, default=0, help="also time numba with N threads")
    args = ap.parse_args(argv)
    print(
        f"# variogram kernel benchmark — {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}, numpy {np.__version__}"
    )
    tbs_lags = np.array(
        [(k, 0) for k in range(1, 6)]
        + [(0, k) for k in range(1, 6)]
        + [(k, k) for k in range(1, 6)]
        + [(k, -k) for k in range(1, 6)]
    )
    print("\n## 1. TBS lags (20 lag vectors), 300x200 ROI, one core")
    print(f"{'dtype':<8} {'mask':<10} {'numba ms':>9} {'numpy ms':>9} {'numpy/numba':>12}")
    for dtype, holes in ((np.float64, False), (np.uint16, False), (np.float64, True)):
        img, mask = _case(dtype, holes=holes)
        s1, c1 = variogram_sums(img, mask, tbs_lags)
        s2, c2 = variogram_sums_reference(img, mask, tbs_lags)
        assert np.array_equal(c1, c2) and np.allclose(s1, s2, rtol=1e-12, atol=0)
        tn = _time(lambda img=img, mask=mask: variogram_sums(img, mask, tbs_lags), args.repeat)
        tr = _time(
            lambda img=img, mask=mask: variogram_sums_reference(img, mask, tbs_lags), args.repeat
        )
        kind = "ellipse+holes" if holes else "ellipse"
        print(
            f"{np.dtype(dtype).name:<8} {kind:<10} {tn * 1e3:9.3f} {tr * 1e3:9.3f} {tr / tn:11.1f}x"
        )
    if args.threads:
        import numba

        numba.set_num_threads(args.threads)
        img, mask = _case(np.float64)
        tn1 = _time(lambda: variogram_sums(img, mask, tbs_lags), args.repeat)
        tnp = _time(lambda: variogram_sums(img, mask, tbs_lags, parallel=True), args.repeat)
        print(f"numba {args.threads} threads vs 1: {tn1 / tnp:.2f}x")

    print("\n## 2. All axis lags (299 row + 199 column lags), vs gstools.vario_estimate_axis")
    img, mask = _case(np.float64)
    axis_lags = np.array([(k, 0) for k in range(1, 300)] + [(0, k) for k in range(1, 200)])
    try:
        import gstools as gs
    except ImportError:
        gs = None
        print("gstools not installed (pip install 'tbscore[bench]'): peer column skipped")
    s, c = variogram_sums(img, mask, axis_lags)
    with np.errstate(invalid="ignore", divide="ignore"):
        ours = np.where(c > 0, s / np.maximum(c, 1), np.nan)
    tn = _time(lambda: variogram_sums(img, mask, axis_lags), max(3, args.repeat // 5))
    tr = _time(lambda: variogram_sums_reference(img, mask, axis_lags), max(3, args.repeat // 5))
    line = f"numba {tn * 1e3:.2f} ms, numpy {tr * 1e3:.2f} ms (numpy/numba {tr / tn:.1f}x)"
    if gs is not None:
        field = np.ma.masked_array(img, mask=~mask)

        def peer():
            return (
                gs.vario_estimate_axis(field, direction=0),
                gs.vario_estimate_axis(field, direction=1),
            )

        g0, g1 = peer()
        theirs = np.concatenate([2 * np.asarray(g0)[1:300], 2 * np.asarray(g1)[1:200]])
        ok = np.isfinite(ours) & np.isfinite(theirs)
        rel = np.max(np.abs(ours[ok] - theirs[ok]) / np.abs(theirs[ok]).clip(1e-300))
        tg = _time(peer, max(3, args.repeat // 5))
        line += (
            f", gstools {tg * 1e3:.2f} ms (gstools/numba {tg / tn:.1f}x); "
            f"max relative difference vs gstools {rel:.1e} over {ok.sum()} lags"
        )
    print(line)


if __name__ == "__main__":
    main()
