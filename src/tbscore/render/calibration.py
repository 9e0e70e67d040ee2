"""Calibration plot: the fit and the Bland–Altman plot."""

from __future__ import annotations

from typing import Any

import numpy as np

from tbscore.core.calibration import Calibration, bland_altman

# --------------------------------------------------------------------------- plot


def bland_altman_figure(
    calibration: Calibration, tbscore: Any, reference: Any, *, title: str | None = None
):
    """A matplotlib Figure: the fit (left) and the Bland–Altman plot (right).

    Uses :class:`matplotlib.figure.Figure` directly (no global pyplot state).

    Parameters
    ----------
    calibration : Calibration
    tbscore, reference : array_like
        The pairs the calibration was fitted on.
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
    """
    from matplotlib.figure import Figure

    x = np.asarray(tbscore, dtype=float)
    y = np.asarray(reference, dtype=float)
    cal = calibration.predict(x)
    fig = Figure(figsize=(10, 4.5), layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    ax1.scatter(x, y, s=14, alpha=0.8, label="pairs")
    xs = np.linspace(x.min(), x.max(), 50)
    ax1.plot(
        xs,
        calibration.predict(xs),
        color="C1",
        label=f"{calibration.method}: {calibration.a:.3f} + {calibration.b:.3f}x",
    )
    ax1.set_xlabel("tbscore (raw)")
    ax1.set_ylabel("reference TBS")
    ax1.set_title(f"fit (n={calibration.n}, R={calibration.r:.3f})")
    ax1.legend(loc="best", fontsize="small")
    mean = (cal + y) / 2.0
    diff = cal - y
    ba = bland_altman(cal, y)
    ax2.scatter(mean, diff, s=14, alpha=0.8)
    ax2.axhline(ba["mean_diff"], color="C1", label=f"bias {ba['mean_diff']:+.4f}")
    for key in ("loa_low", "loa_high"):
        ax2.axhline(ba[key], color="C3", linestyle="--")
    ax2.axhline(0.0, color="0.6", linewidth=0.8)
    ax2.set_xlabel("mean of calibrated and reference")
    ax2.set_ylabel("calibrated - reference")
    ax2.set_title(f"Bland-Altman (LoA {ba['loa_low']:+.3f} to {ba['loa_high']:+.3f})")
    ax2.legend(loc="best", fontsize="small")
    fig.suptitle(title or f"tbscore calibration {calibration.name!r}")
    return fig
