"""Coverage of the analytic 95 % interval on exact fBm (issue 15, item 2).

Run: ``python benchmarks/coverage_study.py`` (the table of docs/method.md §3b: 64², 128²,
256² and a vertebra-sized 30 x 40 px ROI, SNR inf / 10 / 3 / 1 / 0.3, the three
estimators, 200 draws per cell) or
``python benchmarks/coverage_study.py --sizes 64 --draws 50`` for a quick look;
``--disk`` makes each ROI the ellipse inscribed in its box (a rounded ROI, as detected).

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

* ``width``: the mean width ``hi - lo`` of the 95 % intervals (for ``"nugget"`` its
  profile interval, not ``2 * 1.96 se``).

``--bound-aware`` adds three other intervals for ``"nugget"`` (issue 15, item 2;
investigations, not what ``calc`` does): ``nugget+delta``, the slope +- 1.96 se (the
delta-method interval ``calc`` gave before the profile interval), ``nugget+union``, the
hull of that interval and that of the unconstrained fit (``n`` of any sign) in the draws
where the fit's ``n >= 0`` bound is active, and ``nugget+n-free``, the slope +- 1.96 se
with ``n`` kept free in the delta method at the bound. Their ``mean se`` is the mean
half-width / 1.96.
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from dataclasses import replace

import numpy as np

from tbscore.core.estimators import _A_HI, _A_LO, ESTIMATORS, SlopeFit, _grid_argmin, fit_slope
from tbscore.core.tbs import select_lags
from tbscore.core.uncertainty import SNR_WARN, Z95, slope_uncertainty
from tbscore.core.variogram import variogram
from tbscore.sim.phantom import fbm_surface_pair

HURST = 0.6
TRUTH = 2 * HURST


def parse_size(text: str) -> tuple[int, int]:
    """``"128"`` -> (128, 128); ``"30x40"`` -> (30, 40) (rows x columns, pixels)."""
    parts = [int(p) for p in str(text).lower().split("x")]
    return (parts[0], parts[0]) if len(parts) == 1 else (parts[0], parts[1])


def draws(size: int | tuple[int, int], snr: float, count: int, seed: int, disk: bool = False):
    """``count`` variograms of exact fBm plus white noise on a ``size`` ROI, and the mask.

    A rectangular ROI is the corner of a square surface (a window of an exact fBm is
    exact fBm); ``disk``: the ellipse inscribed in it instead of the whole box."""
    rows, cols = (size, size) if isinstance(size, int) else size
    n = max(rows, cols)
    lags, _ = select_lags((1.0, 1.0), 0.5, 3.0)
    rng = np.random.default_rng(seed)
    mask = np.ones((rows, cols), bool)
    if disk:
        yy, xx = np.mgrid[:rows, :cols]
        mask = ((yy - (rows - 1) / 2) / (rows / 2)) ** 2 + (
            (xx - (cols - 1) / 2) / (cols / 2)
        ) ** 2 <= 1.0
    out: list[np.ndarray] = []
    while len(out) < count:
        b1, b2, h = fbm_surface_pair(n, HURST, rng, return_spacing=True)
        for b in (b1[:rows, :cols], b2[:rows, :cols]):
            b = b / h**HURST
            if math.isfinite(snr):
                b = b + rng.normal(size=b.shape) * math.sqrt(1.0 / snr)
            out.append(variogram(b, mask, lags)[0])
    return mask, out[:count]


def unconstrained_nugget(d: np.ndarray, v: np.ndarray) -> SlopeFit:
    """The ``"nugget"`` fit ``V = c d^a + n`` without the ``n >= 0`` bound (``n`` may be
    negative), with its delta-method gradient (all parameters free)."""
    scale = float(v.min())
    vs, ld = v / scale, np.log(d)
    w = 1.0 / vs**2

    def solve(a):
        p = np.exp(np.multiply.outer(a, ld))
        s11, s12, s22 = (w * p * p).sum(-1), (w * p).sum(-1), w.sum()
        b1, b2 = (w * vs * p).sum(-1), (w * vs).sum()
        det = s11 * s22 - s12 * s12
        c, nug = (b1 * s22 - b2 * s12) / det, (s11 * b2 - s12 * b1) / det
        r = vs - c[..., None] * p - nug[..., None]
        return c, nug, np.where(c > 0, (w * r * r).sum(-1), np.inf)

    a = _grid_argmin(lambda aa: solve(aa)[2], _A_LO, _A_HI)
    c, nug, _ = solve(np.array([a]))
    c, nug = float(c[0]), float(nug[0])
    tex = c * np.exp(a * ld)
    m = tex + nug
    jac = np.column_stack([tex / m, tex * ld / m, 1.0 / m])
    g = np.linalg.pinv(jac)[1] if 1e-4 < a < 2.0 - 1e-4 else np.zeros(v.size)
    return SlopeFit(a, math.log(c * scale), nug * scale, 0.0, math.nan, v.size, g / v, "nugget")


def _bound_aware(fit, unc, mask, lags, dists, v) -> tuple[tuple, tuple]:
    """(delta, union, n-free) intervals of a ``"nugget"`` fit (the delta one where
    ``n > 0``)."""
    lo, hi = fit.slope - Z95 * unc.se, fit.slope + Z95 * unc.se  # nan where se is
    if fit.nugget > 1e-9 * float(v.min()):
        return (lo, hi), (lo, hi), (lo, hi)
    free = unconstrained_nugget(dists, v)
    uu = slope_uncertainty(free, mask, lags, dists, v, (1.0, 1.0))
    ulo, uhi = free.slope - Z95 * uu.se, free.slope + Z95 * uu.se
    ld = np.log(dists)
    tex = math.exp(fit.intercept) * np.exp(fit.slope * ld)
    # d ln m / d (ln c, a, n / min V) at n = 0, n kept free
    jac = np.column_stack([np.ones_like(ld), ld, float(v.min()) / tex])
    g = np.linalg.pinv(jac)[1] / v if 1e-4 < fit.slope < 2.0 - 1e-4 else np.zeros(v.size)
    ud = slope_uncertainty(replace(fit, gradient=g), mask, lags, dists, v, (1.0, 1.0))
    dlo, dhi = fit.slope - Z95 * ud.se, fit.slope + Z95 * ud.se
    return (lo, hi), (min(lo, ulo), max(hi, uhi)), (dlo, dhi)


def cell(
    n, snr: float, count: int, seed: int, bound_aware: bool = False, disk: bool = False
) -> dict[str, dict[str, float]]:
    """Coverage statistics of every estimator on one (size, SNR) cell."""
    lags, dists = select_lags((1.0, 1.0), 0.5, 3.0)
    mask, vs = draws(n, snr, count, seed, disk)
    res: dict[str, dict[str, float]] = {}
    extra: dict[str, list[tuple[float, float]]] = {
        "nugget+delta": [],
        "nugget+union": [],
        "nugget+n-free": [],
    }
    for est in ESTIMATORS:
        slopes, ses, los, his, snrs = [], [], [], [], []
        for v in vs:
            fit = fit_slope(est, dists, v)
            unc = slope_uncertainty(fit, mask, lags, dists, v, (1.0, 1.0))
            if bound_aware and est == "nugget":
                delta, union, nfree = _bound_aware(fit, unc, mask, lags, dists, v)
                extra["nugget+delta"].append(delta)
                extra["nugget+union"].append(union)
                extra["nugget+n-free"].append(nfree)
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
            "width": float(np.nanmean(hi - lo)),
            "cover": float(np.mean((lo <= TRUTH) & (TRUTH <= hi))),
            "cover_e": float(np.mean((lo <= e) & (e <= hi))),
            "warned": float(np.mean(np.array(snrs) < SNR_WARN)),
        }
    for name, ivs in extra.items():
        if not ivs:
            continue
        lo, hi = np.array(ivs).T
        e = res["nugget"]["mean"]
        res[name] = dict(
            res["nugget"],
            se=float(np.nanmean(hi - lo) / (2 * Z95)),
            width=float(np.nanmean(hi - lo)),
            cover=float(np.mean((lo <= TRUTH) & (TRUTH <= hi))),
            cover_e=float(np.mean((lo <= e) & (e <= hi))),
        )
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
    ap.add_argument(
        "--bound-aware",
        action="store_true",
        help="add the delta-method and two bound-aware intervals of 'nugget' (investigations)",
    )
    ap.add_argument(
        "--disk",
        action="store_true",
        help="the ROI is the ellipse inscribed in each size (a rounded, detected-like ROI)",
    )
    args = ap.parse_args(argv)
    print(
        f"# coverage study: H = {HURST}, {args.draws} draws per cell, seed {args.seed}, "
        f"{'inscribed-ellipse' if args.disk else 'full-box'} ROIs, "
        f"{platform.machine()} {platform.python_version()}"
    )
    print("| size | SNR | estimator | mean (SD) | mean se | width | cover 2H | cover E | warned |")
    print("|---|---|---|---|---|---|---|---|---|")
    for text in args.sizes:
        size = parse_size(text)
        n = size[0] if size[0] == size[1] else size
        name = f"{size[0]}²" if size[0] == size[1] else f"{size[0]}×{size[1]}"
        for snr in args.snr:
            t0 = time.process_time()
            res = cell(
                n,
                snr,
                args.draws,
                args.seed + size[0] * size[1] // max(size),
                args.bound_aware,
                args.disk,
            )
            label = "no noise" if not math.isfinite(snr) else f"{snr:g}"
            for est, r in res.items():
                print(
                    f"| {name} | {label} | {est} | {r['mean']:.3f} ({r['sd']:.3f}) | "
                    f"{r['se']:.3f} | {r['width']:.3f} | {100 * r['cover']:.1f} % | "
                    f"{100 * r['cover_e']:.1f} % | "
                    f"{100 * r['warned']:.0f} % |",
                    flush=True,
                )
            print(f"<!-- {name} SNR {label}: {time.process_time() - t0:.1f} CPU-s -->", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
