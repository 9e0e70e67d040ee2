"""Typed errors raised by tbscore.

Every failure a user can cause (a bad file, a bad ROI, bad settings) is raised as a
subclass of :class:`TBSError`. Errors about a file name the file and the reason, so a
batch can write both into its status columns.
"""

from __future__ import annotations

__all__ = [
    "TBSError",
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


class ComputationError(TBSError):
    """The computation could not produce a value (e.g. too few pixel pairs)."""

    code = "computation_error"


class NetError(TBSError):
    """A DICOM network operation failed (bad address, missing pynetdicom, spool problem).

    ``source`` names the peer (``AET@HOST:PORT``) or the spool folder.
    """

    code = "net_error"


class AssociationError(NetError):
    """No DICOM association could be established with a peer (refused, rejected,
    timed out) or it ended before the operation completed."""

    code = "association_failed"
