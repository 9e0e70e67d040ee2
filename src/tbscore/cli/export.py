"""``tbscore export`` (77090)."""

from __future__ import annotations

from typing import Any

from tbscore._version import __version__

# --------------------------------------------------------------------------- CLI


def cmd_export(args: Any) -> int:
    """``tbscore export``: run :func:`export_package` and print a summary."""
    from tbscore.export.deid import _AGE_CAP
    from tbscore.export.package import export_package
    from tbscore.io.paths import prepare_output, prepare_output_dir

    prepare_output_dir(args.output, what="package folder", create=False)  # checked before any work
    if args.mapping:
        prepare_output(args.mapping, what="mapping file")
    report = export_package(
        args.inputs,
        args.output,
        mapping_path=args.mapping,
        include_rois=not args.no_roi,
        age_cap=None if args.no_age_cap else _AGE_CAP,
    )
    m = report.manifest
    print(f"tbscore {__version__}  CPT {m['service']['cpt_code']} ({m['service']['descriptor']})")
    print(
        f"package  {report.package}  ({m['counts']['included']} included, "
        f"{m['counts']['excluded']} excluded, {m['counts']['skipped_non_dicom']} "
        "non-DICOM skipped)"
    )
    for i in report.excluded:
        print(f"excluded {i.item}: {i.reason}")
    print(f"mapping  {report.mapping_path}  (identifying: keep apart from the package)")
    if getattr(args, "send", None):
        # 77090 "transmission": C-STORE the de-identified package (never the mapping)
        from tbscore.cli.send import dicom_files, send_and_report

        return send_and_report(dicom_files([str(report.package)]), args.send, args)
    return 0


def register(subparsers: Any) -> None:
    """Add the ``export`` sub-command."""
    p = subparsers.add_parser(
        "export",
        help="CPT 77090: de-identified package of DICOM images for analysis elsewhere",
        description="De-identify DICOM images (PS3.15 Annex E Basic Profile, Retain Patient "
        "Characteristics option) into a package with manifest.json/.csv. "
        "The mapping file is written beside the package, never inside.",
    )
    p.add_argument("inputs", nargs="+", metavar="DIR", help="DICOM files or folders")
    p.add_argument(
        "-o",
        "--output",
        required=True,
        metavar="PACKAGE",
        help="package folder (must not exist or be empty)",
    )
    p.add_argument(
        "--mapping",
        metavar="MAPPING.json",
        help="mapping file (default: PACKAGE.mapping.json beside the package); "
        "an existing one is extended and its UID key reused",
    )
    p.add_argument(
        "--no-roi",
        action="store_true",
        help="do not export NAME.roi.json files found beside NAME.dcm",
    )
    p.add_argument(
        "--no-age-cap", action="store_true", help="keep ages over 89 instead of writing 090Y"
    )
    p.add_argument(
        "--send",
        metavar="AET@HOST:PORT",
        help="then C-STORE the de-identified images of the package to the analysis site "
        "(needs tbscore[net]); exit 1 when any was not stored",
    )
    from tbscore.cli.echo import add_scu_args

    add_scu_args(p)
    p.set_defaults(func=cmd_export)
