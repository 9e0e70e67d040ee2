"""CPU cost of the per-vertebra computation (``compute_vertebrae``) per scan.

Run: ``python benchmarks/bench_vertebrae.py [--blocks 7] [--calls 20]``.

For each ``sample_dicom`` image, with its ROI file and with the automatically detected
ROIs (detection not timed: the ROIs are found once): CPU ms per scan of
:func:`tbscore.core.tbs.compute_vertebrae` (variogram, fit, covariance, interval of
every vertebra), warm, the minimum over ``--blocks`` blocks of ``--calls`` calls
(``time.process_time``: a figure less moved by other jobs on a shared machine than a
median). The peer, in the same run on the same input: the same call with the
covariance's four-term kernels (``_cov_rect_reference`` / ``_cov_runs_reference``,
the code before the lag-difference paths) swapped in.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from _timing import cpu_min

SAMPLES = Path(__file__).resolve().parents[1] / "sample_dicom"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--blocks", type=int, default=7, help="timed blocks")
    ap.add_argument("--calls", type=int, default=20, help="calls per block")
    args = ap.parse_args(argv)

    import tbscore.core.uncertainty as unc
    from tbscore.api import as_image, resolve_rois, resolve_settings
    from tbscore.core.tbs import compute_vertebrae

    cfg = resolve_settings(None)
    fast = (unc._cov_rect, unc._cov_runs)
    ref = getattr(unc, "_cov_rect_reference", None), getattr(unc, "_cov_runs_reference", None)
    print(f"# compute_vertebrae, CPU ms per scan; load average {os.getloadavg()[0]:.2f}")
    print(f"{'image':<24}{'ROIs':>6}{'ms':>9}{'peer ms':>9}{'peer/ms':>9}")
    totals: dict[str, list[float]] = {}
    for p in sorted(SAMPLES.glob("*.dcm")):
        image = as_image(p)
        for kind, roi in (("file", p.with_name(p.stem + ".roi.json")), ("auto", None)):
            rois = resolve_rois(roi, image, cfg)

            def run(image=image, rois=rois):
                compute_vertebrae(image.pixels, rois, image.spacing_mm, cfg)

            new = cpu_min(run, args.calls, args.blocks)
            peer = float("nan")
            if ref[0] is not None:
                unc._cov_rect, unc._cov_runs = ref
                try:
                    peer = cpu_min(run, args.calls, args.blocks)
                finally:
                    unc._cov_rect, unc._cov_runs = fast
            totals.setdefault(kind, []).append(new)
            print(f"{p.stem[:23]:<24}{kind:>6}{1e3 * new:9.3f}{1e3 * peer:9.3f}{peer / new:9.2f}")
    for kind, values in totals.items():
        print(f"mean, {kind} ROIs: {1e3 * sum(values) / len(values):.3f} ms per scan")


if __name__ == "__main__":
    main()
