"""Batch scoring of DICOM folders: parallel, resumable, one row per input.

>>> from tbscore.batch import run_batch, batch
>>> summary = run_batch(["scans/"], "results.csv", jobs=4)      # doctest: +SKIP
>>> df = batch("scans/", "results.parquet", roi_dir="rois/")     # doctest: +SKIP

Command line: ``tbscore batch DIR... -o results.csv [--jobs N] [--roi-dir DIR]
[--scheduler ADDRESS] ...``. Statuses, the resume rule, the duplicate rule, the ROI
lookup rule and the output columns are described in docs/batch.md.
"""

from tbscore.batch.command import register_cli
from tbscore.batch.discover import Input, discover, file_sha256, is_dicom, roi_stem
from tbscore.batch.naming import UnsafePathError, safe_filename, safe_path
from tbscore.batch.output import (
    BATCH_COLUMNS,
    COLUMNS,
    STATUSES,
    BatchError,
    CsvJournal,
    rows_to_frame,
    write_case_json,
)
from tbscore.batch.runner import BatchSummary, batch, iter_batch, journal_path, run_batch
from tbscore.batch.worker import Job, find_roi, score_input, warm_up

__all__ = [
    "run_batch",
    "iter_batch",
    "batch",
    "BatchSummary",
    "BatchError",
    "register_cli",
    "COLUMNS",
    "BATCH_COLUMNS",
    "STATUSES",
    "discover",
    "is_dicom",
    "file_sha256",
    "roi_stem",
    "find_roi",
    "Input",
    "Job",
    "score_input",
    "warm_up",
    "safe_filename",
    "safe_path",
    "UnsafePathError",
    "CsvJournal",
    "journal_path",
    "rows_to_frame",
    "write_case_json",
]
