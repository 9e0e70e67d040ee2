"""Signed reports (CPT 77092 sign-off): records, addenda, tbscore sign, SR, Encapsulated PDF."""

from __future__ import annotations

import json
import subprocess
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import SAMPLE_DIR, require_tool
from tbscore.cli import EXIT_ERROR, EXIT_OK, main
from tbscore.clinical.signoff import (
    SignOff,
    add_addendum,
    calibration_warnings,
    category_caveat,
    result_digest,
    sign,
    signing_time,
    verify,
)
from tbscore.errors import AlreadySignedError, SignOffError
from tbscore.render.report import orientation_marks

T0 = datetime(2026, 3, 1, 9, 30, tzinfo=UTC)
DCM = SAMPLE_DIR / "phantom_a_square.dcm"
ROI = SAMPLE_DIR / "phantom_a_square.roi.json"


def _signed(**kw) -> SignOff:
    args = {
        "physician": "Jane Roe",
        "impression": "Normal.",
        "when": T0,
        "time_zone": "Europe/Zurich",
        "inputs": {"age": 65},
    }
    args.update(kw)
    return sign("abc", **args)


# -- clinical logic ---------------------------------------------------------------------


def test_sign_then_addendum_then_refuse_resign():
    rec = _signed()
    assert rec.status == "final" and rec.signatures[0].signed_at == "2026-03-01T10:30:00+01:00"
    assert rec.signatures[0].display_time() == "2026-03-01 10:30 CET (Europe/Zurich)"
    verify(rec)
    with pytest.raises(AlreadySignedError, match="addendum"):
        sign("abc", physician="X", impression="Y", when=T0, time_zone="UTC", existing=rec)
    later = T0 + timedelta(days=1)
    amended = add_addendum(
        rec, "abc", physician="John Doe", text="History received.", when=later, time_zone="UTC"
    )
    assert amended.status == "amended" and len(amended.signatures) == 2
    assert amended.signatures[0] == rec.signatures[0]  # the final signature is unchanged
    verify(SignOff.from_dict(json.loads(json.dumps(amended.to_dict()))))
    with pytest.raises(SignOffError, match="another|differs"):
        add_addendum(rec, "other", physician="J", text="t", when=later, time_zone="UTC")
    with pytest.raises(SignOffError, match="before"):
        add_addendum(rec, "abc", physician="J", text="t", when=T0 - timedelta(1), time_zone="UTC")
    with pytest.raises(SignOffError, match="not signed"):
        add_addendum(SignOff("abc", "x"), "abc", physician="J", text="t", when=T0, time_zone="UTC")


@pytest.mark.parametrize(
    "field, value",
    [("impression", "Degraded."), ("inputs", {"age": 80}), ("result_sha256", "zzz")],
)
def test_edit_after_signing_is_detected(field, value):
    d = _signed().to_dict()
    d[field] = value
    with pytest.raises(SignOffError, match="edited after signing"):
        verify(SignOff.from_dict(d))


def test_removed_or_reordered_signatures_are_detected():
    rec = _signed()
    amended = add_addendum(
        rec, "abc", physician="J", text="a", when=T0 + timedelta(1), time_zone="UTC"
    )
    d = amended.to_dict()
    d["signatures"] = d["signatures"][::-1]
    with pytest.raises(SignOffError):
        verify(SignOff.from_dict(d))
    d = amended.to_dict()
    d["signatures"][1]["text"] = "changed"
    with pytest.raises(SignOffError, match="signature 2"):
        verify(SignOff.from_dict(d))


@settings(max_examples=40, deadline=None)
@given(
    impression=st.text(min_size=1, max_size=80).filter(lambda s: s.strip()),
    physician=st.text(min_size=1, max_size=30).filter(lambda s: s.strip()),
    minutes=st.integers(0, 10**6),
)
def test_record_roundtrip_verifies_property(impression, physician, minutes):
    when = T0 + timedelta(minutes=minutes)
    rec = sign("d", physician=physician, impression=impression, when=when, time_zone="UTC")
    back = SignOff.from_dict(json.loads(json.dumps(rec.to_dict())))
    verify(back)
    assert back == rec and back.signatures[0].time == when


def test_bad_inputs():
    with pytest.raises(SignOffError, match="time zone"):
        signing_time("Mars/Olympus")
    with pytest.raises(SignOffError, match="aware"):
        signing_time("UTC", datetime(2026, 1, 1))
    with pytest.raises(SignOffError, match="impression"):
        _signed(impression="   ")
    with pytest.raises(SignOffError, match="physician"):
        _signed(physician="")


def test_calibration_caveats():
    assert calibration_warnings(None) == ()
    assert calibration_warnings({"n": 60, "b": 1.0, "b_ci": [0.95, 1.05]}) == ()
    weak = calibration_warnings({"n": 4, "b": 0.57, "b_ci": [0.29, 0.85]})
    assert len(weak) == 2
    assert category_caveat("raw", None).startswith("indicative only")
    assert category_caveat("calibrated", {"n": 4, "b": 1, "b_ci": [0.9, 1.1]}) is not None
    assert category_caveat("calibrated", {"n": 60, "b": 1, "b_ci": [0.95, 1.05]}) is None


def test_orientation_marks():
    assert orientation_marks(None) == ("R", "L")  # PA convention
    assert orientation_marks("L\\F") == ("R", "L")
    assert orientation_marks("R\\F") == ("L", "R")
    assert orientation_marks("garbage") == ("R", "L")


# -- tbscore sign -----------------------------------------------------------------------


@pytest.fixture
def case(tmp_path, dicom_file):
    """A result JSON of a DICOM with study context, and the DICOM."""
    import numpy as np

    rng = np.random.default_rng(3)
    from scipy.ndimage import gaussian_filter

    pix = np.clip(1000 + 120 * gaussian_filter(rng.standard_normal((160, 120)), 1.0), 0, 4000)
    dcm = dicom_file(
        pix.astype(np.uint16),
        name="case.dcm",
        PatientName="DOE^ANN",
        PatientID="P-77",
        PatientBirthDate="19600101",
        PatientSex="F",
        StudyDate="20260301",
        StudyTime="093000",
        AccessionNumber="ACC-123",
        ReferringPhysicianName="SMITH^JOHN",
        StudyDescription="DXA lumbar spine",
        InstitutionName="Clinic X",
        ManufacturerModelName="Model 9",
        DeviceSerialNumber="SN-42",
        OperatorsName="TECH^TINA",
        StudyID="1",
    )
    roi = tmp_path / "case.roi.json"
    roi.write_text(
        json.dumps(
            {
                "format": "tbscore-roi/1",
                "units": "px",
                "vertebrae": [
                    {"label": f"L{i + 1}", "box": [10 + 35 * i, 35, 40 + 35 * i, 85]}
                    for i in range(4)
                ],
            }
        )
    )
    import tbscore

    res = tmp_path / "case.json"
    tbscore.calc(dcm, roi=roi).to_json(res)
    return res, dcm, roi


def _sign(res, dcm, roi, out, *extra):
    return main(
        [
            "sign",
            str(res),
            "--physician",
            "Jane Roe",
            "--organisation",
            "Clinic X",
            "--tz",
            "Europe/Zurich",
            "--image",
            str(dcm),
            "--roi",
            str(roi),
            "-o",
            str(out),
            *extra,
        ]
    )


def test_cli_sign_html_contents_and_immutability(case, tmp_path, capsys):
    res, dcm, roi = case
    prior = tmp_path / "prior.json"
    d = json.loads(res.read_text())
    d["l1_l4"] = d["l1_l4"] + 0.2
    d["metadata"]["study_date"] = "20240301"
    prior.write_text(json.dumps(d))
    out = tmp_path / "signed.html"
    rc = _sign(
        res,
        dcm,
        roi,
        out,
        "--impression",
        "Degraded microarchitecture <b>",
        "--recommendation",
        "Repeat in 2 years.",
        "--age",
        "66",
        "--sex",
        "F",
        "--frax-mof",
        "12",
        "--bmd",
        "0.912",
        "--t-score",
        "-1.4",
        "--prior",
        str(prior),
        "--lsc",
        "0.05",
    )
    assert rc == EXIT_OK
    html = out.read_text(encoding="utf-8")
    for text in (
        "FINAL",
        "Jane Roe",
        "Clinic X",
        "CET (Europe/Zurich)",
        "Degraded microarchitecture &lt;b&gt;",
        "Repeat in 2 years.",
        "ACC-123",
        "SMITH, JOHN",
        "DXA lumbar spine",
        "Model 9, serial SN-42",
        "TECH, TINA",
        "0.912 g/cm²",
        "T-score -1.4",
        "2024-03-01",
        "significant decrease: -0.200 exceeds the LSC 0.050",
        "cat-muted",
        "indicative only",
    ):
        assert text in html, text
    assert 'id="coding"' not in html and "$" not in html
    assert not (out.stat().st_mode & 0o222)  # read-only
    record = json.loads((tmp_path / "case.signoff.json").read_text())
    assert record["status"] == "final" and record["inputs"]["lsc"] == 0.05
    # signing again without --addendum is refused, nothing written
    capsys.readouterr()
    rc = _sign(res, dcm, roi, tmp_path / "again.html", "--impression", "Normal.")
    assert rc == EXIT_ERROR and not (tmp_path / "again.html").exists()
    assert "already signed" in capsys.readouterr().err
    # an existing signed file is never overwritten, even with an addendum
    assert _sign(res, dcm, roi, out, "--addendum", "x") == EXIT_ERROR
    # the addendum keeps the signed inputs
    rc = _sign(res, dcm, roi, tmp_path / "a.html", "--addendum", "y", "--age", "70")
    assert rc == EXIT_ERROR
    rc = _sign(res, dcm, roi, tmp_path / "amended.html", "--addendum", "History received.")
    assert rc == EXIT_OK
    amended = (tmp_path / "amended.html").read_text(encoding="utf-8")
    assert "AMENDED" in amended and "Addendum 1" in amended and "History received." in amended
    assert "Degraded microarchitecture" in amended and "significant decrease" in amended
    # a result changed after signing: the addendum is refused
    d = json.loads(res.read_text())
    d["l1_l4"] += 0.001
    res.write_text(json.dumps(d))
    assert _sign(res, dcm, roi, tmp_path / "b.html", "--addendum", "z") == EXIT_ERROR
    assert "another result" in capsys.readouterr().err


def test_cli_sign_refuses_bad_requests(case, tmp_path, capsys):
    res, dcm, roi = case
    assert _sign(res, dcm, roi, tmp_path / "x.html") == EXIT_ERROR  # no impression
    assert _sign(res, dcm, roi, tmp_path / "x.docx", "--impression", "a") == EXIT_ERROR
    assert _sign(res, dcm, roi, tmp_path / "x.html", "--addendum", "a") == EXIT_ERROR
    err = capsys.readouterr().err
    assert "impression" in err and "not signed yet" in err
    rc = main(["sign", str(res), "--physician", "A", "--impression", "b", "-o",
               str(tmp_path / "y.html"), "--sr", str(tmp_path / "y.dcm")])  # fmt: skip
    assert rc == EXIT_ERROR and "need --image" in capsys.readouterr().err
    rc = _sign(res, dcm, roi, tmp_path / "z.html", "--impression", "a", "--tz", "Nowhere/X")
    assert rc == EXIT_ERROR and "time zone" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.signoff.json"))


def test_cli_sign_sr_and_encapsulated_pdf(case, tmp_path):
    pytest.importorskip("xhtml2pdf")
    pytest.importorskip("highdicom")
    from tbscore.io.pdf_dicom import read_pdf_dicom
    from tbscore.io.sr import read_sr, read_sr_verification

    res, dcm, roi = case
    pdf, sr, enc = tmp_path / "r.pdf", tmp_path / "r.sr.dcm", tmp_path / "r.pdf.dcm"
    rc = _sign(
        res, dcm, roi, pdf, "--impression", "Normal.", "--age", "66", "--sex", "F",
        "--frax-mof", "12", "--frax-hip", "3", "--sr", str(sr), "--pdf-dicom", str(enc),
    )  # fmt: skip
    assert rc == EXIT_OK
    v = read_sr_verification(sr)
    assert v["completion"] == "COMPLETE" and v["verification"] == "VERIFIED"
    assert v["preliminary"] == "FINAL"
    assert v["observer"]["name"] == "Roe^Jane" and v["observer"]["organisation"] == "Clinic X"
    record = json.loads((tmp_path / "case.signoff.json").read_text())
    signed_at = datetime.fromisoformat(record["signatures"][0]["signed_at"])
    assert v["observer"]["datetime"] == signed_at.strftime("%Y%m%d%H%M%S%z")
    report_json = json.loads(res.read_text())
    assert v["category"] is not None and v["frax_mof_adjusted"] is not None
    assert read_sr(sr)["l1_l4"] == pytest.approx(report_json["l1_l4"], abs=0)
    ds, data = read_pdf_dicom(enc)
    assert data == pdf.read_bytes()
    assert ds.PatientID == "P-77" and ds.AccessionNumber == "ACC-123"
    assert ds.StudyInstanceUID == report_json["metadata"]["study_instance_uid"]

    # external validators (installed in CI)
    dciodvfy = require_tool("dciodvfy")
    for path in (sr, enc):
        proc = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, check=False)
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, errors
    dsrdump = require_tool("dsrdump")
    dump = subprocess.run([dsrdump, str(sr)], capture_output=True, text=True, check=True).stdout
    assert "Verification Flag   : VERIFIED" in dump and "Roe^Jane" in dump
    assert "Completion Flag     : COMPLETE" in dump and "TBS fracture-risk category" in dump
    pdffonts = require_tool("pdffonts")
    fonts = subprocess.run([pdffonts, str(pdf)], capture_output=True, text=True, check=True)
    embedded = {r.split()[0]: r.split()[-5] == "yes" for r in fonts.stdout.splitlines()[2:]}
    assert any(e and "DejaVuSans" in name for name, e in embedded.items()), embedded
    assert all(embedded.values()), f"PDF has non-embedded fonts: {embedded}"


def test_signed_outputs_not_partial_on_failure(case, tmp_path, monkeypatch):
    """A failing SR leaves no signed HTML behind and no record."""
    import tbscore.io.sr as sr_mod

    def boom(*a, **k):
        raise sr_mod.SRError("boom")

    pytest.importorskip("highdicom")
    monkeypatch.setattr(sr_mod, "write_sr", boom)
    res, dcm, roi = case
    rc = _sign(res, dcm, roi, tmp_path / "r.html", "--impression", "a", "--sr",
               str(tmp_path / "r.dcm"))  # fmt: skip
    assert rc == EXIT_ERROR
    assert not (tmp_path / "r.html").exists() and not (tmp_path / "case.signoff.json").exists()


def test_digest_ignores_key_order():
    assert result_digest({"a": 1, "b": [1, 2]}) == result_digest({"b": [1, 2], "a": 1})
    assert result_digest({"a": 1}) != result_digest({"a": 2})


def test_cli_sign_reads_bmd_t_score_from_vendor_dxa_sr_entered_values_win(case, tmp_path):
    """Issue 17: with no --bmd/--t-score, the vendor DXA SR of the same study beside the
    image gives them (as in the reading station); entered values win; --no-dxa-sr
    leaves them out."""
    import shutil

    from review_fixture import SR_BMD, SR_T, write_vendor_dxa_sr

    res, dcm, roi = case
    sr = write_vendor_dxa_sr(tmp_path / "vendor_sr.dcm", dcm)

    def bone_density(name: str, *extra: str) -> dict | None:
        copy = shutil.copy(res, tmp_path / f"{name}.json")
        rc = _sign(copy, dcm, roi, tmp_path / f"{name}.html", "--impression", "x", *extra)
        assert rc == EXIT_OK
        record = json.loads((tmp_path / f"{name}.signoff.json").read_text())
        return record["inputs"]["bone_density"]

    from_sr = bone_density("from_sr")
    assert (from_sr["bmd_g_cm2"], from_sr["t_score"]) == (SR_BMD, SR_T)
    assert "vendor DXA SR" in from_sr["source"] and sr.name in from_sr["source"]
    assert f"{SR_BMD:.3f}" in (tmp_path / "from_sr.html").read_text()
    entered = bone_density("entered", "--bmd", "0.912")
    assert entered == {"bmd_g_cm2": 0.912, "t_score": None, "source": "entered"}
    assert bone_density("off", "--no-dxa-sr") is None
    sr.unlink()
    assert bone_density("no_sr") is None
