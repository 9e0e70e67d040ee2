"""Reference ROIs of the detector as it is *before* the issue-14 speed rewrite.

Run from the repository root: ``python tests/detect_ref/make_reference.py`` (writes
``tests/detect_ref/rois.json``). Only rerun it when detection is *meant* to change;
``tests/test_detect_reference.py`` pins every later implementation to this file
(IoU >= 0.999 per vertebra, identical labels).

Cases: every accuracy condition of ``benchmarks/bench_detect.py`` (``CONDITIONS``, built
by its ``make_case``) at seeds 1 and 2, Hurst 0.35, and the four ``sample_dicom`` images.
Each ROI is stored as row runs ``[row, first_col, last_col + 1]`` of the outline
(``roi_inset_mm=0``) and of the default ROI.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[2]
OUT = Path(__file__).with_name("rois.json")
SEEDS = (1, 2)
HURST = 0.35


def _runs(mask: np.ndarray) -> list[list[int]]:
    out = []
    for r in np.flatnonzero(mask.any(axis=1)):
        row = np.concatenate([[False], mask[r], [False]]).astype(np.int8)
        edges = np.flatnonzero(np.diff(row))
        out.extend([int(r), int(a), int(b)] for a, b in zip(edges[::2], edges[1::2], strict=True))
    return out


def mask_from_runs(runs: list[list[int]], shape: tuple[int, int]) -> np.ndarray:
    """Inverse of the row-run encoding."""
    m = np.zeros(shape, dtype=bool)
    for r, a, b in runs:
        m[r, a:b] = True
    return m


def cases(tmp: Path):
    """``(name, image, spacing_mm)`` of every reference case."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from bench_detect import CONDITIONS, make_case
    from tbscore.io.load import load_dicom

    for name, (kw, io) in CONDITIONS.items():
        for seed in SEEDS:
            image, spacing, _ = make_case(kw, io, HURST, seed, tmp)
            yield f"{name} / seed {seed}", image, tuple(spacing)
    for p in sorted((ROOT / "sample_dicom").glob("*.dcm")):
        dxa = load_dicom(p)
        yield f"sample_dicom/{p.name}", dxa.pixels, dxa.spacing_mm


def detect_case(image: np.ndarray, spacing: tuple[float, float]) -> dict:
    """Labels and row runs of the outline and the default ROI of one image."""
    from tbscore.core.detect import detect

    out = {"shape": list(image.shape)}
    for key, kw in (("outline", {"roi_inset_mm": 0.0}), ("default", {})):
        rois = detect(image, spacing, **kw)
        out[key] = {r.label: _runs(r.mask) for r in rois.rois}
    return out


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        ref = {name: detect_case(img, sp) for name, img, sp in cases(Path(tmp))}
    OUT.write_text(json.dumps(ref, separators=(",", ":"), sort_keys=True) + "\n")
    print(f"{OUT}: {len(ref)} cases")


if __name__ == "__main__":
    main()
