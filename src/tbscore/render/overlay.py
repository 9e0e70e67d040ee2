"""Overlay of the vertebral ROIs on the DXA image (PNG / SVG / PDF figures).

Draws the gray image with the L1–L4 outlines, each labelled with its TBS value when a
result is given; excluded vertebrae are dashed and carry their exclusion reason,
invalid ones are dotted. The pixel aspect ratio is honoured (``row_mm / col_mm``), so
anatomy looks right for non-square pixels.

Only :class:`matplotlib.figure.Figure` objects are used (Agg canvas): no global
``pyplot`` state, safe in threads and servers.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from tbscore.core.result import TBSResult, VertebraResult
from tbscore.core.roi import VertebraROI, VertebraROIs
from tbscore.io.load import DXAImage
from tbscore.render.figures import DisplayFigure

__all__ = ["overlay_figure", "save_overlay", "overlay_png", "STYLE"]

#: Line colour and style per vertebra status.
STYLE: dict[str, dict[str, object]] = {
    "ok": {"color": "#2ecc40", "linestyle": "-"},
    "excluded": {"color": "#ff851b", "linestyle": "--"},
    "invalid": {"color": "#ff4136", "linestyle": ":"},
    "none": {"color": "#ffdc00", "linestyle": "-"},
}


def _display_range(pixels: np.ndarray) -> tuple[float, float]:
    """Robust gray-level window (0.5th and 99.5th percentiles of finite pixels)."""
    finite = pixels[np.isfinite(pixels)]
    if finite.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(finite, [0.5, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return float(lo), float(hi)


def _vertebra(result: TBSResult | None, label: str) -> VertebraResult | None:
    if result is None:
        return None
    try:
        return result.vertebra(label)
    except KeyError:
        return None


def _status(roi: VertebraROI, vert: VertebraResult | None) -> str:
    if roi.excluded or (vert is not None and vert.status == "excluded"):
        return "excluded"
    if vert is None:
        return "none"
    return "ok" if vert.valid else "invalid"


def _label_text(roi: VertebraROI, vert: VertebraResult | None, status: str) -> str:
    """Text next to an outline: the label plus the value, or why there is none."""
    if status == "excluded":
        reason = roi.exclusion_reason or (vert.reason if vert is not None else None)
        return f"{roi.label} excluded" + (f"\n({reason})" if reason else "")
    if vert is None:
        return roi.label
    if status == "invalid":
        return f"{roi.label} invalid" + (f"\n({vert.reason})" if vert.reason else "")
    text = f"{roi.label} {vert.value:.3f}"
    if vert.calibrated_value is not None:
        text += f"\n(cal. {vert.calibrated_value:.3f})"
    return text


def _draw_roi(ax: Axes, roi: VertebraROI, vert: VertebraResult | None, width: int) -> None:
    outline = roi.outline()
    if outline.shape[0] < 2:
        return
    closed = np.vstack([outline, outline[:1]])
    status = _status(roi, vert)
    style = STYLE[status]
    ax.plot(closed[:, 1], closed[:, 0], linewidth=1.4, **style)
    row = float(np.mean(outline[:, 0]))
    col = float(np.max(outline[:, 1])) + 0.02 * width
    ax.text(
        col,
        row,
        _label_text(roi, vert, status),
        color="black",
        fontsize=8,
        va="center",
        ha="left",
        bbox={
            "boxstyle": "round,pad=0.2",
            "facecolor": style["color"],
            "alpha": 0.85,
            "linewidth": 0,
        },
        clip_on=False,
    )


def _scale_bar(ax: Axes, window: tuple[float, float, float, float], col_mm: float) -> None:
    """A 20 mm horizontal scale bar in the lower left corner of the view."""
    r0, c0, r1, c1 = window
    height, width = r1 - r0, c1 - c0
    length_px = 20.0 / col_mm
    if length_px > 0.6 * width:
        return
    r = r1 - 0.04 * height
    c = c0 + 0.04 * width
    ax.plot([c, c + length_px], [r, r], color="white", linewidth=2.5)
    ax.text(
        c + length_px / 2,
        r - 0.015 * height,
        "20 mm",
        color="white",
        fontsize=7,
        ha="center",
        va="bottom",
    )


def _window(
    rois: VertebraROIs,
    shape: tuple[int, int],
    spacing_mm: tuple[float, float],
    margin_mm: float | None,
) -> tuple[float, float, float, float]:
    """View window ``(row0, col0, row1, col1)`` in pixel edges: the whole image, or the
    bounding box of the ROIs grown by ``margin_mm`` (clipped to the image)."""
    rows, cols = shape
    full = (-0.5, -0.5, rows - 0.5, cols - 0.5)
    outlines = [roi.outline() for roi in rois]
    outlines = [o for o in outlines if o.shape[0] > 0]
    if margin_mm is None or not outlines:
        return full
    pts = np.vstack(outlines)
    mr, mc = margin_mm / spacing_mm[0], margin_mm / spacing_mm[1]
    return (
        max(full[0], float(pts[:, 0].min()) - mr),
        max(full[1], float(pts[:, 1].min()) - mc),
        min(full[2], float(pts[:, 0].max()) + mr),
        min(full[3], float(pts[:, 1].max()) + mc),
    )


def overlay_figure(
    image: DXAImage,
    rois: VertebraROIs,
    result: TBSResult | None = None,
    *,
    width_in: float = 4.0,
    title: str | None = None,
    margin_mm: float | None = None,
) -> Figure:
    """Figure of the image with the vertebral ROIs drawn and labelled.

    Parameters
    ----------
    image : DXAImage
        The image (``pixels`` and ``spacing_mm`` are used).
    rois : VertebraROIs
        The ROIs, excluded ones included.
    result : TBSResult, optional
        When given, each outline is labelled with its TBS value (3 decimals) or the
        reason it has none.
    width_in : float
        Figure width in inches; the height follows the image extent in mm.
    title : str, optional
        Axes title; default names the ROI source and the spacing.
    margin_mm : float, optional
        Show only the ROIs' bounding box grown by this margin (mm); default: the
        whole image.

    Returns
    -------
    matplotlib.figure.Figure
        A figure with an Agg canvas attached (``fig.savefig`` works).
    """
    row_mm, col_mm = image.spacing_mm
    r0, c0, r1, c1 = window = _window(rois, image.shape, image.spacing_mm, margin_mm)
    extent_ratio = ((r1 - r0) * row_mm) / ((c1 - c0) * col_mm)
    height_in = float(np.clip(width_in * extent_ratio, 2.0, 3.0 * width_in))
    fig = DisplayFigure(figsize=(width_in, height_in), dpi=100)  # inline in Jupyter
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    vmin, vmax = _display_range(image.pixels)
    ax.imshow(
        image.pixels,
        cmap="gray",
        vmin=vmin,
        vmax=vmax,
        aspect=row_mm / col_mm,
        interpolation="nearest",
    )
    for roi in rois:
        _draw_roi(ax, roi, _vertebra(result, roi.label), int(c1 - c0))
    _scale_bar(ax, window, col_mm)
    ax.set_xlim(c0, c1)
    ax.set_ylim(r1, r0)
    ax.set_xticks([])
    ax.set_yticks([])
    if title is None:
        roi_source = result.roi_source if result is not None else rois.source
        title = f"ROIs ({roi_source}); pixels {row_mm:.3g} × {col_mm:.3g} mm"
    ax.set_title(title, fontsize=7)
    return fig


def save_overlay(
    image: DXAImage,
    rois: VertebraROIs,
    path: str | Path,
    result: TBSResult | None = None,
    *,
    dpi: int = 150,
    margin_mm: float | None = None,
) -> Path:
    """Write the ROI overlay to ``path`` (format from the suffix: .png, .svg, .pdf...).

    Parameters
    ----------
    image : DXAImage
    rois : VertebraROIs
    path : str or Path
    result : TBSResult, optional
        Label the outlines with the values of this result.
    dpi : int
        Resolution of raster formats.
    margin_mm : float, optional
        Crop to the ROIs grown by this margin (mm); default: the whole image.

    Returns
    -------
    Path
        The written file.
    """
    path = Path(path)
    fig = overlay_figure(image, rois, result, margin_mm=margin_mm)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path


def overlay_png(
    image: DXAImage,
    rois: VertebraROIs,
    result: TBSResult | None = None,
    *,
    dpi: int = 150,
    margin_mm: float | None = None,
    width_in: float = 4.0,
    title: str | None = None,
) -> bytes:
    """The ROI overlay as PNG bytes (used by :mod:`tbscore.report`); keyword arguments
    as for :func:`overlay_figure`."""
    buf = io.BytesIO()
    fig = overlay_figure(image, rois, result, margin_mm=margin_mm, width_in=width_in, title=title)
    fig.savefig(buf, format="png", dpi=dpi, bbox_inches="tight")
    return buf.getvalue()
