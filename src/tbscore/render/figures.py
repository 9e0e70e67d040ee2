"""Figures of a result: per-vertebra log–log variogram plots (matplotlib, no pyplot state)."""

from __future__ import annotations

import io
import math

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tbscore.core.result import TBSResult, VertebraResult

# --------------------------------------------------------------------------------------
# figures
# --------------------------------------------------------------------------------------


class DisplayFigure(Figure):
    """A matplotlib :class:`~matplotlib.figure.Figure` that displays itself inline in
    Jupyter (``_repr_png_``) without pyplot: the figures of this package are built
    without pyplot state, so a notebook would otherwise show only ``<Figure ...>``."""

    def _repr_png_(self) -> bytes:
        return _png(self, dpi=100)


def _variogram_panel(ax: Axes, vert: VertebraResult) -> None:
    """One vertebra: ln V against ln lag (mm) with the fitted line."""
    pts = [
        (math.log(d), math.log(v))
        for d, v in zip(vert.lag_distances_mm, vert.variogram, strict=False)
        if d and v is not None and d > 0 and v > 0
    ]
    ax.tick_params(labelsize=7)
    ax.set_xlabel("ln lag (mm)", fontsize=7)
    ax.set_ylabel("ln V", fontsize=7)
    ax.grid(True, linewidth=0.3, alpha=0.5)
    if not pts:
        why = vert.reason or vert.status
        ax.text(
            0.5,
            0.5,
            f"{vert.status}\n{why}",
            ha="center",
            va="center",
            fontsize=8,
            transform=ax.transAxes,
            wrap=True,
        )
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"{vert.label}: no value", fontsize=8)
        return
    x = [p[0] for p in pts]
    y = [p[1] for p in pts]
    ax.plot(x, y, "o", markersize=3.5, color="#1f4e79", label="variogram")
    if vert.value is not None and vert.intercept is not None:
        x0, x1 = min(x), max(x)
        pad = 0.05 * (x1 - x0 or 1.0)
        xs = [x0 - pad, x1 + pad]
        ax.plot(
            xs,
            [vert.intercept + vert.value * t for t in xs],
            "-",
            color="#d62728",
            linewidth=1.2,
            label="fit",
        )
        r2 = "" if vert.r2 is None else f", R² {vert.r2:.3f}"
        ax.set_title(f"{vert.label}: slope {vert.value:.3f}{r2}", fontsize=8)
    else:
        ax.set_title(f"{vert.label}: {vert.status} ({vert.reason or 'no fit'})", fontsize=7)


def variogram_figure(result: TBSResult, *, width_in: float = 7.0) -> Figure:
    """Log–log variogram plots of every vertebra with the fitted lines.

    Each panel shows ``ln V(k)`` against ``ln |k|`` (lag length in mm) for the lags used
    and the least-squares line ``ln V = intercept + slope * ln |k|``, whose slope is the
    vertebra's value and whose intercept is ``ln V`` at 1 mm.

    Parameters
    ----------
    result : TBSResult
    width_in : float
        Figure width in inches.

    Returns
    -------
    matplotlib.figure.Figure
        2 x 2 panels for up to four vertebrae (an Agg canvas attached).
    """
    verts = list(result.vertebrae)
    ncols = 2 if len(verts) > 1 else 1
    nrows = max(1, math.ceil(len(verts) / ncols))
    fig = DisplayFigure(figsize=(width_in, 2.3 * nrows + 0.3), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(nrows, ncols, squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        if i < len(verts):
            _variogram_panel(ax, verts[i])
        else:
            ax.set_axis_off()
    return fig


def _png(fig: Figure, dpi: int = 150) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()
