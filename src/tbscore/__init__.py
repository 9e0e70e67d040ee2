"""tbscore: an open, documented Trabecular Bone Score (TBS) engine.

The index is the slope near the origin of the log–log experimental variogram of the
gray levels inside the vertebral ROIs (L1–L4) of a lumbar-spine DXA image. Values are
*not* interchangeable with those of the commercial TBS iNsight software unless
calibrated against paired reference values.
"""

from typing import Any

from tbscore._version import __version__
from tbscore.api import calc
from tbscore.core.result import TBSResult, VertebraResult
from tbscore.core.roi import VertebraROIs
from tbscore.core.settings import Settings, load_settings
from tbscore.errors import TBSError
from tbscore.io.load import DXAImage, load_dicom

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
    "batch",  # noqa: F822 - lazy, see __getattr__
]


def __getattr__(name: str) -> Any:
    """Import ``tbscore.batch`` on first use (keeps ``import tbscore`` light).

    ``tbscore.batch`` is the batch package and is callable:
    ``tbscore.batch(paths, output, ...)`` returns a pandas DataFrame.
    """
    if name == "batch":
        import importlib

        return importlib.import_module("tbscore.batch")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
