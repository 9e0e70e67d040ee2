"""Python API: ``tbscore.calc`` (CPT 77091, technical calculation)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from pydicom.dataset import Dataset

from tbscore._version import __version__
from tbscore.clinical.risk import bmi_warning
from tbscore.core.result import TBSResult
from tbscore.core.roi import (
    VertebraROIs,
    apply_exclusions,
    read_rois,
    rois_from_dict,
    rois_from_label_image,
)
from tbscore.core.settings import Settings, resolve_settings
from tbscore.core.tbs import (
    combine_l1_l4,
    combine_l1_l4_ci95,
    compute_vertebrae,
    method_string,
    uncertainty_warnings,
)
from tbscore.core.variogram import box_is_finite
from tbscore.errors import InputError, ROIError, SettingsError
from tbscore.io.load import (
    DXA_SPACING_RANGE_MM,
    DicomMetadata,
    DXAImage,
    load_dicom,
    spacing_in_dxa_range,
)
from tbscore.io.paths import result_with_path_format

if TYPE_CHECKING:
    from tbscore.core.calibration import Calibration

__all__ = ["calc", "resolve_rois", "as_image"]

Source = str | Path | Dataset | DXAImage | np.ndarray
RoiInput = str | Path | Mapping[str, Any] | VertebraROIs | np.ndarray | None


def as_image(
    source: Source,
    *,
    spacing: tuple[float, float] | None = None,
    override_spacing: bool = False,
) -> DXAImage:
    """Load ``source`` (file, Dataset, DXAImage or 2-D array) as a :class:`DXAImage`.

    A numpy array needs ``spacing`` (mm, ``(row_mm, col_mm)``).
    """
    if isinstance(source, DXAImage):
        return source
    if isinstance(source, np.ndarray):
        if spacing is None:
            raise SettingsError("a numpy image needs spacing=(row_mm, col_mm)")
        arr = np.asarray(source, dtype=np.float64)
        if arr.ndim != 2:
            raise SettingsError(f"image must be 2-D, got shape {arr.shape}")
        import hashlib

        digest = hashlib.sha256(
            f"{source.dtype.str}{source.shape}".encode() + np.ascontiguousarray(source).tobytes()
        ).hexdigest()
        return DXAImage(
            arr,
            (float(spacing[0]), float(spacing[1])),
            "user",
            DicomMetadata(),
            "<array>",
            digest,
            None,
        )
    return load_dicom(source, spacing=spacing, override_spacing=override_spacing)


def resolve_rois(
    roi: RoiInput,
    image: DXAImage,
    settings: Settings | Mapping[str, Any] | str | Path | None = None,
) -> VertebraROIs:
    """ROIs from a file path, a ``tbscore-roi/1`` dict, a label image, an existing
    :class:`VertebraROIs`, or ``None`` (automatic detection).

    Parameters
    ----------
    roi : path, dict, VertebraROIs, label image or None
    image : DXAImage
    settings : Settings, dict or settings-file path, optional
        Its detection parameters (``roi_inset_mm``, ``min_confidence``,
        ``min_vertebra_confidence``, ``allow_inverted``) are used when ``roi`` is
        ``None``; the one path by which they reach :func:`tbscore.core.detect.detect`.
    """
    if roi is None:
        cfg = resolve_settings(settings)
        if not spacing_in_dxa_range(image.spacing_mm):
            lo, hi = DXA_SPACING_RANGE_MM
            raise ROIError(
                f"automatic detection needs a pixel spacing within {lo:g}-{hi:g} mm, got "
                f"{image.spacing_mm[0]:g} x {image.spacing_mm[1]:g} mm; supply an ROI file "
                "(--roi)",
                image.source,
            )
        try:
            from tbscore.core.detect import detect
        except ImportError as exc:  # pragma: no cover - detection ships with the package
            raise ROIError(
                "no ROI given and automatic detection is unavailable", image.source
            ) from exc
        return detect(image.pixels, image.spacing_mm, source=image.source, **cfg.detection_kwargs())
    if isinstance(roi, VertebraROIs):
        if roi.image_shape != image.shape:
            raise ROIError(
                f"ROIs are for shape {roi.image_shape}, image is {image.shape}", image.source
            )
        return roi
    if isinstance(roi, str | Path):
        return read_rois(roi, image.shape, image.spacing_mm)
    if isinstance(roi, Mapping):
        return rois_from_dict(roi, image.shape, image.spacing_mm)
    if isinstance(roi, np.ndarray):
        rois = rois_from_label_image(roi)
        if rois.image_shape != image.shape:
            raise ROIError(
                f"label image shape {rois.image_shape} differs from image {image.shape}",
                image.source,
            )
        return rois
    raise ROIError(f"unsupported ROI input of type {type(roi).__name__}", image.source)


def _check_finite(image: DXAImage, rois: VertebraROIs) -> None:
    """Refuse NaN or infinite gray levels inside an ROI (a float image with holes)."""
    for r in rois:
        if r.excluded:
            continue
        r0, c0, r1, c1 = r.bbox()  # the mask's box: no pass over the whole image
        if box_is_finite(image.pixels, (r0, c0, r1, c1)):  # the common case: no copy
            continue
        box = (slice(r0, r1), slice(c0, c1))
        bad = int(np.count_nonzero(~np.isfinite(image.pixels[box][r.mask[box]])))
        if bad:
            raise InputError(
                f"{bad} pixel(s) of the {r.label} ROI are NaN or infinite; mask them out of "
                "the ROI or fill them",
                image.source,
            )


def calc(
    source: Source,
    roi: RoiInput = None,
    *,
    settings: Settings | Mapping[str, Any] | str | Path | None = None,
    spacing: tuple[float, float] | None = None,
    override_spacing: bool = False,
    exclude: Mapping[str, str] | Iterable[str] | None = None,
    calibration: Calibration | str | Path | None = None,
    path_format: str | None = None,
) -> TBSResult:
    """Compute TBS per vertebra and for L1–L4 (the 77091 technical result).

    Parameters
    ----------
    source : path, pydicom Dataset, DXAImage or ndarray
        The lumbar-spine DXA image. A numpy array needs ``spacing``.
    roi : path, dict, VertebraROIs, label image or None
        Vertebral ROIs (``tbscore-roi/1`` JSON, ``.npy``/``.png`` label image...).
        ``None`` runs automatic detection (:func:`tbscore.core.detect.detect`).
    settings : Settings, dict or settings-file path, optional
        Computation parameters (default :class:`Settings`).
    spacing : (float, float), optional
        Pixel spacing in mm ``(row_mm, col_mm)`` for files without one.
    override_spacing : bool
        Use ``spacing`` even when the file has its own.
    exclude : mapping or iterable, optional
        Vertebrae to exclude with reasons, ``{"L2": "fracture"}`` or ``["L2:fracture"]``.
    calibration : Calibration or path, optional
        A linear map to a reference TBS scale (:mod:`tbscore.calibrate`); the raw
        values stay and calibrated values are added beside them.
    path_format : {"absolute", "relative", "basename"}, optional
        How the input and ROI paths are recorded (:func:`tbscore.io.paths.format_path`);
        default: as given.

    Returns
    -------
    TBSResult

    Raises
    ------
    tbscore.errors.TBSError
        Input, ROI or settings problems, naming the file and the reason.
    """
    cfg = resolve_settings(settings)
    image = as_image(source, spacing=spacing, override_spacing=override_spacing)
    rois = apply_exclusions(resolve_rois(roi, image, cfg), exclude)
    _check_finite(image, rois)
    # finite inside every ROI (checked just above, with the file's name): the kernel
    # does not check again
    vertebrae = compute_vertebrae(image.pixels, rois, image.spacing_mm, cfg, finite=True)
    l14, labels, reason = combine_l1_l4(vertebrae, cfg.min_valid_vertebrae)
    # the interval about the mean just computed (the same vertebrae, the same value)
    l14_se, l14_ci = combine_l1_l4_ci95(vertebrae, labels, l14) if l14 is not None else (None, None)
    warnings = list(rois.warnings) + uncertainty_warnings(vertebrae, cfg.estimator)
    if image.spacing_source == "user":
        warnings.append("pixel spacing supplied by the user, not read from the file")
        if not spacing_in_dxa_range(image.spacing_mm):
            lo, hi = DXA_SPACING_RANGE_MM
            warnings.append(
                f"pixel spacing {image.spacing_mm[0]:g} x {image.spacing_mm[1]:g} mm is "
                f"outside the physically possible DXA range {lo:g}-{hi:g} mm"
            )
    meta = image.metadata
    bmi_text = bmi_warning(meta.bmi)  # the one BMI rule (tbscore.clinical.risk)
    if bmi_text is not None:
        warnings.append(bmi_text)
    result = TBSResult(
        vertebrae=vertebrae,
        l1_l4=l14,
        l1_l4_labels=labels,
        l1_l4_reason=reason,
        settings=cfg,
        pixel_spacing_mm=image.spacing_mm,
        spacing_source=image.spacing_source,
        lag_range_mm=(cfg.lag_min_mm, cfg.lag_max_mm),
        method=method_string(cfg.estimator),
        input={
            "source": image.source,
            "file_sha256": image.file_sha256,
            "pixel_sha256": image.pixel_sha256,
            "sop_instance_uid": meta.sop_instance_uid,
        },
        metadata=meta.to_dict(),
        roi_source=rois.source,
        roi_confidence=rois.confidence,
        warnings=tuple(warnings),
        tbscore_version=__version__,
        l1_l4_se=l14_se,
        l1_l4_ci95=l14_ci,
    )
    if calibration is not None:
        from tbscore.core.calibration import apply_calibration
        from tbscore.io.calibration import load_calibration

        if isinstance(calibration, str | Path):
            calibration = load_calibration(calibration)
        result = apply_calibration(result, calibration)
    return result_with_path_format(result, path_format)
