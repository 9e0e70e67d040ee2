"""Constants shared across layers, in a module that imports nothing.

The command-line parser reads some of them (argparse ``choices``), so they live here
rather than in the modules that need numpy or scipy: ``tbscore --help`` imports this
module only.
"""

from __future__ import annotations

__all__ = [
    "LABELS",
    "CALIBRATION_METHODS",
    "COLOUR_PHOTOMETRICS",
    "ESTIMATORS",
    "PROFILE_INTERVAL_ESTIMATORS",
    "DEFAULT_ROI_INSET_MM",
    "MIN_CONFIDENCE",
    "MIN_VERTEBRA_CONFIDENCE",
]

#: The lumbar vertebrae scored, top to bottom: the one L1–L4 label constant.
LABELS: tuple[str, ...] = ("L1", "L2", "L3", "L4")

#: Calibration fits (:func:`tbscore.core.calibration.fit_calibration`).
CALIBRATION_METHODS: tuple[str, ...] = ("deming", "ols")

#: Photometric Interpretations of colour images (PS3.3 C.7.6.3.1.2): refused by the
#: loader (:class:`tbscore.errors.ColourImageError`) and excluded from exports. The one
#: colour set; the loader's copy lacked ``YBR_PARTIAL_422``.
COLOUR_PHOTOMETRICS: frozenset[str] = frozenset(
    {
        "RGB",
        "YBR_FULL",
        "YBR_FULL_422",
        "YBR_ICT",
        "YBR_RCT",
        "YBR_PARTIAL_420",
        "YBR_PARTIAL_422",
        "PALETTE COLOR",
    }
)

#: Slope estimators (:mod:`tbscore.core.estimators`), read by ``Settings`` validation.
ESTIMATORS: tuple[str, ...] = ("ols", "nugget", "increment")

#: Estimators whose 95 % interval per vertebra is the profile interval of the exponent
#: (:func:`tbscore.core.uncertainty.profile_interval`: asymmetric, the ``n >= 0`` bound
#: included); the others' is ``value -/+ 1.96 se``. Report and SR word it from this.
PROFILE_INTERVAL_ESTIMATORS: frozenset[str] = frozenset({"nugget"})

# Defaults of the automatic detection (:func:`tbscore.core.detect.detect`), here so that
# ``Settings`` (which carries them, see :mod:`tbscore.core.settings`) and the detector
# share one value without ``Settings`` importing scipy.

#: Default distance (mm) by which the ROI stays inside the detected body outline.
DEFAULT_ROI_INSET_MM: float = 3.0
#: Below this overall confidence detection raises :class:`tbscore.errors.DetectionError`.
MIN_CONFIDENCE: float = 0.4
#: A detected vertebra below this confidence is returned excluded (with the reason).
MIN_VERTEBRA_CONFIDENCE: float = 0.3
