"""The calc command line on a small synthetic DICOM and the bundled samples."""

import csv
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest

from tbscore.cli import main


@pytest.fixture
def scan(dicom_file, tmp_path):
    rng = np.random.default_rng(0)
    field = np.cumsum(np.cumsum(rng.normal(size=(200, 120)), 0), 1)
    pixels = (field - field.min()) / np.ptp(field) * 3000 + rng.normal(0, 20, field.shape)
    path = dicom_file(
        pixels.clip(0, 65535).astype(np.uint16), name="scan.dcm", PatientAge="070Y", PatientSex="F"
    )
    roi = {
        "format": "tbscore-roi/1",
        "units": "px",
        "vertebrae": [
            {"label": f"L{i + 1}", "box": [10 + 45 * i, 20, 50 + 45 * i, 100]} for i in range(4)
        ],
    }
    roi_path = tmp_path / "scan.roi.json"
    roi_path.write_text(json.dumps(roi))
    return path, roi_path


def test_calc_json_csv_and_summary(scan, capsys, tmp_path):
    path, roi = scan
    assert main(["calc", str(path), "--roi", str(roi), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["cpt_code"] == "77091" and out["status"] == "ok"
    assert len(out["vertebrae"]) == 4 and out["l1_l4"] is not None
    assert out["metadata"]["age_years"] == 70
    assert main(["calc", str(path), "--roi", str(roi), "--csv", "--exclude", "L3:fracture"]) == 0
    row = next(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert row["l3_status"] == "excluded" and row["l3_reason"] == "fracture"
    assert row["l1_l4_labels"] == "L1 L2 L4"
    assert main(["calc", str(path), "--roi", str(roi)]) == 0
    assert "L1-L4" in capsys.readouterr().out
    out_json = tmp_path / "r.json"
    assert (
        main(
            [
                "calc",
                str(path),
                "--roi",
                str(roi),
                "-o",
                str(out_json),
                "--save-roi",
                str(tmp_path / "used.json"),
            ]
        )
        == 0
    )
    # default --format-path relative (to the current folder)
    assert json.loads(out_json.read_text())["input"]["source"] == os.path.relpath(path)
    assert json.loads((tmp_path / "used.json").read_text())["format"] == "tbscore-roi/1"


def test_settings_override_and_incomplete_exit_code(scan, capsys, tmp_path):
    path, roi = scan
    settings = tmp_path / "s.toml"
    settings.write_text("lag_max_mm = 4.0\n")
    assert (
        main(
            [
                "calc",
                str(path),
                "--roi",
                str(roi),
                "--json",
                "--settings",
                str(settings),
                "--lag-min-mm",
                "1.0",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["lag_range_mm"] == [1.0, 4.0]
    code = main(
        [
            "calc",
            str(path),
            "--roi",
            str(roi),
            "--exclude",
            "L1",
            "--exclude",
            "L2",
            "--exclude",
            "L3",
        ]
    )
    assert code == 1


def test_errors_are_clear_and_exit_2(tmp_path, capsys):
    bad = tmp_path / "junk.dcm"
    bad.write_text("not dicom")
    assert main(["calc", str(bad), "--roi", "x.json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("tbscore: error:") and str(bad) in err and "Traceback" not in err
    settings = tmp_path / "bad.yaml"
    settings.write_text("lag_max_mm: -1\n")
    assert main(["calc", str(bad), "--settings", str(settings)]) == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_calc_writes_sr_and_applies_calibration(tmp_path, capsys):
    """End to end through the CLI: --calibration changes the result, --sr records it."""
    pytest.importorskip("highdicom")
    from tbscore.core.calibration import fit_calibration
    from tbscore.io.calibration import save_calibration
    from tbscore.io.sr import read_sr

    x = np.linspace(0.8, 1.6, 12)
    calib = save_calibration(fit_calibration(x, 0.3 + 0.8 * x, method="ols"), tmp_path / "c.json")
    samples = Path(__file__).resolve().parents[1] / "sample_dicom"
    dcm = str(samples / "phantom_a_square.dcm")
    roi = str(samples / "phantom_a_square.roi.json")
    sr = tmp_path / "out_sr.dcm"
    code = main(["calc", dcm, "--roi", roi, "--json", "--calibration", str(calib), "--sr", str(sr)])
    assert code == 0
    out = json.loads(capsys.readouterr().out)
    assert out["calibration"] is not None
    assert out["l1_l4_calibrated"] == pytest.approx(0.3 + 0.8 * out["l1_l4"], abs=1e-9)
    back = read_sr(sr)
    for v in out["vertebrae"]:
        assert back["vertebrae"][v["label"]]["value"] == pytest.approx(v["value"], abs=0)
        assert back["vertebrae"][v["label"]]["calibrated_value"] == pytest.approx(
            v["calibrated_value"], abs=1e-12
        )
