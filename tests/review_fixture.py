"""A reading-station study folder for tests and screenshots: a current scan and a prior
of the same patient (phantom A, with ROI side-cars) and a vendor DXA SR of the current
study (a GE-Lunar-like Comprehensive SR built with pydicom)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import SAMPLE_DIR

#: Values the vendor SR carries for L1–L4 (and decoys for L2 alone and the Z-score).
SR_BMD, SR_T, SR_L2_BMD, SR_Z = 0.987, -1.3, 1.104, -0.4


def _code(value: str, scheme: str, meaning: str):
    from pydicom.dataset import Dataset

    ds = Dataset()
    ds.CodeValue, ds.CodingSchemeDesignator, ds.CodeMeaning = value, scheme, meaning
    return ds


def _item(vt: str, name, rel: str = "CONTAINS", **kw):
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    it = Dataset()
    it.RelationshipType = rel
    it.ValueType = vt
    it.ConceptNameCodeSequence = Sequence([name])
    if vt == "CONTAINER":
        it.ContinuityOfContent = "SEPARATE"
        it.ContentSequence = Sequence(kw.get("children", []))
    elif vt == "TEXT":
        it.TextValue = kw["text"]
    elif vt == "NUM":
        mv = Dataset()
        mv.NumericValue = str(kw["value"])
        mv.MeasurementUnitsCodeSequence = Sequence([_code(kw["unit"], "UCUM", kw["unit"])])
        it.MeasuredValueSequence = Sequence([mv])
    return it


def write_vendor_dxa_sr(path: Path, image: Path) -> Path:
    """A vendor bone-densitometry SR for the study of ``image`` (same Study UID)."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    src = pydicom.dcmread(image, stop_before_pixels=True)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.33"  # Comprehensive SR
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    for kw in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "PatientSex",
        "StudyInstanceUID",
        "StudyDate",
        "AccessionNumber",
    ):
        if kw in src:
            setattr(ds, kw, getattr(src, kw))
    ds.Modality = "SR"
    ds.Manufacturer = "GE Healthcare"
    ds.ManufacturerModelName = "Lunar iDXA"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 2
    ds.InstanceNumber = 1
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code("BDR", "99GEMS", "Bone Densitometry Report")])
    region = _code("REG", "99GEMS", "Region")

    def spine(name: str, bmd: float, children=()):
        return _item(
            "CONTAINER",
            _code("SPN", "99GEMS", "AP Spine"),
            children=[
                _item("TEXT", region, rel="HAS CONCEPT MOD", text=name),
                _item("NUM", _code("BMD", "99GEMS", "BMD"), value=bmd, unit="g/cm2"),
                *children,
            ],
        )

    ds.ContentSequence = Sequence(
        [
            spine("L2", SR_L2_BMD),
            spine(
                "L1-L4",
                SR_BMD,
                [
                    _item("NUM", _code("TSC", "99GEMS", "T-Score"), value=SR_T, unit="{T-score}"),
                    _item("NUM", _code("ZSC", "99GEMS", "Z-Score"), value=SR_Z, unit="{Z-score}"),
                ],
            ),
        ]
    )
    ds.save_as(path, enforce_file_format=True)
    return path


def make_study_folder(folder: Path) -> dict[str, Path]:
    """``current.dcm`` (+ROI, + vendor SR) and ``prior.dcm`` (two years earlier, +ROI)."""
    import pydicom
    from pydicom.uid import generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    src = SAMPLE_DIR / "phantom_a_square.dcm"
    roi = json.loads((SAMPLE_DIR / "phantom_a_square.roi.json").read_text())
    current = folder / "current.dcm"
    shutil.copy(src, current)
    (folder / "current.roi.json").write_text(json.dumps(roi))
    ds = pydicom.dcmread(src)
    ds.StudyDate = "20241120"
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    prior = folder / "prior.dcm"
    ds.save_as(prior)
    proi = json.loads(json.dumps(roi))
    proi["vertebrae"][0]["box"] = [38, 68, 54, 92]  # a smaller L1: another value
    (folder / "prior.roi.json").write_text(json.dumps(proi))
    sr = write_vendor_dxa_sr(folder / "vendor_dxa.dcm", current)
    return {"current": current, "prior": prior, "sr": sr}
