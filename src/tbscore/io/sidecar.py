"""ROI side-car files: the one rule that finds the ROI file of a DICOM input.

``tbscore batch`` (:func:`tbscore.batch.worker.find_roi`), ``tbscore calibrate``
(:func:`tbscore.calibrate.calibrate_pairs`) and ``tbscore export``
(:mod:`tbscore.export.package`) all call :func:`find_roi_file`, so a calibration is
fitted on the ROIs batch scores with and an export ships the ROIs batch would use.
"""

from __future__ import annotations

import re
from pathlib import Path

__all__ = [
    "ROI_SUFFIXES",
    "DICOM_EXTENSIONS",
    "roi_stem",
    "is_roi_sidecar",
    "find_roi_file",
]

#: Suffixes of ROI side-car files, in lookup order; files ending so are not inputs.
ROI_SUFFIXES: tuple[str, ...] = (".roi.json", ".roi.npy", ".roi.png")

#: Extensions removed from a file name to form its ROI stem (case-insensitive).
DICOM_EXTENSIONS: tuple[str, ...] = (".dcm", ".dicom", ".dic", ".ima")

#: A DICOM UID (PS3.5 9.1): digit components separated by single dots, 64 characters
#: at most. Only such a UID is used as a file name in the ``roi_dir`` lookup.
_UID = re.compile(r"[0-9]+(?:\.[0-9]+)*")


def roi_stem(path: str | Path) -> str:
    """File name without a DICOM extension (``.dcm``, ``.dicom``, ``.dic``, ``.ima``).

    ``scan1.dcm`` -> ``scan1``; ``IM0001`` -> ``IM0001``; ``1.2.840.1`` -> ``1.2.840.1``
    (other dotted parts are kept: UIDs are common file names).
    """
    name = Path(path).name
    lower = name.lower()
    for ext in DICOM_EXTENSIONS:
        if lower.endswith(ext) and len(name) > len(ext):
            return name[: -len(ext)]
    return name


def is_roi_sidecar(name: str | Path) -> bool:
    """Whether a file name is an ROI side-car (ends with one of :data:`ROI_SUFFIXES`,
    case-insensitive); such files are never inputs."""
    lower = Path(name).name.lower()
    return any(lower.endswith(s) for s in ROI_SUFFIXES)


def find_roi_file(
    path: str | Path,
    *,
    roi_dir: str | Path | None = None,
    rel_parent: str | Path = "",
    sop_instance_uid: str | None = None,
) -> Path | None:
    """The ROI file of a DICOM input, or ``None`` (automatic detection).

    With ``STEM`` the file name without a DICOM extension (:func:`roi_stem`) and each
    suffix of :data:`ROI_SUFFIXES` in turn (``.roi.json``, ``.roi.npy``, ``.roi.png``),
    the first existing file among:

    1. ``ROI_DIR/<rel_parent>/STEM.roi.json`` (``rel_parent``: the input's folder
       relative to the walked folder),
    2. ``ROI_DIR/STEM.roi.json``,
    3. ``ROI_DIR/<SOPInstanceUID>.roi.json`` (only a well-formed UID: digits and
       single dots, at most 64 characters; anything else in the tag is ignored, so
       no header value can point the lookup outside ``ROI_DIR``),
    4. ``STEM.roi.json`` next to the DICOM file (side-car).

    Parameters
    ----------
    path : path
        The DICOM input.
    roi_dir : path, optional
        Folder of ROI files (steps 1-3 only when given).
    rel_parent : path
        Relative folder of the input under the folder it was found in (``""``: none).
        Absolute paths and ``..`` components are ignored.
    sop_instance_uid : str, optional
        The input's SOP Instance UID.

    Returns
    -------
    pathlib.Path or None
    """
    stem = roi_stem(path)
    bases: list[Path] = []
    if roi_dir:
        root = Path(roi_dir)
        rel = Path(rel_parent) if rel_parent else None
        if rel is not None and not rel.is_absolute() and ".." not in rel.parts and rel.parts:
            bases.append(root / rel / stem)
        bases.append(root / stem)
        if sop_instance_uid and len(sop_instance_uid) <= 64 and _UID.fullmatch(sop_instance_uid):
            bases.append(root / sop_instance_uid)
    bases.append(Path(path).parent / stem)
    for base in bases:
        for suffix in ROI_SUFFIXES:
            candidate = base.with_name(base.name + suffix)
            if candidate.is_file():
                return candidate
    return None
