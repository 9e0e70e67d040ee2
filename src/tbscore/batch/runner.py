"""The batch loop: resume, schedule, de-duplicate, write, summarise."""

from __future__ import annotations

import datetime as _dt
import inspect
import math
import os
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from tbscore.batch.discover import Input, discover, file_sha256
from tbscore.batch.executors import cpu_count, make_executor
from tbscore.batch.output import (
    COLUMNS,
    STATUSES,
    BatchError,
    CsvJournal,
    ensure_unlocked,
    newest_rows,
    normalize_row,
    read_parquet_rows,
    rows_to_frame,
    write_case_json,
    write_parquet,
)
from tbscore.batch.progress import Progress, make_progress
from tbscore.batch.worker import DEFAULT_TIMEOUT_S, Job, audit_row, may_detect
from tbscore.core.roi import parse_exclusions
from tbscore.core.settings import Settings, resolve_settings

__all__ = ["BatchSummary", "run_batch", "iter_batch", "batch", "journal_path", "COLUMNS"]

EXIT_OK, EXIT_INCOMPLETE = 0, 1
#: Exit code when no input was scored (no ``ok``, ``incomplete`` or ``duplicate``
#: row): an empty folder, only non-DICOM files, or every input an error
#: (``tbscore.cli.exit.EXIT_NOTHING_SCORED``).
EXIT_NOTHING_SCORED = 3
#: Statuses of inputs that were scored (a value, or per-vertebra values).
SCORED_STATUSES: frozenset[str] = frozenset({"ok", "incomplete", "duplicate"})
#: Statuses that make a batch exit with :data:`EXIT_INCOMPLETE`.
FAILED_STATUSES: frozenset[str] = frozenset({"error", "incomplete"})
#: Statuses that can be the original of a duplicate.
_CANONICAL = frozenset({"ok", "incomplete"})
#: Columns left empty in a ``duplicate`` row (the values are in the original's row).
_DUPLICATE_KEEP = frozenset(
    {
        "input",
        "source",
        "settings_digest",
        "tbscore_version",
        "batch_options",
        "file_size",
        "file_mtime_ns",
        "file_sha256",
        "pixel_sha256",
        "sop_instance_uid",
        "elapsed_s",
        "sr_file",
        "result_key",
    }
)
#: Columns that are not part of an input's result (where and when it was read); two
#: inputs with one ``result_key`` are duplicates only if all their other columns agree.
_NOT_RESULT = _DUPLICATE_KEEP | {"status", "error", "error_code", "duplicate_of", "roi_source"}

PathLike = str | os.PathLike[str]


def journal_path(output: PathLike, *, derived: bool = False) -> Path:
    """The CSV journal of an output: the file itself for ``.csv``, else
    ``<output>.journal.csv`` (``results.parquet.journal.csv``). ``derived``: the output
    is written from the journal at the end (manifest batches, any suffix).

    Derived from the real path of ``output`` (symbolic links resolved), so that two
    batches writing one file through different paths (a link and its target) share
    one journal and its lock.
    """
    output = Path(os.path.realpath(output))
    if output.suffix.lower() == ".csv" and not derived:
        return output
    return output.with_name(output.name + ".journal.csv")


@dataclass(frozen=True)
class BatchSummary:
    """What a batch did.

    Attributes
    ----------
    n_inputs : int
        Inputs found (files named or found in the folders).
    n_scored : int
        Rows written by this run.
    n_resumed : int
        Inputs skipped because the output already had their row.
    counts : dict
        Rows per status, over all inputs (this run's and resumed rows).
    error_counts : dict
        Rows per ``error_code`` (errors, exclusions, incomplete results).
    error_examples : dict
        One ``error`` text per ``error_code``.
    output, journal : Path or None
    elapsed_s : float
    repaired : str or None
        What was cut off the end of the journal (a torn row), if anything.
    interrupted : bool
        The run stopped before all inputs were scored.
    calibration : str or None
        The calibration applied to every result, as ``NAME (reference = a + b *
        tbscore)``; ``None`` without one.
    """

    n_inputs: int
    n_scored: int
    n_resumed: int
    counts: dict[str, int]
    error_counts: dict[str, int]
    error_examples: dict[str, str]
    output: Path | None
    journal: Path | None
    elapsed_s: float
    repaired: str | None = None
    interrupted: bool = False
    calibration: str | None = None
    n_with_result: int | None = None

    @property
    def n_failed(self) -> int:
        """Inputs with status ``error`` or ``incomplete``."""
        return sum(self.counts.get(s, 0) for s in FAILED_STATUSES)

    @property
    def n_scored_inputs(self) -> int:
        """Inputs scored: status ``ok``, ``incomplete`` or ``duplicate``, or an ``error``
        that kept its values (an SR that could not be written)."""
        if self.n_with_result is not None:
            return self.n_with_result
        return sum(self.counts.get(s, 0) for s in SCORED_STATUSES)

    @property
    def exit_code(self) -> int:
        """1 when interrupted; else 3 when no input was scored
        (:data:`EXIT_NOTHING_SCORED`); else 1 when an input is ``error`` or
        ``incomplete``; else 0."""
        if self.interrupted:
            return EXIT_INCOMPLETE
        if not self.n_scored_inputs:
            return EXIT_NOTHING_SCORED
        return EXIT_INCOMPLETE if self.n_failed else EXIT_OK

    def format(self) -> str:
        """Readable multi-line summary."""
        lines = [
            f"tbscore batch: {self.n_inputs} input(s); {self.n_scored} scored now, "
            f"{self.n_resumed} already in the output; {self.elapsed_s:.1f} s"
        ]
        for status in STATUSES:
            n = self.counts.get(status, 0)
            if n:
                lines.append(f"  {status:<11} {n}")
        if self.error_counts:
            lines.append("  reasons:")
            for code, n in sorted(self.error_counts.items(), key=lambda kv: (-kv[1], kv[0])):
                example = self.error_examples.get(code, "")
                lines.append(f"    {code:<24} {n:>6}   e.g. {example[:160]}")
        if self.calibration:
            lines.append(f"  calibration: {self.calibration}")
        if self.repaired:
            lines.append(f"  repaired the output: cut {self.repaired}")
        if self.output is not None:
            lines.append(f"  output: {self.output}")
        if self.interrupted:
            lines.append("  interrupted: re-run the same command to resume")
        elif not self.n_scored_inputs:
            what = "no input files found" if not self.n_inputs else "no input gave a result"
            lines.append(f"  nothing scored: {what} (exit code {EXIT_NOTHING_SCORED})")
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.format()


def _as_paths(paths: PathLike | Iterable[PathLike]) -> list[PathLike]:
    if isinstance(paths, str | os.PathLike):
        return [paths]
    return list(paths)


def _check_spacing(spacing: Sequence[float] | None) -> tuple[float, float] | None:
    if spacing is None:
        return None
    try:
        vals = tuple(float(v) for v in spacing)
    except (TypeError, ValueError) as exc:
        raise BatchError(f"spacing must be two numbers in mm, got {spacing!r}") from exc
    if len(vals) != 2 or not all(math.isfinite(v) and 0 < v < 100 for v in vals):
        raise BatchError(f"spacing must be two positive numbers in mm, got {spacing!r}")
    return (vals[0], vals[1])


@dataclass
class _State:
    """Bookkeeping of one run (rows written, duplicates)."""

    # result_key -> (input path of the original, its result columns)
    canonical: dict[str, tuple[str, tuple]] = field(default_factory=dict)
    counts: Counter[str] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    written: int = 0
    with_result: int = 0

    def count(self, row: Mapping[str, Any]) -> None:
        self.counts[row["status"]] += 1
        if row["status"] in SCORED_STATUSES or row.get("error_code") == "sr_error":
            self.with_result += 1
        if row.get("error_code"):
            self.codes[row["error_code"]] += 1
            self.examples.setdefault(row["error_code"], row.get("error") or "")


class _BatchRun:
    """One batch: everything is validated in ``__init__``, before any work."""

    def __init__(
        self,
        paths: PathLike | Iterable[PathLike],
        output: PathLike | None,
        *,
        jobs: int,
        roi_dir: PathLike | None,
        settings: Any,
        scheduler: Any,
        progress: bool | str | None,
        spacing: Sequence[float] | None,
        override_spacing: bool,
        exclude: Mapping[str, str] | Iterable[str] | None,
        ignore: Sequence[str],
        dedupe: bool,
        per_case_dir: PathLike | None,
        force_new: bool,
        fsync: bool,
        stream: IO[str] | None,
        chunksize: int | None,
        calibration: Any = None,
        sr_dir: PathLike | None = None,
        manifest: PathLike | None = None,
        calibration_map: Any = None,
        path_format: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.t0 = time.monotonic()
        if timeout is not None and (
            isinstance(timeout, bool)
            or not isinstance(timeout, int | float)
            or not math.isfinite(timeout)
            or timeout <= 0
        ):
            raise BatchError(f"timeout must be a positive number of seconds, got {timeout!r}")
        cfg: Settings = resolve_settings(settings)
        if not isinstance(jobs, int) or isinstance(jobs, bool) or jobs < 0:
            raise BatchError(f"jobs must be an integer >= 0 (0: all CPUs), got {jobs!r}")
        self.jobs = jobs or cpu_count()
        self.scheduler = scheduler
        if chunksize is not None and (not isinstance(chunksize, int) or chunksize < 1):
            raise BatchError(f"chunksize must be an integer >= 1, got {chunksize!r}")
        self.chunksize = chunksize
        if scheduler is not None or self.jobs > 1:
            cfg = cfg.replace(parallel=False)  # one thread per worker process
        if roi_dir is not None and not Path(roi_dir).is_dir():
            raise BatchError("ROI folder does not exist", str(roi_dir))
        excl = parse_exclusions(exclude)
        if calibration is not None:
            from tbscore.core.calibration import Calibration
            from tbscore.io.calibration import load_calibration

            if not isinstance(calibration, Calibration):
                calibration = load_calibration(calibration)  # CalibrationError: bad file
        if calibration_map is not None:
            from tbscore.core.calibration_map import CalibrationMap
            from tbscore.io.calibration_map import load_calibration_map

            if calibration is not None:
                raise BatchError("give either a calibration or a calibration map, not both")
            if not isinstance(calibration_map, CalibrationMap):
                calibration_map = load_calibration_map(calibration_map)
        self.manifest = None
        if manifest is not None:
            from tbscore.batch.manifest import read_manifest

            if _as_paths(paths):
                raise BatchError("give either input paths or a manifest, not both")
            self.manifest = read_manifest(manifest)
        if sr_dir is not None:
            try:
                import highdicom  # noqa: F401
            except ImportError as exc:
                raise BatchError(
                    "DICOM SR output needs highdicom: pip install 'tbscore[sr]'", str(sr_dir)
                ) from exc
        self.job = Job(
            settings=cfg,
            spacing=_check_spacing(spacing),
            override_spacing=bool(override_spacing),
            exclude=tuple(sorted(excl.items())),
            roi_dir=None if roi_dir is None else os.path.abspath(roi_dir),
            want_result=per_case_dir is not None,
            calibration=calibration,
            sr_dir=None if sr_dir is None else os.path.abspath(sr_dir),
            calibration_map=calibration_map,
            path_format=path_format,
            timeout=None if timeout is None else float(timeout),
        )
        if override_spacing and spacing is None:
            raise BatchError("override_spacing needs spacing")
        self.dedupe = dedupe
        self.progress_opt = progress
        self.stream = stream
        self.per_case_dir = None if per_case_dir is None else Path(per_case_dir)
        self.output = None if output is None else Path(output)
        # the file really written (symbolic links resolved): journal, lock, Parquet
        self.target = None if output is None else Path(os.path.realpath(output))
        self.journal: CsvJournal | None = None
        skip: list[PathLike] = []
        self.derived = False
        if self.output is not None:
            suffix = self.output.suffix.lower()
            if suffix not in (".csv", ".parquet", ".jsonl"):
                raise BatchError("output must end in .csv, .parquet or .jsonl", str(self.output))
            self.derived = self.manifest is not None or suffix == ".jsonl"
            if suffix == ".parquet":
                try:
                    import pandas  # noqa: F401
                    import pyarrow  # noqa: F401
                except ImportError as exc:
                    raise BatchError(
                        "Parquet output needs pandas and pyarrow: pip install pandas pyarrow",
                        str(self.output),
                    ) from exc
            jp = journal_path(self.output, derived=self.derived)
            skip += [self.output, self.target, jp]
        if self.per_case_dir is not None:
            self.per_case_dir.mkdir(parents=True, exist_ok=True)
            skip.append(self.per_case_dir)
        if sr_dir is not None:
            skip.append(sr_dir)  # our SRs are DICOM: never score them as inputs
        if self.manifest is not None:
            self.inputs = _manifest_inputs(self.manifest)
        else:
            self.inputs = discover(_as_paths(paths), ignore=tuple(ignore), skip=skip)
        self.state = _State()
        self.existing: list[dict[str, Any]] = []
        self.resumed: list[tuple[Input, dict[str, Any]]] = []
        self.todo: list[Input] = list(self.inputs)
        self.repaired: str | None = None
        self.claimed: set[int] = set()  # positions of the output's rows claimed by inputs
        if self.output is not None:
            try:
                self._open_output(force_new, fsync)
                self._claim_existing()
            except BaseException:
                if self.journal is not None:
                    self.journal.close()
                raise
        if sr_dir is not None:  # only once the output accepted these options
            Path(sr_dir).mkdir(parents=True, exist_ok=True)

    # -- output and resume -----------------------------------------------------------
    def _open_output(self, force_new: bool, fsync: bool) -> None:
        assert self.target is not None
        jp = journal_path(self.target, derived=self.derived)
        is_parquet = jp != self.target and not self.derived
        if force_new:
            stamp = _dt.datetime.now(_dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
            ensure_unlocked(jp)
            for p in {self.target, jp}:
                if p.exists():
                    p.replace(p.with_name(f"{p.name}.{stamp}.bak"))
        if is_parquet and not jp.exists() and self.target.exists():
            rows = read_parquet_rows(self.target)  # journal removed: rebuild it
            self.journal = CsvJournal(jp, fsync=fsync)
            for row in rows:
                self.journal.append(row)
            self.journal.close()
        self.journal = CsvJournal(jp, fsync=fsync)
        self.repaired = self.journal.repaired
        self.existing = self.journal.rows
        self._check_compatible()

    def _check_compatible(self) -> None:
        digest = self.job.settings.digest()
        options = self.job.options
        name = str(self.output)
        for row in self.existing:
            if row["settings_digest"] and row["settings_digest"] != digest:
                raise BatchError(
                    f"the output already holds rows computed with other settings (digest "
                    f"{row['settings_digest']}, now {digest}); refusing to mix them. Use the "
                    "same settings to resume, another output file, or --force-new (the old "
                    "file is kept as .bak)",
                    name,
                )
            if row["batch_options"] and row["batch_options"] != options:
                raise BatchError(
                    f"the output already holds rows computed with other options "
                    f"({row['batch_options']}, now {options}); refusing to mix them. Use the "
                    "same --spacing/--override-spacing/--exclude/--calibration/--sr-dir to "
                    "resume, another output file, or --force-new",
                    name,
                )

    def _claim_existing(self) -> None:
        """Match rows already in the output to inputs; those inputs are not scored again.

        A row belongs to an input when (1) it has the input's path, size and
        modification time (no hashing), or (2) it has the input's path and file SHA-256,
        or (3) it has the file SHA-256 and a path that is not among the inputs (the
        file was moved or renamed). Each row is claimed at most once.
        """
        rows = self.existing
        if not rows:
            return
        current = {inp.path for inp in self.inputs}
        by_path: dict[str, list[int]] = {}
        orphans: dict[str, list[int]] = {}
        for i, row in enumerate(rows):
            by_path.setdefault(row["input"], []).append(i)
            if row["input"] not in current and row["file_sha256"]:
                orphans.setdefault(row["file_sha256"], []).append(i)
        claimed = self.claimed
        todo = []
        for inp in self.inputs:
            cands = [i for i in by_path.get(inp.path, ()) if i not in claimed]
            hit = next(
                (
                    i
                    for i in cands
                    if inp.size is not None
                    and rows[i]["file_size"] == inp.size
                    and rows[i]["file_mtime_ns"] == inp.mtime_ns
                ),
                None,
            )
            if hit is None and (cands or orphans):
                sha = file_sha256(inp.path)
                if sha is None:  # unreadable now: an unreadable-file row still counts
                    hit = next((i for i in cands if not rows[i]["file_sha256"]), None)
                else:
                    hit = next((i for i in cands if rows[i]["file_sha256"] == sha), None)
                    if hit is None:
                        hit = next((i for i in orphans.get(sha, ()) if i not in claimed), None)
            if hit is None:
                todo.append(inp)
            else:
                claimed.add(hit)
                self.resumed.append((inp, rows[hit]))
        self.todo = todo
        for row in rows:
            if row["result_key"] and row["status"] in _CANONICAL:
                self.state.canonical.setdefault(row["result_key"], (row["input"], _signature(row)))
        for _, row in self.resumed:
            self.state.count(row)

    # -- the loop --------------------------------------------------------------------
    def _decide(self, row: dict[str, Any]) -> dict[str, Any]:
        """Mark ``row`` (normalised) as a duplicate of an earlier input with the same
        result.

        Only a scored row (``ok``/``incomplete``) with the ``result_key`` of an earlier
        original and the same result columns is a duplicate: an error is never hidden,
        and an input whose own result differs is reported with its own values.
        """
        key = row.get("result_key")
        if not self.dedupe or not key or row.get("status") not in _CANONICAL:
            return row
        sig = _signature(row)
        first = self.state.canonical.get(key)
        if first is None:
            self.state.canonical[key] = (row["input"], sig)
            return row
        if first[0] == row["input"] or first[1] != sig:
            return row
        dup = {k: v for k, v in row.items() if k in _DUPLICATE_KEEP}
        dup.update(
            status="duplicate",
            error_code="",
            error=f"{row['input']}: same image, spacing, ROIs and settings as {first[0]}",
            duplicate_of=first[0],
        )
        return normalize_row(dup)

    def _commit(self, outcome: Mapping[str, Any], progress: Progress) -> dict[str, Any]:
        row = self._decide(normalize_row(outcome["row"]))
        if self.per_case_dir is not None:
            result = outcome.get("result") if row["status"] != "duplicate" else None
            write_case_json(self.per_case_dir, row, result, normalized=True)
        if self.journal is not None:
            self.journal.append(row, normalized=True)  # _decide's rows are normalised
        self.state.count(row)
        self.state.written += 1
        audit_row(row)  # one audit line per input, in this (the logging) process
        progress.update(row["status"])
        return row

    def rows(self) -> Iterator[dict[str, Any]]:
        """Score the inputs still to do; yield each row once written."""
        todo = self.todo
        progress = make_progress(self.progress_opt, len(todo), self.stream)
        self.progress = progress
        if self.resumed:
            progress.message(
                f"tbscore batch: {len(self.resumed)} of {len(self.inputs)} input(s) already in "
                f"{self.output}; scoring {len(todo)}"
            )
        if self.repaired:
            progress.message(f"tbscore batch: repaired {self.output}: cut {self.repaired}")
        if not self.inputs and self.manifest is None:
            progress.message("tbscore batch: no input files found")
        if self.manifest is not None:
            for w in self.manifest.warnings:
                progress.message(f"tbscore batch: manifest: {w}")
            for mrow in self.manifest.rows:
                if mrow.error is not None:
                    self.state.count(_manifest_error_row(self.job, mrow))
        self.interrupted = bool(todo)
        executor = None
        cancel = True
        try:
            if todo:
                jobs = min(self.jobs, len(todo))
                detection = (jobs > 1 or self.scheduler is not None) and may_detect(self.job, todo)
                executor = make_executor(
                    self.job, jobs, self.scheduler, self.chunksize, detection, len(todo)
                )
                yield from self._loop(executor, todo, progress)
            self.interrupted = False
            cancel = False
        finally:
            if executor is not None:
                executor.close(cancel=cancel)
                if cancel and self.output is not None:
                    progress.message(
                        f"tbscore batch: stopped after {self.state.written} new row(s) in "
                        f"{self.output}; run the same command again to resume"
                    )
            progress.close()
            if self.journal is not None:
                self.journal.close()
        if self.target is not None and self.derived:
            with CsvJournal(journal_path(self.target, derived=True), fsync=False) as journal:
                self._write_derived(newest_rows(journal.rows, self.claimed))
        elif self.target is not None and journal_path(self.target) != self.target:
            with CsvJournal(journal_path(self.target), fsync=False) as journal:
                # a file re-scored after a change has two journal rows: keep the newest
                write_parquet(newest_rows(journal.rows, self.claimed), self.target)

    def output_rows(self, rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """The rows of the output file: in manifest order with its columns appended
        (one row per manifest line, error lines included), else the rows as they are."""
        if self.manifest is None:
            return [dict(r) for r in rows]
        from tbscore.batch.manifest import MANIFEST_LINE_COLUMN

        by_input = {r["input"]: r for r in rows}
        out = []
        for mrow in self.manifest.rows:
            if mrow.error is not None:
                row = _manifest_error_row(self.job, mrow)
            else:
                found = by_input.get(mrow.image)
                if found is None:  # not scored (interrupted run): leave it out
                    continue
                row = dict(found)
            row.update(mrow.extra)
            row[MANIFEST_LINE_COLUMN] = str(mrow.line)
            out.append(row)
        return out

    @property
    def extra_columns(self) -> tuple[str, ...]:
        """Pass-through columns of the output (manifest batches)."""
        if self.manifest is None:
            return ()
        from tbscore.batch.manifest import MANIFEST_LINE_COLUMN

        return (MANIFEST_LINE_COLUMN, *self.manifest.columns)

    def _write_derived(self, rows: Sequence[Mapping[str, Any]]) -> None:
        from tbscore.batch.table import write_table

        assert self.output is not None
        write_table(self.output_rows(rows), self.target, self.extra_columns)

    def _loop(self, executor: Any, todo: list[Input], progress: Progress) -> Iterator[dict]:
        pos = {inp.index: k for k, inp in enumerate(todo)}
        done = [False] * len(todo)
        buffer: dict[int, Mapping[str, Any]] = {}
        frontier = 0  # every position below is done
        submitted = 0
        while frontier < len(todo):
            # read every round: a Dask executor sizes its chunks by the measured time
            window = max(4 * executor.slots * executor.chunk, 8)
            limit = window + 1024  # in flight + waiting in the buffer
            while (
                submitted < len(todo)
                and executor.pending < window
                and executor.pending + len(buffer) < limit
            ):
                executor.submit(todo[submitted])
                submitted += 1
            results = executor.poll(timeout=1.0)
            if not results:
                progress.tick()
                continue
            for inp, outcome in results:
                k = pos[inp.index]
                done[k] = True
                key = outcome["row"].get("result_key")
                if (
                    not self.dedupe
                    or not key
                    or outcome["row"].get("status") not in _CANONICAL
                    or key in self.state.canonical
                ):
                    yield self._commit(outcome, progress)  # decidable now
                else:
                    buffer[k] = outcome  # may be a duplicate of an earlier input: wait
            while frontier < len(todo) and done[frontier]:
                frontier += 1
            for k in sorted(b for b in buffer if b < frontier):
                yield self._commit(buffer.pop(k), progress)

    def summary(self, elapsed: float | None = None) -> BatchSummary:
        st = self.state
        return BatchSummary(
            n_inputs=len(self.inputs),
            n_scored=st.written,
            n_resumed=len(self.resumed),
            counts=dict(st.counts),
            error_counts=dict(st.codes),
            error_examples=dict(st.examples),
            output=self.output,
            journal=None
            if self.output is None
            else journal_path(self.output, derived=self.derived),
            elapsed_s=time.monotonic() - self.t0 if elapsed is None else elapsed,
            repaired=self.repaired,
            interrupted=getattr(self, "interrupted", False),
            calibration=_describe_calibration(self.job.calibration),
            n_with_result=st.with_result,
        )


def _manifest_inputs(manifest: Any) -> list[Input]:
    """One explicit input per distinct usable manifest image (first line wins)."""
    seen: set[str] = set()
    inputs: list[Input] = []
    for mrow in manifest.usable:
        real = os.path.realpath(mrow.image)
        if real in seen:
            continue
        seen.add(real)
        try:
            st = os.stat(mrow.image)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size = mtime = None
        inputs.append(Input(len(inputs), mrow.image, True, "", size, mtime, roi=mrow.roi))
    return inputs


def _manifest_error_row(job: Job, mrow: Any) -> dict[str, Any]:
    """The ``error`` row of a manifest line that cannot be scored."""
    from tbscore.io.paths import format_path

    return normalize_row(
        {
            "input": mrow.image or "",
            "source": format_path(mrow.image, job.path_format) or "",
            "status": "error",
            "error_code": "manifest_error",
            "error": mrow.error,
            "settings_digest": job.settings.digest(),
            "batch_options": job.options,
        }
    )


def _signature(row: Mapping[str, Any]) -> tuple:
    """The result columns of a normalised row (all but :data:`_NOT_RESULT`)."""
    return tuple(row[c] for c in COLUMNS if c not in _NOT_RESULT)


def _describe_calibration(calibration: Any) -> str | None:
    """``NAME (reference = a + b * tbscore)``, as in ``Calibration.summary()``."""
    if calibration is None:
        return None
    return f"{calibration.name} (reference = {calibration.a:.4f} + {calibration.b:.4f} * tbscore)"


def run_batch(
    paths: PathLike | Iterable[PathLike],
    output: PathLike | None = None,
    *,
    jobs: int = 1,
    roi_dir: PathLike | None = None,
    settings: Settings | Mapping[str, Any] | PathLike | None = None,
    scheduler: Any = None,
    progress: bool | str | None = None,
    spacing: Sequence[float] | None = None,
    override_spacing: bool = False,
    exclude: Mapping[str, str] | Iterable[str] | None = None,
    ignore: Sequence[str] = (),
    dedupe: bool = True,
    per_case_dir: PathLike | None = None,
    force_new: bool = False,
    fsync: bool = True,
    stream: IO[str] | None = None,
    chunksize: int | None = None,
    calibration: Any = None,
    sr_dir: PathLike | None = None,
    manifest: PathLike | None = None,
    calibration_map: Any = None,
    path_format: str | None = None,
    timeout: float | None = DEFAULT_TIMEOUT_S,
) -> BatchSummary:
    """Score every DICOM input and write one row per input to ``output``.

    Parameters
    ----------
    paths : path or iterable of paths
        DICOM files and folders (walked recursively; DICOM recognised by content).
    output : path, optional
        ``.csv`` (appended and fsync-ed row by row) or ``.parquet`` (written
        atomically at the end from the journal ``<output>.journal.csv``). An existing
        output is resumed: inputs already in it are not scored again.
    jobs : int
        Local worker processes (1: in this process; 0: one per CPU).
    roi_dir : path, optional
        Folder of ROI files (lookup rule: :func:`tbscore.batch.worker.find_roi`).
    settings : Settings, dict or settings-file path, optional
        Validated before any work.
    scheduler : str or distributed.Client, optional
        Dask scheduler address or client: score on that cluster instead of ``jobs``.
    progress : bool or {"auto", "bar", "log", "none"}, optional
        ``None``/``"auto"``: a bar when ``stream`` is a terminal, log lines otherwise.
    spacing : (float, float), optional
        Pixel spacing (mm) for files without one; ``override_spacing`` to force it.
    exclude : mapping or iterable, optional
        Vertebrae excluded in every scan, ``{"L2": "fracture"}`` or ``["L2:fracture"]``.
    ignore : sequence of str
        Glob patterns of files to skip inside folders.
    dedupe : bool
        Mark inputs whose pixel data equals an earlier input's as ``duplicate``.
    per_case_dir : path, optional
        Also write one JSON document per input there (no patient identifiers).
    force_new : bool
        Start a new output even if one exists (the old file is renamed ``*.bak``).
    fsync : bool
        ``fsync`` the journal after every row.
    stream : file, optional
        Where progress goes (default ``sys.stderr``).
    chunksize : int, optional
        Inputs per task sent to a worker (default 2 for processes; on Dask, sized by
        the measured time per input: about 0.2 s of work per task).
    calibration : Calibration or path, optional
        Applied to every result (``tbscore calibrate``); calibrated values go to the
        ``*_calibrated`` columns beside the raw ones, and the calibration's name to the
        ``calibration`` column. Part of the options a resumed batch must repeat.
    sr_dir : path, optional
        Write a DICOM SR (TID 1500) of every result into this folder, named
        ``<SOPInstanceUID>--<pixel hash>.sr.dcm`` (the ``sr_file`` column); a failed
        SR makes the row an ``error`` (``sr_error``), values kept. Needs highdicom.
    manifest : path, optional
        A cohort manifest CSV (:func:`tbscore.batch.manifest.read_manifest`) instead
        of ``paths`` (give ``paths=()``): column ``image`` (required), ``roi``
        (optional), the other columns copied into every output row (plus
        ``manifest_line``). The output (``.csv``, ``.parquet`` or ``.jsonl``) is then
        written at the end from the journal ``<output>.journal.csv``; lines that cannot
        be scored are ``error`` rows naming the line (``manifest_error``).
    calibration_map : CalibrationMap or path, optional
        Per-scanner calibrations (:mod:`tbscore.io.calibration_map`): the first rule
        matching a scan's Manufacturer, ManufacturerModelName, SoftwareVersions and
        pixel spacing selects its calibration (``calibration_rule`` column); in a
        strict map a scan without a match is an ``error`` (``no_calibration_match``).
    path_format : {"absolute", "relative", "basename"}, optional
        How the ``source`` and ``roi_source`` columns show paths
        (:func:`tbscore.io.paths.format_path`); default as given.
    timeout : float or None
        Time limit per input in seconds (default 120; ``None``: none). An input still
        running then gets an ``error`` row with code ``timeout`` and the batch goes
        on (details and limits in docs/batch.md).

    Returns
    -------
    BatchSummary
        ``summary.exit_code`` is 1 when an input has status ``error`` or ``incomplete``.

    Raises
    ------
    tbscore.errors.TBSError
        Before any work: bad settings, a missing path, an output that cannot be
        resumed (other settings, locked, corrupt), a missing optional dependency.
    """
    run = _BatchRun(
        paths,
        output,
        jobs=jobs,
        roi_dir=roi_dir,
        settings=settings,
        scheduler=scheduler,
        progress=progress,
        spacing=spacing,
        override_spacing=override_spacing,
        exclude=exclude,
        ignore=ignore,
        dedupe=dedupe,
        per_case_dir=per_case_dir,
        force_new=force_new,
        fsync=fsync,
        stream=stream,
        chunksize=chunksize,
        calibration=calibration,
        sr_dir=sr_dir,
        manifest=manifest,
        calibration_map=calibration_map,
        path_format=path_format,
        timeout=timeout,
    )
    for _ in run.rows():
        pass
    return run.summary()


def _make_run(paths: Any, output: Any, kwargs: dict[str, Any]) -> _BatchRun:
    """A run with :func:`run_batch`'s keyword arguments and defaults."""
    sig = inspect.signature(run_batch)
    try:
        bound = sig.bind(paths, output, **kwargs)
    except TypeError as exc:
        raise TypeError(f"{exc} (see tbscore.batch.run_batch)") from None
    bound.apply_defaults()
    return _BatchRun(**bound.arguments)


def iter_batch(
    paths: PathLike | Iterable[PathLike], output: PathLike | None = None, **kwargs: Any
) -> Iterator[dict[str, Any]]:
    """Score inputs and yield one row (a dict of :data:`COLUMNS`) per input as written.

    Keyword arguments are those of :func:`run_batch`. Rows come in the order they are
    written; inputs already in ``output`` are not scored again and not yielded. The
    checks :func:`run_batch` makes before any work happen when the generator is
    first advanced.
    """
    run = _make_run(paths, output, kwargs)
    yield from run.rows()


def batch(paths: PathLike | Iterable[PathLike], output: PathLike | None = None, **kwargs: Any):
    """Run a batch and return its rows as a pandas DataFrame.

    Keyword arguments are those of :func:`run_batch`. One row per input, in input
    order, including inputs resumed from ``output``; columns :data:`COLUMNS` (floats
    ``float64``, counts ``Int64``, text ``object``). An input re-scored because its
    file changed since an earlier run appears once, with its newest row (the CSV
    journal keeps the old row too). The :class:`BatchSummary` is in
    ``df.attrs["summary"]``. ``tbscore.batch(...)`` (calling the package) is this
    function.

    Raises
    ------
    BatchError
        pandas is not installed.
    """
    try:
        import pandas  # noqa: F401
    except ImportError as exc:
        raise BatchError("batch() returns a DataFrame: pip install pandas") from exc
    run = _make_run(paths, output, kwargs)
    new = {row["input"]: row for row in run.rows()}  # the newest row of each input
    # keyed by the current path: a resumed row of a moved file carries its old path
    by_input = {inp.path: row for inp, row in run.resumed}
    by_input.update(new)
    rows = [by_input[inp.path] for inp in run.inputs if inp.path in by_input]
    if run.manifest is not None:
        from tbscore.batch.table import _frame, _typed

        extra = list(run.extra_columns)
        df = _frame(_typed(run.output_rows(rows), extra), list(COLUMNS) + extra)
    else:
        df = rows_to_frame(rows)
    df.attrs["summary"] = run.summary()
    return df
