"""Coverage of the analytic 95 % interval on exact fBm (issue 15, item 2).

Run: ``python benchmarks/coverage_study.py`` (the table of docs/method.md §3b: 64², 128²,
256² and a vertebra-sized 30 x 40 px ROI, SNR inf / 10 / 3 / 1 / 0.3, the three
estimators, 200 draws per cell) or
``python benchmarks/coverage_study.py --sizes 64 --draws 50`` for a quick look.

Ground truth: exact fractional Brownian surfaces (circulant embedding,
:func:`tbscore.sim.phantom.fbm_surface_pair`), H = 0.6 so the log-log slope is 2H = 1.2,
scaled to a variogram ``2 k^(2H)`` in pixel units, plus white noise at
``SNR = V_texture(1 px) / 2 sigma^2``; the whole surface is the ROI, 1 mm pixels, default
lags 0.5-3.0 mm. Every draw is scored by each estimator and given its interval by
:func:`tbscore.core.uncertainty.slope_uncertainty` (the one used by ``calc``).

Columns per cell:

* ``mean (SD)``: the estimator's mean slope and SD over the draws;
* ``mean se``: the mean analytic standard error (compare with the SD);
* ``cover 2H``: share of the 95 % intervals that contain 2H = 1.2 (target 92-98 %);
* ``cover E``: share that contain the estimator's own expectation (estimated by the
  mean over the draws): where an estimator is biased (OLS under noise) the interval is
  about that biased target, not 2H, and this column shows whether its width is right.
* ``warned``: share of the draws with ``snr`` below ``SNR_WARN`` (3).

A 95 % binomial band for 200 draws at p = 0.95 is about +-3 %.
"""

from __future__ import annotations

import argparse
import math
import platform
import time

import numpy as np

from tbscore.core.estimators import ESTIMATORS, fit_slope
from tbscore.core.tbs import select_lags
from tbscore.core.uncertainty import SNR_WARN, slope_uncertainty
from tbscore.core.variogram import variogram
from tbscore.sim.phantom import fbm_surface_pair

HURST = 0.6
TRUTH = 2 * HURST


def parse_size(text: str) -> tuple[int, int]:
    """``"128"`` -> (128, 128); ``"30x40"`` -> (30, 40) (rows x columns, pixels)."""
    parts = [int(p) for p in str(text).lower().split("x")]
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def draws(size: int | tuple[int, int], snr: float, count: int, seed: int):
    """``count`` variograms of exact fBm plus white noise on a ``size`` ROI, and the mask.

    A rectangular ROI is the corner of a square surface (a window of an exact fBm is
    exact fBm)."""
    rows, cols = (size, size) if isinstance(size, int) else size
    n = max(rows, cols)
    lags, _ = select_lags((1.0, 1.0), 0.5, 3.0)
    rng = np.random.default_rng(seed)
    mask = np.ones((rows, cols), bool)
    out: list[np.ndarray] = []
    while len(out) < count:
        b1, b2, h = fbm_surface_pair(n, HURST, rng, return_spacing=True)
        for b in (b1[:rows, :cols], b2[:rows, :cols]):
            b = b / h**HURST
            if math.isfinite(snr):
                b = b + rng.normal(size=b.shape) * math.sqrt(1.0 / snr)
            out.append(variogram(b, mask, lags)[0])
    return mask, out[:count]


def cell(n, snr: float, count: int, seed: int) -> dict[str, dict[str, float]]:
    """Coverage statistics of every estimator on one (size, SNR) cell."""
    lags, dists = select_lags((1.0, 1.0), 0.5, 3.0)
    mask, vs = draws(n, snr, count, seed)
    res: dict[str, dict[str, float]] = {}
    for est in ESTIMATORS:
        slopes, ses, los, his, snrs = [], [], [], [], []
        for v in vs:
            fit = fit_slope(est, dists, v)
            unc = slope_uncertainty(fit, mask, lags, dists, v, (1.0, 1.0))
            slopes.append(fit.slope)
            ses.append(unc.se)
            lo, hi = unc.ci95 if unc.ci95 is not None else (math.nan, math.nan)
            los.append(lo)
            his.append(hi)
            snrs.append(unc.snr)
        s, lo, hi = np.array(slopes), np.array(los), np.array(his)
        e = float(s.mean())
        res[est] = {
            "mean": e,
            "sd": float(s.std(ddof=1)),
            "se": float(np.nanmean(ses)),
            "cover": float(np.mean((lo <= TRUTH) & (TRUTH <= hi))),
            "cover_e": float(np.mean((lo <= e) & (e <= hi))),
            "warned": float(np.mean(np.array(snrs) < SNR_WARN)),
        }
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--sizes",
        nargs="+",
        default=["64", "128", "256", "30x40"],
        help="ROI sizes in pixels: N (N x N) or RxC (30x40: a vertebra-sized ROI)",
    )
    ap.add_argument("--snr", type=float, nargs="+", default=[math.inf, 10.0, 3.0, 1.0, 0.3])
    ap.add_argument("--draws", type=int, default=200)
    ap.add_argument("--seed", type=int, default=20260)
    args = ap.parse_args(argv)
    print(
        f"# coverage study: H = {HURST}, {args.draws} draws per cell, seed {args.seed}, "
        f"{platform.machine()} {platform.python_version()}"
    )
    print("| size | SNR | estimator | mean (SD) | mean se | cover 2H | cover E | warned |")
    print("|---|---|---|---|---|---|---|---|")
    for text in args.sizes:
        size = parse_size(text)
        n = size[0] if size[0] == size[1] else size
        name = f"{size[0]}²" if size[0] == size[1] else f"{size[0]}×{size[1]}"
        for snr in args.snr:
            t0 = time.process_time()
            res = cell(n, snr, args.draws, args.seed + size[0] * size[1] // max(size))
            label = "no noise" if not math.isfinite(snr) else f"{snr:g}"
            for est, r in res.items():
                print(
                    f"| {name} | {label} | {est} | {r['mean']:.3f} ({r['sd']:.3f}) | "
                    f"{r['se']:.3f} | {100 * r['cover']:.1f} % | {100 * r['cover_e']:.1f} % | "
                    f"{100 * r['warned']:.0f} % |",
                    flush=True,
                )
            print(f"<!-- {name} SNR {label}: {time.process_time() - t0:.1f} CPU-s -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
