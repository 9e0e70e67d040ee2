"""Output paths and how input paths are shown.

Two rules, each in one place:

* :func:`prepare_output` / :func:`prepare_output_dir`: every output path is checked
  **before** anything is computed (not a folder, writable, right suffix) and missing
  parent folders are created (like ``mkdir -p``). Every CLI command calls them.
* :func:`format_path`: how an input or ROI path appears in results, reports, CSV rows
  and figure titles: ``absolute``, ``relative`` (to the current folder, the CLI
  default) or ``basename`` (what ``--no-phi`` implies: a folder named after the
  patient never reaches an output).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from tbscore.errors import OutputError, SettingsError

if TYPE_CHECKING:
    from tbscore.core.result import TBSResult

__all__ = [
    "PATH_FORMATS",
    "format_path",
    "format_source",
    "result_with_path_format",
    "prepare_output",
    "prepare_output_dir",
]

#: Choices of ``--format-path``.
PATH_FORMATS: tuple[str, ...] = ("absolute", "relative", "basename")

#: Prefixes of ROI sources that are followed by a path (``file:``, ``label-image:``).
_SOURCE_PREFIXES: tuple[str, ...] = ("file:", "label-image:")


def format_path(path: str | os.PathLike | None, how: str | None = "relative") -> str | None:
    """An input path as it is shown in outputs.

    Parameters
    ----------
    path : str or PathLike or None
        A file path; ``None`` and pseudo names such as ``"<dataset>"`` are returned
        unchanged.
    how : {"absolute", "relative", "basename"} or None
        ``relative`` is relative to the current folder (``os.path.relpath``);
        ``None`` keeps the path as given.
    """
    if path is None or how is None:
        return None if path is None else str(path)
    text = str(path)
    if not text or text.startswith("<"):
        return text
    if how not in PATH_FORMATS:
        raise SettingsError(f"path format must be one of {PATH_FORMATS}, got {how!r}")
    if how == "basename":
        return Path(text).name
    absolute = os.path.abspath(text)
    if how == "absolute":
        return absolute
    try:
        return os.path.relpath(absolute)
    except ValueError:  # another drive (Windows)
        return absolute


def format_source(source: str | None, how: str | None = "relative") -> str | None:
    """:func:`format_path` for an ROI source (``file:PATH``, ``label-image:PATH``);
    other sources (``detected``, ``dict``...) are returned unchanged."""
    if source is None or how is None:
        return source
    for prefix in _SOURCE_PREFIXES:
        if source.startswith(prefix):
            return prefix + str(format_path(source[len(prefix) :], how))
    return source


def result_with_path_format(result: TBSResult, how: str | None) -> TBSResult:
    """A copy of a :class:`tbscore.core.result.TBSResult` whose ``input["source"]``
    and ``roi_source`` follow ``how`` (``None``: unchanged)."""
    if how is None:
        return result
    inp = dict(result.input or {})
    inp["source"] = format_path(inp.get("source"), how)
    roi_source = format_source(result.roi_source, how) or result.roi_source
    return dataclasses.replace(result, input=inp, roi_source=roi_source)


def _probe(folder: Path, shown: str) -> None:
    """Refuse a folder in which no file can be created (read-only, /proc, ...)."""
    try:
        fd, name = tempfile.mkstemp(dir=folder, prefix=".tbscore-probe-")
    except OSError as exc:
        raise OutputError(f"cannot write into {folder} ({exc.strerror or exc})", shown) from exc
    os.close(fd)
    os.unlink(name)


def _make_dirs(folder: Path, shown: str) -> None:
    if folder.exists():
        if not folder.is_dir():
            raise OutputError(f"{folder} is not a folder", shown)
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(
            f"cannot create the folder {folder} ({exc.strerror or exc})", shown
        ) from exc


def prepare_output(
    path: str | os.PathLike, *, suffixes: Iterable[str] | None = None, what: str = "output"
) -> Path:
    """Check an output file path before any computation; create missing parent folders.

    Parameters
    ----------
    path : str or PathLike
        The file to be written (an existing file is replaced later).
    suffixes : iterable of str, optional
        Accepted suffixes, lower case with the dot (``{".png", ".svg"}``).
    what : str
        What the file is, for the message.

    Returns
    -------
    Path

    Raises
    ------
    tbscore.errors.OutputError
        Empty name, a folder, a bad suffix, a parent that is a file, or a place where
        nothing can be written.
    """
    shown = str(path)
    if not shown.strip():
        raise OutputError(f"empty {what} file name")
    p = Path(path)
    if suffixes is not None:
        allowed = sorted({s.lower() for s in suffixes})
        if p.suffix.lower() not in allowed:
            raise OutputError(f"{what} must end in {', '.join(allowed)}", shown)
    if p.is_dir():
        raise OutputError(f"{what} is a folder, expected a file name", shown)
    if p.exists() and not os.access(p, os.W_OK):
        raise OutputError(f"{what} exists and is not writable", shown)
    parent = p.parent if str(p.parent) else Path(".")
    _make_dirs(parent, shown)
    _probe(parent, shown)
    return p


def prepare_output_dir(
    path: str | os.PathLike, *, what: str = "output folder", create: bool = True
) -> Path:
    """Check an output folder before any computation and create it (with parents).

    With ``create=False`` (for commands that create the folder themselves, later, and
    may still refuse to start) nothing is created: an existing folder must be writable,
    else the nearest existing parent must be.

    Raises
    ------
    tbscore.errors.OutputError
        A file of that name, or a folder that cannot be created or written.
    """
    shown = str(path)
    if not shown.strip():
        raise OutputError(f"empty {what} name")
    p = Path(path)
    if create:
        _make_dirs(p, shown)
        _probe(p, shown)
        return p
    if p.exists() and not p.is_dir():
        raise OutputError(f"{what} is a file, expected a folder", shown)
    probe = p.absolute()
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise OutputError(f"{probe} is not a folder", shown)
    _probe(probe, shown)
    return p
