"""CPU cost of the ``"nugget"`` 95 % interval per vertebra (issue 15, item 2).

Run: ``python benchmarks/bench_nugget_interval.py [--repeat 50]``; for the code before a
change, ``PYTHONPATH=/tmp/old/src python benchmarks/bench_nugget_interval.py`` in the same
session (figures are CPU time and move with load: compare only runs made back to back).

Per ``sample_dicom`` image, ``tbscore.calc(path, settings={"estimator": "nugget"})`` is run
once and every ``slope_uncertainty`` call it makes is captured, then timed alone (CPU time
of this process, ``time.process_time``, warm): ``nugget`` (the call as made: covariance,
delta-method se and the interval) against ``ols`` as peer, the same call with the OLS fit of
the same variogram (covariance and delta method only), and ``interval`` (the profile
interval alone, where this code has :func:`tbscore.core.uncertainty.profile_interval`).
CPU ms per vertebra, the mean over the captured vertebrae.
"""

from __future__ import annotations

import argparse
import os
import platform
from functools import partial
from pathlib import Path

import numpy as np

from _timing import cpu_per_call, spy_calls

SAMPLES = Path(__file__).resolve().parents[1] / "sample_dicom"


def _captured(path: Path) -> list[tuple]:
    """Arguments of every slope_uncertainty call of a ``"nugget"`` calc of ``path``."""
    import tbscore
    import tbscore.core.tbs as tbs

    return spy_calls(
        tbs, "slope_uncertainty", lambda: tbscore.calc(path, settings={"estimator": "nugget"})
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=50)
    args = ap.parse_args(argv)
    import tbscore
    import tbscore.core.uncertainty as unc
    from tbscore.core.estimators import fit_slope

    profile = getattr(unc, "profile_interval", None)
    print(
        f"# nugget interval cost: tbscore {tbscore.__version__} from "
        f"{Path(unc.__file__).parents[2]}, {platform.machine()} {platform.python_version()}, "
        f"load {os.getloadavg()[0]:.2f}, {args.repeat} repeats"
    )
    print("| image | vertebrae | ROI px (mean) | nugget ms | ols ms (peer) | interval ms |")
    print("|---|---|---|---|---|---|")
    for path in sorted(SAMPLES.glob("*.dcm")):
        calls = _captured(path)
        if not calls:
            continue
        t_n, t_o, t_i = [], [], []
        rep = args.repeat
        for fit, mask, lags, dists, v, spacing in calls:
            t_n.append(
                cpu_per_call(
                    partial(unc.slope_uncertainty, fit, mask, lags, dists, v, spacing), rep
                )
            )
            ols = fit_slope("ols", dists, v)
            t_o.append(
                cpu_per_call(
                    partial(unc.slope_uncertainty, ols, mask, lags, dists, v, spacing), rep
                )
            )
            if profile is not None:
                m = unc.slope_uncertainty(fit, mask, lags, dists, v, spacing).model
                cov = unc.variogram_covariance(mask, lags, spacing, m["c"], m["a"], m["n"])
                t_i.append(cpu_per_call(partial(profile, dists, v, cov, fit.slope), rep))
        px = np.mean([int(np.count_nonzero(c[1])) for c in calls])
        ti = f"{1e3 * np.mean(t_i):.2f}" if t_i else "-"
        print(
            f"| {path.name} | {len(calls)} | {px:.0f} | {1e3 * np.mean(t_n):.2f} | "
            f"{1e3 * np.mean(t_o):.2f} | {ti} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
