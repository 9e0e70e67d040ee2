"""Reports (tbscore.report): HTML/PDF content, escaping, CLI sub-commands."""

from __future__ import annotations

import importlib.util
import json
import re
import sys
from dataclasses import replace
from html import escape as html_escape

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

import tbscore
from tbscore.api import as_image, resolve_rois
from tbscore.cli import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK, main
from tbscore.cli.billing import parse_services, services_from_files
from tbscore.clinical import billing, risk
from tbscore.clinical.interpret import (
    NOT_INTERCHANGEABLE,
    REPORT_FORMAT,
    ReportError,
    interpret_result,
    reported_tbs,
)
from tbscore.render.figures import variogram_figure
from tbscore.render.report import Report, build_report, render_html, render_pdf, write_report

HOSTILE_NAME = "<script>alert(1)</script>"
HOSTILE_ID = '"><img src=x onerror=alert(1)>'
HOSTILE_REASON = "<svg onload=alert(2)>"
#: Markup that must never reach the HTML unescaped (the template itself has no script/svg).
RAW_MARKUP = (HOSTILE_NAME, HOSTILE_ID, HOSTILE_REASON, "<script", "<svg", "<img src=x")


def _pixels(shape=(160, 120), seed=0) -> np.ndarray:
    """Texture with an index near 1.25 (smoothed noise), as uint16 gray levels."""
    rng = np.random.default_rng(seed)
    img = 1000.0 + 120.0 * gaussian_filter(rng.standard_normal(shape), 1.0)
    return np.clip(img, 0, 65535).astype(np.uint16)


def _roi_doc() -> dict:
    return {
        "format": "tbscore-roi/1",
        "units": "px",
        "vertebrae": [
            {"label": f"L{i + 1}", "box": [10 + 35 * i, 35, 40 + 35 * i, 85]} for i in range(4)
        ],
    }


@pytest.fixture
def scene():
    image = as_image(_pixels().astype(float), spacing=(1.0, 1.0))
    rois = resolve_rois(_roi_doc(), image)
    return image, rois, tbscore.calc(image, rois)


@pytest.fixture
def hostile_dicom(dicom_file, tmp_path):
    """A DICOM whose text attributes are HTML, plus its ROI file."""
    path = dicom_file(
        _pixels(),
        name="hostile.dcm",
        PatientName=HOSTILE_NAME,
        PatientID=HOSTILE_ID,
        PatientAge="067Y",
        PatientSex="F",
        PatientSize="1.60",
        PatientWeight="60",
        StudyDate="20260115",
        Manufacturer=HOSTILE_ID,
        ManufacturerModelName=HOSTILE_NAME,
    )
    roi = tmp_path / "hostile.roi.json"
    roi.write_text(json.dumps(_roi_doc()), encoding="utf-8")
    return path, roi


def _assert_no_raw_markup(text: str) -> None:
    for bad in RAW_MARKUP:
        assert bad not in text, bad


# -- Python API --------------------------------------------------------------------------


def test_html_has_required_blocks(scene):
    image, rois, result = scene
    report = build_report(result, image=image, rois=rois, service="score")
    html = render_html(report)
    for block in (
        'id="not-interchangeable"',
        'id="patient"',
        'id="summary"',
        'id="vertebrae"',
        'id="fracture-risk"',
        'id="frax"',
        'id="variograms"',
        'id="method"',
        'id="sign-off"',
        'id="study"',
    ):
        assert block in html
    assert NOT_INTERCHANGEABLE in html
    assert html.count("data:image/png;base64,") == 2  # overlay + variograms
    assert re.search(r"L1–L4 TBS [0-9]\.[0-9]{3}", html)
    assert f"{result.l1_l4:.3f}" in html
    for v in result.vertebrae:
        assert f"{v.value:.3f}" in html and f"{v.r2:.3f}" in html
    assert "shevroja_2023" in html and "version 2023" in html
    assert risk.SHEVROJA_2023.citation in html
    assert result.settings.digest() in html
    assert "0.5–3 mm" in html and "vertical, horizontal, diagonal, antidiagonal" in html
    assert "none: raw tbscore index" in html
    assert f"tbscore {tbscore.__version__}" in html
    assert result.input["pixel_sha256"] in html
    # billing is its own output (tbscore billing): no rates or coding rules in the report
    assert "CPT 77089" in html and 'id="coding"' not in html
    assert billing.modifier_rule() not in html
    assert "$39.95" not in html and "$88.91" not in html
    assert html_escape(billing.schedule_info()["source"]["title"]) not in html
    assert "PRELIMINARY" in html and "not signed" in html
    assert 'id="equations"' in html
    assert "Not computed: no FRAX probabilities were given." in html
    assert "<pdf:" not in html  # print-only markup stays out of the HTML


def test_report_without_image_says_so(scene):
    _, _, result = scene
    report = build_report(result, service="interpret")
    html = render_html(report)
    assert html.count("data:image/png;base64,") == 1
    assert "Image not available" in html
    assert report.cpt_code == "77092" and "CPT 77092" in html
    assert "billed separately" in report.coding["based_on"]  # coding kept in the JSON


def test_frax_numbers_match_adjust_frax(scene):
    _, _, result = scene
    interp = interpret_result(result, age=65, sex="F", frax_mof=20, frax_hip=3)
    adj = risk.adjust_frax(age=65, tbs=result.l1_l4, frax_mof=20, frax_hip=3)
    report = build_report(result, interp)
    html = render_html(report)
    assert f"{adj.adjusted_mof:.2f}" in html and f"{adj.adjusted_hip:.2f}" in html
    rows = {r["outcome"]: r for r in report.frax["rows"]}
    assert rows["Major osteoporotic fracture"]["adjusted"] == f"{adj.adjusted_mof:.2f}"
    assert rows["Hip fracture"]["adjusted"] == f"{adj.adjusted_hip:.2f}"
    assert risk.CITATIONS["mccloskey_2015"] in html


def test_warnings_shown(scene):
    _, _, result = scene
    interp = interpret_result(result, age=70, sex="M", bmi=41.0)
    html = render_html(build_report(result, interp))
    assert 'id="warnings"' in html
    assert "outside 15-37" in html
    assert "not established for men" in html
    assert "indicative only" in html  # raw, uncalibrated index categorised


def test_interpret_result_defaults_from_metadata(scene):
    _, _, result = scene
    meta = dict(result.metadata, age_years=67.0, sex="F", bmi=23.4)
    res = replace(result, metadata=meta)
    interp = interpret_result(res)
    assert (interp.age, interp.sex, interp.bmi) == (67.0, "female", 23.4)
    assert interp.threshold_set.name == risk.DEFAULT_THRESHOLD_SET
    interp = interpret_result(res, age=70, threshold_set="harvey_2015")
    assert interp.age == 70 and interp.threshold_set.name == "harvey_2015"
    assert interpret_result(res, use_metadata=False).age is None
    patient = build_report(res, interpret_result(res, age=70)).patient
    assert patient["age"] == "70 years (entered)"
    assert patient["sex"] == "female (DICOM header)"
    # a value typed in that equals the header is still "entered"
    interp = interpret_result(res, age=67, sex="F")
    assert interp.input_sources == {"age": "entered", "sex": "entered", "bmi": "DICOM header"}
    patient = build_report(res, interp).patient
    assert patient["age"] == "67 years (entered)" and patient["sex"] == "female (entered)"
    assert patient["bmi"] == "23.4 kg/m² (DICOM header)"
    assert build_report(res, interp).to_dict()["interpretation"]["input_sources"]["bmi"] == (
        "DICOM header"
    )


def test_frax_from_raw_value_is_flagged(scene):
    """Adjusted FRAX from an uncalibrated index carries its own caveat; calibrated does not."""
    _, _, result = scene
    interp = interpret_result(result, age=67, sex="F", frax_mof=20, frax_hip=3)
    raw = build_report(result, interp)
    assert any("adjusted probabilities are indicative only" in w for w in raw.warnings)
    values = {v.label: v.value for v in result.vertebrae}
    cal = result.with_calibration({"name": "site A"}, values, result.l1_l4)
    calibrated = build_report(cal, interpret_result(cal, age=67, sex="F", frax_mof=20))
    assert not any("indicative only" in w for w in calibrated.warnings)
    assert not any(
        "indicative only" in w
        for w in build_report(result, interpret_result(result)).warnings
        if "FRAX" in w
    )


def test_calibrated_value_is_interpreted(scene):
    _, _, result = scene
    values = {v.label: v.value + 0.1 for v in result.vertebrae}
    strong = {"name": "site-A 2026", "b": 1.0, "n": 60, "b_ci": [0.95, 1.05]}
    cal = result.with_calibration(strong, values, result.l1_l4 + 0.1)
    value, basis = reported_tbs(cal)
    assert basis == "calibrated" and value == pytest.approx(result.l1_l4 + 0.1)
    report = build_report(cal)
    assert report.category["tbs_compared"] == f"{result.l1_l4 + 0.1:.3f}"
    html = render_html(report)
    assert "site-A 2026" in html and "Calibrated" in html
    assert "slope 95 % CI 0.950–1.050" in html and "n = 60" in html
    assert "indicative only" not in html and report.category_caveat is None
    # a calibration from 4 pairs with a wide slope CI does not make the caveats disappear
    weak = {"name": "site-B", "b": 0.57, "n": 4, "b_ci": [0.29, 0.85]}
    report = build_report(result.with_calibration(weak, values, result.l1_l4 + 0.1))
    html = render_html(report)
    assert "indicative only" in html and "cat-muted" in html
    assert any("fitted on 4 pairs" in w for w in report.warnings)
    assert any("0.290–0.850" in w and "is wide" in w for w in report.warnings)


def test_incomplete_result(scene):
    image, rois, _ = scene
    result = tbscore.calc(image, rois, exclude=["L1", "L2", "L3:fracture"])
    with pytest.raises(ReportError, match="no L1-L4 value"):
        interpret_result(result)
    report = build_report(result)
    assert report.interpretation is None and report.category is None
    html = render_html(report)
    assert "L1–L4 TBS: not available" in html and "No interpretation" in html


def test_interpretation_of_another_value_rejected(scene):
    _, _, result = scene
    with pytest.raises(ReportError, match="interpretation is for"):
        build_report(result, risk.interpret(result.l1_l4 + 0.05))
    with pytest.raises(ReportError, match="service"):
        build_report(result, service="calc")


def test_image_must_match_result(scene):
    image, rois, result = scene
    other = as_image(_pixels(seed=1).astype(float), spacing=(1.0, 1.0))
    with pytest.raises(ReportError, match="pixel SHA-256"):
        build_report(result, image=other, rois=rois)


def test_no_phi(scene):
    _, _, result = scene
    meta = dict(result.metadata, patient_name="DOE^JANE", patient_id="P-777")
    report = build_report(replace(result, metadata=meta), include_phi=False)
    text = render_html(report) + report.to_json()
    assert "DOE" not in text and "P-777" not in text and "(withheld)" in text


def test_one_study_context_block_names_the_scanner_once(scene):
    """Issue 17: page 1 has one patient-and-study block; the scanner (manufacturer,
    model, serial) is one row, not a "Device" row and a second "Scanner" row."""
    _, _, result = scene
    meta = dict(
        result.metadata,
        manufacturer="Acme Medical",
        model="Densi 9",
        device_serial_number="SN-42",
        study_date="20260301",
        study_time="093015",
        study_description="DXA lumbar spine",
        accession_number="ACC-123",
        operators_name="TECH^TINA",
    )
    html = render_html(build_report(replace(result, metadata=meta)))
    block = html[html.index('id="patient"') : html.index('id="summary"')]
    assert block.count('<table class="kv"') == 2  # patient | study, side by side
    assert "Device" not in html and block.count("Scanner") == 1
    assert "Acme Medical Densi 9, serial SN-42" in block and html.count("Densi 9") == 1
    for label, value in (
        ("Study date", "2026-03-01"),
        ("Study time", "09:30"),
        ("Exam", "DXA lumbar spine"),
        ("Accession number", "ACC-123"),
        ("Operator", "TECH, TINA"),
    ):
        assert re.search(rf'<td class="k"[^>]*>{label}</td><td>[^<]*{value}', block), label
    withheld = render_html(build_report(replace(result, metadata=meta), include_phi=False))
    assert "ACC-123" not in withheld and "TINA" not in withheld
    assert re.search(r"<td class=\"k\"[^>]*>Accession number</td><td>\(withheld\)<", withheld)


def test_report_json_record(scene, tmp_path):
    _, _, result = scene
    report = build_report(result, interpret_result(result, age=60, frax_mof=10))
    data = json.loads(write_report(report, tmp_path / "r.json").read_text())
    assert data["format"] == REPORT_FORMAT and data["cpt_code"] == "77089"
    assert data["interpretation"]["frax"]["adjusted_mof_percent"] == pytest.approx(
        report.interpretation.frax.adjusted_mof
    )
    assert data["result"]["format"] == "tbscore-result/1"
    assert "overlay_png" not in data and "variogram_uri" not in data


def test_write_report_rejects_unknown_suffix(scene, tmp_path):
    _, _, result = scene
    with pytest.raises(ReportError, match=r"\.html, \.pdf or \.json"):
        write_report(build_report(result), tmp_path / "r.docx")


def test_variogram_figure_fit_lines(scene):
    _, _, result = scene
    fig = variogram_figure(result)
    axes = [ax for ax in fig.axes if ax.lines]
    assert len(axes) == 4
    for ax, vert in zip(axes, result.vertebrae, strict=True):
        points, line = ax.lines
        x = np.log(vert.lag_distances_mm)
        assert np.allclose(sorted(points.get_xdata()), sorted(x))
        (x0, x1), (y0, y1) = line.get_xdata(), line.get_ydata()
        assert (y1 - y0) / (x1 - x0) == pytest.approx(vert.value)
        assert y0 == pytest.approx(vert.intercept + vert.value * x0)


def test_pdf_written(scene, tmp_path):
    pytest.importorskip("xhtml2pdf")
    pypdf = pytest.importorskip("pypdf")
    image, rois, result = scene
    report = build_report(
        result, interpret_result(result, age=65, frax_mof=20), image=image, rois=rois
    )
    path = write_report(report, tmp_path / "r.pdf")
    data = path.read_bytes()
    assert data.startswith(b"%PDF")
    reader = pypdf.PdfReader(path)
    assert len(reader.pages) >= 1
    text = " ".join(page.extract_text() for page in reader.pages)
    assert "77089" in text and f"{result.l1_l4:.3f}" in text


def test_pdf_without_xhtml2pdf(scene, monkeypatch, tmp_path):
    _, _, result = scene
    monkeypatch.setitem(sys.modules, "xhtml2pdf", None)  # import fails
    report = build_report(result)
    with pytest.raises(ReportError, match=r"tbscore\[pdf\]"):
        render_pdf(report)
    assert main(["billing", "--services", "calc=1", "--setting", "office"]) == EXIT_OK


# -- escaping ------------------------------------------------------------------------------


def test_hostile_dicom_is_escaped(hostile_dicom, tmp_path):
    path, roi = hostile_dicom
    out = tmp_path / "r.html"
    rc = main(
        [
            "score",
            str(path),
            "--roi",
            str(roi),
            "--exclude",
            f"L3:{HOSTILE_REASON}",
            "-o",
            str(out),
            "-o",
            str(tmp_path / "r.json"),
        ]
    )
    assert rc == EXIT_OK
    html = out.read_text(encoding="utf-8")
    _assert_no_raw_markup(html)
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "&lt;svg onload=alert(2)&gt;" in html
    assert "67 years (DICOM header)" in html and "female (DICOM header)" in html


def test_hostile_values_escaped_in_every_block(scene):
    _, _, result = scene
    meta = dict(
        result.metadata,
        patient_name=HOSTILE_NAME,
        patient_id=HOSTILE_ID,
        manufacturer=HOSTILE_ID,
        model=HOSTILE_NAME,
        study_date=HOSTILE_NAME,
        study_instance_uid=HOSTILE_ID,
    )
    evil = replace(
        result,
        metadata=meta,
        warnings=(HOSTILE_NAME,),
        input=dict(result.input, source=HOSTILE_ID, sop_instance_uid=HOSTILE_NAME),
        calibration=None,
        roi_source=HOSTILE_NAME,
    )
    html = render_html(build_report(evil)) + render_html(build_report(evil), for_pdf=True)
    _assert_no_raw_markup(html)


# -- CLI -----------------------------------------------------------------------------------


@pytest.fixture
def result_json(scene, tmp_path):
    _, _, result = scene
    path = tmp_path / "result.json"
    result.to_json(path)
    return path


def test_cli_interpret(result_json, tmp_path, capsys):
    html, rjson = tmp_path / "i.html", tmp_path / "i.json"
    rc = main(
        [
            "interpret",
            str(result_json),
            "--age",
            "65",
            "--sex",
            "F",
            "--frax-mof",
            "20",
            "--frax-hip",
            "3",
            "--bmi",
            "24",
            "--threshold-set",
            "harvey_2015",
            "-o",
            str(html),
            "-o",
            str(rjson),
        ]
    )
    assert rc == EXIT_OK
    out = capsys.readouterr().out
    assert "CPT 77092" in out and "TBS-adjusted" in out
    text = html.read_text(encoding="utf-8")
    assert "CPT 77092" in text and "Harvey 2015" in text
    record = json.loads(rjson.read_text())
    assert record["cpt_code"] == "77092"
    assert record["interpretation"]["threshold_set"]["name"] == "harvey_2015"


def test_cli_interpret_with_image_overlay(scene, dicom_file, tmp_path):
    path = dicom_file(_pixels(), name="img.dcm")
    roi = tmp_path / "roi.json"
    roi.write_text(json.dumps(_roi_doc()))
    res = tmp_path / "res.json"
    assert main(["calc", str(path), "--roi", str(roi), "--json", "-o", str(res)]) == EXIT_OK
    out = tmp_path / "i.html"
    rc = main(["interpret", str(res), "--image", str(path), "--roi", str(roi), "-o", str(out)])
    assert rc == EXIT_OK
    assert out.read_text().count("data:image/png;base64,") == 2
    assert main(["interpret", str(res), "--image", str(path), "-o", str(out)]) == EXIT_ERROR


def test_cli_interpret_errors(result_json, tmp_path, capsys):
    out = str(tmp_path / "r.html")
    assert main(["interpret", str(tmp_path / "missing.json"), "-o", out]) == EXIT_ERROR
    assert "does not exist" in capsys.readouterr().err
    bad = tmp_path / "bad.json"
    bad.write_text('{"format": "something-else"}')
    assert main(["interpret", str(bad), "-o", out]) == EXIT_ERROR
    assert main(["interpret", str(result_json), "-o", str(tmp_path / "r.docx")]) == EXIT_ERROR
    assert (
        main(["interpret", str(result_json), "--age", "30", "--frax-mof", "10", "-o", out])
        == EXIT_ERROR
    )
    assert "between 40 and 90" in capsys.readouterr().err
    assert main(["interpret", str(result_json), "--sex", "X", "-o", out]) == EXIT_ERROR


def test_cli_interpret_incomplete(scene, tmp_path):
    image, rois, _ = scene
    result = tbscore.calc(image, rois, exclude=["L1", "L2", "L3"])
    path = tmp_path / "res.json"
    result.to_json(path)
    out = tmp_path / "r.html"
    assert main(["interpret", str(path), "-o", str(out)]) == EXIT_INCOMPLETE
    assert "not available" in out.read_text(encoding="utf-8")


def test_cli_score_writes_result_and_report(dicom_file, tmp_path, capsys):
    path = dicom_file(_pixels(), name="img.dcm", PatientAge="070Y", PatientSex="F")
    roi = tmp_path / "roi.json"
    roi.write_text(json.dumps(_roi_doc()))
    rjson, res = tmp_path / "r.json", tmp_path / "res.json"
    rc = main(
        [
            "score",
            str(path),
            "--roi",
            str(roi),
            "--lag-max-mm",
            "4",
            "--frax-mof",
            "15",
            "-o",
            str(rjson),
            "--result-json",
            str(res),
        ]
    )
    assert rc == EXIT_OK
    record = json.loads(rjson.read_text())
    assert record["cpt_code"] == "77089"
    assert record["result"]["settings"]["lag_max_mm"] == 4.0
    assert record["interpretation"]["age_years"] == 70.0
    assert json.loads(res.read_text())["cpt_code"] == "77091"
    assert "CPT 77089" in capsys.readouterr().out


def test_cli_billing(result_json, scene, tmp_path, capsys):
    _, _, result = scene
    score = tmp_path / "score.json"
    write_report(build_report(result, service="score"), score)
    interp = tmp_path / "interp.json"
    write_report(build_report(result, service="interpret"), interp)

    counts, notes = services_from_files([str(result_json), str(score), str(interp)])
    assert counts == {"score": 1, "interpret": 1}  # the score's own 77091 not counted twice
    assert len(notes) == 1 and "result.json" in notes[0]

    rc = main(["billing", str(score), str(interp), "--setting", "office"])
    assert rc == EXIT_OK
    out = capsys.readouterr().out
    assert "77089" in out and "77092" in out and "$50.02" in out

    rc = main(
        [
            "billing",
            "--services",
            "calc=3,score=2",
            "--setting",
            "hospital_outpatient",
            "--rate",
            "non_qp",
            "--json",
        ]
    )
    assert rc == EXIT_OK
    rows = json.loads(capsys.readouterr().out)
    assert {r["code"]: r["count"] for r in rows} == {"77091": 5, "77092": 2}

    rc = main(["billing", "--services", "score=1", "--setting", "office", "--split"])
    assert rc == EXIT_OK and "77089" not in capsys.readouterr().out.split("Source")[0]

    assert main(["billing", "--setting", "office"]) == EXIT_ERROR
    assert main(["billing", "--services", "calc=x", "--setting", "office"]) == EXIT_ERROR


def test_parse_services():
    assert parse_services("calc=3, score=2,calc") == {"calc": 4, "score": 2}
    assert parse_services("") == {}
    with pytest.raises(billing.BillingError):
        parse_services("scan=1")
    with pytest.raises(billing.BillingError):
        parse_services("calc=-1")


def test_report_is_a_dataclass_with_context(scene):
    _, _, result = scene
    report = build_report(result)
    assert isinstance(report, Report)
    ctx = report.context()
    assert ctx["cpt_code"] == "77089" and ctx["variogram_uri"].startswith("data:image/png")
    assert "variogram_png" not in repr(report)


def test_cli_score_with_calibration(dicom_file, tmp_path):
    from tbscore.core.calibration import Calibration
    from tbscore.io.calibration import save_calibration

    cal = Calibration(
        name="site A",
        method="ols",
        a=0.1,
        b=1.0,
        a_ci=(0.0, 0.2),
        b_ci=(0.9, 1.1),
        n=40,
        r=0.95,
        residual_sd=0.02,
        x_range=(1.0, 1.5),
    )
    cal_path = save_calibration(cal, tmp_path / "cal.json")
    path = dicom_file(_pixels(), name="img.dcm")
    roi = tmp_path / "roi.json"
    roi.write_text(json.dumps(_roi_doc()))
    out, html = tmp_path / "r.json", tmp_path / "r.html"
    rc = main(
        [
            "score",
            str(path),
            "--roi",
            str(roi),
            "--calibration",
            str(cal_path),
            "-o",
            str(out),
            "-o",
            str(html),
        ]
    )
    assert rc == EXIT_OK
    record = json.loads(out.read_text())
    calibrated = record["result"]["l1_l4_calibrated"]
    assert calibrated == pytest.approx(record["result"]["l1_l4"] + 0.1)
    assert record["l1_l4"]["basis"] == "calibrated"
    assert record["interpretation"]["category"]["tbs_compared"] == f"{calibrated:.3f}"
    text = html.read_text(encoding="utf-8")
    assert "site A; calibrated = 0.100 + 1.000 × tbscore" in text
    assert "indicative only" not in text


def test_cli_score_writes_sr(dicom_file, tmp_path):
    """77089 with --sr: the SR holds the values of the report's technical result."""
    pytest.importorskip("highdicom")
    from tbscore.io.sr import read_sr

    path = dicom_file(_pixels(), name="img.dcm")
    roi = tmp_path / "roi.json"
    roi.write_text(json.dumps(_roi_doc()))
    out, sr = tmp_path / "r.json", tmp_path / "r.sr.dcm"
    rc = main(["score", str(path), "--roi", str(roi), "-o", str(out), "--sr", str(sr)])
    assert rc == EXIT_OK
    result = json.loads(out.read_text())["result"]
    back = read_sr(sr)
    assert back["l1_l4"] == pytest.approx(result["l1_l4"], abs=0)
    for v in result["vertebrae"]:
        assert back["vertebrae"][v["label"]]["value"] == pytest.approx(v["value"], abs=0)


def test_cli_score_bad_report_name_writes_nothing(dicom_file, tmp_path, capsys):
    path = dicom_file(_pixels(), name="img.dcm")
    roi = tmp_path / "roi.json"
    roi.write_text(json.dumps(_roi_doc()))
    sr, res = tmp_path / "s.dcm", tmp_path / "r.json"
    argv = ["score", str(path), "--roi", str(roi), "-o", str(tmp_path / "report.txt")]
    assert main([*argv, "--sr", str(sr), "--result-json", str(res)]) == 2
    assert "report.txt" in capsys.readouterr().err
    assert not sr.exists() and not res.exists()


# -- issue 12: PDF fonts, page header, report.json keys ----------------------------------

#: PDF base-14 font names (PDF 32000-1 9.6.2.2): never acceptable unembedded.
BASE14 = ("Times", "Helvetica", "Courier", "Symbol", "ZapfDingbats")
UNICODE_NAMES = {
    "Żółć^Łukasz": "Żółć, Łukasz",  # Latin Extended-A
    "Παπαδόπουλος^Νίκος": "Παπαδόπουλος, Νίκος",  # Greek
}


def _pdffonts(path) -> list[dict]:
    import subprocess

    from conftest import require_tool

    tool = require_tool("pdffonts")
    out = subprocess.run([tool, str(path)], capture_output=True, text=True, check=True).stdout
    lines = out.splitlines()[2:]  # header and rule
    fonts = []
    for line in lines:
        # name type... encoding emb sub uni objectID gen: the flags are fixed columns
        # from the right
        parts = line.split()
        fonts.append({"name": parts[0], "emb": parts[-5], "line": line})
    return fonts


def _pdftotext_pages(path) -> list[str]:
    import subprocess

    from conftest import require_tool

    tool = require_tool("pdftotext")
    text = subprocess.run(
        [tool, "-enc", "UTF-8", str(path), "-"], capture_output=True, check=True
    ).stdout.decode("utf-8")
    return [page for page in text.split("\f") if page.strip()]


@pytest.mark.parametrize("dicom_name", sorted(UNICODE_NAMES))
def test_pdf_embeds_unicode_font_and_names_every_page(scene, tmp_path, dicom_name):
    pytest.importorskip("xhtml2pdf")
    image, rois, result = scene
    meta = dict(result.metadata, patient_name=dicom_name, patient_id="ŁZ-4711")
    result = replace(result, metadata=meta)
    report = build_report(
        result, interpret_result(result, age=65, frax_mof=20), image=image, rois=rois
    )
    path = write_report(report, tmp_path / "r.pdf")
    fonts = _pdffonts(path)
    assert any("DejaVuSans" in f["name"] and f["emb"] == "yes" for f in fonts), fonts
    not_embedded = [f["line"] for f in fonts if f["emb"] != "yes"]
    assert not not_embedded, not_embedded
    assert not [f for f in fonts if f["name"].split("+")[-1].startswith(BASE14)], fonts
    pages = _pdftotext_pages(path)
    assert len(pages) >= 2  # the header must repeat, not just open the document
    shown = UNICODE_NAMES[dicom_name]
    for number, page in enumerate(pages, start=1):
        assert shown in page and "ŁZ-4711" in page, (number, page[:200])
        assert f"page {number} of {len(pages)}" in page
    assert "■" not in "".join(pages)


def test_pdf_leaves_logging_and_reportlab_fonts_as_they_were(scene, monkeypatch):
    pytest.importorskip("xhtml2pdf")
    import logging

    from reportlab.pdfbase import pdfmetrics
    from xhtml2pdf import pisa

    _, _, result = scene
    levels = []
    real = pisa.CreatePDF

    def spy(*args, **kwargs):
        levels.append(logging.getLogger("xhtml2pdf").getEffectiveLevel())
        assert type(pdfmetrics.getFont("Helvetica")).__name__ == "TTFont"
        return real(*args, **kwargs)

    monkeypatch.setattr(pisa, "CreatePDF", spy)
    before = logging.getLogger("xhtml2pdf").getEffectiveLevel()
    assert render_pdf(build_report(result)).startswith(b"%PDF")
    assert levels == [before]  # xhtml2pdf's warnings are not silenced
    # the base-14 stand-ins are only in place while a report renders
    assert type(pdfmetrics.getFont("Helvetica")).__name__ != "TTFont"


def test_report_json_keys_are_snake_case_labels_only_in_html(scene, tmp_path):
    _, _, result = scene
    report = build_report(result, interpret_result(result, age=60))
    data = json.loads(write_report(report, tmp_path / "r.json").read_text())
    assert set(data["patient"]) == {"name", "patient_id", "birth_date", "age", "sex", "bmi"}
    assert set(data["study"]) == {
        "study_date",
        "study_time",
        "exam",
        "modality",
        "scanner",
        "station",
        "institution",
        "accession_number",
        "referring_physician",
        "indication",
        "operator",
        "image",
    }
    assert "exam" not in data  # one study-context block
    for block in ("patient", "study", "method", "provenance"):
        for key in data[block]:
            assert re.fullmatch(r"[a-z][a-z0-9_]*", key), (block, key)
    assert data["patient"]["age"] == "60 years (entered)"
    html = render_html(report)
    for label in ("Patient ID", "Birth date", "Settings digest", "Pixel SHA-256", "Minimum R²"):
        assert f'<td class="k">{html_escape(label)}</td>' in html, label
    assert "patient_id" not in html and "settings_digest" not in html


def test_interval_estimator_and_snr_are_shown_with_every_value(scene, tmp_path, capsys):
    """Report (HTML and PDF text), repr, notebook table and `calc` text: value (95 % CI)."""
    from tbscore.cli.calc import _summary
    from tbscore.core.result import format_value_ci

    image, rois, result = scene
    result = tbscore.calc(image, rois, settings={"estimator": "nugget"})
    lo, hi = result.l1_l4_ci95
    want = f"{result.l1_l4:.3f} (95 % CI {lo:.3f}–{hi:.3f})"
    assert format_value_ci(result.l1_l4, result.l1_l4_ci95) == want
    html = render_html(build_report(result, image=image, rois=rois))
    assert f"L1–L4 TBS {want}" in html and "estimator nugget" in html
    assert "profile interval of the exponent" in html  # its interval is not value ± 1.96 se
    for v in result.vertebrae:
        assert f"{v.ci95[0]:.3f}–{v.ci95[1]:.3f}" in html
        assert f"{v.label}: {format_value_ci(v.value, v.ci95)}" in repr(v)
        assert f"{v.label} {format_value_ci(v.value, v.ci95)}" in repr(result)
    assert want in repr(result) and "estimator nugget" in repr(result)
    assert want in result._repr_html_()
    text = _summary(result)
    assert want.replace("–", "-") in text and "estimator nugget" in text
    if importlib.util.find_spec("xhtml2pdf") is not None:
        path = write_report(build_report(result, image=image, rois=rois), tmp_path / "r.pdf")
        pages = "".join(_pdftotext_pages(path))
        assert f"95 % CI {lo:.3f}" in " ".join(pages.split())


def test_pdf_layout_of_the_bundled_sample(tmp_path):
    """What a reader sees: the values by vertebra on page 1 (not a half-empty first page
    because the tall ROI image moved on), and the sign-off box whole on one page."""
    pytest.importorskip("xhtml2pdf")
    from pathlib import Path

    sample = Path(__file__).resolve().parents[1] / "sample_dicom"
    out = tmp_path / "sample.pdf"
    code = main(
        [
            "score",
            str(sample / "phantom_a_square.dcm"),
            "--roi",
            str(sample / "phantom_a_square.roi.json"),
            "--exclude",
            "L3:fracture",
            "--frax-mof",
            "18",
            "--frax-hip",
            "2.5",
            "-o",
            str(out),
        ]
    )
    assert code == EXIT_OK
    pages = _pdftotext_pages(out)
    first = pages[0]
    for text in ("L1–L4 TBS", "Vertebrae", "L1", "L4", "mean of L1, L2, L4"):
        assert text in first, (text, first[-400:])
    holding = [n for n, page in enumerate(pages) if "Sign-off" in page]
    assert len(holding) == 1, holding
    assert "Preliminary: not signed" in pages[holding[0]]
