"""SOP classes and transfer syntaxes the node accepts.

Plain UID strings, so that this module (and the CLI help) needs no pynetdicom.
"""

from __future__ import annotations

__all__ = [
    "VERIFICATION",
    "DXA_IMAGE_CLASSES",
    "STUDY_EXTRA_CLASSES",
    "ENHANCED_SR",
    "UNCOMPRESSED_SYNTAXES",
    "COMPRESSED_SYNTAXES",
    "ACCEPT_POLICIES",
    "accepted_classes",
    "available_syntaxes",
]

VERIFICATION = "1.2.840.10008.1.1"

#: Image SOP classes a densitometer sends its lumbar-spine image as, all scored:
#: Secondary Capture (single frame, and the multi-frame grayscale byte/word variants),
#: Digital X-Ray for presentation and for processing, Computed Radiography.
DXA_IMAGE_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.7": "Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.2": "Multi-frame Grayscale Byte Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.3": "Multi-frame Grayscale Word Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
    "1.2.840.10008.5.1.4.1.1.1": "Computed Radiography Image Storage",
}

ENHANCED_SR = "1.2.840.10008.5.1.4.1.1.88.22"

#: The rest of a densitometer's study (``--accept study``): stored, never scored.
STUDY_EXTRA_CLASSES: dict[str, str] = {
    "1.2.840.10008.5.1.4.1.1.7.1": "Multi-frame Single Bit Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.7.4": "Multi-frame True Color Secondary Capture Image Storage",
    "1.2.840.10008.5.1.4.1.1.104.1": "Encapsulated PDF Storage",
    "1.2.840.10008.5.1.4.1.1.88.11": "Basic Text SR Storage",
    ENHANCED_SR: "Enhanced SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.33": "Comprehensive SR Storage",
    "1.2.840.10008.5.1.4.1.1.88.59": "Key Object Selection Document Storage",
    "1.2.840.10008.5.1.4.1.1.11.1": "Grayscale Softcopy Presentation State Storage",
    "1.2.840.10008.5.1.4.1.1.66": "Raw Data Storage",
}

#: ``--accept`` values.
ACCEPT_POLICIES = ("dxa", "study", "all")

UNCOMPRESSED_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.1",  # Explicit VR Little Endian
    "1.2.840.10008.1.2",  # Implicit VR Little Endian
    "1.2.840.10008.1.2.1.99",  # Deflated Explicit VR Little Endian
    "1.2.840.10008.1.2.2",  # Explicit VR Big Endian (retired, still sent by old devices)
)

#: Compressed syntaxes, offered only when pydicom has a working decoder for them.
COMPRESSED_SYNTAXES: tuple[str, ...] = (
    "1.2.840.10008.1.2.4.50",  # JPEG Baseline
    "1.2.840.10008.1.2.4.51",  # JPEG Extended
    "1.2.840.10008.1.2.4.57",  # JPEG Lossless
    "1.2.840.10008.1.2.4.70",  # JPEG Lossless SV1
    "1.2.840.10008.1.2.4.80",  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81",  # JPEG-LS Near-lossless
    "1.2.840.10008.1.2.4.90",  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91",  # JPEG 2000
    "1.2.840.10008.1.2.5",  # RLE Lossless
)


def available_syntaxes() -> list[str]:
    """Uncompressed syntaxes, then each compressed syntax pydicom can decode here
    (``pip install 'tbscore[jpeg]'`` adds the JPEG family)."""
    out = list(UNCOMPRESSED_SYNTAXES)
    try:
        from pydicom.pixels import get_decoder
    except ImportError:  # pragma: no cover - pydicom < 3
        return out
    for uid in COMPRESSED_SYNTAXES:
        try:
            if get_decoder(uid).is_available:
                out.append(uid)
        except Exception:  # pragma: no cover - unknown to this pydicom
            continue
    return out


def accepted_classes(policy: str) -> dict[str, str] | None:
    """SOP classes accepted under ``policy``: ``"dxa"`` the DXA image classes,
    ``"study"`` those plus :data:`STUDY_EXTRA_CLASSES`; ``"all"`` returns ``None``
    (every storage class pynetdicom knows)."""
    if policy == "dxa":
        return dict(DXA_IMAGE_CLASSES)
    if policy == "study":
        return {**DXA_IMAGE_CLASSES, **STUDY_EXTRA_CLASSES}
    if policy == "all":
        return None
    from tbscore.errors import NetError

    raise NetError(f"--accept must be one of {', '.join(ACCEPT_POLICIES)}, not {policy!r}")
