"""The 77090 export package: collect, de-identify, write images, ROIs, manifest and mapping."""

from __future__ import annotations

import contextlib
import datetime as _dt
import hashlib
import io
import json
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset

from tbscore._version import __version__
from tbscore.errors import DicomReadError, InputError, MissingPixelSpacingError, TBSError
from tbscore.export.deid import (  # noqa: F401
    _AGE_CAP,
    _COLOUR,
    _ROI_REASONS,
    ALLOWED_KEYWORDS,
    BODY_PART_TERMS,
    EMPTIED_TYPE2_KEYWORDS,
    EXPORT_FORMAT,
    IMAGE_TYPE_TERMS,
    MANIFEST_COLUMNS,
    MAPPING_FORMAT,
    RETAINED_PATIENT_CHARACTERISTICS,
    ExportError,
    UIDMapper,
    _anonymizer_rules,
    _anonymizer_version,
    _deidentify,
    _public_reason,
    exclusion_reason,
    public_modality,
)
from tbscore.io.sidecar import find_roi_file, is_roi_sidecar
from tbscore.io.sniff import read_dicom
from tbscore.io.tabular import write_csv

# --------------------------------------------------------------------------- package


@dataclass(frozen=True)
class ExportItem:
    """One input object of an export and what became of it.

    Attributes
    ----------
    item : str
        Item id within the package (``"i00001"``...), also used in the mapping file.
    status : str
        ``"included"`` or ``"excluded"``.
    reason : str
        Why it was excluded (empty when included).
    file : str
        Package file name (``IMG00001.dcm``), empty when excluded.
    sop_instance_uid, file_sha256, pixel_sha256 : str
        New SOP Instance UID, SHA-256 of the exported file, SHA-256 of the decoded
        pixel data (equal to the original's, see :attr:`tbscore.io.DXAImage.pixel_sha256`).
    roi_file, roi_sha256 : str
        Exported ROI file (``IMG00001.roi.json`` or ``.roi.npy``) and its SHA-256;
        empty when there is none.
    duplicate_of : str
        Earlier package file with the same pixel data.
    invalid_removed : str
        Keywords (``;``-separated) of coded attributes removed or changed because a
        value was outside its vocabulary (BodyPartExamined, PatientOrientation,
        ImageType...).
    phi_scrubbed : str
        Keywords (``;``-separated) of text attributes blanked or removed because they
        contained a PHI token of the source (never the values).
    """

    item: str
    status: str
    reason: str = ""
    file: str = ""
    sop_instance_uid: str = ""
    file_sha256: str = ""
    pixel_sha256: str = ""
    modality: str = ""
    sop_class_uid: str = ""
    rows: int | None = None
    columns: int | None = None
    row_mm: float | None = None
    col_mm: float | None = None
    spacing_source: str = ""
    photometric: str = ""
    bits_stored: int | None = None
    roi_file: str = ""
    roi_sha256: str = ""
    duplicate_of: str = ""
    invalid_removed: str = ""
    phi_scrubbed: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class ExportReport:
    """Result of :func:`export_package`.

    Attributes
    ----------
    package : Path
    mapping_path : Path
    items : tuple of ExportItem
    manifest : dict
        The content of ``manifest.json``.
    skipped_non_dicom : int
        Files that are not DICOM (not exported, not listed individually).
    """

    package: Path
    mapping_path: Path
    items: tuple[ExportItem, ...]
    manifest: dict = field(default_factory=dict)
    skipped_non_dicom: int = 0

    @property
    def included(self) -> tuple[ExportItem, ...]:
        return tuple(i for i in self.items if i.status == "included")

    @property
    def excluded(self) -> tuple[ExportItem, ...]:
        return tuple(i for i in self.items if i.status == "excluded")


def default_mapping_path(package: str | Path) -> Path:
    """``<package>.mapping.json`` beside the package folder.

    A package given as ``.``, ``..`` or ``dir/..`` is resolved first (``-o .`` in
    ``/data/pkg`` -> ``/data/pkg.mapping.json``).

    Raises
    ------
    ExportError
        The package is the file-system root: no folder beside it to hold the mapping.
    """
    package = Path(package)
    if package.name in ("", ".."):
        package = package.resolve()
    if not package.name:
        raise ExportError(
            "cannot name the mapping file after this output folder; give a mapping path "
            "(--mapping) outside the package",
            str(package),
        )
    return package.with_name(package.name + ".mapping.json")


def _inside(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def _collect(inputs: Iterable[str | Path], exclude_dirs: Sequence[Path]) -> list[Path]:
    files: list[Path] = []
    seen: set[Path] = set()
    for entry in inputs:
        p = Path(entry)
        if p.is_dir():
            candidates = sorted(q for q in p.rglob("*") if q.is_file())
        elif p.is_file():
            candidates = [p]
        else:
            raise ExportError("input does not exist", str(p))
        for q in candidates:
            r = q.resolve()
            if r in seen or any(_inside(q, d) for d in exclude_dirs):
                continue
            seen.add(r)
            files.append(q)
    return files


def _read_dicom(path: Path) -> Dataset | None:
    """The data set, or None when the file is not DICOM (:func:`tbscore.io.sniff.read_dicom`,
    the rule of the loader and of ``tbscore batch``)."""
    try:
        return read_dicom(path)
    except DicomReadError:
        return None


def _roi_sibling(path: Path) -> Path | None:
    """The ROI side-car of a DICOM file, found as ``tbscore batch`` finds it
    (:func:`tbscore.io.sidecar.find_roi_file` without an ROI folder)."""
    return find_roi_file(path)


def _is_roi_file(path: Path) -> bool:
    """A ROI side-car by its name (never an input, as in ``tbscore batch``)."""
    return is_roi_sidecar(path)


def _sanitised_label_image(path: Path, shape: tuple[int, int]) -> Any:
    """A label image side-car (``.roi.npy`` / ``.roi.png``) as a bare uint8 array.

    Only the label values are kept (0..4, validated by
    :func:`tbscore.core.roi.read_rois`): no PNG text chunks, no NumPy object data.
    """
    import numpy as np

    from tbscore.core.roi import read_rois

    rois = read_rois(path, shape, (1.0, 1.0))  # validates values 0..4 and the shape
    labels = np.zeros(rois.image_shape, np.uint8)
    for roi in rois:
        labels[np.asarray(roi.mask, bool)] = int(roi.label[1:])
    return labels


def _sanitised_roi(
    path: Path, shape: tuple[int, int], spacing: tuple[float, float] | None, new_name: str
) -> dict[str, Any]:
    """A ``tbscore-roi/1`` document with only geometry, labels and coded reasons."""
    from tbscore.core.roi import rois_from_dict

    data = json.loads(path.read_text(encoding="utf-8"))
    rois_from_dict(data, shape, spacing or (1.0, 1.0), source=str(path))  # validate
    out: dict[str, Any] = {
        "format": "tbscore-roi/1",
        "units": data.get("units", "px"),
        "image_shape": [int(shape[0]), int(shape[1])],
        "source": f"tbscore export ({new_name})",
        "vertebrae": [],
    }
    if data.get("pixel_spacing_mm") is not None:
        out["pixel_spacing_mm"] = [float(v) for v in data["pixel_spacing_mm"]]
    for item in data["vertebrae"]:
        v: dict[str, Any] = {"label": str(item["label"])}
        if "polygon" in item:
            v["polygon"] = [[float(a), float(b)] for a, b in item["polygon"]]
        else:
            v["box"] = [float(x) if not float(x).is_integer() else int(x) for x in item["box"]]
        if item.get("excluded"):
            reason = str(item.get("exclusion_reason") or "").strip().lower()
            v["excluded"] = True
            v["exclusion_reason"] = reason if reason in _ROI_REASONS else "other"
        out["vertebrae"].append(v)
    return out


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _load_mapping(path: Path) -> dict[str, Any] | None:
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ExportError(f"cannot read the mapping file ({exc})", str(path)) from exc
    if not isinstance(data, dict) or data.get("format") != MAPPING_FORMAT:
        raise ExportError(f"not a {MAPPING_FORMAT} mapping file", str(path))
    return data


def _write_private(path: Path, data: dict[str, Any]) -> None:
    """Write the mapping file atomically, mode 0600.

    The JSON goes to a temporary file (mode 0600) in the same folder, which then
    replaces ``path`` (``os.replace``): a failure leaves the old mapping as it was,
    and the final file is 0600 whatever the mode of the one it replaces.

    Raises
    ------
    ExportError
        The file cannot be written (the old mapping, if any, is unchanged).
    """
    tmp: str | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            os.fchmod(fh.fileno(), 0o600)
            json.dump(data, fh, indent=1)
            fh.write("\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        tmp = None
    except OSError as exc:
        raise ExportError(
            f"cannot write the mapping file ({type(exc).__name__}: {exc.strerror or exc}); "
            "an existing mapping file is unchanged",
            str(path),
        ) from exc
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)


def export_package(
    inputs: Sequence[str | Path] | str | Path,
    outdir: str | Path,
    *,
    mapping_path: str | Path | None = None,
    include_rois: bool = True,
    age_cap: int | None = _AGE_CAP,
) -> ExportReport:
    """De-identify DICOM images into a package for TBS analysis elsewhere (CPT 77090).

    Parameters
    ----------
    inputs : path or sequence of paths
        DICOM files and folders (searched recursively). Files that are not DICOM are
        skipped and counted.
    outdir : str or Path
        The package folder; it must not exist or be empty.
    mapping_path : str or Path, optional
        Mapping file (original -> new, and the UID key). Default
        ``<outdir>.mapping.json`` beside the package. If the file exists, its key is
        reused (same source UID -> same new UID as in the earlier export) and the new
        run is appended. It must not lie inside the package.
    include_rois : bool
        Export a sanitised copy of the ROI side-car of each image, found as
        ``tbscore batch`` finds it (``STEM.roi.json``, ``.roi.npy`` or ``.roi.png``
        beside the file, ``STEM`` = file name without a DICOM extension), as
        ``IMG#####.roi.json`` (geometry only) or ``IMG#####.roi.npy`` (label values
        only).
    age_cap : int or None
        Ages above it are written as it (default 90); ``None`` keeps them.

    Returns
    -------
    ExportReport

    Raises
    ------
    ExportError
        Non-empty output folder, mapping file inside the package or not writable (an
        existing one is left unchanged), missing input, dicom-anonymizer not
        installed, or an internal check failing (pixel data changed).
    """
    from tbscore.clinical.billing import schedule_info, service_code
    from tbscore.io.load import load_dicom

    package = Path(outdir)
    if isinstance(inputs, str | Path):
        inputs = [inputs]
    if package.exists() and (not package.is_dir() or any(package.iterdir())):
        raise ExportError("output folder exists and is not empty", str(package))
    mpath = Path(mapping_path) if mapping_path is not None else default_mapping_path(package)
    if _inside(mpath, package):
        raise ExportError(
            "the mapping file links the package to the patients and must be kept apart "
            "from it; choose a path outside the package folder",
            str(mpath),
        )
    previous = _load_mapping(mpath)
    key = bytes.fromhex(previous["key"]) if previous else None
    uids = UIDMapper(key)
    _gen, table_version = _anonymizer_rules(uids)  # fail early if not installed
    files = _collect(inputs, [package])
    files = [f for f in files if f.resolve() != mpath.resolve()]
    package.mkdir(parents=True, exist_ok=True)

    items: list[ExportItem] = []
    private_items: list[dict[str, Any]] = []
    patients: dict[str, str] = {}
    skipped = 0
    by_pixels: dict[str, str] = {}
    n_img = 0
    for path in files:
        if _is_roi_file(path):  # side-cars are not inputs (as in tbscore batch)
            continue
        ds = _read_dicom(path)
        if ds is None:
            skipped += 1
            continue
        item_id = f"i{len(items) + 1:05d}"
        orig_sop = str(ds.get("SOPInstanceUID", "") or "")
        private = {
            "item": item_id,
            "source_path": str(path.resolve()),
            "original_sop_instance_uid": orig_sop,
            "original_file_sha256": _sha256_file(path),
        }
        reason = exclusion_reason(ds)
        image = None
        spacing_source = ""
        if reason is None:
            try:
                try:
                    image = load_dicom(ds)
                    spacing_source = image.spacing_source
                except MissingPixelSpacingError:
                    image = load_dicom(ds, spacing=(1.0, 1.0))
                    spacing_source = "none"
            except InputError as exc:
                # the manifest gets a fixed text; the detail goes to the mapping file
                reason = _public_reason(exc)
                private["detail"] = f"{exc.code}: {exc.reason}"
        if reason is not None or image is None:
            items.append(
                ExportItem(
                    item=item_id,
                    status="excluded",
                    reason=reason or "",
                    modality=public_modality(ds),
                )
            )
            private_items.append({**private, "status": "excluded", "reason": reason})
            continue
        n_img += 1
        name = f"IMG{n_img:05d}.dcm"
        out_path = package / name
        try:
            new, invalid, scrubbed = _deidentify(
                ds, uids, age_years=image.metadata.age_years, age_cap=age_cap
            )
            new.save_as(out_path, enforce_file_format=True)
            check = load_dicom(out_path, spacing=(1.0, 1.0))
        except (
            ExportError,
            InputError,
            ValueError,
            TypeError,
            AttributeError,
            KeyError,
            OSError,
        ) as exc:
            out_path.unlink(missing_ok=True)
            n_img -= 1
            reason = f"cannot be exported ({type(exc).__name__})"
            private["detail"] = f"{type(exc).__name__}: {exc}"
            items.append(
                ExportItem(
                    item=item_id,
                    status="excluded",
                    reason=reason,
                    modality=public_modality(ds),
                )
            )
            private_items.append({**private, "status": "excluded", "reason": reason})
            continue
        if check.pixel_sha256 != image.pixel_sha256 or (
            spacing_source != "none" and check.spacing_mm != image.spacing_mm
        ):
            out_path.unlink()
            raise ExportError(
                "pixel data or spacing changed during export (internal error)", str(path)
            )
        roi_name = ""
        roi_sha = ""
        roi_src = _roi_sibling(path) if include_rois else None
        if roi_src is not None:
            try:
                if roi_src.name.lower().endswith(".roi.json"):
                    doc = _sanitised_roi(
                        roi_src,
                        image.shape,
                        None if spacing_source == "none" else image.spacing_mm,
                        name,
                    )
                    roi_name = name[:-4] + ".roi.json"
                    (package / roi_name).write_text(
                        json.dumps(doc, indent=1) + "\n", encoding="utf-8"
                    )
                else:  # label image: re-written as a bare array
                    import numpy as np

                    labels = _sanitised_label_image(roi_src, image.shape)
                    roi_name = name[:-4] + ".roi.npy"
                    np.save(package / roi_name, labels, allow_pickle=False)
            except (TBSError, ValueError, KeyError, TypeError, OSError) as exc:
                if roi_name:
                    (package / roi_name).unlink(missing_ok=True)
                roi_name = ""
                private["roi_error"] = f"{type(exc).__name__}: {exc}"
            else:
                roi_sha = _sha256_file(package / roi_name)
                private["source_roi_path"] = str(roi_src.resolve())
        pid = str(ds.get("PatientID", "") or "")
        if pid:
            patients[pid] = str(new.PatientID)
        dup = by_pixels.setdefault(image.pixel_sha256, name)
        spacing = None if spacing_source == "none" else image.spacing_mm
        items.append(
            ExportItem(
                item=item_id,
                status="included",
                file=name,
                sop_instance_uid=str(new.SOPInstanceUID),
                file_sha256=_sha256_file(out_path),
                pixel_sha256=image.pixel_sha256,
                modality=public_modality(new),
                sop_class_uid=str(new.SOPClassUID),
                rows=image.shape[0],
                columns=image.shape[1],
                row_mm=None if spacing is None else spacing[0],
                col_mm=None if spacing is None else spacing[1],
                spacing_source=spacing_source,
                photometric=str(new.get("PhotometricInterpretation", "") or ""),
                bits_stored=int(new.BitsStored) if "BitsStored" in new else None,
                roi_file=roi_name,
                roi_sha256=roi_sha,
                duplicate_of="" if dup == name else dup,
                invalid_removed=";".join(dict.fromkeys(invalid)),
                phi_scrubbed=";".join(dict.fromkeys(scrubbed)),
            )
        )
        private_items.append(
            {
                **private,
                "status": "included",
                "file": name,
                "new_sop_instance_uid": str(new.SOPInstanceUID),
            }
        )

    now = _dt.datetime.now(_dt.UTC).replace(microsecond=0).isoformat()
    cpt = service_code("export")
    manifest: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "created": now,
        "tbscore_version": __version__,
        "service": {
            "name": "export",
            "cpt_code": cpt.code,
            "descriptor": cpt.descriptor,
            "component": cpt.component,
            "cpt": cpt.to_dict(),
            "schedule": schedule_info(),
        },
        "deidentification": {
            "profile": "DICOM PS3.15 Annex E Basic Application Level Confidentiality Profile",
            "options": ["Retain Patient Characteristics Option"],
            "engine": f"dicom-anonymizer {_anonymizer_version()} (action table "
            f"{table_version}) + tbscore allow-list, value checks and PHI-token safety net",
            "retained_patient_characteristics": list(RETAINED_PATIENT_CHARACTERISTICS),
            "age_cap_years": age_cap,
            "emptied": list(EMPTIED_TYPE2_KEYWORDS),
            "patient_id": "keyed pseudonym (HMAC-SHA256)",
            "dates": "removed (LongitudinalTemporalInformationModified = REMOVED)",
            "uids": "remapped: 2.25.<HMAC-SHA256(key, uid)>; key kept in the mapping file",
            "private_tags": "removed",
            "sequences": "removed; AcquisitionContextSequence and AnatomicRegionSequence "
            "(Type 2) written empty, or the latter with a CID 4031 code rebuilt from the "
            "standard",
            "allowed_attributes": list(ALLOWED_KEYWORDS),
            "coded_values": "kept only from their vocabularies, else removed "
            "(item invalid_removed): BodyPartExamined (PS3.16 Annex L DXA sites), "
            "PatientOrientation ([APRLHF]{1,3} per value), ImageType (values 1-2 "
            "ORIGINAL/DERIVED, PRIMARY/SECONDARY; values 3+ from a short list of defined "
            "terms, others emptied), and the enumerated image attributes",
            "body_part_terms": sorted(BODY_PART_TERMS),
            "image_type_terms": sorted(IMAGE_TYPE_TERMS),
            "phi_safety_net": "every remaining text value containing a PHI token of the "
            "source (person-name parts, IDs, accession number, institution, staff, station, "
            "dates as YYYYMMDD; at least 3 characters, case-insensitive), and every other "
            "value (numbers, ages, UIDs) equal to one (IDs also as digit runs of 5 or more), "
            "is blanked or removed (item phi_scrubbed: keywords only); the attributes fixed "
            "by the pixel data are not searched; PHI not present in the source's "
            "identifying attributes is not caught",
            "burned_in_text": "excluded: non-image objects, colour images, "
            "BurnedInAnnotation=YES, RecognizableVisualFeatures=YES; "
            "pixel data of included images is not inspected (no OCR)",
            "file_names": "sequential (IMG#####.dcm), never derived from DICOM attributes",
        },
        "counts": {
            "included": sum(i.status == "included" for i in items),
            "excluded": sum(i.status == "excluded" for i in items),
            "skipped_non_dicom": skipped,
        },
        "items": [i.to_dict() for i in items],
    }
    (package / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    buf = io.StringIO()
    write_csv(buf, MANIFEST_COLUMNS, (i.to_dict() for i in items), lineterminator="\n")
    (package / "manifest.csv").write_text(buf.getvalue(), encoding="utf-8")

    mapping = previous or {
        "format": MAPPING_FORMAT,
        "warning": "links de-identified packages to patients: keep apart from the package, "
        "share with nobody who receives the package",
        "key": uids.key.hex(),
        "uids": {},
        "patients": {},
        "runs": [],
    }
    mapping["uids"].update(uids.mapping)
    mapping["patients"].update(patients)
    mapping["runs"].append(
        {
            "created": now,
            "package": str(package.resolve()),
            "tbscore_version": __version__,
            "items": private_items,
            "skipped_non_dicom": skipped,
        }
    )
    _write_private(mpath, mapping)
    return ExportReport(
        package=package,
        mapping_path=mpath,
        items=tuple(items),
        manifest=manifest,
        skipped_non_dicom=skipped,
    )
