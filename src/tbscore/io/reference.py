"""Read T/Z-score reference table files (``tbscore-reference/1`` JSON).

Parsing and validation are :class:`tbscore.clinical.reference.ReferenceTable`'s; this
module only reads the file (the clinical layer sits above I/O).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tbscore.errors import InputError

__all__ = ["load_reference_table"]


def load_reference_table(path: str | Path) -> dict[str, Any]:
    """The JSON document of a reference table file.

    Raises
    ------
    InputError
        Missing or unreadable file, or not a JSON object (naming the file).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError("reference table file does not exist", str(p)) from None
    except (OSError, ValueError) as exc:
        raise InputError(f"unreadable reference table ({exc})", str(p)) from exc
    if not isinstance(data, dict):
        raise InputError("reference table is not a JSON object", str(p))
    return data
