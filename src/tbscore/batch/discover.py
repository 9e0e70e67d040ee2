"""Finding the inputs of a batch, and telling DICOM files by their content.

Folders are walked recursively in sorted order, so the input order (which decides
which of two identical images is the original, see docs/batch.md) does not depend on
the file system. DICOM files are recognised by content, never by extension.
"""

from __future__ import annotations

import fnmatch
import hashlib
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tbscore.batch.output import BatchError
from tbscore.io.sidecar import ROI_SUFFIXES, is_roi_sidecar, roi_stem
from tbscore.io.sniff import head_is_dicom, is_dicom, read_head  # the one DICOM rule

__all__ = [
    "Input",
    "discover",
    "is_dicom",
    "head_is_dicom",
    "read_head",
    "file_sha256",
    "header_truncation",
    "ROI_SUFFIXES",
    "roi_stem",
]

_CHUNK = 1 << 16


@dataclass(frozen=True)
class Input:
    """One input file of a batch.

    Attributes
    ----------
    index : int
        Position in the input order.
    path : str
        Absolute path (``os.path.abspath``: symbolic links are kept); the ``input``
        column.
    explicit : bool
        Named directly (``True``) or found while walking a folder (``False``).
        A non-DICOM file named directly is an ``error``; one found in a folder is
        ``excluded``.
    rel_parent : str
        Folder of the file relative to the walked folder it was found in (``""`` at
        its top level or for explicit files); used by the ``--roi-dir`` lookup.
    size, mtime_ns : int or None
        From ``stat`` during discovery (the cheap resume pre-check).
    roi : str or None
        The ROI file named for this input (a manifest's ``roi`` column); ``None``: the
        usual lookup (:func:`tbscore.batch.worker.find_roi`), else detection.
    """

    index: int
    path: str
    explicit: bool = True
    rel_parent: str = ""
    size: int | None = None
    mtime_ns: int | None = None
    roi: str | None = None


def _is_hidden(name: str) -> bool:
    return name.startswith(".")


def _is_sidecar(name: str) -> bool:
    return is_roi_sidecar(name)


def _matches(patterns: Sequence[str], name: str, rel: str) -> bool:
    return any(fnmatch.fnmatch(name, p) or fnmatch.fnmatch(rel, p) for p in patterns)


def _stat(path: str) -> tuple[int | None, int | None]:
    try:
        st = os.stat(path)
    except OSError:
        return None, None
    return st.st_size, st.st_mtime_ns


def discover(
    paths: Iterable[str | os.PathLike[str]],
    *,
    ignore: Sequence[str] = (),
    skip: Iterable[str | os.PathLike[str]] = (),
) -> list[Input]:
    """List the input files of a batch.

    Parameters
    ----------
    paths : iterable of path
        Files and folders. Folders are walked recursively (symbolic links to folders
        are not followed), in sorted order.
    ignore : sequence of str
        Glob patterns (``fnmatch``) matched against the file name and against the path
        relative to the walked folder; matching files found in folders are skipped.
    skip : iterable of path
        Files or folders never listed when found in a folder (the batch's own output,
        journal and per-case folder).

    Returns
    -------
    list of Input
        In order: arguments in the order given, each folder's files sorted. Inside
        folders, hidden files and folders (name starting with ``.``), ROI side-car
        files (:data:`ROI_SUFFIXES`) and ``ignore`` matches are left out. A file
        reached twice (also through a symbolic link) is listed once.

    Raises
    ------
    BatchError
        A path that does not exist.
    """
    skip_real = {os.path.realpath(p) for p in skip}
    seen: set[str] = set()
    found: list[tuple[str, bool, str]] = []

    def add(path: str, explicit: bool, rel_parent: str, real: str | None = None) -> None:
        real = os.path.realpath(path) if real is None else real
        if real in seen:
            return
        seen.add(real)
        found.append((path, explicit, rel_parent))

    for raw in paths:
        path = os.path.abspath(os.fspath(raw))
        if not os.path.lexists(path):
            raise BatchError("no such file or folder", os.fspath(raw))
        if not os.path.isdir(path):
            add(path, True, "")
            continue
        for dirpath, dirnames, filenames in os.walk(path):
            real_dir = os.path.realpath(dirpath)  # once per folder, not per file
            dirnames[:] = sorted(
                d
                for d in dirnames
                if not _is_hidden(d) and os.path.realpath(os.path.join(dirpath, d)) not in skip_real
            )
            rel_dir = os.path.relpath(dirpath, path)
            rel_dir = "" if rel_dir == "." else rel_dir
            for name in sorted(filenames):
                full = os.path.join(dirpath, name)
                rel = os.path.join(rel_dir, name) if rel_dir else name
                if _is_hidden(name) or _is_sidecar(name) or _matches(ignore, name, rel):
                    continue
                # the real path, once (the skip test and the seen set): that of the
                # folder and the name, unless the entry is itself a symbolic link
                real = (
                    os.path.realpath(full) if os.path.islink(full) else os.path.join(real_dir, name)
                )
                if real in skip_real:
                    continue
                add(full, False, rel_dir, real)
    return [Input(i, p, explicit, rel, *_stat(p)) for i, (p, explicit, rel) in enumerate(found)]


def file_sha256(path: str | Path) -> str | None:
    """SHA-256 of a file's bytes, or ``None`` when it cannot be read.

    Read with ``os.read`` in 64 KiB chunks (no buffered file object: half the cost on
    the small ROI files a batch hashes once per input)."""
    h = hashlib.sha256()
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return None
    try:
        while chunk := os.read(fd, _CHUNK):
            h.update(chunk)
    except OSError:
        return None
    finally:
        os.close(fd)
    return h.hexdigest()


def header_truncation(path: str | Path) -> str | None:
    """Why a DICOM file without pixel data looks cut, or ``None`` if it does not.

    pydicom stops silently at the end of a file, so a scan cut inside its header reads
    as an object without pixel data (like an SR). It is taken as cut when (1) it has
    no data set after the file meta information, (2) its last element declares more
    bytes than the file holds, (3) 1-7 bytes are left after the last element (a cut
    element header), (4) it has ``Rows`` and ``Columns`` (an image) but no pixel
    data, or (5) its SOP Class is an image storage class (``... Image Storage``) and
    it has no pixel data.
    """
    import pydicom

    try:
        size = os.path.getsize(path)
        ds = pydicom.dcmread(path, force=True)
    except Exception as exc:
        return f"unreadable DICOM header ({type(exc).__name__}: {exc})"
    if len(ds) == 0:
        return f"no data set after the file meta information ({size} bytes): the file is cut"
    last = dict.__getitem__(ds._dict, max(ds._dict))  # raw (unparsed) element, file order
    tell, length = getattr(last, "value_tell", None), getattr(last, "length", None)
    if tell is not None and length is not None and length != 0xFFFFFFFF:
        end = tell + length
        if end > size:
            return (
                f"the file ends inside element {last.tag} ({size - tell} of {length} value "
                "bytes): the file is cut"
            )
        if 0 < size - end < 8:
            return f"the file ends inside an element header ({size - end} bytes): the file is cut"
    if "Rows" in ds and "Columns" in ds:
        return "image attributes (Rows, Columns) but no pixel data: the file is cut"
    meta = getattr(ds, "file_meta", None)
    sop = ds.get("SOPClassUID") or (meta.get("MediaStorageSOPClassUID") if meta else None)
    name = str(getattr(sop, "name", "") or "")
    if name.endswith("Image Storage"):
        return f"an image ({name}) without pixel data: the file is cut"
    return None
