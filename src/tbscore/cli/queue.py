"""``tbscore queue list|retry|purge``: the node's record and send queues."""

from __future__ import annotations

import argparse
import json

__all__ = ["register", "cmd_queue"]


def cmd_queue(args: argparse.Namespace) -> int:
    from pathlib import Path

    from tbscore.errors import NetError
    from tbscore.net.ledger import Ledger
    from tbscore.net.spool import Spool, result_json_beside

    if not (Path(args.spool) / "ledger.sqlite").is_file():
        raise NetError("no node record here (ledger.sqlite)", str(args.spool))
    spool = Spool(args.spool, 0)
    ledger = Ledger(spool.ledger_path)
    try:
        if args.action == "list":
            doc = {
                "counts": ledger.counts(),
                "set_aside": [
                    {k: r[k] for k in ("sop_instance_uid", "code", "reason")}
                    for r in ledger.images("set_aside")
                ],
                "sends": [
                    {
                        k: r[k]
                        for k in (
                            "id",
                            "sop_instance_uid",
                            "destination",
                            "state",
                            "attempts",
                            "last_error",
                        )
                    }
                    for r in ledger.sends()
                    if args.all or r["state"] != "sent"
                ],
            }
            if args.json:
                print(json.dumps(doc, indent=2))
                return 0
            print(f"images: {doc['counts']['images']}  sends: {doc['counts']['sends']}")
            for r in doc["set_aside"]:
                print(f"set aside {r['sop_instance_uid']}: {r['code']}: {r['reason']}")
            for r in doc["sends"]:
                print(
                    f"{r['state']:8s} #{r['id']} {r['sop_instance_uid']} -> {r['destination']} "
                    f"(tries {r['attempts']}){': ' + r['last_error'] if r['last_error'] else ''}"
                )
            return 0
        if args.action == "retry":
            n = ledger.retry(args.destination)
            print(f"{n} send(s) due now; a running node picks them up within a second")
            return 0
        n = 0
        for r in ledger.purgeable():
            files = {r["path"], r["sr_path"], *ledger.send_paths(r["sop_instance_uid"])}
            if r["sr_path"]:
                files.add(str(result_json_beside(r["sr_path"])))  # kept for tbscore review
            for p in files:
                if p:
                    Path(p).unlink(missing_ok=True)
            ledger.purged(r["sop_instance_uid"])
            n += 1
        print(f"purged the files of {n} finished image(s); their records stay")
        return 0
    finally:
        ledger.close()


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tbscore queue``."""
    p = subparsers.add_parser(
        "queue",
        help="list, retry or purge the send queues of a tbscore serve spool",
        description="list: counts, set-aside images and unsent results; retry: refused "
        "and waiting sends due now; purge: delete the spooled files of finished images "
        "(the record stays, so a duplicate is still not rescored).",
    )
    p.add_argument("action", choices=("list", "retry", "purge"))
    p.add_argument("--spool", required=True, metavar="DIR")
    p.add_argument("--destination", metavar="AET@HOST:PORT", help="retry: only this one")
    p.add_argument("--json", action="store_true", help="list: JSON output")
    p.add_argument("--all", action="store_true", help="list: include sent results")
    p.set_defaults(func=cmd_queue)
