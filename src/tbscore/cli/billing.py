"""``tbscore billing``: CPT codes and dated Medicare rates for a set of services."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from tbscore.clinical import billing
from tbscore.clinical.interpret import REPORT_FORMAT, ReportError

_CODE_TO_SERVICE = {code: name for name, code in billing.SERVICES.items()}


def parse_services(text: str) -> dict[str, int]:
    """Parse ``"calc=3,score=2"`` into ``{"calc": 3, "score": 2}``.

    Raises
    ------
    tbscore.clinical.billing.BillingError
        Malformed item, unknown service or a negative count.
    """
    counts: dict[str, int] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        name, sep, num = item.partition("=")
        try:
            n = int(num) if sep else 1
        except ValueError:
            raise billing.BillingError(f"bad service count {item!r} (use NAME=COUNT)") from None
        if n < 0:
            raise billing.BillingError(f"negative count in {item!r}")
        key = name.strip().lower()
        if key not in billing.SERVICES:
            raise billing.BillingError(
                f"unknown service {name!r}; known services: {', '.join(billing.SERVICES)}"
            )
        counts[key] = counts.get(key, 0) + n
    return counts


def _read_service_file(path: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReportError("file does not exist", path) from None
    except (OSError, ValueError) as exc:
        raise ReportError(f"not a JSON file ({exc})", path) from exc
    if not isinstance(data, Mapping) or data.get("format") not in (
        "tbscore-result/1",
        REPORT_FORMAT,
    ):
        raise ReportError("not a tbscore result or report JSON", path)
    if str(data.get("cpt_code") or "") not in _CODE_TO_SERVICE:
        raise ReportError(f"unknown CPT code {data.get('cpt_code')!r}", path)
    return data


def _result_key(data: Mapping | None) -> tuple | None:
    """Identity of a technical result: image hash, SOP instance and settings digest."""
    if not isinstance(data, Mapping):
        return None
    inp = data.get("input") or {}
    return (inp.get("pixel_sha256"), inp.get("sop_instance_uid"), data.get("settings_digest"))


def services_from_files(paths: list[str]) -> tuple[dict[str, int], list[str]]:
    """Count services in result (``tbscore-result/1``) and report (``tbscore-report/1``)
    JSON files by their ``cpt_code``.

    A result file that is the technical part of a ``score`` report also given (same
    image and settings) is not counted again: 77089 includes 77091.

    Returns
    -------
    counts : dict of str to int
        Service name -> count.
    notes : list of str
        Files left out, and why.
    """
    docs = {path: _read_service_file(path) for path in dict.fromkeys(paths)}
    in_scores = {
        _result_key(d.get("result"))
        for d in docs.values()
        if d.get("format") == REPORT_FORMAT and d.get("cpt_code") == billing.SERVICES["score"]
    }
    counts: dict[str, int] = {}
    notes: list[str] = []
    for path, data in docs.items():
        if data.get("format") != REPORT_FORMAT and _result_key(data) in in_scores:
            notes.append(
                f"{path}: technical part of a score report given too (77089 "
                "includes 77091); not counted again"
            )
            continue
        service = _CODE_TO_SERVICE[str(data["cpt_code"])]
        counts[service] = counts.get(service, 0) + 1
    return counts, notes


def cmd_billing(args: argparse.Namespace) -> int:
    """``tbscore billing``: billing summary of a set of services."""
    from tbscore.cli.exit import EXIT_OK

    counts, notes = services_from_files(args.results)
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for name, n in parse_services(args.services or "").items():
        counts[name] = counts.get(name, 0) + n
    if not counts:
        raise ReportError("no services: give result/report files or --services")
    rows = billing.billing_summary(counts, args.setting, rate=args.rate, split=args.split)
    if args.json:
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    else:
        sys.stdout.write(billing.format_table(rows) + "\n")
    return EXIT_OK


def _add_billing(sub: Any) -> None:
    p = sub.add_parser(
        "billing",
        help="billing summary (CPT codes, Medicare 2026 rates) for a set of services",
        description="Billing summary of TBS services counted from result/report JSON "
        "files (by their cpt_code) and/or --services.",
    )
    p.add_argument("results", nargs="*", help="result or report JSON files")
    p.add_argument(
        "--services",
        metavar="NAME=N,...",
        help="service counts, e.g. calc=3,score=2 (calc, interpret, score, export)",
    )
    p.add_argument("--setting", required=True, choices=billing.SETTINGS)
    p.add_argument(
        "--rate", default="qp", choices=billing.RATES, help="PFS conversion factor (default qp)"
    )
    p.add_argument(
        "--split",
        action="store_true",
        help="office: bill a complete service as 77091 + 77092 instead of 77089",
    )
    p.add_argument("--json", action="store_true", help="JSON rows instead of a table")
    p.set_defaults(func=cmd_billing)


def register(sub: Any) -> None:
    """Add ``billing``."""
    _add_billing(sub)
