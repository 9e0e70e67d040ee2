"""Final batch tables with pass-through columns: CSV, Parquet or JSON Lines.

A manifest batch (:mod:`tbscore.batch.manifest`) keeps its durable record in the CSV
journal ``<output>.journal.csv`` (:class:`tbscore.batch.output.CsvJournal`, fixed
columns, resumable) and writes the output file itself atomically when the run ends:
the journal rows in manifest order with the manifest's own columns appended.
"""

from __future__ import annotations

import io
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from tbscore.batch.output import (
    COLUMNS,
    FLOAT_COLUMNS,
    INT_COLUMNS,
    BatchError,
    _csv_line,
    _fsync_dir,
    atomic_file,
    normalize_row,
    typed_frame,
)
from tbscore.io.tabular import csv_safe

__all__ = ["TABLE_SUFFIXES", "write_table", "read_table"]

#: Output suffixes a batch can write.
TABLE_SUFFIXES: tuple[str, ...] = (".csv", ".parquet", ".jsonl")


def _typed(rows: Iterable[Mapping[str, Any]], extra: Sequence[str]) -> list[dict[str, Any]]:
    out = []
    for row in rows:
        typed = normalize_row(row)
        for col in extra:
            value = row.get(col)
            typed[col] = "" if value is None else csv_safe(str(value))
        out.append(typed)
    return out


def _frame(rows: list[dict[str, Any]], columns: list[str]):
    return typed_frame(rows, columns)


def write_table(
    rows: Iterable[Mapping[str, Any]], path: str | Path, extra_columns: Sequence[str] = ()
) -> Path:
    """Write batch rows (:data:`COLUMNS` then ``extra_columns``) atomically.

    Parameters
    ----------
    rows : iterable of mapping
    path : path
        ``.csv``, ``.parquet`` (needs pandas + pyarrow) or ``.jsonl`` (one JSON object
        per line; missing values ``null``).
    extra_columns : sequence of str
        Pass-through columns (text), after tbscore's own.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    columns = list(COLUMNS) + [c for c in extra_columns if c not in COLUMNS]
    typed = _typed(rows, [c for c in extra_columns if c not in COLUMNS])
    with atomic_file(path) as tmp:
        if suffix == ".csv":
            with open(tmp, "wb") as fh:
                fh.write(_csv_line(columns))
                for row in typed:
                    fh.write(_csv_line(row[c] for c in columns))
        elif suffix == ".jsonl":
            with open(tmp, "w", encoding="utf-8") as fh:
                for row in typed:
                    clean = {
                        c: (
                            None
                            if isinstance(row[c], float) and not math.isfinite(row[c])
                            else row[c]
                        )
                        for c in columns
                    }
                    fh.write(json.dumps(clean, ensure_ascii=False, allow_nan=False) + "\n")
        elif suffix == ".parquet":
            try:
                _frame(typed, columns).to_parquet(tmp, index=False)
            except ImportError as exc:
                raise BatchError("Parquet output needs pandas and pyarrow", str(path)) from exc
        else:
            raise BatchError(f"output must end in one of {TABLE_SUFFIXES}", str(path))
    _fsync_dir(path.parent)
    return path


def read_table(path: str | Path):
    """A batch output (``.csv``, ``.parquet`` or ``.jsonl``) as a pandas DataFrame
    with the journal's column types; pass-through columns are text.

    Raises
    ------
    BatchError
        Unreadable file, unknown suffix, or not a tbscore batch output.
    """
    import pandas as pd

    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            df = pd.read_csv(path, dtype=str, keep_default_na=False)
        elif suffix == ".parquet":
            df = pd.read_parquet(path)
        elif suffix == ".jsonl":
            text = path.read_text(encoding="utf-8")
            df = (
                pd.read_json(io.StringIO(text), lines=True, dtype=False)
                if text.strip()
                else pd.DataFrame(columns=list(COLUMNS))
            )
        else:
            raise BatchError(f"results must end in one of {TABLE_SUFFIXES}", str(path))
    except BatchError:
        raise
    except (OSError, ValueError, ImportError) as exc:
        raise BatchError(f"cannot read results ({exc})", str(path)) from None
    missing = [c for c in ("input", "status", "l1_l4") if c not in df.columns]
    if missing:
        raise BatchError(f"not a tbscore batch output (missing columns {missing})", str(path))
    for col in df.columns:
        if col in FLOAT_COLUMNS:
            df[col] = pd.to_numeric(df[col].replace("", None), errors="coerce").astype("float64")
        elif col in INT_COLUMNS:
            df[col] = pd.to_numeric(df[col].replace("", None), errors="coerce").astype("Int64")
        else:
            df[col] = df[col].astype(object).where(df[col].notna(), "")
    return df
