"""Constants shared across layers, in a module that imports nothing.

The command-line parser reads some of them (argparse ``choices``), so they live here
rather than in the modules that need numpy or scipy: ``tbscore --help`` imports this
module only.
"""

from __future__ import annotations

__all__ = ["LABELS", "CALIBRATION_METHODS"]

#: The lumbar vertebrae scored, top to bottom: the one L1–L4 label constant.
LABELS: tuple[str, ...] = ("L1", "L2", "L3", "L4")

#: Calibration fits (:func:`tbscore.core.calibration.fit_calibration`).
CALIBRATION_METHODS: tuple[str, ...] = ("deming", "ols")
