"""``tbscore precision``: site precision (ISCD RMS-SD, CV %, LSC) from repeat scans."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any


def cmd_precision(args: argparse.Namespace) -> int:
    """Group the results by PatientID, compute the ISCD precision, save it as JSON."""
    from tbscore.cli.exit import EXIT_OK
    from tbscore.cli.report import _read_result
    from tbscore.clinical.precision import precision
    from tbscore.errors import PrecisionError

    groups: dict[str, list[float]] = {}
    for path in args.results:
        result = _read_result(path)
        pid = (result.metadata or {}).get("patient_id")
        if not pid:
            raise PrecisionError(
                "result has no PatientID: repeat scans are grouped by patient "
                "(write results with PHI, e.g. tbscore calc --json)",
                path,
            )
        if result.l1_l4 is None:
            raise PrecisionError(f"no L1-L4 value ({result.l1_l4_reason})", path)
        groups.setdefault(str(pid), []).append(float(result.l1_l4))
    prec = precision(groups)
    text = json.dumps(prec.to_dict(), indent=2, ensure_ascii=False) + "\n"
    Path(args.output).write_text(text, encoding="utf-8")
    lines = [
        f"patients {prec.n_patients} ({prec.n_scans} scans, {prec.dof} degrees of freedom)",
        f"RMS-SD   {prec.rms_sd:.3f}",
        f"RMS-CV   {prec.rms_cv_percent:.2f} %",
        f"LSC      {prec.lsc:.3f} (2.77 x RMS-SD, 95 %)",
    ]
    lines += [f"warning: {w}" for w in prec.warnings]
    lines.append(f"written {args.output}")
    sys.stdout.write("\n".join(lines) + "\n")
    return EXIT_OK


def register(sub: Any) -> None:
    """Add the ``precision`` sub-command."""
    p = sub.add_parser(
        "precision",
        help="site precision from repeat scans (ISCD: RMS-SD, CV %%, LSC = 2.77 x RMS-SD)",
        description="Precision of the raw L1-L4 index from repeat scans with repositioning "
        "(ISCD: e.g. 30 patients x 2 scans or 15 x 3), grouped by PatientID. The saved LSC "
        "is used by 'tbscore sign --precision' to call follow-up changes.",
    )
    p.add_argument("results", nargs="+", help="result JSON files (tbscore-result/1, with PHI)")
    p.add_argument("-o", "--output", required=True, help="precision JSON to write")
    p.set_defaults(func=cmd_precision)
