"""A reading-station study folder for tests and screenshots: a current scan and a prior
of the same patient (phantom A, with ROI side-cars) and a vendor DXA SR of the current
study (a GE-Lunar-like Comprehensive SR built with pydicom); and a DICOM node spool
built with the node's own code (:func:`make_node_spool`)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from conftest import SAMPLE_DIR, make_dataset

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


def make_node_spool(root: Path, tmp: Path) -> dict[str, str]:
    """A node spool built with the node's own code (tbscore.net: Spool, Ledger and the
    worker's score_job): a scored image, an image set aside, a companion PDF. Returns
    the SOP Instance UIDs by role."""
    from datetime import UTC, datetime

    import numpy as np
    import pydicom

    from netutil import image_copies
    from tbscore.io.pdf_dicom import encapsulated_pdf
    from tbscore.net.ledger import Ledger
    from tbscore.net.sop import DXA_IMAGE_CLASSES
    from tbscore.net.spool import Spool
    from tbscore.net.workers import score_job

    spool = Spool(root, min_free_mb=0)
    ledger = Ledger(spool.ledger_path)
    (good,) = image_copies(tmp / "sent", 1)  # phantom A, new UIDs
    broken = make_dataset(np.zeros((200, 160), np.uint16))
    broken.PixelData = broken.PixelData[:1000]
    broken.save_as(tmp / "sent" / "truncated.dcm", enforce_file_format=True)
    src = pydicom.dcmread(good)
    pdf = encapsulated_pdf(b"%PDF-1.4\n%%EOF\n", src, title="vendor report", when=datetime.now(UTC))
    pdf.save_as(tmp / "sent" / "report.dcm", enforce_file_format=True)
    uids = {}
    for role, path in (("scored", good), ("set_aside", tmp / "sent" / "truncated.dcm")):
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        uid = uids[role] = str(ds.SOPInstanceUID)
        target = spool.incoming_path(uid)
        target.write_bytes(path.read_bytes())
        assert str(ds.SOPClassUID) in DXA_IMAGE_CLASSES
        ledger.add_image(uid, str(ds.SOPClassUID), "DXA1", str(target), 1, score=True)
        job = {"uid": uid, "path": str(target), "sr_path": str(spool.result_path(uid))}
        out = score_job(job, {"max_pixels": 0, "settings": None, "calibration": None})
        if out["outcome"] == "scored":  # as the node's supervisor records it
            ledger.scored(uid, out["sr_path"], out["l1_l4"], ["PACS"], code=out["code"],
                          reason=out["reason"])  # fmt: skip
        else:
            ledger.set_aside(uid, out["code"], out["reason"])
    uids["companion"] = str(pdf.SOPInstanceUID)
    target = spool.incoming_path(uids["companion"])
    target.write_bytes((tmp / "sent" / "report.dcm").read_bytes())
    ledger.add_image(uids["companion"], str(pdf.SOPClassUID), "DXA1", str(target), 1, score=False)
    ledger.close()
    return uids
