"""The ``tbscore batch`` sub-command."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from tbscore.cli.exit import EXIT_TERMINATED

__all__ = ["register", "cmd_batch", "SCHEDULER_ENV"]

#: Environment variable read when ``--scheduler`` is not given.
SCHEDULER_ENV = "DASK_SCHEDULER_ADDRESS"

_EPILOG = """\
statuses: ok (L1-L4 value), incomplete (scored, no L1-L4 value), error (could not be
scored), excluded (a non-DICOM file or a colour image found in a folder, or a DICOM
object without pixel data), duplicate (same pixel data as an earlier input; see
duplicate_of).
Exit code 0 when no input is error/incomplete, 1 otherwise, 2 when the batch cannot
start (bad settings, missing path, output that cannot be resumed), 3 when no input
was scored (no DICOM found, or every input failed), 130 on Ctrl-C and 143 on SIGTERM
(rows written so far are kept; re-run to resume).
Re-running the same command resumes: inputs already in the output are skipped
(settings, --spacing, --exclude, --calibration and --sr-dir must be the same).
See docs/batch.md.
"""


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tbscore batch`` to the ``tbscore`` command line."""
    from tbscore.cli.common import add_path_format_arg, add_settings_args

    p = subparsers.add_parser(
        "batch",
        help="score every DICOM file in folders (parallel, resumable)",
        description="Score every DICOM file in the given folders and files (CPT 77091\n"
        "technical calculation), one output row per input.",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "paths", nargs="*", metavar="PATH", help="DICOM files or folders (or use --manifest)"
    )
    p.add_argument(
        "--manifest",
        metavar="CSV",
        help="cohort manifest instead of PATHs: column 'image' (required), 'roi' (optional), "
        "paths relative to the manifest; other columns are copied into every output row",
    )
    p.add_argument(
        "-o",
        "--output",
        required=True,
        help="results file: .csv, .parquet or .jsonl (.parquet/.jsonl and manifest runs "
        "keep a resumable <output>.journal.csv next to it)",
    )
    p.add_argument(
        "-j", "--jobs", type=int, default=1, help="local worker processes (default 1; 0: all CPUs)"
    )
    p.add_argument("--roi-dir", metavar="DIR", help="folder of ROI files (<stem>.roi.json)")
    p.add_argument(
        "--scheduler",
        metavar="ADDRESS",
        default=None,
        help=f"Dask scheduler address (default: ${SCHEDULER_ENV} if set); needs tbscore[dask]",
    )
    p.add_argument(
        "--per-case-dir", metavar="DIR", help="also write one JSON result per input here"
    )
    p.add_argument(
        "--calibration",
        metavar="CAL.json",
        help="apply a calibration (tbscore calibrate) to every result; calibrated values "
        "beside the raw ones",
    )
    p.add_argument(
        "--calibration-map",
        metavar="MAP.toml",
        help="per-scanner calibrations: the first rule matching Manufacturer, model, "
        "software version and pixel spacing selects the calibration (see docs/cohort.md)",
    )
    p.add_argument(
        "--validate",
        action="store_true",
        help="check manifest, inputs (DICOM headers only), ROI files, settings, calibration "
        "(map) and output path, report what would happen, compute and write nothing",
    )
    p.add_argument(
        "--sr-dir",
        metavar="DIR",
        help="also write a DICOM SR (TID 1500) of every result into this folder "
        "(needs tbscore[sr])",
    )
    p.add_argument(
        "--exclude",
        action="append",
        metavar="LABEL[:REASON]",
        help="exclude a vertebra in every scan, e.g. --exclude L4:protocol (repeatable)",
    )
    p.add_argument(
        "--ignore",
        action="append",
        default=[],
        metavar="GLOB",
        help="skip files matching this pattern inside folders (repeatable)",
    )
    p.add_argument(
        "--keep-duplicates",
        action="store_true",
        help="score inputs with identical pixel data separately (no 'duplicate' rows)",
    )
    p.add_argument(
        "--force-new",
        action="store_true",
        help="start a new output even if one exists (the old file is renamed *.bak)",
    )
    p.add_argument(
        "--progress",
        choices=("auto", "bar", "log", "none"),
        default="auto",
        help="progress bar on a terminal, log lines otherwise (default auto)",
    )
    p.add_argument(
        "--no-fsync", action="store_true", help="do not fsync the output after every row"
    )
    p.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        metavar="SECONDS",
        help="time limit per input: a longer one gets an error row (code timeout) and the "
        "batch goes on (default 120; 0: no limit)",
    )
    add_settings_args(p)
    add_path_format_arg(p)
    p.set_defaults(func=cmd_batch)


def cmd_batch(args: argparse.Namespace) -> int:
    """Run ``tbscore batch``; return the exit code."""
    from tbscore.batch.output import BatchError
    from tbscore.cli.common import settings_from_args
    from tbscore.io.paths import prepare_output, prepare_output_dir

    cfg = settings_from_args(args)  # SettingsError (exit 2) before any work
    if args.timeout < 0:
        raise BatchError(f"--timeout must be >= 0 seconds, got {args.timeout:g}")
    if not args.paths and not args.manifest:
        raise BatchError("give DICOM files or folders, or --manifest CSV")
    if args.validate:
        from tbscore.batch.validate import validate_batch

        plan = validate_batch(
            args.paths,
            args.output,
            manifest=args.manifest,
            roi_dir=args.roi_dir,
            settings=cfg,
            calibration=args.calibration,
            calibration_map=args.calibration_map,
            spacing=tuple(args.spacing) if args.spacing else None,
            override_spacing=args.override_spacing,
            ignore=args.ignore,
        )
        print(plan.format())
        return plan.exit_code
    prepare_output(args.output, suffixes=(".csv", ".parquet", ".jsonl"), what="batch output")
    for folder in (args.per_case_dir, args.sr_dir):
        if folder:
            prepare_output_dir(folder, create=False)
    scheduler = args.scheduler or os.environ.get(SCHEDULER_ENV) or None
    if scheduler and args.jobs != 1:
        print("tbscore batch: --jobs is ignored with a Dask scheduler", file=sys.stderr)
    try:  # SIGTERM like Ctrl-C: stop cleanly, resumable (main thread only)
        old_term = signal.signal(signal.SIGTERM, _terminate)
    except ValueError:
        old_term = None
    try:
        summary = _run(args, cfg, scheduler)
    except _Terminated:
        print(
            "tbscore batch: terminated (SIGTERM); the rows written so far are kept: run the "
            "same command again to resume",
            file=sys.stderr,
        )
        return EXIT_TERMINATED
    finally:
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)
    print(summary.format())
    return summary.exit_code


class _Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread: handled like Ctrl-C by the batch loop."""


def _terminate(signum: int, frame: object) -> None:
    raise _Terminated


def _run(args: argparse.Namespace, cfg: object, scheduler: str | None):
    from tbscore.batch.runner import run_batch

    return run_batch(
        args.paths,
        args.output,
        jobs=args.jobs,
        roi_dir=args.roi_dir,
        settings=cfg,
        scheduler=scheduler,
        progress=args.progress,
        spacing=tuple(args.spacing) if args.spacing else None,
        override_spacing=args.override_spacing,
        exclude=args.exclude,
        ignore=args.ignore,
        dedupe=not args.keep_duplicates,
        per_case_dir=args.per_case_dir,
        force_new=args.force_new,
        fsync=not args.no_fsync,
        calibration=args.calibration,
        sr_dir=args.sr_dir,
        manifest=args.manifest,
        calibration_map=args.calibration_map,
        path_format=args.format_path,
        timeout=args.timeout or None,
    )
