"""Logging: the library logger ``tbscore`` and one audit line per scored input.

The library installs no handler (standard practice: the application decides); the CLI
configures ``-v``/``-q``/``--log-file`` (:func:`configure_cli_logging`). Audit lines go
to the logger ``tbscore.audit`` at INFO level, one per scored input, as
``audit {json}`` with the input's SHA-256, the outcome, the L1-L4 value, the tbscore
version and the settings digest. They hold no path, name or UID (no PHI) unless the
caller passes ``source`` with ``include_phi=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from typing import Any

from tbscore._version import __version__

__all__ = ["logger", "audit_logger", "audit", "file_sha256_or_none", "configure_cli_logging"]

#: The library logger (no handlers installed by the library).
logger = logging.getLogger("tbscore")
#: Audit lines, one per scored input.
audit_logger = logging.getLogger("tbscore.audit")


def file_sha256_or_none(path: str | os.PathLike | None) -> str | None:
    """SHA-256 of a file's bytes, or ``None`` when it cannot be read."""
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except (OSError, TypeError, ValueError):
        return None


def audit(
    *,
    input_sha256: str | None,
    outcome: str,
    value: float | None = None,
    settings_digest: str | None = None,
    source: str | None = None,
    include_phi: bool = False,
    **extra: Any,
) -> dict[str, Any]:
    """Log one audit line for a scored input and return its fields.

    Parameters
    ----------
    input_sha256 : str or None
        SHA-256 of the input file (identifies it without naming it).
    outcome : str
        ``ok``, ``incomplete``, ``error:<code>``, ``excluded:<code>``, ``duplicate``...
    value : float, optional
        The L1-L4 value (raw index, dimensionless).
    settings_digest : str, optional
        :meth:`tbscore.core.settings.Settings.digest`.
    source : str, optional
        The input path; logged only with ``include_phi=True`` (a path can name the
        patient).
    **extra
        More JSON-safe fields (e.g. ``command="calc"``).
    """
    fields: dict[str, Any] = {
        "input_sha256": input_sha256,
        "outcome": outcome,
        "value": None if value is None or not math.isfinite(value) else round(value, 6),
        "tbscore_version": __version__,
        "settings_digest": settings_digest,
    }
    fields.update(extra)
    if include_phi and source is not None:
        fields["source"] = str(source)
    if audit_logger.isEnabledFor(logging.INFO):  # the line's text only when it is logged
        audit_logger.info("audit %s", json.dumps(fields, sort_keys=True, separators=(",", ":")))
    return fields


def configure_cli_logging(verbose: int = 0, quiet: bool = False, log_file: str | None = None):
    """Handlers for the ``tbscore`` command: stderr at WARNING (``-v`` INFO, ``-vv``
    DEBUG, ``-q`` ERROR) and, with ``log_file``, a file at INFO or lower (audit lines
    included). Returns the handlers added (removed again by the caller)."""
    level = logging.ERROR if quiet else [logging.WARNING, logging.INFO][min(verbose, 1)]
    if verbose >= 2:
        level = logging.DEBUG
    fmt = logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    handlers: list[logging.Handler] = []
    err = logging.StreamHandler()
    err.setLevel(level)
    err.setFormatter(logging.Formatter("tbscore: %(levelname)s: %(message)s"))
    handlers.append(err)
    if log_file:
        fh = logging.FileHandler(log_file, encoding="utf-8")
        fh.setLevel(min(level, logging.INFO))
        fh.setFormatter(fmt)
        handlers.append(fh)
    for h in handlers:
        logger.addHandler(h)
    logger.setLevel(min(h.level for h in handlers))
    return handlers
