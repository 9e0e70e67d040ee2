"""Issue 12 (part A) regression tests: each fails on the code before its fix.

Findings 1 (spacing range, bounded lags), 3 (settings), 4 (CLI-edge schemas and output
paths), 6 (--format-path), 7 (implausible fits), 14 (logging) and 15 (small items).
"""

from __future__ import annotations

import contextlib
import csv
import json
import logging
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbscore.cli import main
from tbscore.core.settings import Settings, load_settings
from tbscore.core.tbs import select_lags
from tbscore.errors import ComputationError, InputError, SettingsError, UnsupportedImageError
from tbscore.io.load import load_dicom

ROOT = Path(__file__).resolve().parents[1]


@contextlib.contextmanager
def within(seconds: float):
    """Fail (instead of hanging) when the block runs longer than ``seconds``."""

    def _alarm(signum, frame):
        raise TimeoutError(f"took longer than {seconds} s")

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


ROI_DOC = {
    "format": "tbscore-roi/1",
    "units": "px",
    "vertebrae": [
        {"label": f"L{i + 1}", "box": [10 + 45 * i, 20, 50 + 45 * i, 100]} for i in range(4)
    ],
}


def _fbm_pixels(shape=(200, 120), hurst=0.3, seed=1) -> np.ndarray:
    from tbscore.sim.phantom import fbm_surface

    f = fbm_surface(max(shape), hurst, rng=seed)[: shape[0], : shape[1]]
    return ((f - f.min()) / np.ptp(f) * 3000 + 500).astype(np.uint16)


@pytest.fixture
def scan(dicom_file, tmp_path):
    """An fBm scan (1 mm pixels) with a patient folder in its path, and its ROI file."""
    folder = tmp_path / "DOE_JANE_MRN12345"
    folder.mkdir()
    path = dicom_file(_fbm_pixels(), name="scan.dcm", PatientAge="070Y", PatientSex="F")
    path = path.rename(folder / "scan.dcm")
    roi = folder / "scan.roi.json"
    roi.write_text(json.dumps(ROI_DOC))
    return path, roi


def _err(capsys) -> str:
    return capsys.readouterr().err


# ----------------------------------------------------------------------------- finding 1
def test_select_lags_never_loops_on_a_tiny_spacing():
    with within(5):
        with pytest.raises(ComputationError, match="lags"):
            select_lags((1e-9, 1e-9), 0.5, 3.0)
        lags, d = select_lags((1e-9, 1e-9), 0.5, 3.0, extent_px=(300, 300))
    assert lags.shape == (0, 2) and d.size == 0


@settings(max_examples=60, deadline=None)
@given(
    sr=st.floats(0.05, 5.0),
    sc=st.floats(0.05, 5.0),
    lo=st.floats(0.0, 5.0),
    width=st.floats(0.0, 20.0),
    rows=st.integers(1, 60),
    cols=st.integers(1, 60),
)
def test_select_lags_extent_only_drops_lags_without_pairs(sr, sc, lo, width, rows, cols):
    """Bounded by the extent = unbounded minus the lags at least as long as the extent."""
    from tbscore.core.tbs import MAX_LAGS

    full, dfull = select_lags((sr, sc), lo, lo + width)
    keep = (np.abs(full[:, 0]) < rows) & (np.abs(full[:, 1]) < cols)
    got, dgot = select_lags((sr, sc), lo, lo + width, extent_px=(rows, cols))
    np.testing.assert_array_equal(got, full[keep])
    np.testing.assert_array_equal(dgot, dfull[keep])
    assert len(got) <= MAX_LAGS


@pytest.mark.parametrize("spacing", [(1e-9, 1e-9), (0.01, 1.0), (8.0, 8.0)])
def test_loader_refuses_spacing_outside_the_dxa_range(dicom_file, spacing):
    path = dicom_file(_fbm_pixels((64, 64)), spacing=spacing)
    with pytest.raises(InputError, match="physically possible DXA range") as err:
        load_dicom(path)
    assert err.value.source == str(path)


def test_user_spacing_outside_the_range_is_used_with_a_warning(scan):
    import tbscore

    path, roi = scan
    with within(20):
        result = tbscore.calc(path, roi=roi, spacing=(1e-9, 1e-9), override_spacing=True)
    assert any("physically possible DXA range" in w for w in result.warnings)
    assert result.l1_l4 is None  # no lag of 0.5-3 mm fits in the ROIs
    from tbscore.errors import ROIError

    with within(10), pytest.raises(ROIError, match="automatic detection needs"):
        tbscore.calc(path, spacing=(50.0, 50.0), override_spacing=True)  # no --roi


def test_cli_calc_with_a_tiny_file_spacing_is_an_error_not_a_hang(dicom_file, tmp_path, capsys):
    path = dicom_file(_fbm_pixels(), spacing=(1e-9, 1e-9))
    roi = tmp_path / "r.json"
    roi.write_text(json.dumps(ROI_DOC))
    with within(20):
        assert main(["calc", str(path), "--roi", str(roi)]) == 2
    err = _err(capsys)
    assert err.startswith(f"tbscore: error: {path}: ") and "DXA range" in err


def test_rescale_slope_zero_is_refused(dicom_file):
    path = dicom_file(_fbm_pixels((64, 64)), RescaleSlope="0", RescaleIntercept="0")
    with pytest.raises(UnsupportedImageError, match="RescaleSlope"):
        load_dicom(path)


# ----------------------------------------------------------------------------- finding 3
@pytest.mark.parametrize(
    "bad",
    [
        {"lag_max_mm": 1e9},
        {"directions": 5},
        {"directions": [[1]]},
        {"directions": [1, 2]},
        {"lag_min_mm": 10**400},
        {"min_lags": 10**12},
        {"min_pairs_per_lag": 1.5},
    ],
)
def test_absurd_settings_are_settings_errors(bad):
    with within(5):
        with pytest.raises(SettingsError):
            Settings.from_dict(bad)


def test_binary_settings_file_and_cli_rc2(tmp_path, scan, capsys):
    binary = tmp_path / "settings.toml"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe\x00\x01" * 8)
    with pytest.raises(SettingsError, match="not a text file"):
        load_settings(binary)
    path, roi = scan
    assert main(["calc", str(path), "--roi", str(roi), "--settings", str(binary)]) == 2
    assert f"tbscore: error: {binary}: " in _err(capsys)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"lag_max_mm": 1e9}))
    with within(10):
        assert main(["calc", str(path), "--roi", str(roi), "--settings", str(big)]) == 2
    assert "lag_max_mm" in _err(capsys)


# ----------------------------------------------------------------------------- finding 4
@pytest.fixture
def result_doc(scan, tmp_path, capsys):
    path, roi = scan
    out = tmp_path / "result.json"
    assert main(["calc", str(path), "--roi", str(roi), "-o", str(out)]) == 0
    capsys.readouterr()
    return json.loads(out.read_text())


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d.update(vertebrae={"L1": d["vertebrae"][0]}),
        lambda d: d.update(l1_l4="abc"),
        lambda d: d.update(l1_l4=1e308),
        lambda d: d.update(metadata=[1, 2]),
        lambda d: d.update(input=None),
        lambda d: d["vertebrae"][0].update(value="1.2"),
        lambda d: d.update(l1_l4_labels="L1 L2"),
        lambda d: d.update(pixel_spacing_mm="1"),
        lambda d: d.update(settings={"directions": 5}),
        lambda d: d["metadata"].update(age_years="old"),
    ],
    ids=[
        "vertebrae-dict",
        "l1_l4-str",
        "l1_l4-1e308",
        "metadata-list",
        "input-null",
        "value-str",
        "labels-str",
        "spacing-str",
        "settings",
        "age-str",
    ],
)
def test_bad_result_json_for_interpret_is_a_typed_error(result_doc, mutate, tmp_path, capsys):
    mutate(result_doc)
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(result_doc))
    out = tmp_path / "report.html"
    assert main(["interpret", str(bad), "--age", "65", "--sex", "F", "-o", str(out)]) == 2
    err = _err(capsys)
    assert err.startswith(f"tbscore: error: {bad}: ") and "Traceback" not in err
    assert not out.exists()


def test_dicom_given_to_interpret_says_so(scan, tmp_path, capsys):
    path, _ = scan
    assert main(["interpret", str(path), "-o", str(tmp_path / "r.html")]) == 2
    assert "this is a DICOM image" in _err(capsys)


@pytest.mark.parametrize(
    "change",
    [
        {"a": "0.1"},
        {"a_ci": "x"},
        {"a_ci": ["a", "b"]},
        {"n": "12"},
        {"name": 5},
        {"bland_altman": [1]},
        {"settings_digest": 7},
    ],
)
def test_calibration_file_with_wrong_types_is_rc2(scan, tmp_path, capsys, change):
    from tbscore.core.calibration import fit_calibration

    cal = fit_calibration([1.0, 1.1, 1.2, 1.35], [1.0, 1.15, 1.22, 1.4], name="c").to_dict()
    cal.update(change)
    cal_path = tmp_path / "cal.json"
    cal_path.write_text(json.dumps(cal))
    path, roi = scan
    assert main(["calc", str(path), "--roi", str(roi), "--calibration", str(cal_path)]) == 2
    err = _err(capsys)
    assert err.startswith(f"tbscore: error: {cal_path}: ") and "Traceback" not in err


def test_outputs_checked_before_computing(scan, tmp_path, capsys, monkeypatch):
    import tbscore.api

    def no_compute(*a, **k):
        raise AssertionError("computed before the output paths were checked")

    monkeypatch.setattr(tbscore.api, "calc", no_compute)
    path, roi = scan
    base = ["calc", str(path), "--roi", str(roi)]
    assert main(base + ["--overlay", str(tmp_path / "x.xyz")]) == 2
    assert "overlay must end in" in _err(capsys)
    assert main(base + ["-o", str(tmp_path)]) == 2  # onto a folder
    assert "is a folder" in _err(capsys)
    assert main(base + ["-o", "/proc/tbscore-x.json"]) == 2
    assert _err(capsys).startswith("tbscore: error: /proc/tbscore-x.json: cannot write")
    assert main(base + ["--save-roi", str(tmp_path / "a.txt")]) == 2
    capsys.readouterr()
    assert main(["score", str(path), "--roi", str(roi), "-o", "/proc/r.html"]) == 2
    assert "tbscore: error: /proc/r.html: " in _err(capsys)


def test_missing_output_folders_are_created_by_one_rule(scan, tmp_path, capsys):
    path, roi = scan
    out = tmp_path / "new" / "deeper"
    rc = main(
        [
            "calc",
            str(path),
            "--roi",
            str(roi),
            "-o",
            str(out / "r.json"),
            "--save-roi",
            str(out / "roi" / "used.json"),
            "--overlay",
            str(out / "png" / "o.png"),
        ]
    )
    assert rc == 0
    assert (out / "r.json").is_file() and (out / "roi" / "used.json").is_file()
    assert (out / "png" / "o.png").is_file()


def test_batch_and_export_refuse_unwritable_outputs(scan, tmp_path, capsys):
    path, _ = scan
    assert main(["batch", str(path.parent), "-o", "/proc/x.csv", "--progress", "none"]) == 2
    assert _err(capsys).startswith("tbscore: error: /proc/x.csv: ")
    assert main(["export", str(path.parent), "-o", "/proc/tbscore-pkg"]) == 2
    assert _err(capsys).startswith("tbscore: error: /proc/tbscore-pkg: ")


# ----------------------------------------------------------------------------- finding 6
@pytest.mark.parametrize("how", ["absolute", "relative", "basename"])
def test_format_path_in_result_json(scan, capsys, how):
    path, roi = scan
    assert main(["calc", str(path), "--roi", str(roi), "--json", "--format-path", how]) == 0
    doc = json.loads(capsys.readouterr().out)
    want = {
        "absolute": os.path.abspath(path),
        "relative": os.path.relpath(path),
        "basename": "scan.dcm",
    }[how]
    assert doc["input"]["source"] == want
    assert doc["roi_source"] == "file:" + want.replace("scan.dcm", "scan.roi.json")


def test_no_phi_leaves_no_folder_name_in_reports_or_overlay(scan, tmp_path, capsys):
    from tbscore.core.result import TBSResult
    from tbscore.render.overlay import overlay_figure

    path, roi = scan
    html, js = tmp_path / "r.html", tmp_path / "r.json"
    rc = main(
        ["score", str(path), "--roi", str(roi), "--no-phi", "-o", str(html), "-o", str(js)]
        + ["--result-json", str(tmp_path / "res.json")]
    )
    assert rc == 0
    for f in (html, js, tmp_path / "res.json"):
        assert "DOE_JANE_MRN12345" not in f.read_text(encoding="utf-8"), f
    assert "DOE_JANE_MRN12345" not in capsys.readouterr().out
    result = TBSResult.from_json(tmp_path / "res.json")
    assert result.roi_source == "file:scan.roi.json"
    import tbscore

    image = tbscore.api.as_image(path)
    rois = tbscore.api.resolve_rois(roi, image)
    fig = overlay_figure(image, rois, result)
    assert fig.axes[0].get_title().startswith("ROIs (file:scan.roi.json)")


def test_batch_source_column_follows_format_path(scan, tmp_path, capsys):
    path, _ = scan
    out = tmp_path / "b.csv"
    rc = main(
        ["batch", str(path.parent), "-o", str(out), "--progress", "none"]
        + ["--format-path", "basename"]
    )
    assert rc == 0, capsys.readouterr()
    rows = list(csv.DictReader(out.open(encoding="utf-8")))
    assert [r["source"] for r in rows] == ["scan.dcm"]
    assert rows[0]["roi_source"] == "file:scan.roi.json"


# ----------------------------------------------------------------------------- finding 7
@pytest.fixture
def swapped(dicom_file, tmp_path):
    """Rows and Columns swapped in the header: the pixel bytes are read as sheared noise."""
    ds_path = dicom_file(_fbm_pixels((200, 150)), name="swapped.dcm")
    import pydicom

    ds = pydicom.dcmread(ds_path)
    ds.Rows, ds.Columns = 150, 200
    ds.save_as(ds_path)
    roi = tmp_path / "swapped.roi.json"
    boxes = [[5 + 36 * i, 40, 36 + 36 * i, 160] for i in range(4)]
    doc = {
        "format": "tbscore-roi/1",
        "units": "px",
        "vertebrae": [{"label": f"L{i + 1}", "box": b} for i, b in enumerate(boxes)],
    }
    roi.write_text(json.dumps(doc))
    return ds_path, roi


def test_implausible_fit_is_flagged_in_calc_batch_and_score(swapped, tmp_path, capsys):
    import tbscore

    path, roi = swapped
    result = tbscore.calc(path, roi=roi)
    assert result.l1_l4 is None
    assert all(v.status == "invalid" and "implausible" in v.reason for v in result.vertebrae)
    assert main(["calc", str(path), "--roi", str(roi), "--json"]) == 1
    assert json.loads(capsys.readouterr().out)["status"] == "incomplete"
    out = tmp_path / "b.csv"
    roi_dir = tmp_path / "rois"
    roi_dir.mkdir()
    (roi_dir / "swapped.roi.json").write_text(roi.read_text())
    assert main(["batch", str(path), "-o", str(out), "--roi-dir", str(roi_dir)]) == 1
    row = next(csv.DictReader(out.open(encoding="utf-8")))
    assert row["status"] == "incomplete" and "implausible" in row["l1_reason"]
    capsys.readouterr()
    assert main(["score", str(path), "--roi", str(roi), "-o", str(tmp_path / "s.html")]) == 1


# ---------------------------------------------------------------------------- finding 14
def test_library_installs_no_log_handlers():
    code = "import logging, tbscore, tbscore.api; print(len(logging.getLogger('tbscore').handlers))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "0"


def test_audit_line_per_scored_input_without_phi(scan, tmp_path, capsys, caplog):
    path, roi = scan
    log = tmp_path / "logs" / "tbscore.log"
    assert main(["--log-file", str(log), "calc", str(path), "--roi", str(roi)]) == 0
    text = log.read_text(encoding="utf-8")
    lines = [ln for ln in text.splitlines() if " audit " in ln]
    assert len(lines) == 1
    fields = json.loads(lines[0].split(" audit ", 1)[1])
    assert fields["outcome"] == "ok" and fields["command"] == "calc"
    assert fields["input_sha256"] == __import__("hashlib").sha256(path.read_bytes()).hexdigest()
    assert fields["settings_digest"] == Settings().digest() and fields["tbscore_version"]
    assert fields["value"] is not None
    assert "DOE_JANE" not in text and "TEST^PATIENT" not in text and "scan.dcm" not in text
    # failures are audited too, and batch writes one line per input
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="tbscore.audit"):
        assert main(["calc", str(tmp_path / "missing.dcm"), "--roi", str(roi)]) == 2
        batch = ["batch", str(path.parent), "--progress", "none"]
        assert main(batch + ["-o", str(tmp_path / "b.csv")]) == 0  # audited by the parent
    audits = [r.getMessage() for r in caplog.records if r.name == "tbscore.audit"]
    assert '"outcome":"error:dicom_read_error"' in audits[0]
    assert any('"command":"batch"' in a and '"outcome":"ok"' in a for a in audits[1:])
    assert not logging.getLogger("tbscore").handlers  # the CLI removed its handlers


# ---------------------------------------------------------------------------- finding 15
def test_python_dash_m_tbscore():
    out = subprocess.run(
        [sys.executable, "-m", "tbscore", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("tbscore ")


def test_help_texts(capsys):
    with pytest.raises(SystemExit):
        main(["calc", "--help"])
    assert "technical calculation" in capsys.readouterr().out.split("positional")[0]
    with pytest.raises(SystemExit):
        main(["calibrate", "--help"])
    text = capsys.readouterr().out
    assert "(default: deming)" in text and "(default: 2000)" in text


def test_phantom_needs_a_folder_and_refuses_a_non_empty_one(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exc:
        main(["phantom"])
    assert exc.value.code == 2 and not (tmp_path / "sample_dicom").exists()
    full = tmp_path / "full"
    full.mkdir()
    (full / "keep.txt").write_text("x")
    capsys.readouterr()
    assert main(["phantom", str(full)]) == 2
    assert "not empty" in _err(capsys) and sorted(os.listdir(full)) == ["keep.txt"]


def test_calibrate_error_has_no_dangling_separator(tmp_path, capsys):
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("reference,tbscore\n1.2,1.1\n1.3,1.2\n")
    assert main(["calibrate", str(pairs), "-o", str(tmp_path / "c.json")]) == 2
    err = _err(capsys).strip()
    assert "need at least 3" in err and not err.endswith(";") and "; ;" not in err


def test_progress_in_a_zero_width_terminal_falls_back_to_lines():
    from tbscore.batch.progress import Progress

    master, slave = os.openpty()  # a new pty is 0 x 0
    try:
        stream = os.fdopen(slave, "w")
        p = Progress(3, "bar", stream=stream, every=1)
        for _ in range(3):
            p.update("ok")
        p.close()
        stream.flush()
        import select

        text = ""
        while select.select([master], [], [], 1.0)[0]:  # all that was written
            chunk = os.read(master, 65536).decode()
            if not chunk:
                break
            text += chunk
            if "3/3" in text:
                break
    finally:
        stream.close()
        os.close(master)
    assert p.mode == "log" and "3/3" in text


def test_interpret_sex_o_message(result_doc, tmp_path, capsys):
    res = tmp_path / "res.json"
    res.write_text(json.dumps(result_doc))
    assert main(["interpret", str(res), "--sex", "O", "-o", str(tmp_path / "r.html")]) == 2
    err = _err(capsys)
    assert "or None" not in err and "female or male" in err


def test_figures_and_interpretation_display_in_notebooks(scan):
    import tbscore
    from tbscore.clinical.interpret import interpret_result
    from tbscore.render.figures import variogram_figure
    from tbscore.render.overlay import overlay_figure

    path, roi = scan
    image = tbscore.api.as_image(path)
    rois = tbscore.api.resolve_rois(roi, image)
    result = tbscore.calc(image, rois)
    for fig in (variogram_figure(result), overlay_figure(image, rois, result)):
        assert fig._repr_png_().startswith(b"\x89PNG\r\n\x1a\n")
    html = interpret_result(result, age=65, sex="F")._repr_html_()
    assert "<table>" in html and "category" in html and "TBS iNsight" in html
