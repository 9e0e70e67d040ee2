"""DICOM input and output: the only place where tbscore touches DICOM files."""

from tbscore.io.load import DicomMetadata, DXAImage, load_dicom

__all__ = ["DXAImage", "DicomMetadata", "load_dicom"]
