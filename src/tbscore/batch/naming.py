"""Safe file names for files named after DICOM tags or other untrusted text.

DICOM attributes (SOPInstanceUID, PatientID, ...) are untrusted input: a crafted file
can carry ``../../etc/passwd``, an absolute path, NUL bytes or a Windows device name.
:func:`safe_filename` turns any such text into a single harmless path component, and
:func:`safe_path` joins it to a folder and checks that the result stays inside it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from tbscore.errors import UnsafePathError

__all__ = ["safe_filename", "safe_path", "UnsafePathError"]

#: Windows device names (also reserved with any extension, e.g. ``CON.json``).
_RESERVED = frozenset(
    {"CON", "PRN", "AUX", "NUL", "CONIN$", "CONOUT$"}
    | {f"COM{i}" for i in range(10)}
    | {f"LPT{i}" for i in range(10)}
)
_NOT_ALLOWED = re.compile(r"[^A-Za-z0-9._-]")
_DOTS = re.compile(r"\.{2,}")


def safe_filename(name: object, *, max_length: int = 120, default: str = "_") -> str:
    """Turn untrusted text into one safe file-name component.

    Every character outside ``A-Z a-z 0-9 . _ -`` (path separators, control characters
    and NUL, spaces, ``:*?"<>|``, non-ASCII) becomes ``_``; runs of two or more dots
    become ``_`` (so no ``..`` survives); leading and trailing dots are removed (no
    hidden files, no Windows trailing dots); Windows device names (``CON``, ``NUL``,
    ``COM1``... also with an extension) get a leading ``_``. A name longer than
    ``max_length`` is cut and ends with 12 hex digits of the SHA-256 of the original,
    so distinct long names stay distinct. The result is never empty, ``.`` or ``..``.

    Parameters
    ----------
    name : object
        The untrusted text (``str()`` is applied; bytes are decoded as UTF-8 with
        replacement).
    max_length : int
        Maximum length of the result (at least 16).
    default : str
        Returned when nothing usable is left (must itself be safe).

    Returns
    -------
    str
    """
    if max_length < 16:
        raise ValueError("max_length must be at least 16")
    text = name.decode("utf-8", "replace") if isinstance(name, bytes) else str(name)
    if not text.strip():
        return default
    cleaned = _NOT_ALLOWED.sub("_", text)
    cleaned = _DOTS.sub("_", cleaned).strip(".")
    if cleaned.split(".", 1)[0].upper() in _RESERVED:
        cleaned = "_" + cleaned
    if len(cleaned) > max_length:
        digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
        cleaned = cleaned[: max_length - 13].rstrip(".") + "-" + digest
    return cleaned or default


def safe_path(folder: str | Path, name: object, suffix: str = "") -> Path:
    """``folder / (safe_filename(name) + suffix)``, checked to lie inside ``folder``.

    The check is made on resolved paths, so a symbolic link planted in ``folder`` that
    points elsewhere is refused too.

    Raises
    ------
    UnsafePathError
        The resolved path is not directly inside the resolved ``folder``.
    """
    if suffix and (_NOT_ALLOWED.search(suffix) or ".." in suffix):
        raise ValueError(f"unsafe suffix {suffix!r}")
    base = Path(folder).resolve()
    candidate = (base / (safe_filename(name) + suffix)).resolve()
    if candidate.parent != base:
        raise UnsafePathError(
            f"file name derived from {str(name)[:80]!r} would leave the folder", str(base)
        )
    return candidate
