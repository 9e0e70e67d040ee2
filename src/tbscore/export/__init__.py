"""CPT 77090: de-identified export packages.

:mod:`tbscore.export.deid` de-identifies one data set (PS3.15 Annex E);
:mod:`tbscore.export.package` collects inputs and writes the package, its manifest and
the separate mapping file.
"""

from tbscore.export.deid import (
    ALLOWED_KEYWORDS,
    BODY_PART_TERMS,
    EMPTIED_SEQUENCES,
    EMPTIED_TYPE2_KEYWORDS,
    EXPORT_FORMAT,
    IMAGE_TYPE_TERMS,
    MANIFEST_COLUMNS,
    MAPPING_FORMAT,
    MODALITY_TERMS,
    PHI_SOURCE_KEYWORDS,
    RESCALE_TYPE_TERMS,
    RETAINED_PATIENT_CHARACTERISTICS,
    ExportError,
    UIDMapper,
    collect_phi_tokens,
    deidentify_dataset,
    exclusion_reason,
    public_modality,
)
from tbscore.export.package import ExportItem, ExportReport, default_mapping_path, export_package

__all__ = [
    "ALLOWED_KEYWORDS",
    "BODY_PART_TERMS",
    "EMPTIED_SEQUENCES",
    "EMPTIED_TYPE2_KEYWORDS",
    "EXPORT_FORMAT",
    "IMAGE_TYPE_TERMS",
    "MANIFEST_COLUMNS",
    "MAPPING_FORMAT",
    "MODALITY_TERMS",
    "PHI_SOURCE_KEYWORDS",
    "RESCALE_TYPE_TERMS",
    "RETAINED_PATIENT_CHARACTERISTICS",
    "ExportError",
    "ExportItem",
    "ExportReport",
    "UIDMapper",
    "collect_phi_tokens",
    "default_mapping_path",
    "deidentify_dataset",
    "exclusion_reason",
    "export_package",
    "public_modality",
]
