"""Batch output: the row schema, the append-only CSV journal, Parquet and per-case JSON.

The CSV journal is the durable record of a batch. Each row is one line, appended with
a single ``write(2)`` on a file opened with ``O_APPEND``, then ``fsync``-ed, so a batch
killed at any moment keeps every row it has written. A line torn by a kill in the
middle of a write (no final newline, or NUL bytes left by a crash) is detected and cut
off when the journal is opened again.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tbscore.batch.naming import safe_path
from tbscore.core.constants import LABELS
from tbscore.core.result import CSV_COLUMNS, UNCERTAINTY_COLUMNS, dumps_indented
from tbscore.errors import BatchError
from tbscore.io.atomic import atomic_file  # re-exported: batch writes use it
from tbscore.io.tabular import csv_safe

__all__ = [
    "BatchError",
    "BATCH_COLUMNS",
    "COLUMNS",
    "FLOAT_COLUMNS",
    "INT_COLUMNS",
    "STATUSES",
    "CsvJournal",
    "ensure_unlocked",
    "newest_rows",
    "normalize_row",
    "parse_row",
    "rows_to_frame",
    "write_parquet",
    "read_parquet_rows",
    "write_case_json",
    "CASE_FORMAT",
]

#: Row statuses, see docs/batch.md.
STATUSES: tuple[str, ...] = ("ok", "incomplete", "error", "excluded", "duplicate")

#: Columns that lead every batch row.
BATCH_COLUMNS: tuple[str, ...] = (
    "input",
    "status",
    "error_code",
    "error",
    "duplicate_of",
    "elapsed_s",
)
#: Columns that close every batch row.
TRAILING_COLUMNS: tuple[str, ...] = (
    "warnings",
    "batch_options",
    "file_size",
    "file_mtime_ns",
    "sr_file",
    "result_key",
    "calibration_rule",
    "manufacturer",
    "model",
    "software_versions",
    "study_date",
    "age_years",
    "sex",
    "bmi",
    "patient_key",
)

#: All columns of a batch row, in order: :data:`BATCH_COLUMNS`, then
#: :data:`tbscore.core.result.CSV_COLUMNS` (without its ``status`` and ``error``), then
#: :data:`TRAILING_COLUMNS`.
COLUMNS: tuple[str, ...] = (
    BATCH_COLUMNS
    + tuple(c for c in CSV_COLUMNS if c not in BATCH_COLUMNS)
    + tuple(c for c in TRAILING_COLUMNS if c not in CSV_COLUMNS)
)

_LABELS = tuple(lab.lower() for lab in LABELS)
FLOAT_COLUMNS: frozenset[str] = frozenset(
    {
        "elapsed_s",
        "age_years",
        "bmi",
        "l1_l4",
        "l1_l4_calibrated",
        "row_mm",
        "col_mm",
        "lag_min_mm",
        "lag_max_mm",
        "roi_confidence",
    }
    | set(_LABELS)
    | {f"{lab}_r2" for lab in _LABELS}
    | {f"{lab}_calibrated" for lab in _LABELS}
    | (set(UNCERTAINTY_COLUMNS) - {"estimator"})
)
INT_COLUMNS: frozenset[str] = frozenset(
    {"l1_l4_n", "file_size", "file_mtime_ns"} | {f"{lab}_pixels" for lab in _LABELS}
)

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    v = float(value)
    return v if math.isfinite(v) else None


def _int(value: Any) -> int | None:
    if value is None or value == "":
        return None
    if isinstance(value, str):
        return int(float(value)) if "." in value or "e" in value.lower() else int(value)
    return int(value)


def _text(value: Any) -> str:
    if value is None:
        return ""
    text = value if type(value) is str else str(value)
    if not text.isprintable():  # printable text has no control character to replace
        text = _CONTROL.sub(" ", text)
    return csv_safe(text)


def normalize_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with every column of :data:`COLUMNS`, typed as in the journal.

    Floats are ``float`` or ``None``, integers ``int`` or ``None``, everything else a
    ``str`` (``""`` when missing) with control characters replaced by spaces so that a
    row is always one CSV line, and a leading ``'`` added to text a spreadsheet would
    run as a formula (:func:`tbscore.io.tabular.csv_safe`; every output of a batch
    holds the same, neutralised text). ``parse_row(csv line of normalize_row(r)) ==
    normalize_row(r)``.
    """
    get = row.get
    return {col: convert(get(col)) for col, convert in _CONVERTERS}


#: (column, its converter) in :data:`COLUMNS` order: the type rule of normalize_row.
_CONVERTERS = tuple(
    (col, _float if col in FLOAT_COLUMNS else _int if col in INT_COLUMNS else _text)
    for col in COLUMNS
)


def parse_row(raw: Mapping[str, str]) -> dict[str, Any]:
    """Typed row from the strings of a CSV line (see :func:`normalize_row`)."""
    return normalize_row(raw)


def _csv_line(values: Iterable[Any]) -> bytes:
    """One CSV line of typed values (``None`` empty, floats by ``repr``, as the ``csv``
    module writes them)."""
    return _LineWriter().line(values)


def _csv_line_reference(values: Iterable[Any]) -> bytes:
    """:func:`_csv_line` with the conversions spelled out (its former code), the
    reference of its property test."""
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerow(
        ["" if v is None else repr(v) if isinstance(v, float) else v for v in values]
    )
    return buf.getvalue().encode("utf-8")


class _LineWriter:
    """A reusable ``csv`` writer of single lines (one buffer, emptied per line)."""

    def __init__(self) -> None:
        self._buf = io.StringIO()
        self._writer = csv.writer(self._buf, lineterminator="\n")

    def line(self, values: Iterable[Any]) -> bytes:
        """The CSV line of ``values`` as UTF-8 bytes (``csv`` writes ``None`` as an
        empty cell and a float by its ``repr``)."""
        buf = self._buf
        buf.seek(0)
        buf.truncate()
        self._writer.writerow(values)
        return buf.getvalue().encode("utf-8")


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover
        pass
    finally:
        os.close(fd)


def _lock(fd: int, name: str) -> None:
    """Take an exclusive lock on the journal: one batch writes an output at a time."""
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows: no lock
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as exc:
        if exc.errno not in (errno.EAGAIN, errno.EWOULDBLOCK, errno.EACCES):
            return  # no locking on this file system (some network mounts)
        raise BatchError(
            "another tbscore batch is writing this output (the file is locked)", name
        ) from exc


def ensure_unlocked(path: str | Path) -> None:
    """Raise :class:`BatchError` if a running batch holds the lock on ``path``."""
    path = Path(path)
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        _lock(fd, str(path))
    finally:
        os.close(fd)


class CsvJournal:
    """Append-only CSV file of batch rows, one ``write`` + ``fsync`` per row.

    Parameters
    ----------
    path : str or Path
        The CSV file; created with a header if missing or empty.
    fsync : bool
        ``fsync`` after every row (default). Without it a killed *process* still
        loses nothing (the data is in the operating system's cache); a power cut may.

    Attributes
    ----------
    rows : list of dict
        The rows already in the file when it was opened (typed, see
        :func:`normalize_row`).
    repaired : str or None
        What was cut off a torn end, if anything.

    Raises
    ------
    BatchError
        The file is not a tbscore batch output (other columns), is corrupt before its
        last line, or is locked by another batch (POSIX ``flock``).
    """

    def __init__(self, path: str | Path, *, fsync: bool = True) -> None:
        self.path = Path(path)
        self.fsync = fsync
        self.repaired: str | None = None
        self.rows: list[dict[str, Any]] = []
        self._lines = _LineWriter()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        existed = self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        self._fd: int | None = fd
        try:
            _lock(fd, str(self.path))
            self._open(fd, existed)
        except BaseException:
            self.close()
            raise

    def _open(self, fd: int, existed: bool) -> None:
        header = _csv_line(COLUMNS)
        chunks = []
        os.lseek(fd, 0, os.SEEK_SET)
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        data = b"".join(chunks)
        if data.rstrip(b"\0") == b"" or (len(data) < len(header) and header.startswith(data)):
            if data:
                self.repaired = "an incomplete header"
            os.ftruncate(fd, 0)
            os.write(fd, header)
            os.fsync(fd)
            if not existed:
                _fsync_dir(self.path.parent)
            return
        self.rows, keep = self._parse(data, header)
        if keep < len(data):
            self.repaired = f"a torn last line ({len(data) - keep} bytes)"
            os.ftruncate(fd, keep)
            os.fsync(fd)

    def _parse(self, data: bytes, header: bytes) -> tuple[list[dict[str, Any]], int]:
        """Rows of ``data`` and the length of its intact part."""
        name = str(self.path)
        first = data.find(b"\n")
        if first < 0 or data[: first + 1] != header:
            got = data[: first if first >= 0 else 200].decode("utf-8", "replace")[:200]
            raise BatchError(
                "not a tbscore batch output of this version (its columns differ: "
                f"{got!r}...); choose another output file or use --force-new",
                name,
            )
        rows = []
        pos = first + 1
        while pos < len(data):
            end = data.find(b"\n", pos)
            line = data[pos : end + 1] if end >= 0 else data[pos:]
            last = end < 0 or not data[end + 1 :].strip(b"\0")
            values = None
            if end >= 0 and b"\0" not in line:
                try:
                    parsed = list(csv.reader([line.decode("utf-8")]))
                    if len(parsed) == 1 and len(parsed[0]) == len(COLUMNS):
                        values = parsed[0]
                except (UnicodeDecodeError, csv.Error):
                    values = None
            if values is None:
                if last:
                    return rows, pos
                lineno = data.count(b"\n", 0, pos) + 1
                raise BatchError(
                    f"corrupt row at line {lineno} (not {len(COLUMNS)} CSV fields); repair or "
                    "move the file, or use --force-new",
                    name,
                )
            try:
                rows.append(parse_row(dict(zip(COLUMNS, values, strict=True))))
            except ValueError as exc:
                if last:
                    return rows, pos
                lineno = data.count(b"\n", 0, pos) + 1
                raise BatchError(f"corrupt value at line {lineno} ({exc})", name) from exc
            pos = end + 1
        return rows, pos

    def append(self, row: Mapping[str, Any], *, normalized: bool = False) -> None:
        """Append one row (normalised) as one line, then flush it to disk.

        ``normalized=True``: ``row`` is :func:`normalize_row`'s output already (the
        runner's rows), not normalised again (the rule is idempotent on its output).
        """
        if self._fd is None:
            raise BatchError("journal is closed", str(self.path))
        norm = row if normalized else normalize_row(row)
        line = self._lines.line([norm[c] for c in COLUMNS])
        view = memoryview(line)
        while view:
            n = os.write(self._fd, view)
            view = view[n:]
        if self.fsync:
            os.fsync(self._fd)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> CsvJournal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def newest_rows(
    rows: Sequence[Mapping[str, Any]], keep: Iterable[int] = ()
) -> list[Mapping[str, Any]]:
    """The rows of a journal without those superseded by a later row of the same input.

    A file whose content changed between two runs is scored again and its new row
    appended; the old row stays in the append-only CSV journal (recognisable by its
    other ``file_sha256`` and its earlier position). The Parquet output and
    :func:`tbscore.batch.batch` keep only the newest row per ``input`` path.

    Parameters
    ----------
    rows : sequence of mapping
        Journal rows, oldest first.
    keep : iterable of int
        Positions in ``rows`` kept even when superseded: rows still claimed by a
        current input (a file moved away whose old path was reused).

    Returns
    -------
    list
        The kept rows, in journal order.
    """
    last = {row["input"]: i for i, row in enumerate(rows)}
    kept = set(keep)
    return [row for i, row in enumerate(rows) if last[row["input"]] == i or i in kept]


def _pandas():
    try:
        import pandas as pd
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise BatchError(
            "this needs pandas (and pyarrow for Parquet): pip install pandas pyarrow"
        ) from exc
    return pd


def rows_to_frame(rows: Iterable[Mapping[str, Any]]):
    """A pandas DataFrame of batch rows with the column types of the journal.

    Float columns are ``float64`` (NaN when missing), integer columns nullable
    ``Int64``, the others ``object`` strings.
    """
    return typed_frame([normalize_row(r) for r in rows], list(COLUMNS))


def typed_frame(records: list[dict[str, Any]], columns: list[str]):
    """A DataFrame of typed rows with the journal's column types (float64, Int64,
    object; columns not of the journal, e.g. a manifest's, are object)."""
    pd = _pandas()
    df = pd.DataFrame.from_records(records, columns=columns)
    for col in columns:
        if col in FLOAT_COLUMNS:
            df[col] = df[col].astype("float64")
        elif col in INT_COLUMNS:
            df[col] = df[col].astype("Int64")
        else:
            df[col] = df[col].astype(object)
    return df


def write_parquet(rows: Iterable[Mapping[str, Any]], path: str | Path) -> Path:
    """Write rows to a Parquet file atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    df = rows_to_frame(rows)
    try:
        with atomic_file(path) as tmp:
            df.to_parquet(tmp, index=False)
    except ImportError as exc:
        raise BatchError("Parquet output needs pyarrow: pip install pyarrow", str(path)) from exc
    _fsync_dir(path.parent)
    return path


def read_parquet_rows(path: str | Path) -> list[dict[str, Any]]:
    """Rows of a Parquet file written by :func:`write_parquet` (typed)."""
    pd = _pandas()
    df = pd.read_parquet(path)
    missing = [c for c in COLUMNS if c not in df.columns]
    if missing:
        raise BatchError(
            f"not a tbscore batch output of this version (missing columns {missing[:5]})",
            str(path),
        )
    df = df[list(COLUMNS)].astype(object).where(df[list(COLUMNS)].notna(), None)
    return [normalize_row(r) for r in df.to_dict(orient="records")]


#: Format tag of the per-case JSON documents.
CASE_FORMAT = "tbscore-batch-case/1"


def write_case_json(
    folder: str | Path,
    row: Mapping[str, Any],
    result: Mapping[str, Any] | None,
    *,
    normalized: bool = False,
) -> Path:
    """Write the per-case JSON of one input atomically and return its path.

    The file is named ``<SOPInstanceUID>.json`` (passed through
    :func:`~tbscore.batch.naming.safe_filename`), or ``<file sha256>.json`` when the
    input has no SOP Instance UID, or ``<sha256 of the input path>.json`` when the file
    could not be read. If that name is taken by another input (two files with one UID),
    ``--<12 hex digits of the sha256 of the input path>`` is appended. The document
    holds the batch row and, for scored inputs, ``TBSResult.to_dict(include_phi=False)``
    (no patient name, ID or birth date). ``normalized=True``: ``row`` is
    :func:`normalize_row`'s output already (the runner's rows), not normalised again.
    """
    import hashlib

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path_hash = hashlib.sha256(str(row.get("input", "")).encode()).hexdigest()
    stem = row.get("sop_instance_uid") or row.get("file_sha256") or path_hash
    target = safe_path(folder, stem, ".json")
    if target.exists():
        try:
            owner = json.loads(target.read_text(encoding="utf-8")).get("batch", {}).get("input")
        except (OSError, ValueError, AttributeError):
            owner = None
        if owner != row.get("input"):
            target = safe_path(folder, f"{stem}--{path_hash[:12]}", ".json")
    doc = {"format": CASE_FORMAT, "batch": row if normalized else normalize_row(row)}
    doc["result"] = result
    text = dumps_indented(doc, 1, allow_nan=False, default=str) + "\n"  # json.dumps' text
    with atomic_file(target) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return target
