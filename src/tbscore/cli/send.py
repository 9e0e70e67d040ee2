"""``tbscore send``: C-STORE DICOM files (or a 77090 export package) to a peer."""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "cmd_send", "dicom_files", "send_and_report"]


def dicom_files(paths: list[str]) -> list[Path]:
    """The DICOM files among ``paths`` (folders searched recursively, by content)."""
    from tbscore.batch.discover import is_dicom
    from tbscore.errors import InputError

    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(f for f in p.rglob("*") if f.is_file() and is_dicom(f))
        elif p.is_file():
            out.append(p)
        else:
            raise InputError("no such file or folder", str(p))
    return out


def send_and_report(files: list[Path], peer_text: str, args: argparse.Namespace) -> int:
    """Send ``files`` and print one line per file; 0 when all were stored, else 1."""
    from tbscore.cli.echo import timeouts
    from tbscore.net.address import parse_peer
    from tbscore.net.scu import send_files

    peer = parse_peer(peer_text)
    results = send_files(files, peer, args.ae_title, timeouts(args))
    bad = 0
    for o in results:
        if o.state != "sent":
            bad += 1
            print(f"{o.state:9s} {o.path}: {o.reason}")
    print(f"sent {len(results) - bad} of {len(results)} file(s) to {peer}")
    return 0 if bad == 0 else 1


def cmd_send(args: argparse.Namespace) -> int:
    return send_and_report(dicom_files(args.files), args.to, args)


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tbscore send``."""
    from tbscore.cli.echo import add_scu_args

    p = subparsers.add_parser(
        "send",
        help="C-STORE DICOM files or folders to a peer (files sent as stored)",
        description="Send DICOM files (folders searched by content) to a DICOM peer; "
        "exit 1 when any file was not stored.",
    )
    p.add_argument("files", nargs="+", metavar="FILE")
    p.add_argument("--to", required=True, metavar="AET@HOST:PORT")
    add_scu_args(p)
    p.set_defaults(func=cmd_send)
