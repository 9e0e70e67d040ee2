"""Calibration: recovery of a known linear map, CIs, files, application, CLI."""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path

import numpy as np
import pytest

from conftest import SAMPLE_DIR
from tbscore import calc
from tbscore.calibrate import calibrate_pairs
from tbscore.cli.calibrate import register as register_cli
from tbscore.core.calibration import (
    Calibration,
    CalibrationError,
    apply_calibration,
    bland_altman,
    fit_calibration,
)
from tbscore.core.settings import Settings
from tbscore.io.calibration import load_calibration, save_calibration
from tbscore.io.write import write_secondary_capture
from tbscore.render.calibration import bland_altman_figure
from tbscore.sim.phantom import synthetic_spine

A, B = 0.3, 0.8
LABELS = ("L1", "L2", "L3", "L4")


def _pairs(seed: int, n: int = 60, sd_x: float = 0.02, sd_y: float = 0.02):
    """True values in the clinical range; tbscore and reference both noisy."""
    rng = np.random.default_rng(seed)
    true = rng.uniform(1.0, 1.5, n)
    x = true + rng.normal(0.0, sd_x, n)
    y = A + B * true + rng.normal(0.0, sd_y, n)
    return x, y


def test_ols_recovers_known_map():
    x, y = _pairs(1, sd_x=0.0)
    cal = fit_calibration(x, y, method="ols")
    assert cal.a_ci[0] <= A <= cal.a_ci[1]
    assert cal.b_ci[0] <= B <= cal.b_ci[1]
    assert cal.a == pytest.approx(A, abs=0.06) and cal.b == pytest.approx(B, abs=0.05)
    assert cal.residual_sd == pytest.approx(0.02, rel=0.3)
    assert cal.n == 60 and cal.r > 0.9 and cal.error_ratio is None
    assert cal.ci_method.startswith("t")
    # OLS agrees with numpy
    b, a = np.polyfit(x, y, 1)
    assert (cal.a, cal.b) == (pytest.approx(a), pytest.approx(b))


@pytest.mark.parametrize("ci", ["jackknife", "bootstrap"])
def test_deming_recovers_known_map(ci):
    x, y = _pairs(2)
    lam = 0.02**2 / 0.02**2
    cal = fit_calibration(x, y, method="deming", error_ratio=lam, ci=ci, n_boot=400, seed=7)
    assert cal.a_ci[0] <= A <= cal.a_ci[1]
    assert cal.b_ci[0] <= B <= cal.b_ci[1]
    assert cal.b == pytest.approx(B, abs=0.08)
    assert cal.error_ratio == lam
    if ci == "bootstrap":  # fixed seed: reproducible
        again = fit_calibration(x, y, method="deming", ci=ci, n_boot=400, seed=7)
        assert again.a_ci == cal.a_ci and again.b_ci == cal.b_ci
        assert "seed 7" in cal.ci_method


def test_deming_corrects_attenuation_that_ols_shows():
    """With error in tbscore, OLS flattens the slope; Deming does not."""
    x, y = _pairs(3, n=400, sd_x=0.05, sd_y=0.04)
    ols = fit_calibration(x, y, method="ols")
    dem = fit_calibration(x, y, method="deming", error_ratio=0.04**2 / 0.05**2)
    assert ols.b_ci[1] < B  # attenuated: the truth lies above the OLS interval
    assert dem.b_ci[0] <= B <= dem.b_ci[1]
    # lambda -> infinity (no error in x) gives OLS
    big = fit_calibration(x, y, method="deming", error_ratio=1e12)
    assert big.b == pytest.approx(ols.b, rel=1e-6)


def test_confidence_interval_coverage_sanity():
    reps = 40
    hits = {"ols": 0, "deming": 0}
    for seed in range(reps):
        x, y = _pairs(100 + seed, n=30)
        for method in hits:
            cal = (
                fit_calibration(x, y, method=method)
                if method == "deming"
                else fit_calibration(*_pairs(100 + seed, n=30, sd_x=0.0), method="ols")
            )
            hits[method] += cal.b_ci[0] <= B <= cal.b_ci[1]
    for method, h in hits.items():
        assert 0.80 <= h / reps <= 1.0, (method, h)


def test_bland_altman_and_figure():
    ba = bland_altman([1.0, 1.2, 1.4, 1.1], [1.1, 1.1, 1.3, 1.2])
    d = np.array([-0.1, 0.1, 0.1, -0.1])
    assert ba["mean_diff"] == pytest.approx(d.mean())
    assert ba["loa_high"] - ba["loa_low"] == pytest.approx(2 * 1.96 * d.std(ddof=1))
    x, y = _pairs(4)
    cal = fit_calibration(x, y)
    assert abs(cal.bland_altman["mean_diff"]) < 1e-12  # the fitted line goes through means
    assert cal.bland_altman_raw["mean_diff"] == pytest.approx(np.mean(x - y))
    import matplotlib
    from matplotlib.figure import Figure

    before = matplotlib._pylab_helpers.Gcf.get_all_fig_managers()
    fig = bland_altman_figure(cal, x, y)
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert matplotlib._pylab_helpers.Gcf.get_all_fig_managers() == before


def test_round_trip_files(tmp_path):
    x, y = _pairs(5)
    cal = fit_calibration(x, y, name="site A", settings=Settings())
    path = save_calibration(cal, tmp_path / "c.json")
    back = load_calibration(path)
    assert back == cal
    assert Calibration.from_dict(cal.to_dict()) == cal
    assert back.settings_digest == Settings().digest()
    with pytest.raises(CalibrationError):
        Calibration.from_dict({"format": "nope"})
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(CalibrationError):
        load_calibration(tmp_path / "bad.json")
    with pytest.raises(CalibrationError):
        load_calibration(tmp_path / "missing.json")


def test_fit_errors():
    with pytest.raises(CalibrationError, match="at least 3"):
        fit_calibration([1.0, 2.0], [1.0, 2.0])
    with pytest.raises(CalibrationError, match="all equal"):
        fit_calibration([1.0, 1.0, 1.0], [1.0, 2.0, 3.0])
    with pytest.raises(CalibrationError, match="method"):
        fit_calibration([1.0, 2.0, 3.0], [1.0, 2.0, 3.5], method="passing-bablok")
    with pytest.raises(CalibrationError):
        fit_calibration([1.0, 2.0, np.nan], [1.0, 2.0, 3.0])


@pytest.fixture(scope="module")
def scans(tmp_path_factory):
    """Four textured spine DICOM files with ROI files, in a folder with a pairs CSV."""
    tmp = tmp_path_factory.mktemp("calib")
    (tmp / "img").mkdir()
    rows = []
    for i, h in enumerate((0.35, 0.45, 0.55, 0.65)):
        img, truth = synthetic_spine(h, shape=(200, 100), spacing_mm=(1.0, 1.0), rng=20 + i)
        write_secondary_capture(tmp / "img" / f"s{i}.dcm", img, (1.0, 1.0))
        roi = {
            "format": "tbscore-roi/1",
            "units": "px",
            "vertebrae": [{"label": lab, "box": truth["vertebrae"][lab]["box"]} for lab in LABELS],
        }
        (tmp / "img" / f"s{i}.roi.json").write_text(json.dumps(roi))
        rows.append(f"img/s{i}.dcm")
    return tmp, rows


def test_calibrate_pairs_from_dicom_and_values(scans):
    tmp, paths = scans
    xs = [calc(tmp / p, roi=tmp / p.replace(".dcm", ".roi.json")).l1_l4 for p in paths]
    refs = [A + B * x for x in xs]
    with (tmp / "pairs.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "reference", "tbscore"])
        for p, r in zip(paths, refs, strict=True):
            w.writerow([p, f"{r:.12f}", ""])
        w.writerow(["", "1.30", "1.25"])  # a supplied value
        w.writerow(["img/missing.dcm", "1.2", ""])  # fails: left out, reported
    cal, records = calibrate_pairs(tmp / "pairs.csv", method="ols", name="t")
    assert cal.n == 5 and cal.values_source == "mixed"
    assert [r["status"] for r in records] == ["ok"] * 5 + ["error"]
    assert "dicom_read_error" in records[-1]["error"]
    assert all("img/" not in str(r) for r in records)  # no paths in the records
    assert cal.settings_digest == Settings().digest()
    # the four computed pairs lie on the line exactly; the fit passes near them
    assert cal.predict(xs[0]) == pytest.approx(refs[0], abs=0.05)


def test_apply_calibration_and_calc_with_calibration(scans, tmp_path):
    tmp, paths = scans
    dcm, roi = tmp / paths[0], tmp / paths[0].replace(".dcm", ".roi.json")
    cal = fit_calibration(*_pairs(6), name="site B", settings=Settings())
    result = calc(dcm, roi=roi)
    out = apply_calibration(result, cal)
    assert out.l1_l4 == result.l1_l4
    assert out.l1_l4_calibrated == pytest.approx(cal.a + cal.b * result.l1_l4)
    for v in out.vertebrae:
        assert v.calibrated_value == pytest.approx(cal.a + cal.b * v.value)
    assert out.calibration["name"] == "site B"
    assert out.csv_row()["calibration"] == "site B"
    assert not any("settings" in w for w in out.warnings)
    # a different settings digest is flagged
    other = apply_calibration(calc(dcm, roi=roi, settings={"lag_max_mm": 2.5}), cal)
    assert any("settings" in w for w in other.warnings)
    # through the API, from a file
    path = save_calibration(cal, tmp_path / "cal.json")
    via_api = calc(dcm, roi=roi, calibration=path)
    assert via_api.l1_l4_calibrated == pytest.approx(out.l1_l4_calibrated)
    doc = json.loads(via_api.to_json())
    assert doc["calibration"]["name"] == "site B"
    assert doc["vertebrae"][0]["calibrated_value"] == pytest.approx(
        out.vertebrae[0].calibrated_value
    )


def test_cli_calibrate(scans, tmp_path, capsys):
    tmp, _ = scans
    x, y = _pairs(8, n=20)
    pairs = tmp_path / "pairs.csv"
    pairs.write_text(
        "tbscore,reference\n" + "".join(f"{a},{b}\n" for a, b in zip(x, y, strict=True))
    )
    parser = argparse.ArgumentParser()
    register_cli(parser.add_subparsers(dest="command"))
    out = tmp_path / "calib.json"
    png = tmp_path / "ba.png"
    args = parser.parse_args(
        [
            "calibrate",
            str(pairs),
            "-o",
            str(out),
            "--method",
            "deming",
            "--plot",
            str(png),
            "--pairs-out",
            str(tmp_path / "rows.csv"),
        ]
    )
    assert args.func(args) == 0
    cal = load_calibration(out)
    assert cal.name == "calib" and cal.n == 20 and cal.values_source == "supplied"
    assert cal.settings_digest is None
    assert png.stat().st_size > 1000 and png.read_bytes()[:4] == b"\x89PNG"
    assert "Bland-Altman" in capsys.readouterr().out


def test_calibrate_pairs_finds_the_roi_batch_scores_with(tmp_path):
    """One ROI side-car rule (:func:`tbscore.io.sidecar.find_roi_file`) for calibrate,
    batch and export. Files named by UID (no DICOM extension) keep their dotted parts:
    the ROI of ``1.2.826.0.1.1`` is ``1.2.826.0.1.1.roi.json``. Before the shared rule,
    ``calibrate_pairs`` cut the last UID component, found no side-car and silently
    auto-detected ROIs, so the calibration was fitted on other ROIs than batch's."""
    import csv as _csv
    import shutil

    from tbscore.batch import run_batch
    from tbscore.io.load import load_dicom

    samples = sorted(SAMPLE_DIR.glob("phantom_*.dcm"))[:3]
    folder = tmp_path / "uid"
    folder.mkdir()
    roi_dir = tmp_path / "rois"
    roi_dir.mkdir()
    names = []
    for k, src in enumerate(samples, start=1):
        name = f"1.2.826.0.1.{k}"
        shutil.copy(src, folder / name)
        roi = src.with_name(src.stem + ".roi.json")
        if k == 3:  # found in --roi-dir under the SOP Instance UID, as batch finds it
            uid = load_dicom(src).metadata.sop_instance_uid
            shutil.copy(roi, roi_dir / f"{uid}.roi.json")
        else:
            shutil.copy(roi, folder / f"{name}.roi.json")
        names.append(name)
    with (tmp_path / "pairs.csv").open("w", newline="") as fh:
        w = _csv.writer(fh)
        w.writerow(["path", "reference"])
        for k, name in enumerate(names):
            w.writerow([f"uid/{name}", f"{1.2 + 0.05 * k:.2f}"])
    _, records = calibrate_pairs(tmp_path / "pairs.csv", method="ols", roi_dir=roi_dir)
    summary = run_batch(
        [folder], tmp_path / "batch.csv", roi_dir=roi_dir, progress=False, fsync=False
    )
    assert summary.counts.get("ok") == 3
    with (tmp_path / "batch.csv").open() as fh:
        batch_rows = {Path(r["input"]).name: r for r in _csv.DictReader(fh)}
    for name, rec in zip(names, records, strict=True):
        assert rec["status"] == "ok", rec
        assert rec["tbscore"] == pytest.approx(float(batch_rows[name]["l1_l4"]), abs=1e-9)
        assert batch_rows[name]["roi_source"].startswith("file:"), batch_rows[name]
    # the side-cars matter: automatic detection gives other values on these phantoms
    auto = calc(folder / names[0])
    assert auto.l1_l4 != pytest.approx(records[0]["tbscore"], abs=1e-6)
