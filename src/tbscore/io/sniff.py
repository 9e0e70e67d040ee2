"""The one rule that tells a DICOM file by its content, and reads it.

Used by the loader (:func:`tbscore.io.load.load_dicom`, :func:`~tbscore.io.load.read_header`),
by ``tbscore batch`` (:mod:`tbscore.batch.discover`: which inputs are DICOM) and by
``tbscore export`` (which files are packaged), so that the three agree on every file.

A file is DICOM when bytes 128-131 are ``b"DICM"`` (the Part-10 preamble and prefix)
or, for a stream without preamble, when it starts with a group 0002 or 0008 data
element (little endian) and a forced pydicom parse finds one of
:data:`MARKER_KEYWORDS`. The extension never matters. pydicom is imported only when a
file has to be parsed.
"""

from __future__ import annotations

import errno
import os
from io import BytesIO
from pathlib import Path
from stat import S_ISREG
from typing import TYPE_CHECKING

from tbscore.errors import DicomReadError

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

__all__ = [
    "HEAD_BYTES",
    "MARKER_KEYWORDS",
    "read_head",
    "head_is_dicom",
    "is_dicom",
    "read_dicom",
    "read_dicom_bytes",
]

#: Bytes read to sniff a file: the 128-byte preamble and the ``DICM`` prefix.
HEAD_BYTES = 132
#: First bytes of a DICOM stream without preamble: a group 0002 or 0008 tag, little endian.
_BARE_STARTS = (b"\x02\x00", b"\x08\x00")
#: A forced parse of a file without preamble must find one of these to be DICOM.
MARKER_KEYWORDS: tuple[str, ...] = (
    "SOPClassUID",
    "SOPInstanceUID",
    "Modality",
    "StudyInstanceUID",
    "Rows",
    "PixelData",
)
_NOT_DICOM = "not a DICOM file (no DICOM preamble or data elements)"


def read_head(path: str | Path) -> bytes:
    """The first :data:`HEAD_BYTES` bytes of a file (``OSError`` if it cannot be read)."""
    with open(path, "rb") as fh:
        return fh.read(HEAD_BYTES)


def _has_markers(ds: Dataset) -> bool:
    return any(k in ds for k in MARKER_KEYWORDS)


def head_is_dicom(source: str | Path | BytesIO, head: bytes) -> bool:
    """:func:`is_dicom` given the first :data:`HEAD_BYTES` bytes ``head`` of ``source``."""
    if len(head) >= HEAD_BYTES and head[128:132] == b"DICM":
        return True
    if head[:2] not in _BARE_STARTS:
        return False
    import pydicom

    try:
        ds = pydicom.dcmread(source, force=True, stop_before_pixels=True)
    except Exception:
        return False
    return _has_markers(ds)


def is_dicom(source: str | Path | bytes) -> bool:
    """Whether a file (path) or a byte string is DICOM, judged by content only.

    The module's rule (preamble, or a bare stream starting with a group 0002/0008
    element whose header holds one of :data:`MARKER_KEYWORDS`; pixel data not read).
    A file that cannot be read is not DICOM.
    """
    if isinstance(source, bytes):
        return head_is_dicom(BytesIO(source), source[:HEAD_BYTES])
    try:
        head = read_head(source)
    except OSError:
        return False
    return head_is_dicom(source, head)


def read_dicom(path: str | Path, *, stop_before_pixels: bool = False) -> Dataset:
    """Read a DICOM file by the module's rule.

    Parameters
    ----------
    path : str or Path
    stop_before_pixels : bool
        Read the header only.

    Returns
    -------
    pydicom.dataset.Dataset

    Raises
    ------
    DicomReadError
        Missing or not a regular file, a corrupt Part-10 header ("unreadable
        DICOM ..."), or not DICOM by the rule ("not a DICOM file ..."), naming the file.
    """
    return _read(Path(path), stop_before_pixels, False)[0]


def read_dicom_bytes(path: str | Path) -> tuple[Dataset, bytes]:
    """:func:`read_dicom` of the whole file, and the file's bytes, from one read.

    The data set is parsed from the bytes in memory (what the loader needs: the
    pixels and a digest of the file), and looks as if read from the path
    (``filename``, ``timestamp``). Same errors as :func:`read_dicom`.
    """
    ds, data = _read(path if isinstance(path, Path) else Path(path), False, True)
    assert data is not None
    return ds, data


def _read(path: Path, stop_before_pixels: bool, from_bytes: bool) -> tuple[Dataset, bytes | None]:
    """The rule; ``from_bytes``: the file read into memory once, parsed from there and
    its bytes returned with the data set."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    source = str(path)
    st = _stat(path)  # one stat: exists, regular file, and the time stamp of the read
    if st is None:
        raise DicomReadError("file does not exist", source)
    if not S_ISREG(st.st_mode):
        raise DicomReadError("not a regular file", source)
    src: Path | BytesIO = path
    data = None
    if from_bytes:
        try:
            data = path.read_bytes()
        except OSError as exc:  # what pydicom's own open of the path reports
            raise DicomReadError(f"unreadable DICOM ({type(exc).__name__}: {exc})", source) from exc
        src = BytesIO(data)
    try:
        ds = pydicom.dcmread(src, stop_before_pixels=stop_before_pixels)
        return _as_read_from(ds, path, st.st_mtime), data
    except InvalidDicomError:
        pass  # no preamble: the content decides
    except Exception as exc:  # truncated or corrupt header
        raise DicomReadError(f"unreadable DICOM ({type(exc).__name__}: {exc})", source) from exc
    if data is not None:
        head = data[:HEAD_BYTES]
        src = BytesIO(data)
    else:
        try:
            head = read_head(path)
        except OSError as exc:
            raise DicomReadError(f"cannot read file ({exc.strerror or exc})", source) from exc
    if head[:2] not in _BARE_STARTS:
        raise DicomReadError(_NOT_DICOM, source)
    try:
        ds = pydicom.dcmread(src, force=True, stop_before_pixels=stop_before_pixels)
    except Exception as exc:
        raise DicomReadError("not a DICOM file", source) from exc
    if not _has_markers(ds):
        raise DicomReadError(_NOT_DICOM, source)
    return _as_read_from(ds, path, st.st_mtime), data


def _stat(path: Path) -> os.stat_result | None:
    """``os.stat`` of ``path``, or None where :meth:`Path.exists` says False (no such
    file, a path through a non-folder, a link loop, an invalid name); other errors
    (no permission on a folder on the way) are raised, as ``exists`` raises them."""
    try:
        return path.stat()
    except OSError as exc:
        if exc.errno in (errno.ENOENT, errno.ENOTDIR, errno.EBADF, errno.ELOOP):
            return None
        raise
    except ValueError:  # an embedded NUL
        return None


def _as_read_from(ds: Dataset, path: Path, mtime: float) -> Dataset:
    """A data set parsed from memory made to look read from ``path``, as pydicom's own
    read of the path gives it (file name, modification time ``mtime`` from the stat
    before the read, no buffer kept)."""
    if getattr(ds, "buffer", None) is not None:
        ds.filename = str(path)
        ds.buffer = None
        ds.fileobj_type = open
        ds.timestamp = mtime
    return ds
