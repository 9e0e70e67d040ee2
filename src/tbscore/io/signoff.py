"""Files of signed reports: the sign-off record beside the result, write-once outputs.

The record of :mod:`tbscore.clinical.signoff` (``SignOff.to_dict()``; this layer
handles it as a plain dict, the clinical layer above parses and verifies it) is kept as
JSON next to the result it interprets (``case.json`` → ``case.signoff.json``),
replaced atomically. Signed report
files (HTML, PDF, SR, Encapsulated PDF) are written once: an existing file is never
overwritten, and the written file is made read-only (mode 0444).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from tbscore.errors import SignOffError

__all__ = ["record_path", "read_record", "write_record", "check_new", "write_once"]


def record_path(result_path: str | Path) -> Path:
    """Default sign-off record of a result file: ``<stem>.signoff.json`` beside it."""
    p = Path(result_path)
    return p.with_name(p.stem + ".signoff.json")


def read_record(path: str | Path) -> dict[str, Any] | None:
    """The JSON record at ``path``, or None when there is none.

    Raises
    ------
    SignOffError
        Unreadable or not a JSON object (naming the file).
    """
    p = Path(path)
    if not p.exists():
        return None
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise SignOffError(f"unreadable sign-off record ({exc})", str(p)) from exc
    if not isinstance(data, dict):
        raise SignOffError("sign-off record is not a JSON object", str(p))
    return data


def write_record(path: str | Path, record: dict[str, Any]) -> Path:
    """Write the record atomically (temporary file, fsync, rename)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(record, indent=2, ensure_ascii=False) + "\n"
    fd, tmp = tempfile.mkstemp(prefix=f".{p.name}.", dir=p.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def check_new(*paths: str | Path | None) -> None:
    """Refuse output paths that exist (signed documents are never overwritten).

    Raises
    ------
    SignOffError
        A path exists, or two outputs are the same file.
    """
    seen: set[Path] = set()
    for path in paths:
        if path is None:
            continue
        p = Path(path).resolve()
        if p in seen:
            raise SignOffError("the same file is named for two outputs", str(path))
        seen.add(p)
        if p.exists():
            raise SignOffError(
                "exists; a signed report is never overwritten (write the addendum to a new file)",
                str(path),
            )


def write_once(path: str | Path, data: bytes) -> Path:
    """Create ``path`` with ``data`` (fails if it exists), then make it read-only.

    Raises
    ------
    SignOffError
        The file exists.
    """
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        raise SignOffError("exists; a signed report is never overwritten", str(p)) from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.chmod(p, 0o444)
    return p
