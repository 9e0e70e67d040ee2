"""A small synthetic cohort for the cohort-workflow tests and the docs example.

Eight subjects on two scanner models at two sites, two visits each (texture roughens
from visit 1 to 2 in half of them), one planted failure (a file that is not an
image), one outlier (a very rough texture), one scan that needs review (texture buried
in noise: low R²) and the manifest that lists them.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np

from tbscore.io.write import write_secondary_capture
from tbscore.sim.phantom import synthetic_spine

SCANNERS = (("Acme Medical", "Densi 1000", "2.1"), ("Bone Corp", "Lumbar X", "7.0"))


def make_cohort(root: Path, *, n_subjects: int = 8, shape=(384, 192), seed: int = 7) -> Path:
    """Write DICOMs, ROI side-cars and ``manifest.csv`` under ``root``; return the manifest."""
    rng = np.random.default_rng(seed)
    img_dir = root / "images"
    img_dir.mkdir(parents=True, exist_ok=True)
    rows = []
    for s in range(n_subjects):
        manufacturer, model, software = SCANNERS[s % 2]
        site = "north" if s < n_subjects // 2 else "south"
        age = 50 + 4 * s
        for visit in (1, 2):
            hurst = 0.45 + 0.02 * s - (0.06 if (visit == 2 and s % 2 == 0) else 0.0)
            if s == n_subjects - 1 and visit == 2:
                hurst = 0.12  # the outlier
            pixels, truth = synthetic_spine(hurst, shape=shape, rng=rng, noise_sd=0.5)
            name = f"sub{s:02d}_v{visit}.dcm"
            write_secondary_capture(
                img_dir / name,
                pixels,
                truth["spacing_mm"] if "spacing_mm" in truth else (1.0, 1.0),
                patient={
                    "name": f"COHORT^S{s:02d}",
                    "id": f"C{s:03d}",
                    "sex": "F" if s % 3 else "M",
                    "age": f"{age:03d}Y",
                    "height_m": 1.6,
                    "weight_kg": 55.0 + 3 * s,
                },
                study_date=f"20{20 + visit}0301",
                manufacturer=manufacturer,
                extra={"ManufacturerModelName": model, "SoftwareVersions": software},
                uid_entropy=f"cohort/{seed}/{s}/{visit}",
            )
            rows.append(
                {
                    "image": f"images/{name}",
                    "subject": f"S{s:02d}",
                    "visit": str(visit),
                    "site": site,
                    "arm": "A" if s % 2 else "B",
                }
            )
    # needs review: texture buried in noise (low R^2 fits)
    pixels, _ = synthetic_spine(0.5, shape=shape, rng=rng, noise_sd=60.0)
    write_secondary_capture(
        img_dir / "noisy.dcm",
        pixels,
        (1.0, 1.0),
        patient={"name": "COHORT^NOISY", "id": "C098", "sex": "F", "age": "061Y"},
        study_date="20210301",
        manufacturer=SCANNERS[0][0],
        extra={"ManufacturerModelName": SCANNERS[0][1], "SoftwareVersions": SCANNERS[0][2]},
        uid_entropy=f"cohort/{seed}/noisy",
    )
    rows.append(
        {"image": "images/noisy.dcm", "subject": "S98", "visit": "1", "site": "north", "arm": "B"}
    )
    bad = img_dir / "broken.dcm"
    bad.write_bytes(b"not a dicom file at all" * 10)
    rows.append(
        {"image": "images/broken.dcm", "subject": "S99", "visit": "1", "site": "north", "arm": "A"}
    )
    manifest = root / "manifest.csv"
    with open(manifest, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=["image", "subject", "visit", "site", "arm"])
        w.writeheader()
        w.writerows(rows)
    return manifest
