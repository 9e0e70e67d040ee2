"""``tbscore echo``: DICOM C-ECHO (verification)."""

from __future__ import annotations

import argparse

__all__ = ["register", "cmd_echo"]


def add_scu_args(p: argparse.ArgumentParser) -> None:
    """``--ae-title`` and ``--timeout``, shared by the client commands."""
    p.add_argument("--ae-title", default="TBSCORE", metavar="AET", help="our AE title (TBSCORE)")
    p.add_argument(
        "--timeout", type=float, default=30.0, metavar="S", help="association timeouts (30 s)"
    )


def timeouts(args: argparse.Namespace):
    from tbscore.net.scu import Timeouts

    t = float(args.timeout)
    return Timeouts(connect_s=t, acse_s=t, dimse_s=t, network_s=t)


def cmd_echo(args: argparse.Namespace) -> int:
    from tbscore.net.address import parse_peer
    from tbscore.net.scu import echo

    peer = parse_peer(args.peer)
    rtt = echo(peer, args.ae_title, timeouts(args))
    print(f"C-ECHO {peer}: success ({rtt * 1000:.1f} ms)")
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add ``tbscore echo``."""
    p = subparsers.add_parser("echo", help="DICOM C-ECHO a peer (is it reachable?)")
    p.add_argument("peer", metavar="AET@HOST:PORT")
    add_scu_args(p)
    p.set_defaults(func=cmd_echo)
