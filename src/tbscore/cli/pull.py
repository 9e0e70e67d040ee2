"""``tbscore pull``: Study Root C-FIND then C-GET/C-MOVE into a folder for batch."""

from __future__ import annotations

import argparse

__all__ = ["register", "cmd_pull"]


def cmd_pull(args: argparse.Namespace) -> int:
    from tbscore.cli.echo import timeouts
    from tbscore.net.address import parse_peer
    from tbscore.net.qr import FolderStore, PullSummary, StudyQuery, find_studies, retrieve

    peer = parse_peer(args.source)
    query = StudyQuery.from_args(args.date, args.date_range, args.accession)
    t = timeouts(args)
    studies = find_studies(peer, query, args.ae_title, t)
    store = FolderStore(args.to)
    summary = PullSummary(studies=len(studies))
    server = None
    if not args.get:
        from tbscore.net.scu import make_ae, pynetdicom, start_server
        from tbscore.net.sop import DXA_IMAGE_CLASSES, STUDY_EXTRA_CLASSES, available_syntaxes

        pnd = pynetdicom()
        ae = make_ae(args.ae_title, t)
        for cls in {**DXA_IMAGE_CLASSES, **STUDY_EXTRA_CLASSES}:
            ae.add_supported_context(cls, available_syntaxes())
        server = start_server(ae, (args.bind, args.port), [(pnd.evt.EVT_C_STORE, store)])
    try:
        # every study over one association; should that fail part way, the studies
        # not finished are retrieved one association each (one failing does not stop
        # the others)
        keys = [{"StudyInstanceUID": s["study_instance_uid"]} for s in studies]
        method = "get" if args.get else "move"
        from tbscore.errors import TBSError

        try:
            if keys:
                retrieve(
                    peer,
                    "STUDY",
                    keys,
                    method=method,
                    ae_title=args.ae_title,
                    store=store,
                    timeouts=t,
                    summary=summary,
                )
            keys = []
        except TBSError:
            keys = keys[summary.keys_done :]
        for k in keys:
            try:
                retrieve(
                    peer,
                    "STUDY",
                    k,
                    method=method,
                    ae_title=args.ae_title,
                    store=store,
                    timeouts=t,
                    summary=summary,
                )
            except TBSError as exc:
                summary.errors.append(str(exc))
    finally:
        if server is not None:
            server.shutdown()
    for e in summary.errors:
        print(f"error   {e}")
    print(
        f"pulled {len(store.written)} instance(s) of {summary.studies} stud(y/ies) from "
        f"{peer} into {args.to} ({summary.failed} failed); score them with: "
        f"tbscore batch {args.to} -o results.csv"
    )
    return 0 if not summary.errors and summary.failed == 0 else 1


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tbscore pull``."""
    from tbscore.cli.echo import add_scu_args

    p = subparsers.add_parser(
        "pull",
        help="query a PACS (Study Root C-FIND) and retrieve studies into a folder",
        description="Find studies by date, date range or accession number and retrieve "
        "them with C-MOVE (to our own storage SCP on --port; the PACS must know our AE "
        "title) or C-GET (--get). Files land in DIR/<StudyInstanceUID>/.",
    )
    p.add_argument("--from", dest="source", required=True, metavar="AET@HOST:PORT")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--date", metavar="YYYYMMDD")
    g.add_argument("--date-range", dest="date_range", metavar="YYYYMMDD-YYYYMMDD")
    g.add_argument("--accession", metavar="N")
    p.add_argument("--to", required=True, metavar="DIR")
    p.add_argument("--get", action="store_true", help="use C-GET instead of C-MOVE")
    p.add_argument("--bind", default="127.0.0.1", help="C-MOVE: our SCP address (127.0.0.1)")
    p.add_argument("--port", type=int, default=11113, help="C-MOVE: our SCP port (11113)")
    add_scu_args(p)
    p.set_defaults(func=cmd_pull)
