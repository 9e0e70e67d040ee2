"""Arguments shared by several sub-commands: computation settings."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tbscore.core.settings import Settings


def add_settings_args(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("computation settings (override --settings)")
    g.add_argument("--settings", metavar="FILE", help="settings file (.toml, .yaml or .json)")
    g.add_argument("--lag-min-mm", type=float, help="smallest lag (mm)")
    g.add_argument("--lag-max-mm", type=float, help="largest lag (mm)")
    g.add_argument(
        "-s",
        "--set",
        dest="set_settings",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="set any computation setting, e.g. -s min_r2=0.5 -s "
        '\'directions=["vertical","horizontal"]\' (TOML values; repeatable; '
        "validated like a settings file)",
    )
    g.add_argument(
        "--spacing",
        type=float,
        nargs=2,
        metavar=("ROW_MM", "COL_MM"),
        help="pixel spacing (mm) for files that have none",
    )
    g.add_argument(
        "--override-spacing",
        action="store_true",
        help="use --spacing even when the file has a spacing",
    )


def settings_from_args(args: argparse.Namespace) -> Settings:
    """Settings from ``--settings`` with command-line overrides applied."""
    from tbscore.core.settings import Settings, parse_setting_assignments, resolve_settings

    cfg = resolve_settings(args.settings)
    overrides = parse_setting_assignments(getattr(args, "set_settings", None) or ())
    overrides.update(
        {
            k: getattr(args, k)
            for k in ("lag_min_mm", "lag_max_mm")
            if getattr(args, k, None) is not None
        }
    )
    if not overrides:
        return cfg
    return Settings.from_dict({**cfg.to_dict(), **overrides})


def add_path_format_arg(p: argparse.ArgumentParser) -> None:
    """``--format-path``: how input/ROI paths appear in every output."""
    p.add_argument(
        "--format-path",
        choices=("absolute", "relative", "basename"),
        default="relative",
        help="how input and ROI paths appear in results, reports, CSV rows and figure "
        "titles (default relative to the current folder; --no-phi implies basename)",
    )


def path_format_from_args(args: argparse.Namespace) -> str:
    """The path format: ``basename`` with ``--no-phi``, else ``--format-path``."""
    if getattr(args, "no_phi", False):
        return "basename"
    return getattr(args, "format_path", None) or "relative"


def add_log_args(p: argparse.ArgumentParser) -> None:
    """``-v``/``-q``/``--log-file`` (on the top-level parser)."""
    g = p.add_argument_group("logging")
    g.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: debug)"
    )
    g.add_argument("-q", "--quiet", action="store_true", help="only errors on stderr")
    g.add_argument("--log-file", metavar="FILE", help="also write the log (with audit lines) here")
