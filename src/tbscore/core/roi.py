"""Vertebral regions of interest: read, write, rasterise, exclude.

ROIs come from an ROI file (``tbscore-roi/1`` JSON, see docs/architecture.md), from a
label image (values 1..4 = L1..L4), or from automatic detection
(:mod:`tbscore.core.detect`). Whatever their origin they become a :class:`VertebraROIs`: one
boolean mask per vertebra plus the geometry that produced it, so it can be written
back as JSON, edited by hand and reused.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from tbscore.core.constants import LABELS
from tbscore.core.raster import polygon_mask
from tbscore.errors import ROIError

__all__ = [
    "LABELS",
    "ROI_FORMAT",
    "VertebraROI",
    "VertebraROIs",
    "rois_from_dict",
    "rois_from_label_image",
    "read_rois",
    "write_roi_json",
    "apply_exclusions",
    "parse_exclusions",
    "roi_document",
    "rounded_rect_distance",
    "rounded_rect_outline",
]


ROI_FORMAT = "tbscore-roi/1"


@dataclass(frozen=True)
class VertebraROI:
    """One vertebral ROI.

    Attributes
    ----------
    label : str
        ``"L1"`` .. ``"L4"``.
    mask : ndarray of bool, shape of the image
    polygon : ndarray of float, shape (n, 2), optional
        Outline as ``(row, col)`` pixel coordinates, when known.
    box : tuple of int, optional
        ``(row0, col0, row1, col1)``, half-open, when the ROI is a box.
    excluded : bool
        Excluded by the user (or the ROI file); it gets no value.
    exclusion_reason : str, optional
    confidence : float, optional
        Detection confidence in [0, 1] (detected ROIs only).
    """

    label: str
    mask: np.ndarray
    polygon: np.ndarray | None = None
    box: tuple[int, int, int, int] | None = None
    excluded: bool = False
    exclusion_reason: str | None = None
    confidence: float | None = None

    @property
    def n_pixels(self) -> int:
        return int(np.count_nonzero(self.mask))

    def outline(self) -> np.ndarray:
        """Outline vertices ``(row, col)`` in pixels (polygon, box corners or contour)."""
        if self.polygon is not None:
            return np.asarray(self.polygon, dtype=float)
        if self.box is not None:
            r0, c0, r1, c1 = self.box
            return np.array([[r0, c0], [r0, c1], [r1, c1], [r1, c0]], dtype=float) - 0.5
        from skimage.measure import find_contours

        contours = find_contours(np.pad(self.mask, 1).astype(float), 0.5)
        if not contours:
            return np.zeros((0, 2))
        return max(contours, key=len) - 1.0

    def outline_mm(self, spacing_mm: tuple[float, float]) -> np.ndarray:
        """Outline vertices ``(y_mm, x_mm)``: :meth:`outline` times the pixel spacing
        ``(row_mm, col_mm)`` (pixel centre ``(r, c)`` is at ``(r * row_mm, c * col_mm)``)."""
        return self.outline() * np.asarray(spacing_mm, dtype=float)

    def bbox(self) -> tuple[int, int, int, int]:
        """Bounding box ``(row0, col0, row1, col1)`` of the mask, half-open, in pixels."""
        if self.box is not None:
            return self.box
        rows = np.flatnonzero(self.mask.any(axis=1))
        cols = np.flatnonzero(self.mask.any(axis=0))
        if rows.size == 0:
            return (0, 0, 0, 0)
        return (int(rows[0]), int(cols[0]), int(rows[-1]) + 1, int(cols[-1]) + 1)

    def bbox_mm(self, spacing_mm: tuple[float, float]) -> tuple[float, float, float, float]:
        """:meth:`bbox` in mm, ``(y0, x0, y1, x1)``."""
        r0, c0, r1, c1 = self.bbox()
        dy, dx = float(spacing_mm[0]), float(spacing_mm[1])
        return (r0 * dy, c0 * dx, r1 * dy, c1 * dx)


@dataclass(frozen=True)
class VertebraROIs:
    """The set of vertebral ROIs of one image, ordered L1..L4.

    Attributes
    ----------
    rois : tuple of VertebraROI
    image_shape : (int, int)
    source : str
        ``"file:<path>"``, ``"label-image:<path>"``, ``"dict"`` or ``"detected"``.
    confidence : float, optional
        Overall detection confidence.
    warnings : tuple of str
    spacing_mm : (float, float), optional
        Pixel spacing ``(row_mm, col_mm)`` of the image, when known (detected ROIs, ROI
        files); :meth:`to_dict` with ``units="mm"`` uses it.
    """

    rois: tuple[VertebraROI, ...]
    image_shape: tuple[int, int]
    source: str = "dict"
    confidence: float | None = None
    warnings: tuple[str, ...] = field(default_factory=tuple)
    spacing_mm: tuple[float, float] | None = None

    def to_dict(
        self, units: str = "px", spacing_mm: tuple[float, float] | None = None
    ) -> dict[str, Any]:
        """The ``tbscore-roi/1`` document of these ROIs, in pixel or mm coordinates.

        Parameters
        ----------
        units : {"px", "mm"}
        spacing_mm : (float, float), optional
            Pixel spacing; default :attr:`spacing_mm`.

        Raises
        ------
        ROIError
            No pixel spacing known.
        """
        spacing = spacing_mm if spacing_mm is not None else self.spacing_mm
        if spacing is None:
            raise ROIError("pixel spacing unknown: pass spacing_mm", self.source)
        return roi_document(self, spacing, units=units)

    def __iter__(self):
        return iter(self.rois)

    def __len__(self) -> int:
        return len(self.rois)

    def __getitem__(self, label: str) -> VertebraROI:
        for roi in self.rois:
            if roi.label == label:
                return roi
        raise KeyError(label)

    @property
    def labels(self) -> tuple[str, ...]:
        return tuple(r.label for r in self.rois)

    def label_image(self) -> np.ndarray:
        """uint8 image with 1..4 for L1..L4 (0 elsewhere)."""
        out = np.zeros(self.image_shape, dtype=np.uint8)
        for roi in self.rois:
            out[roi.mask] = LABELS.index(roi.label) + 1
        return out


def rounded_rect_distance(
    u: np.ndarray, v: np.ndarray, half_u: float, half_v: float, radius: float
) -> np.ndarray:
    """Signed distance to a rounded rectangle centred at the origin.

    The vertebral-body outline shared by the phantoms (:mod:`tbscore.sim.phantom`) and
    detection (:mod:`tbscore.core.detect`).

    Parameters
    ----------
    u, v : ndarray
        Coordinates (mm) in the rectangle's own frame (broadcast together).
    half_u, half_v : float
        Half sizes along ``u`` and ``v`` (mm).
    radius : float
        Corner radius (mm); clipped to the half sizes.

    Returns
    -------
    ndarray
        Distance (mm) to the outline: negative inside, positive outside.
    """
    r = min(radius, half_u, half_v)
    qu = np.abs(u) - (half_u - r)
    qv = np.abs(v) - (half_v - r)
    outside = np.hypot(np.maximum(qu, 0.0), np.maximum(qv, 0.0))
    return outside + np.minimum(np.maximum(qu, qv), 0.0) - r


def rounded_rect_outline(
    half_u: float, half_v: float, radius: float, per_corner: int = 6
) -> np.ndarray:
    """Vertices of a rounded rectangle centred at the origin, walking round it.

    Parameters
    ----------
    half_u, half_v : float
        Half sizes along ``u`` and ``v`` (mm).
    radius : float
        Corner radius (mm); ``<= 0`` gives the four corners of a plain rectangle.
    per_corner : int
        Segments per quarter-circle corner.

    Returns
    -------
    ndarray, shape (n, 2)
        ``(u, v)`` vertices (mm): ``4 * (per_corner + 1)`` of them, or 4 when
        ``radius <= 0``.
    """
    n = per_corner if radius > 0 else 0
    pts = []
    for k, (su, sv) in enumerate(((-1, 1), (1, 1), (1, -1), (-1, -1))):
        cu, cv = su * (half_u - radius), sv * (half_v - radius)
        start = -math.pi / 2 + k * math.pi / 2
        for i in range(n + 1):
            a = start + (math.pi / 2) * i / max(n, 1)
            pts.append((cu + radius * math.sin(a), cv + radius * math.cos(a)))
    return np.array(pts, dtype=float)


def _check_label(label: Any, source: str) -> str:
    if not isinstance(label, str) or label.upper() not in LABELS:
        raise ROIError(f"vertebra label must be one of {', '.join(LABELS)}, got {label!r}", source)
    return label.upper()


def _points(value: Any, what: str, source: str) -> np.ndarray:
    try:
        arr = np.asarray(value, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ROIError(f"{what} must be numeric", source) from exc
    if not np.all(np.isfinite(arr)):
        raise ROIError(f"{what} has non-finite values", source)
    return arr


#: Integers below this magnitude convert to float64 exactly (as numpy converts them).
_EXACT_INT = 2**53


def _plain_floats(value: Any) -> list[float] | None:
    """``value`` as Python floats when it is a list or tuple of finite floats and exactly
    convertible ints (no bools, no strings): what ``np.asarray(value, dtype=float)``
    gives for it, without the array. None for anything else, which the caller reads
    with :func:`_points` (its conversions and errors)."""
    if type(value) is not list and type(value) is not tuple:
        return None
    out = []
    for v in value:
        t = type(v)
        if t is float:
            if not math.isfinite(v):
                return None
        elif t is not int or not -_EXACT_INT < v < _EXACT_INT:
            return None
        out.append(float(v))
    return out


def _box_corners(
    value: Any, label: str, scale: tuple[float, float], source: str
) -> tuple[int, int, int, int]:
    """The ``box`` of a vertebra, times ``scale`` (row, col; 1/mm for ``"units": "mm"``),
    rounded to pixels: ``(row0, col0, row1, col1)``."""
    vals = _plain_floats(value)
    if vals is not None and len(vals) == 4:  # the same float64 products as the array path
        sr, sc = scale
        b = [vals[0] * sr, vals[1] * sc, vals[2] * sr, vals[3] * sc]
    else:
        arr = _points(value, f"{label} box", source)
        if arr.shape != (4,):
            raise ROIError(f"{label} box must be [row0, col0, row1, col1]", source)
        b = (arr * np.array([scale[0], scale[1], scale[0], scale[1]])).tolist()
    r0, c0, r1, c1 = [round(v) for v in b]  # round of a (finite) float is an int
    return r0, c0, r1, c1


def _sorted(rois: Iterable[VertebraROI], source: str) -> tuple[VertebraROI, ...]:
    rois = list(rois)
    labels = [r.label for r in rois]
    dup = sorted({x for x in labels if labels.count(x) > 1})
    if dup:
        raise ROIError(f"duplicate vertebra label(s) {dup}", source)
    return tuple(sorted(rois, key=lambda r: LABELS.index(r.label)))


def rois_from_dict(
    data: Mapping[str, Any],
    image_shape: tuple[int, int],
    spacing_mm: tuple[float, float],
    *,
    source: str = "dict",
) -> VertebraROIs:
    """Build ROIs from a parsed ``tbscore-roi/1`` document.

    Parameters
    ----------
    data : mapping
        The JSON document (see docs/architecture.md).
    image_shape : (int, int)
        Shape of the image the ROIs apply to.
    spacing_mm : (float, float)
        Pixel spacing ``(row_mm, col_mm)``, used for ``"units": "mm"``.
    source : str
        Name used in errors and provenance.

    Raises
    ------
    ROIError
        Bad format, unknown label, ROI outside the image, empty ROI, overlapping ROIs,
        or an ``image_shape`` / ``pixel_spacing_mm`` that does not match the image.
    """
    if type(data) is not dict and not isinstance(data, Mapping):  # json gives a dict
        raise ROIError("ROI document must be a JSON object", source)
    fmt = data.get("format", ROI_FORMAT)
    if fmt != ROI_FORMAT:
        raise ROIError(f"unsupported ROI format {fmt!r} (expected {ROI_FORMAT!r})", source)
    units = data.get("units", "px")
    if units not in ("px", "mm"):
        raise ROIError(f"units must be 'px' or 'mm', got {units!r}", source)
    shape = (int(image_shape[0]), int(image_shape[1]))
    declared_shape = data.get("image_shape")
    if declared_shape is not None:
        if not isinstance(declared_shape, list | tuple) or len(declared_shape) != 2:
            raise ROIError(f"image_shape must be [rows, cols], got {declared_shape!r}", source)
        if tuple(declared_shape) != shape:
            raise ROIError(
                f"ROI file is for an image of shape {tuple(declared_shape)}, the image is {shape}",
                source,
            )
    if data.get("pixel_spacing_mm") is not None:
        # the declared values as floats (plain lists directly, anything else through
        # _points' conversions and errors), and whether they are two
        values = _plain_floats(data["pixel_spacing_mm"])
        if values is None:
            declared = _points(data["pixel_spacing_mm"], "pixel_spacing_mm", source)
            values, pair = declared.tolist(), declared.shape == (2,)
        else:
            pair = len(values) == 2
        if not pair or not all(  # np.allclose(rtol=1e-3)
            abs(x - y) <= 1e-8 + 1e-3 * abs(y)
            for x, y in zip(values, map(float, spacing_mm), strict=True)
        ):
            raise ROIError(
                f"ROI file declares pixel spacing {values} mm, the image has {list(spacing_mm)} mm",
                source,
            )
    # pixels per unit (row, col): 1 for px, 1 / spacing for mm, float64 as numpy has it
    scale_rc = (1.0, 1.0) if units == "px" else tuple(1.0 / float(v) for v in spacing_mm[:2])
    scale = np.array(scale_rc)
    items = data.get("vertebrae")
    if not isinstance(items, list) or not items:
        raise ROIError("'vertebrae' must be a non-empty list", source)
    rois = []
    for item in items:
        if type(item) is not dict and not isinstance(item, Mapping):
            raise ROIError("each vertebra must be a JSON object", source)
        label = _check_label(item.get("label"), source)
        polygon = box = None
        if "polygon" in item:
            poly = _points(item["polygon"], f"{label} polygon", source)
            if poly.ndim != 2 or poly.shape[1] != 2 or poly.shape[0] < 3:
                raise ROIError(f"{label} polygon needs >= 3 [row, col] vertices", source)
            polygon = poly * scale
            mask = polygon_mask(shape, polygon)
        elif "box" in item:
            r0, c0, r1, c1 = _box_corners(item["box"], label, scale_rc, source)
            if r1 <= r0 or c1 <= c0:
                raise ROIError(f"{label} box is empty or inverted: {item['box']}", source)
            if r0 < 0 or c0 < 0 or r1 > shape[0] or c1 > shape[1]:
                raise ROIError(
                    f"{label} box {item['box']} ({units}) lies outside the image", source
                )
            box = (r0, c0, r1, c1)
            mask = np.zeros(shape, dtype=bool)
            mask[r0:r1, c0:c1] = True
        else:
            raise ROIError(f"{label} needs a 'polygon' or a 'box'", source)
        if polygon is not None and (
            polygon.min() < -0.5
            or polygon[:, 0].max() > shape[0] - 0.5
            or polygon[:, 1].max() > shape[1] - 0.5
        ):
            raise ROIError(f"{label} polygon lies (partly) outside the image", source)
        if box is None and not mask.any():  # a box is non-empty and inside (checked)
            raise ROIError(f"{label} ROI covers no pixel", source)
        excluded = bool(item.get("excluded", False))
        reason = item.get("exclusion_reason")
        if excluded and not reason:
            reason = "excluded in ROI file"
        conf = item.get("confidence")
        if conf is not None:
            if isinstance(conf, bool) or not isinstance(conf, int | float) or not 0 <= conf <= 1:
                raise ROIError(
                    f"{label} confidence must be a number in [0, 1], got {conf!r}", source
                )
        if reason is not None and not isinstance(reason, str):
            raise ROIError(f"{label} exclusion_reason must be text, got {reason!r}", source)
        rois.append(
            VertebraROI(
                label, mask, polygon, box, excluded, reason, None if conf is None else float(conf)
            )
        )
    ordered = _sorted(rois, source)
    if _overlap(ordered, shape):
        raise ROIError("vertebra ROIs overlap", source)
    spacing = (float(spacing_mm[0]), float(spacing_mm[1]))
    return VertebraROIs(ordered, shape, source, spacing_mm=spacing)


def _overlap(rois: tuple[VertebraROI, ...], shape: tuple[int, int]) -> bool:
    """Whether a pixel lies in two of the masks.

    Boxes (masks that are exactly their box) are compared as rectangles; otherwise the
    masks are compared inside their bounding boxes."""
    if all(r.box is not None and r.polygon is None for r in rois):
        boxes = [r.box for r in rois]
        return any(
            a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
            for i, a in enumerate(boxes)
            for b in boxes[i + 1 :]
        )
    seen = np.zeros(shape, dtype=bool)  # a pixel in two masks: overlap (no int stack)
    for r in rois:
        r0, c0, r1, c1 = r.bbox()  # the mask is False outside its box: look inside only
        inside = (slice(r0, r1), slice(c0, c1))
        if np.logical_and(seen[inside], r.mask[inside]).any():
            return True
        seen[inside] |= r.mask[inside]
    return False


def rois_from_label_image(labels: np.ndarray, *, source: str = "label-image") -> VertebraROIs:
    """Build ROIs from a label image (1..4 = L1..L4, 0 = background).

    Raises
    ------
    ROIError
        Not 2-D, values outside 0..4, or no vertebra at all.
    """
    arr = np.asarray(labels)
    if arr.ndim == 3 and arr.shape[2] in (3, 4):  # RGB(A) PNG written with identical channels
        arr = arr[..., 0]
    if arr.ndim != 2:
        raise ROIError(f"label image must be 2-D, got shape {arr.shape}", source)
    values = np.unique(arr)
    bad = [v for v in values.tolist() if v not in (0, 1, 2, 3, 4)]
    if bad:
        raise ROIError(
            f"label image values must be 0..4 (0 background, 1..4 = L1..L4); found {bad[:5]}",
            source,
        )
    rois = [VertebraROI(LABELS[v - 1], arr == v) for v in range(1, 5) if v in values]
    if not rois:
        raise ROIError("label image contains no vertebra (no value 1..4)", source)
    return VertebraROIs(tuple(rois), (int(arr.shape[0]), int(arr.shape[1])), source)


def _read_text(path: Path) -> str:
    """``path.read_text(encoding="utf-8")``: the bytes decoded as UTF-8 (strict, a BOM
    kept), with universal newlines (``\r\n`` and ``\r`` read as ``\n``), from one
    binary read (no text-mode file object and its incremental decoder)."""
    text = path.read_bytes().decode("utf-8")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def read_rois(
    path: str | Path, image_shape: tuple[int, int], spacing_mm: tuple[float, float]
) -> VertebraROIs:
    """Read ROIs from a ``.json`` ROI file or a ``.npy`` / ``.png`` label image."""
    path = path if isinstance(path, Path) else Path(path)
    name = str(path)
    if not path.is_file():
        raise ROIError("ROI file does not exist", name)
    suffix = path.suffix.lower()
    try:
        if suffix == ".json":
            data = json.loads(_read_text(path))
            return rois_from_dict(data, image_shape, spacing_mm, source=f"file:{name}")
        if suffix == ".npy":
            arr = np.load(path, allow_pickle=False)
        elif suffix in (".png", ".tif", ".tiff"):
            from skimage.io import imread

            arr = imread(path)
        else:
            raise ROIError("ROI file must be .json, .npy, .png or .tif", name)
    except ROIError:
        raise
    except Exception as exc:
        raise ROIError(f"cannot read ROI file ({type(exc).__name__}: {exc})", name) from exc
    rois = rois_from_label_image(arr, source=f"label-image:{name}")
    if rois.image_shape != (int(image_shape[0]), int(image_shape[1])):
        raise ROIError(
            f"label image shape {rois.image_shape} differs from image {tuple(image_shape)}", name
        )
    return rois


def roi_document(
    rois: VertebraROIs, spacing_mm: tuple[float, float], *, units: str = "px"
) -> dict[str, Any]:
    """The ``tbscore-roi/1`` document for ``rois`` (see :func:`write_roi_json`)."""
    if units not in ("px", "mm"):
        raise ROIError("units must be 'px' or 'mm'")
    scale = np.array([1.0, 1.0]) if units == "px" else np.asarray(spacing_mm, dtype=float)
    items = []
    for roi in rois:
        item: dict[str, Any] = {"label": roi.label}
        if roi.box is not None and roi.polygon is None:
            item["box"] = [round(float(v), 4) for v in np.asarray(roi.box) * np.tile(scale, 2)]
        else:
            item["polygon"] = np.round(roi.outline() * scale, 3).tolist()
        if roi.excluded:
            item["excluded"] = True
            item["exclusion_reason"] = roi.exclusion_reason
        if roi.confidence is not None:
            item["confidence"] = round(float(roi.confidence), 4)
        items.append(item)
    return {
        "format": ROI_FORMAT,
        "units": units,
        "image_shape": list(rois.image_shape),
        "pixel_spacing_mm": [float(spacing_mm[0]), float(spacing_mm[1])],
        "source": rois.source,
        "vertebrae": items,
    }


def write_roi_json(
    rois: VertebraROIs, path: str | Path, spacing_mm: tuple[float, float], *, units: str = "px"
) -> Path:
    """Write ROIs as a ``tbscore-roi/1`` file that ``calc --roi`` reads back.

    ROIs without a polygon or box (from a label image) are written as their traced
    outline, which reproduces the mask up to the rasterisation of the boundary.
    """
    path = Path(path)
    path.write_text(
        json.dumps(roi_document(rois, spacing_mm, units=units), indent=2) + "\n", encoding="utf-8"
    )
    return path


def parse_exclusions(items: Iterable[str] | Mapping[str, str] | None) -> dict[str, str]:
    """Parse exclusions given as ``{"L2": "fracture"}`` or ``["L2:fracture", "L3"]``."""
    if not items:
        return {}
    if isinstance(items, Mapping):
        pairs = list(items.items())
    else:
        pairs = []
        for item in items:
            label, _, reason = str(item).partition(":")
            pairs.append((label, reason))
    out = {}
    for label, reason in pairs:
        lab = _check_label(str(label).strip(), "exclusions")
        out[lab] = str(reason).strip() or "excluded by user"
    return out


def apply_exclusions(
    rois: VertebraROIs, exclusions: Mapping[str, str] | Iterable[str] | None
) -> VertebraROIs:
    """Return ROIs with the given vertebrae marked excluded (with their reasons).

    Raises
    ------
    ROIError
        An excluded label that is not among the ROIs.
    """
    if not exclusions:
        return rois  # nothing to mark
    excl = parse_exclusions(exclusions)
    missing = sorted(set(excl) - set(rois.labels))
    if missing:
        raise ROIError(f"cannot exclude {missing}: no such vertebra ROI", rois.source)
    new = tuple(
        replace(r, excluded=True, exclusion_reason=excl[r.label]) if r.label in excl else r
        for r in rois
    )
    return replace(rois, rois=new)
