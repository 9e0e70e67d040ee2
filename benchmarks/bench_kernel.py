"""Variogram kernel benchmark: numba kernel vs a roofline, the numpy reference and gstools.

Run: ``python benchmarks/bench_kernel.py`` (needs the ``bench`` extra for gstools).

All figures are CPU time of this process (``time.process_time``), single thread
(``parallel=False``), the median of blocks of calls after a warm-up, measured side by
side in this one run; the claims are the ratios between them.

1. **Default TBS lags** (:func:`tbscore.core.tbs.select_lags` with the default
   ``Settings`` at 1 mm pixels: 10 lag vectors, 1-3 px along each axis and 1-2 px along
   each diagonal) on a 300 x 200 ROI: solid (every pixel), an ellipse, and the ellipse
   with 10 % random holes; uint16 and float64 gray levels. ``G pairs/s`` counts the
   pixel pairs of all lags per second through :func:`variogram_sums` (validation,
   crop, conversion and kernel included). The peer is
   :func:`variogram_sums_reference` (numpy).
2. **Roofline**: the best loop of the same arithmetic (one subtraction, one multiply,
   one add per pair) over the same memory (the ROI, row slices, every lag) that could
   be written here, with no mask at all: numba lag-outer and row-outer loops over the
   float64 ROI (2-D indexing), the plain numba ``sum((a - b)**2)`` over the same
   contiguous row spans as the kernel, indexed from 0 (float64 ROI, and the uint16
   ROI read in place as the kernel does), and numpy's ``einsum``; the fastest is the
   roofline, and the kernel on the solid ROI (called through ``variogram_sums``, so
   with validation, bounding box and row runs) is reported as a percentage of it.
3. **All axis lags** (299 row + 199 column lags on the ellipse), the workload of
   gstools' ``vario_estimate_axis``: numba vs numpy vs gstools after checking that all
   three agree (gstools returns the semivariogram, i.e. half our V).
4. **Cost curves**: ns per pair against the image size (solid square masks 256^2 ...
   2048^2, and a 300 x 200 ROI inside such an image: the crop keeps the cost at the
   ROI's) and against the lag range (``lag_max_mm`` 2 ... 20 at 1 mm). A flat column
   means linear cost; superlinear growth would show as a rising one.
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np
from numba import njit

from _timing import cpu_median
from tbscore.core.settings import Settings
from tbscore.core.tbs import select_lags
from tbscore.core.variogram import variogram_sums, variogram_sums_reference


def _cpu(fn, repeat: int) -> float:
    """Median CPU seconds per call of ``fn`` over 7 blocks of ``repeat`` calls."""
    return cpu_median(fn, repeat, 7)


def _case(dtype, kind: str, shape=(300, 200), seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, cols = shape
    field = np.cumsum(np.cumsum(rng.normal(size=(rows, cols)), 0), 1)
    field = (field - field.min()) / np.ptp(field)
    img = (field * 50000 + rng.normal(scale=500, size=field.shape)).clip(0, 65535)
    if kind == "solid":
        mask = np.ones(shape, dtype=bool)
    else:
        rr, cc = np.mgrid[:rows, :cols]
        mask = ((rr - rows / 2) / (rows / 2 - 5)) ** 2 + (
            (cc - cols / 2) / (cols / 2 - 3)
        ) ** 2 <= 1
        if kind == "ellipse+holes":  # 10 % of the pixels excluded at random
            mask &= rng.random(mask.shape) > 0.1
    return np.round(img).astype(dtype), mask


@njit(cache=True, fastmath=True)
def _roof_lag_outer(img, lags):  # pragma: no cover - compiled
    nr, nc = img.shape
    out = np.zeros(lags.shape[0])
    for k in range(lags.shape[0]):
        dr, dc = lags[k, 0], lags[k, 1]
        if dr < 0 or (dr == 0 and dc < 0):
            dr, dc = -dr, -dc
        c0, c1 = max(0, -dc), min(nc, nc - dc)
        s = 0.0
        for r in range(nr - dr):
            a = img[r]
            b = img[r + dr]
            for c in range(c0, c1):
                d = a[c] - b[c + dc]
                s += d * d
        out[k] = s
    return out


@njit(cache=True, fastmath=True)
def _roof_row_outer(img, lags):  # pragma: no cover - compiled
    # Row-outer: the rows r .. r + max(dr) stay in L1 while every lag uses them.
    nr, nc = img.shape
    n = lags.shape[0]
    out = np.zeros(n)
    for r in range(nr):
        a = img[r]
        for k in range(n):
            dr, dc = lags[k, 0], lags[k, 1]
            if dr < 0 or (dr == 0 and dc < 0):
                dr, dc = -dr, -dc
            if r + dr >= nr:
                continue
            b = img[r + dr]
            s = 0.0
            for c in range(max(0, -dc), min(nc, nc - dc)):
                d = a[c] - b[c + dc]
                s += d * d
            out[k] += s
    return out


@njit(cache=True, fastmath=True)
def _roof_spans(flat, nr, nc, lags):  # pragma: no cover - compiled
    # The kernel's inner loop without the mask: for every lag and row, one contiguous
    # slice pair indexed from 0 (so LLVM drops the negative-index checks and
    # vectorises), float64 accumulate; works on the image in place (uint16 or float64).
    out = np.zeros(lags.shape[0])
    for k in range(lags.shape[0]):
        dr, dc = lags[k, 0], lags[k, 1]
        if dr < 0 or (dr == 0 and dc < 0):
            dr, dc = -dr, -dc
        c0, c1 = max(0, -dc), min(nc, nc - dc)
        n = c1 - c0
        s = 0.0
        for r in range(nr - dr):
            a = flat[r * nc + c0 : r * nc + c1]
            b = flat[(r + dr) * nc + c0 + dc : (r + dr) * nc + c1 + dc]
            t = 0.0
            z = np.int32(0)  # int32 differences for uint16, float64 ones for float64
            for i in range(n):
                d = np.float64((z + a[i]) - (z + b[i]))
                t += d * d
            s += t
        out[k] = s
    return out


def _roof_einsum(img, lags):
    nr, nc = img.shape
    out = np.zeros(len(lags))
    for k, (dr, dc) in enumerate(lags):
        if dr < 0 or (dr == 0 and dc < 0):
            dr, dc = -dr, -dc
        d = img[: nr - dr, max(0, -dc) : nc - max(0, dc)] - img[dr:, max(0, dc) : nc + min(0, dc)]
        out[k] = np.einsum("ij,ij->", d, d)
    return out


def _pairs(mask, lags) -> int:
    return int(variogram_sums(np.zeros(mask.shape), mask, lags)[1].sum())


def section_default(lags, repeat: int) -> None:
    print(
        f"\n## 1-2. Default TBS lags ({len(lags)} lag vectors: {lags.tolist()}), 300x200, 1 thread"
    )
    print(
        f"{'dtype':<8} {'mask':<14} {'pairs':>8} {'numba us':>9} {'G pairs/s':>10} "
        f"{'numpy us':>9} {'numpy/numba':>12}"
    )
    for dtype, kind in (
        (np.uint16, "solid"),
        (np.float64, "solid"),
        (np.uint16, "ellipse"),
        (np.uint16, "ellipse+holes"),
        (np.float64, "ellipse+holes"),
    ):
        img, mask = _case(dtype, kind)
        s1, c1 = variogram_sums(img, mask, lags)
        s2, c2 = variogram_sums_reference(img, mask, lags)
        assert np.array_equal(c1, c2) and np.allclose(s1, s2, rtol=1e-12, atol=0)
        tn = _cpu(lambda img=img, mask=mask: variogram_sums(img, mask, lags), repeat)
        tr = _cpu(
            lambda img=img, mask=mask: variogram_sums_reference(img, mask, lags),
            max(3, repeat // 10),
        )
        pairs = int(c1.sum())
        print(
            f"{np.dtype(dtype).name:<8} {kind:<14} {pairs:>8} {tn * 1e6:9.1f} "
            f"{pairs / tn / 1e9:10.2f} {tr * 1e6:9.1f} {tr / tn:11.1f}x"
        )
        if kind == "solid" and dtype == np.uint16:
            solid = (tn, pairs, img)
    tn, pairs, img = solid
    f = np.ascontiguousarray(img, dtype=np.float64)
    ref = variogram_sums(img, np.ones(img.shape, bool), lags)[0]
    roofs = {}
    u = np.ascontiguousarray(img)
    for name, fn in (
        ("numba lag-outer", lambda: _roof_lag_outer(f, lags)),
        ("numba row-outer", lambda: _roof_row_outer(f, lags)),
        ("numba spans f64", lambda: _roof_spans(f.reshape(-1), *f.shape, lags)),
        ("numba spans u16", lambda: _roof_spans(u.reshape(-1), *u.shape, lags)),
        ("numpy einsum", lambda: _roof_einsum(f, lags)),
    ):
        assert np.allclose(fn(), ref, rtol=1e-12)
        roofs[name] = _cpu(fn, repeat)
    best = min(roofs, key=roofs.get)
    print(
        "roofline (no mask, same pairs): "
        + ", ".join(f"{k} {pairs / v / 1e9:.2f} G pairs/s" for k, v in roofs.items())
    )
    print(
        f"kernel on the solid uint16 ROI through variogram_sums: {pairs / tn / 1e9:.2f} G pairs/s "
        f"= {100 * roofs[best] / tn:.0f} % of the roofline ({best})"
    )


def section_axis(repeat: int) -> None:
    print(
        "\n## 3. All axis lags (299 row + 199 column lags), ellipse, vs gstools.vario_estimate_axis"
    )
    img, mask = _case(np.float64, "ellipse")
    axis_lags = np.array([(k, 0) for k in range(1, 300)] + [(0, k) for k in range(1, 200)])
    try:
        import gstools as gs
    except ImportError:
        gs = None
        print("gstools not installed (pip install 'tbscore[bench]'): peer column skipped")
    s, c = variogram_sums(img, mask, axis_lags)
    with np.errstate(invalid="ignore", divide="ignore"):
        ours = np.where(c > 0, s / np.maximum(c, 1), np.nan)
    r = max(3, repeat // 10)
    tn = _cpu(lambda: variogram_sums(img, mask, axis_lags), r)
    tr = _cpu(lambda: variogram_sums_reference(img, mask, axis_lags), 2)
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
        tg = _cpu(peer, 2)
        line += (
            f", gstools {tg * 1e3:.2f} ms (gstools/numba {tg / tn:.1f}x); "
            f"max relative difference vs gstools {rel:.1e} over {ok.sum()} lags"
        )
    print(line)


def section_curves(lags, repeat: int) -> None:
    print("\n## 4. Cost curves (ns per pair, numba, 1 thread; numpy reference beside it)")
    print(f"{'image':<12} {'mask':<22} {'pairs':>10} {'numba ns/pair':>14} {'numpy ns/pair':>14}")
    for n in (256, 512, 1024, 2048):
        img, _ = _case(np.uint16, "solid", shape=(n, n), seed=1)
        for kind in ("solid", "300x200 ROI inside"):
            if kind == "solid":
                mask = np.ones((n, n), bool)
            else:
                mask = np.zeros((n, n), bool)
                mask[n // 2 - 150 : n // 2 + 150, n // 2 - 100 : n // 2 + 100] = True
                if n < 300:
                    continue
            pairs = _pairs(mask, lags)
            reps = max(1, repeat * 60_000 // mask.sum())
            tn = _cpu(lambda img=img, mask=mask: variogram_sums(img, mask, lags), reps)
            tr = _cpu(
                lambda img=img, mask=mask: variogram_sums_reference(img, mask, lags),
                max(1, reps // 10),
            )
            print(
                f"{n}x{n:<7} {kind:<22} {pairs:>10} {tn / pairs * 1e9:14.3f} "
                f"{tr / pairs * 1e9:14.3f}"
            )
    img, mask = _case(np.uint16, "ellipse")
    print(
        f"\n{'lag_max_mm':<11} {'lag vectors':>11} {'pairs':>9} "
        f"{'numba ns/pair':>14} {'numpy ns/pair':>14}"
    )
    for lag_max in (2.0, 3.0, 5.0, 10.0, 20.0):
        lv, _ = select_lags((1.0, 1.0), 0.5, lag_max, Settings().directions)
        pairs = _pairs(mask, lv)
        tn = _cpu(lambda lv=lv: variogram_sums(img, mask, lv), max(3, repeat // 4))
        tr = _cpu(lambda lv=lv: variogram_sums_reference(img, mask, lv), 2)
        print(
            f"{lag_max:<11g} {len(lv):>11} {pairs:>9} {tn / pairs * 1e9:14.3f} "
            f"{tr / pairs * 1e9:14.3f}"
        )


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=200, help="calls per timed block")
    ap.add_argument("--threads", type=int, default=0, help="also time numba with N threads")
    ap.add_argument("--no-curves", action="store_true", help="skip section 4")
    args = ap.parse_args(argv)
    print(
        f"# variogram kernel benchmark — {platform.processor() or platform.machine()}, "
        f"python {platform.python_version()}, numpy {np.__version__} (CPU time, 1 thread)"
    )
    s = Settings()
    lags, _ = select_lags((1.0, 1.0), s.lag_min_mm, s.lag_max_mm, s.directions)
    section_default(lags, args.repeat)
    if args.threads:
        import numba

        numba.set_num_threads(args.threads)
        img, mask = _case(np.float64, "ellipse")
        many = np.array([(k, 0) for k in range(1, 40)] + [(0, k) for k in range(1, 40)])
        t0 = time.perf_counter()
        for _ in range(20):
            variogram_sums(img, mask, many)
        t1 = time.perf_counter()
        for _ in range(20):
            variogram_sums(img, mask, many, parallel=True)
        t2 = time.perf_counter()
        print(
            f"numba {args.threads} threads vs 1 (78 lags, wall time): {(t1 - t0) / (t2 - t1):.2f}x"
        )
    section_axis(args.repeat)
    if not args.no_curves:
        section_curves(lags, args.repeat)


if __name__ == "__main__":
    main()
