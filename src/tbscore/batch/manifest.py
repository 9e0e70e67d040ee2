"""Cohort manifests: a CSV that lists the images (and ROIs) of a batch.

A manifest is a CSV file with a header. Column ``image`` (required) is the DICOM file,
``roi`` (optional) its ROI file; both relative to the manifest's folder unless
absolute. Every other column (subject, visit, site, ...) is copied verbatim into the
output row of that line (PyRadiomics-style pass-through). Rows that cannot be used
(empty ``image``, a file that does not exist) become ``error`` rows that name the
manifest line; duplicate ``(subject, visit)`` keys are warned about.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tbscore.batch.output import COLUMNS, BatchError

__all__ = ["Manifest", "ManifestRow", "read_manifest", "MANIFEST_LINE_COLUMN", "output_name"]

#: Output column holding the manifest line (1 = the header line) of each row.
MANIFEST_LINE_COLUMN = "manifest_line"
#: Manifest columns that tbscore reads itself (not copied through).
_OWN = ("image", "roi")
#: Columns that identify a subject and a visit (duplicate keys are warned about).
SUBJECT_COLUMN, VISIT_COLUMN = "subject", "visit"


@dataclass(frozen=True)
class ManifestRow:
    """One data line of a manifest.

    Attributes
    ----------
    line : int
        Line number in the file (the header is line 1).
    image, roi : str or None
        Absolute paths (``roi`` ``None``: the usual ROI lookup, else detection).
    extra : dict of str
        The pass-through columns, keyed by their *output* column names.
    error : str or None
        Why this line cannot be scored (then ``image`` may be ``None``).
    """

    line: int
    image: str | None
    roi: str | None = None
    extra: dict[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass(frozen=True)
class Manifest:
    """A parsed manifest (:func:`read_manifest`)."""

    path: Path
    columns: tuple[str, ...]
    rows: tuple[ManifestRow, ...]
    warnings: tuple[str, ...] = ()

    @property
    def usable(self) -> tuple[ManifestRow, ...]:
        """Rows without an error."""
        return tuple(r for r in self.rows if r.error is None)


def output_name(column: str) -> str:
    """Output column of a pass-through manifest column: the same name, or
    ``manifest_<name>`` when the name is one of tbscore's own batch columns."""
    return f"manifest_{column}" if column in COLUMNS or column == MANIFEST_LINE_COLUMN else column


def _resolve(base: Path, value: str) -> str:
    p = Path(os.path.expanduser(value))
    return os.path.abspath(p if p.is_absolute() else base / p)


def read_manifest(path: str | os.PathLike[str]) -> Manifest:
    """Read a manifest CSV.

    Parameters
    ----------
    path : path
        CSV (comma, semicolon or tab separated, UTF-8, optional BOM) with a header
        that has an ``image`` column.

    Returns
    -------
    Manifest

    Raises
    ------
    BatchError
        The file cannot be read, is not CSV, has no header or no ``image`` column, or
        has no data line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BatchError("manifest not found", str(path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BatchError(f"cannot read the manifest ({exc})", str(path)) from None
    if "\0" in text:
        raise BatchError("the manifest is not a text CSV file", str(path))
    lines = text.splitlines(keepends=True)
    if not lines or not lines[0].strip():
        raise BatchError(
            "the manifest is empty (a header with an 'image' column is needed)", str(path)
        )
    try:
        dialect = csv.Sniffer().sniff(lines[0], delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    reader = csv.reader(lines, dialect)
    header = [h.strip() for h in next(reader)]
    lowered = [h.lower() for h in header]
    if "image" not in lowered:
        raise BatchError(f"the manifest has no 'image' column (columns: {header})", str(path))
    dupes = [h for h, n in Counter(lowered).items() if n > 1 and h]
    if dupes:
        raise BatchError(f"the manifest repeats the column(s) {dupes}", str(path))
    i_image = lowered.index("image")
    i_roi = lowered.index("roi") if "roi" in lowered else None
    passthrough = [(i, h) for i, h in enumerate(header) if lowered[i] not in _OWN and h]
    out_cols = tuple(output_name(h) for _, h in passthrough)
    base = path.parent
    rows: list[ManifestRow] = []
    keys: dict[tuple[str, str], list[int]] = {}
    warnings: list[str] = []
    seen_images: dict[str, int] = {}
    for number, values in enumerate(reader, start=2):
        if not any(v.strip() for v in values):
            continue  # blank line
        if len(values) > len(header):
            rows.append(
                ManifestRow(
                    number,
                    None,
                    error=f"line {number}: {len(values)} fields, the header has {len(header)}",
                )
            )
            continue
        values = values + [""] * (len(header) - len(values))
        extra = {output_name(h): values[i] for i, h in passthrough}
        image = values[i_image].strip()
        roi = values[i_roi].strip() if i_roi is not None else ""
        err = None
        image_path = roi_path = None
        if not image:
            err = f"line {number}: empty 'image'"
        else:
            image_path = _resolve(base, image)
            if not os.path.isfile(image_path):
                err = f"line {number}: image file not found: {image}"
            if roi:
                roi_path = _resolve(base, roi)
                if err is None and not os.path.isfile(roi_path):
                    err = f"line {number}: ROI file not found: {roi}"
        if err is None and image_path is not None:
            real = os.path.realpath(image_path)
            if real in seen_images:
                warnings.append(
                    f"line {number}: same image as line {seen_images[real]} (scored once)"
                )
            else:
                seen_images[real] = number
        rows.append(ManifestRow(number, image_path, roi_path or None, extra, err))
        lower_extra = {k.lower(): v for k, v in zip(lowered, values, strict=True)}
        subj, visit = lower_extra.get(SUBJECT_COLUMN, ""), lower_extra.get(VISIT_COLUMN, "")
        if subj.strip() and SUBJECT_COLUMN in lowered:
            keys.setdefault((subj.strip(), visit.strip()), []).append(number)
    if not rows:
        raise BatchError("the manifest has no data line", str(path))
    for (subj, visit), numbers in keys.items():
        if len(numbers) > 1:
            what = f"subject {subj!r}" + (f", visit {visit!r}" if visit else "")
            warnings.append(f"lines {', '.join(map(str, numbers))}: duplicate {what}")
    return Manifest(path, out_cols, tuple(rows), tuple(warnings))
