"""DICOM Encapsulated PDF (SOP class 1.2.840.10008.5.1.4.1.1.104.1) of a report.

:func:`write_encapsulated_pdf` wraps a PDF report in the Encapsulated PDF IOD (PS3.3
A.45.1: Patient, General Study, Encapsulated Document Series, General Equipment, SC
Equipment, Encapsulated Document and SOP Common modules), with the patient and study
attributes copied from the analysed image so that a PACS files it with the study.
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from tbscore._version import __version__
from tbscore.errors import PdfDicomError

__all__ = ["ENCAPSULATED_PDF_SOP_CLASS", "PdfDicomError", "encapsulated_pdf", "read_pdf_dicom"]

ENCAPSULATED_PDF_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.104.1"

_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "StudyInstanceUID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
    "StudyID",
    "AccessionNumber",
)


def encapsulated_pdf(
    pdf: bytes,
    source: Dataset,
    *,
    title: str,
    when: datetime,
    series_number: int = 901,
    instance_number: int = 1,
    manufacturer: str = "tbscore",
    sop_instance_uid: str | None = None,
) -> FileDataset:
    """An Encapsulated PDF dataset in the study of ``source``.

    Parameters
    ----------
    pdf : bytes
        The PDF document (must start with ``%PDF-``).
    source : pydicom Dataset
        The analysed image (patient and study attributes are copied).
    title : str
        DocumentTitle, e.g. ``"Trabecular Bone Score report (final)"``.
    when : datetime
        Content date/time (timezone-aware: the offset is recorded).
    series_number, instance_number : int
    manufacturer : str
    sop_instance_uid : str, optional

    Raises
    ------
    PdfDicomError
        Not a PDF, or a source without a StudyInstanceUID.
    """
    if not pdf.startswith(b"%PDF-"):
        raise PdfDicomError("not a PDF document (no %PDF- header)")
    if not source.get("StudyInstanceUID"):
        raise PdfDicomError("source image has no StudyInstanceUID")
    uid = sop_instance_uid or generate_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ENCAPSULATED_PDF_SOP_CLASS
    meta.MediaStorageSOPInstanceUID = uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = ENCAPSULATED_PDF_SOP_CLASS
    ds.SOPInstanceUID = uid
    for keyword in _PATIENT_STUDY:
        setattr(ds, keyword, source.get(keyword, "") or "")
    ds.Modality = "DOC"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = series_number
    ds.InstanceNumber = instance_number
    ds.Manufacturer = manufacturer
    ds.SoftwareVersions = __version__
    ds.ConversionType = "WSD"
    ds.ContentDate = when.strftime("%Y%m%d")
    ds.ContentTime = when.strftime("%H%M%S")
    ds.AcquisitionDateTime = when.strftime("%Y%m%d%H%M%S%z")
    if when.utcoffset() is not None:
        ds.TimezoneOffsetFromUTC = when.strftime("%z")
    ds.BurnedInAnnotation = "YES"
    ds.DocumentTitle = title[:64]
    ds.ConceptNameCodeSequence = []
    ds.MIMETypeOfEncapsulatedDocument = "application/pdf"
    data = pdf + (b"\0" if len(pdf) % 2 else b"")
    ds.EncapsulatedDocument = data
    ds.EncapsulatedDocumentLength = len(pdf)
    return ds


def read_pdf_dicom(path: str | Path) -> tuple[Dataset, bytes]:
    """The dataset and the PDF bytes (padding removed) of an Encapsulated PDF file.

    Raises
    ------
    PdfDicomError
        Unreadable, or not an Encapsulated PDF.
    """
    import pydicom

    try:
        ds = pydicom.dcmread(path)
    except Exception as exc:
        raise PdfDicomError(f"unreadable DICOM ({type(exc).__name__}: {exc})", str(path)) from exc
    if str(ds.get("SOPClassUID", "")) != ENCAPSULATED_PDF_SOP_CLASS:
        raise PdfDicomError("not an Encapsulated PDF", str(path))
    data = bytes(ds.EncapsulatedDocument)
    n = ds.get("EncapsulatedDocumentLength")
    return ds, data[: int(n)] if n else data.rstrip(b"\0")
