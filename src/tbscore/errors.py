"""Typed errors raised by tbscore.

Every failure a user can cause (a bad file, a bad ROI, bad settings) is raised as a
subclass of :class:`TBSError`. Errors about a file name the file and the reason, so a
batch can write both into its status columns.
"""

from __future__ import annotations

__all__ = [
    "TBSError",
    "ReviewError",
    "InputError",
    "DicomReadError",
    "NotAnImageError",
    "UnsupportedImageError",
    "ColourImageError",
    "CompressedPixelDataError",
    "MissingPixelSpacingError",
    "ROIError",
    "DetectionError",
    "SettingsError",
    "ComputationError",
    "OutputError",
    "ResultFormatError",
    "SignOffError",
    "AlreadySignedError",
    "PrecisionError",
    "ReferenceTableError",
    "PdfDicomError",
    "ReportError",
    "NetError",
    "AssociationError",
]


class TBSError(Exception):
    """Base class of every tbscore error.

    Parameters
    ----------
    reason : str
        Human-readable reason.
    source : str, optional
        The file (or other input) the error is about.
    """

    #: short machine-readable code, used in batch status columns
    code = "error"

    def __init__(self, reason: str, source: str | None = None) -> None:
        self.reason = reason
        self.source = source
        super().__init__(f"{source}: {reason}" if source else reason)


class InputError(TBSError):
    """An input file cannot be used."""

    code = "input_error"


class DicomReadError(InputError):
    """The file is not readable as DICOM (missing, truncated, not DICOM)."""

    code = "dicom_read_error"


class NotAnImageError(InputError):
    """The DICOM object holds no pixel data (SR, presentation state, ...)."""

    code = "not_an_image"


class UnsupportedImageError(InputError):
    """The image is not a 2-D grayscale projection image (RGB, multi-frame, 3-D...)."""

    code = "unsupported_image"


class ColourImageError(UnsupportedImageError):
    """The image is a colour image (RGB, YBR, palette): typically a report screenshot.

    A subclass of :class:`UnsupportedImageError`, so code catching that still catches
    it; its own ``code`` lets a batch tell a screenshot found in a folder (``excluded``)
    from a real failure.
    """

    code = "colour_image"


class CompressedPixelDataError(InputError):
    """The pixel data is compressed and no installed decoder can read it."""

    code = "compressed_no_decoder"


class MissingPixelSpacingError(InputError):
    """No pixel spacing in the file and none supplied by the user."""

    code = "missing_pixel_spacing"


class ROIError(TBSError):
    """An ROI file or mask is invalid or does not fit the image."""

    code = "roi_error"


class DetectionError(TBSError):
    """Automatic vertebra detection could not find four plausible vertebrae."""

    code = "detection_failed"


class SettingsError(TBSError):
    """A settings value or settings file is invalid."""

    code = "settings_error"


class ComputationError(TBSError, ValueError):
    """The computation could not produce a value (e.g. too few pixel pairs), or a
    kernel (:mod:`tbscore.core.variogram`, :mod:`tbscore.core.estimators`) was given
    arrays it cannot use. Also a ``ValueError``, which these kernels raised before."""

    code = "computation_error"


class OutputError(TBSError):
    """An output path cannot be written (a folder, a missing or read-only place, a bad
    suffix); raised before anything is computed."""

    code = "output_error"


class ResultFormatError(InputError, ValueError):
    """A result JSON (``tbscore-result/1``) has a missing field or a field of the wrong
    type or range. Also a :class:`ValueError`, which ``from_dict`` raised before."""

    code = "bad_result_file"


class SignOffError(TBSError):
    """A report cannot be signed: missing physician or impression, bad time zone, a
    sign-off record that does not match the result, or an existing signed file."""

    code = "signoff_error"


class AlreadySignedError(SignOffError):
    """The report is already signed: later changes are an addendum (``--addendum``)."""

    code = "already_signed"


class PrecisionError(TBSError):
    """Precision (ISCD RMS-SD / LSC) cannot be computed from the given repeat scans."""

    code = "precision_error"


class ReferenceTableError(TBSError):
    """A T/Z-score reference table is malformed, or has no band for the age."""

    code = "reference_error"


class PdfDicomError(TBSError):
    """A DICOM Encapsulated PDF cannot be built or read (not a PDF, no study)."""

    code = "pdf_dicom_error"


class ReportError(TBSError):
    """A report cannot be built or written (no value, bad service, missing PDF support)."""

    code = "report_error"


class BillingError(TBSError, ValueError):
    """Unknown code, service, setting or rate, or an invalid count."""

    code = "billing_error"


class RiskInputError(TBSError, ValueError):
    """An input to the risk functions is outside the domain where they are defined.

    Subclasses both :class:`tbscore.errors.TBSError` (so batch code can catch every
    tbscore error) and :class:`ValueError` (so plain Python callers can too).
    """

    code = "risk_input_error"


class ExportError(TBSError):
    """An export cannot be done (bad output or mapping location, missing dependency)."""

    code = "export_error"


class SRError(TBSError):
    """The SR cannot be written (missing highdicom, mismatching source) or read."""

    code = "sr_error"


class UnsafePathError(TBSError):
    """A path built from untrusted text would leave its folder."""

    code = "unsafe_path"


class BatchError(TBSError):
    """A batch cannot start or resume (bad output, settings mismatch, corrupt journal)."""

    code = "batch_error"


class CalibrationError(TBSError):
    """Bad paired data, a fit that cannot be made, or an unreadable calibration file."""

    code = "calibration_error"


class ReviewError(TBSError):
    """The reading station cannot do what was asked: unknown study, bad ROI edit, an
    edit of a signed study, a missing or bad users file, a refused login."""

    code = "review_error"


class NetError(TBSError):
    """A DICOM network operation failed (bad address, missing pynetdicom, spool problem).

    ``source`` names the peer (``AET@HOST:PORT``) or the spool folder.
    """

    code = "net_error"


class AssociationError(NetError):
    """No DICOM association could be established with a peer (refused, rejected,
    timed out) or it ended before the operation completed."""

    code = "association_failed"
