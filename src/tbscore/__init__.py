"""tbscore: an open, documented Trabecular Bone Score (TBS) engine.

The index is the slope near the origin of the log–log experimental variogram of the
gray levels inside the vertebral ROIs (L1–L4) of a lumbar-spine DXA image. Values are
*not* interchangeable with those of the commercial TBS iNsight software unless
calibrated against paired reference values.

This module is a lazy facade: ``import tbscore`` loads nothing heavy (no numba, scipy,
matplotlib or pydicom); each public name is imported from its module on first use
(module ``__getattr__``, PEP 562), so ``tbscore.calc``, ``tbscore.Settings``,
``tbscore.load_dicom`` and ``tbscore.batch(...)`` work as before.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tbscore._version import __version__

if TYPE_CHECKING:  # for type checkers and IDEs; at run time see __getattr__
    from tbscore import batch
    from tbscore.api import calc
    from tbscore.core.result import TBSResult, VertebraResult
    from tbscore.core.roi import VertebraROIs
    from tbscore.core.settings import Settings, load_settings
    from tbscore.errors import TBSError
    from tbscore.io.load import DXAImage, load_dicom

#: Public name -> the module it lives in (imported on first access).
_LAZY: dict[str, str] = {
    "calc": "tbscore.api",
    "load_dicom": "tbscore.io.load",
    "DXAImage": "tbscore.io.load",
    "load_settings": "tbscore.core.settings",
    "Settings": "tbscore.core.settings",
    "TBSError": "tbscore.errors",
    "TBSResult": "tbscore.core.result",
    "VertebraResult": "tbscore.core.result",
    "VertebraROIs": "tbscore.core.roi",
}

__all__ = [
    "__version__",
    "calc",
    "load_dicom",
    "load_settings",
    "DXAImage",
    "Settings",
    "TBSError",
    "TBSResult",
    "VertebraResult",
    "VertebraROIs",
    "batch",
]


def __getattr__(name: str) -> Any:
    """Import a public name (or the ``tbscore.batch`` package) on first use.

    ``tbscore.batch`` is the batch package and is callable:
    ``tbscore.batch(paths, output, ...)`` returns a pandas DataFrame.
    """
    if name == "batch":
        return importlib.import_module("tbscore.batch")
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later accesses skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
