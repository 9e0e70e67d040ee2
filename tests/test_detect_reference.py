"""Detection finds the same ROIs as before the issue-14 speed rewrite.

``tests/detect_ref/rois.json`` was written by ``tests/detect_ref/make_reference.py``
with the detector as it was before any speed change; every vertebra must keep its
label and overlap its reference ROI (outline and default inset) with IoU >= 0.999.
"""

from __future__ import annotations

import importlib.util
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest

HERE = Path(__file__).resolve().parent / "detect_ref"
_spec = importlib.util.spec_from_file_location("make_reference", HERE / "make_reference.py")
ref_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ref_mod)


@pytest.mark.slow
def test_same_rois_as_reference_implementation():
    ref = json.loads((HERE / "rois.json").read_text())
    seen = set()
    with tempfile.TemporaryDirectory() as tmp:
        for name, image, spacing in ref_mod.cases(Path(tmp)):
            seen.add(name)
            now = ref_mod.detect_case(image, spacing)
            want = ref[name]
            shape = tuple(want["shape"])
            assert now["shape"] == want["shape"], name
            for key in ("outline", "default"):
                assert sorted(now[key]) == sorted(want[key]), f"{name} {key}: labels differ"
                for label, runs in want[key].items():
                    a = ref_mod.mask_from_runs(runs, shape)
                    b = ref_mod.mask_from_runs(now[key][label], shape)
                    iou = np.count_nonzero(a & b) / max(np.count_nonzero(a | b), 1)
                    assert iou >= 0.999, f"{name} {key} {label}: IoU {iou:.4f}"
    assert seen == set(ref), "reference cases missing or added"


def test_run_encoding_round_trips():
    rng = np.random.default_rng(3)
    m = rng.random((17, 23)) > 0.6
    assert np.array_equal(ref_mod.mask_from_runs(ref_mod._runs(m), m.shape), m)
