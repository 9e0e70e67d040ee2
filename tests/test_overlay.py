"""ROI overlay figures (tbscore.render.overlay)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from matplotlib.figure import Figure
from scipy.ndimage import gaussian_filter

import tbscore
from tbscore.api import as_image, resolve_rois
from tbscore.render.overlay import STYLE, overlay_figure, overlay_png, save_overlay

SPACING = (1.0, 0.5)  # non-square pixels: rows 1.0 mm, columns 0.5 mm


def _image(shape=(160, 200), seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 1000.0 + 200.0 * gaussian_filter(rng.standard_normal(shape), 1.0)


def _roi_doc(excluded: str | None = "L3") -> dict:
    items = []
    for i in range(4):
        item = {"label": f"L{i + 1}", "box": [10 + 35 * i, 60, 40 + 35 * i, 140]}
        if item["label"] == excluded:
            item.update(excluded=True, exclusion_reason="fracture")
        items.append(item)
    items[1] = {"label": "L2", "polygon": [[45, 60], [45, 140], [75, 142], [75, 58]]}
    return {"format": "tbscore-roi/1", "units": "px", "vertebrae": items}


@pytest.fixture
def scene():
    image = as_image(_image(), spacing=SPACING)
    rois = resolve_rois(_roi_doc(), image)
    result = tbscore.calc(image, rois)
    return image, rois, result


def _texts(fig: Figure) -> list[str]:
    return [t.get_text() for t in fig.axes[0].texts]


def test_overlay_figure_draws_labelled_outlines(scene):
    image, rois, result = scene
    fig = overlay_figure(image, rois, result)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    assert ax.get_aspect() == pytest.approx(SPACING[0] / SPACING[1])
    texts = _texts(fig)
    for label in ("L1", "L2", "L4"):
        value = result.vertebra(label).value
        assert f"{label} {value:.3f}" in texts
    assert any(t.startswith("L3 excluded") and "fracture" in t for t in texts)
    styles = {line.get_linestyle() for line in ax.lines}
    assert "--" in styles  # the excluded vertebra is dashed
    colors = [line.get_color() for line in ax.lines]
    assert colors.count(STYLE["ok"]["color"]) == 3
    assert colors.count(STYLE["excluded"]["color"]) == 1


def test_overlay_without_result_labels_only(scene):
    image, rois, _ = scene
    texts = _texts(overlay_figure(image, rois))
    assert "L1" in texts and "L4" in texts
    assert not any("0." in t or "1." in t for t in texts if not t.startswith("L3"))


def test_overlay_outline_closed_in_pixel_coordinates(scene):
    image, rois, result = scene
    ax = overlay_figure(image, rois, result).axes[0]
    first = ax.lines[0]
    x, y = first.get_xdata(), first.get_ydata()
    assert (x[0], y[0]) == (x[-1], y[-1])  # closed outline
    r0, c0, r1, c1 = rois["L1"].box
    assert min(y) == pytest.approx(r0 - 0.5) and max(x) == pytest.approx(c1 - 0.5)


def test_invalid_vertebra_is_dotted(scene):
    image, rois, _ = scene
    from tbscore.core.settings import Settings

    result = tbscore.calc(image, rois, settings=Settings(min_roi_pixels=2500))
    ax = overlay_figure(image, rois, result).axes[0]
    assert ":" in {line.get_linestyle() for line in ax.lines}
    assert any(t.startswith("L1 invalid") for t in _texts(ax.figure))


def test_margin_crops_to_rois(scene):
    image, rois, result = scene
    ax = overlay_figure(image, rois, result, margin_mm=5.0).axes[0]
    x0, x1 = ax.get_xlim()
    y1, y0 = ax.get_ylim()
    assert x0 == pytest.approx(58 - 5.0 / SPACING[1])  # L2 polygon reaches column 58
    assert y0 == pytest.approx(10 - 0.5 - 5.0)
    assert y1 == pytest.approx(145 - 0.5 + 5.0)
    ax = overlay_figure(image, rois, result, margin_mm=20.0).axes[0]
    assert ax.get_ylim() == pytest.approx((159.5, -0.5))  # clipped to the image


def test_save_overlay_png_and_svg(scene, tmp_path):
    image, rois, result = scene
    png = save_overlay(image, rois, tmp_path / "o.png", result=result)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    svg = save_overlay(image, rois, tmp_path / "o.svg")
    assert b"<svg" in svg.read_bytes()[:400]
    assert overlay_png(image, rois, result)[:4] == b"\x89PNG"


def test_calc_cli_overlay(dicom_file, tmp_path):
    import json

    from tbscore.cli import main

    path = dicom_file(_image().astype(np.uint16), spacing=SPACING)
    roi = tmp_path / "roi.json"
    roi.write_text(json.dumps(_roi_doc()))
    out = tmp_path / "overlay.png"
    assert main(["calc", str(path), "--roi", str(roi), "--overlay", str(out)]) == 0
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_no_global_pyplot_state():
    code = (
        "import sys, numpy as np\n"
        "from tbscore.api import as_image, resolve_rois\n"
        "from tbscore.render.overlay import overlay_png\n"
        "img = as_image(np.random.default_rng(0).normal(size=(60, 40)), spacing=(1, 1))\n"
        "doc = {'vertebrae': [{'label': 'L1', 'box': [5, 5, 30, 30]}]}\n"
        "overlay_png(img, resolve_rois(doc, img))\n"
        "assert 'matplotlib.pyplot' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
