"""CSV cells that a spreadsheet cannot run: the one rule for every CSV tbscore writes.

A text cell that starts with ``=``, ``+``, ``-``, ``@``, a tab or a carriage return is
read as a formula by Excel, LibreOffice and Google Sheets (CSV or "formula"
injection: a DICOM value such as ``=cmd|' /C calc'!A0`` would run a command when the
CSV is opened). Following the OWASP rule, such a cell is prefixed with a single quote
``'``, which spreadsheets show as text and never evaluate. Numbers (``int``,
``float``, and text that is exactly a decimal number such as ``-0.5`` or ``1e-3``)
stay numbers. Leading spaces do not hide a formula character: ``" =1+1"`` is
neutralised too.

Used by ``tbscore batch`` (CSV journal), ``tbscore calc --csv``, the ``manifest.csv``
of ``tbscore export`` and ``tbscore calibrate --pairs-out``.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import IO, Any

__all__ = ["FORMULA_TRIGGERS", "csv_safe", "csv_safe_row", "write_csv"]

#: First characters that make a spreadsheet read a cell as a formula (OWASP).
FORMULA_TRIGGERS: tuple[str, ...] = ("=", "+", "-", "@", "\t", "\r")

_NUMBER = re.compile(r"[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?")


def csv_safe(value: Any) -> Any:
    """``value`` unchanged unless it is text a spreadsheet would run as a formula.

    Parameters
    ----------
    value : any
        A cell value. Non-text values (numbers, ``None``) are returned unchanged.

    Returns
    -------
    any
        ``"'" + value`` when ``value`` is a ``str`` whose first character, or first
        character after leading spaces/newlines, is one of :data:`FORMULA_TRIGGERS`
        and which is not a plain decimal number; else ``value``. Idempotent: a
        neutralised cell starts with ``'`` and is not changed again.

    Examples
    --------
    >>> csv_safe("=cmd|' /C calc'!A0")
    "'=cmd|' /C calc'!A0"
    >>> csv_safe("-0.745"), csv_safe(-0.745), csv_safe("L1-L4")
    ('-0.745', -0.745, 'L1-L4')
    """
    if not isinstance(value, str) or not value:
        return value
    if value[0] in FORMULA_TRIGGERS or value.lstrip(" \n")[:1] in FORMULA_TRIGGERS:
        if _NUMBER.fullmatch(value.strip(" ")):
            return value
        return "'" + value
    return value


def csv_safe_row(row: Mapping[str, Any]) -> dict[str, Any]:
    """A row with ``None`` as ``""`` and every cell passed through :func:`csv_safe`."""
    return {k: "" if v is None else csv_safe(v) for k, v in row.items()}


def write_csv(
    stream: IO[str],
    fieldnames: Sequence[str],
    rows: Iterable[Mapping[str, Any]],
    *,
    lineterminator: str = "\r\n",
    extrasaction: str = "raise",
) -> None:
    """Write a header and ``rows`` to ``stream`` as CSV, every cell :func:`csv_safe`.

    Parameters
    ----------
    stream : text file
        Opened with ``newline=""`` (or a ``StringIO``).
    fieldnames : sequence of str
        Columns, in order (the header).
    rows : iterable of mapping
        Column -> value; ``None`` is written as an empty cell.
    lineterminator : str
        Line end (``csv`` default ``"\\r\\n"``).
    extrasaction : {"raise", "ignore"}
        What to do with keys not in ``fieldnames`` (as ``csv.DictWriter``).
    """
    writer = csv.DictWriter(
        stream,
        fieldnames=list(fieldnames),
        lineterminator=lineterminator,
        extrasaction=extrasaction,
    )
    writer.writeheader()
    for row in rows:
        writer.writerow(csv_safe_row(row))
