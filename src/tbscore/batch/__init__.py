"""Batch scoring of DICOM folders: parallel, resumable, one row per input.

>>> from tbscore.batch import run_batch, batch
>>> summary = run_batch(["scans/"], "results.csv", jobs=4)      # doctest: +SKIP
>>> df = batch("scans/", "results.parquet", roi_dir="rois/")     # doctest: +SKIP

The package itself is callable: ``tbscore.batch(paths, output=None, **kwargs)`` is
:func:`tbscore.batch.runner.batch` (a pandas DataFrame, one row per input), while
``tbscore.batch.run_batch`` and the other names below stay reachable as attributes.

Command line: ``tbscore batch DIR... -o results.csv [--jobs N] [--roi-dir DIR]
[--scheduler ADDRESS] ...``. Statuses, the resume rule, the duplicate rule, the ROI
lookup rule and the output columns are described in docs/batch.md.
"""

import sys
import types
from typing import Any

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


class _CallableModule(types.ModuleType):
    """The class of the ``tbscore.batch`` module object: a module that can be called.

    Why: the documented API is ``tbscore.batch(paths, ...) -> DataFrame``, but
    ``tbscore.batch`` has to stay the package (``tbscore.batch.run_batch``, submodules
    such as ``tbscore.batch.worker``, whose objects are pickled by name for worker
    processes). A module object is callable only if its class defines
    ``__call__``, so the module's ``__class__`` is switched to this subclass
    (supported by Python for module objects since 3.5). Nothing else changes:
    attributes, submodules and ``from tbscore.batch import ...`` behave as before.
    """

    def __call__(self, paths: Any, output: Any = None, **kwargs: Any) -> Any:
        """Run a batch and return its rows as a pandas DataFrame.

        Same as :func:`tbscore.batch.runner.batch` (keyword arguments of
        :func:`tbscore.batch.runner.run_batch`); pandas is imported only here.
        """
        from tbscore.batch.runner import batch as _batch

        return _batch(paths, output, **kwargs)


sys.modules[__name__].__class__ = _CallableModule
