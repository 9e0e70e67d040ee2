"""Precision (ISCD RMS-SD, CV %, LSC) and the follow-up change call."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbscore.cli import EXIT_ERROR, EXIT_OK, main
from tbscore.clinical.precision import LSC_FACTOR, Precision, compare, precision
from tbscore.errors import PrecisionError

values = st.lists(st.floats(0.8, 1.6), min_size=2, max_size=4)
groups = st.dictionaries(st.text(min_size=1, max_size=4), values, min_size=1, max_size=12)


def test_hand_computed_example():
    # two patients x 2 scans: SDs 0.02/sqrt(2) and 0.04/sqrt(2)
    p = precision({"a": [1.00, 1.02], "b": [1.20, 1.24]})
    sd_a, sd_b = 0.02 / math.sqrt(2), 0.04 / math.sqrt(2)
    assert p.rms_sd == pytest.approx(math.sqrt((sd_a**2 + sd_b**2) / 2))
    cv = math.sqrt(((sd_a / 1.01) ** 2 + (sd_b / 1.22) ** 2) / 2) * 100
    assert p.rms_cv_percent == pytest.approx(cv)
    assert p.lsc == pytest.approx(2.77 * p.rms_sd)
    assert (p.n_patients, p.n_scans, p.dof) == (2, 4, 2)
    assert p.warnings and "30" in p.warnings[0]


def test_unequal_repeats_are_pooled_by_degrees_of_freedom():
    x = [1.0, 1.1, 1.2]
    y = [1.3, 1.34]
    p = precision({"x": x, "y": y, "single": [1.5]})
    ss = sum((v - np.mean(x)) ** 2 for v in x) + sum((v - np.mean(y)) ** 2 for v in y)
    assert p.rms_sd == pytest.approx(math.sqrt(ss / 3)) and p.n_patients == 2


@settings(max_examples=60, deadline=None)
@given(g=groups, shift=st.floats(-0.5, 0.5), scale=st.floats(0.5, 2.0))
def test_rms_sd_shift_invariant_and_scale_equivariant(g, shift, scale):
    p = precision(g)
    shifted = precision({k: [v + shift for v in vs] for k, vs in g.items()})
    scaled = precision({k: [v * scale for v in vs] for k, vs in g.items()})
    assert shifted.rms_sd == pytest.approx(p.rms_sd, abs=1e-9)
    assert scaled.rms_sd == pytest.approx(scale * p.rms_sd, rel=1e-9, abs=1e-12)
    assert scaled.rms_cv_percent == pytest.approx(p.rms_cv_percent, rel=1e-9, abs=1e-9)
    assert p.lsc == pytest.approx(LSC_FACTOR * p.rms_sd)
    if p.lsc > 0:  # a saved precision must have a positive LSC
        assert Precision.from_dict(json.loads(json.dumps(p.to_dict()))) == p


def test_lsc_false_positive_rate_is_about_5_percent():
    """Coverage: with the LSC estimated from 30 x 2 repeat scans of true SD sigma, the
    change of two scans of an unchanged patient exceeds it in about 5 % of cases."""
    rng = np.random.default_rng(2026)
    sigma, trials, calls = 0.03, 400, 0
    false_calls = 0
    for _ in range(trials):
        truth = rng.uniform(1.1, 1.4, 30)
        g = {str(i): list(t + sigma * rng.standard_normal(2)) for i, t in enumerate(truth)}
        lsc = precision(g).lsc
        pair = 1.25 + sigma * rng.standard_normal((50, 2))
        for a, b in pair:
            calls += 1
            false_calls += bool(compare(a, b, lsc).significant)
    rate = false_calls / calls
    assert 0.035 < rate < 0.07, rate  # 5 % nominal; 2.77 = 1.96 sqrt(2)


def test_true_change_is_detected():
    assert compare(1.20, 1.30, 0.05).significant is True
    c = compare(1.28, 1.30, 0.05)
    assert c.significant is False and "no significant change" in c.statement
    assert compare(1.2, 1.3, None).significant is None


def test_bad_inputs():
    with pytest.raises(PrecisionError, match="repeat"):
        precision({"a": [1.0], "b": [1.1]})
    with pytest.raises(PrecisionError, match="non-finite"):
        precision({"a": [1.0, float("nan")]})
    with pytest.raises(PrecisionError, match="LSC"):
        compare(1.0, 1.1, -1.0)
    with pytest.raises(PrecisionError):
        Precision.from_dict({"format": "x"})


def test_cli_precision(tmp_path, capsys):
    base = json.loads(
        __import__("tbscore")
        .calc("sample_dicom/phantom_a_square.dcm", roi="sample_dicom/phantom_a_square.roi.json")
        .to_json()
    )
    rng = np.random.default_rng(0)
    files = []
    for pid in range(15):
        for scan in range(3):
            d = json.loads(json.dumps(base))
            d["metadata"]["patient_id"] = f"P{pid}"
            d["l1_l4"] = 1.2 + 0.01 * pid + 0.02 * rng.standard_normal()
            f = tmp_path / f"p{pid}_{scan}.json"
            f.write_text(json.dumps(d))
            files.append(str(f))
    out = tmp_path / "precision.json"
    assert main(["precision", *files, "-o", str(out)]) == EXIT_OK
    p = Precision.from_dict(json.loads(out.read_text()))
    assert (p.n_patients, p.n_scans, p.dof) == (15, 45, 30) and not p.warnings
    assert "LSC" in capsys.readouterr().out
    d = json.loads(json.dumps(base))
    d["metadata"].pop("patient_id")
    bad = tmp_path / "nopid.json"
    bad.write_text(json.dumps(d))
    assert main(["precision", str(bad), "-o", str(tmp_path / "x.json")]) == EXIT_ERROR
    assert "PatientID" in capsys.readouterr().err
