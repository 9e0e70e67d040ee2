"""DICOM SR (TID 1500 Measurement Report): write, read back, compare."""

from __future__ import annotations

import dataclasses

import numpy as np
import pydicom
import pytest

pytest.importorskip("highdicom")

from conftest import SAMPLE_DIR  # noqa: E402
from tbscore import calc  # noqa: E402
from tbscore._version import __version__  # noqa: E402
from tbscore.core.calibration import Calibration, apply_calibration
from tbscore.io.sr import CODING_SCHEME, SRError, read_sr, write_sr  # noqa: E402
from tbscore.io.write import write_secondary_capture  # noqa: E402
from tbscore.sim.phantom import synthetic_spine  # noqa: E402

LABELS = ("L1", "L2", "L3", "L4")
SNOMED = {"L1": "66794005", "L2": "14293000", "L3": "36470004", "L4": "11994002"}


@pytest.fixture(scope="module")
def scan(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sr")
    img, truth = synthetic_spine(
        (0.5, 0.55, 0.6, 0.65), shape=(200, 100), spacing_mm=(1.0, 1.0), rng=11
    )
    path = write_secondary_capture(
        tmp / "spine.dcm",
        img,
        (1.0, 1.0),
        patient={"name": "SR^TEST", "id": "SR-1", "sex": "F", "age": "070Y"},
    )
    roi = {
        "format": "tbscore-roi/1",
        "units": "px",
        "vertebrae": [{"label": lab, "box": truth["vertebrae"][lab]["box"]} for lab in LABELS],
    }
    return path, roi, tmp


def _calibration() -> Calibration:
    return Calibration(
        name="site-A 2026",
        method="deming",
        a=0.31,
        b=0.79,
        a_ci=(0.2, 0.4),
        b_ci=(0.7, 0.9),
        n=40,
        r=0.95,
        residual_sd=0.02,
        x_range=(0.5, 2.0),
    )


def test_sr_round_trip_keeps_the_asymmetric_nugget_interval(scan):
    """The "nugget" 95 % interval (a profile interval, not value -/+ 1.96 se) is written as
    TID 310 lower and upper uncertainty ranges and read back as the same (lo, hi)."""
    path, roi, tmp = scan
    result = calc(path, roi=roi, settings={"estimator": "nugget"})
    back = read_sr(write_sr(result, path, tmp / "nugget.dcm"))
    skew = []
    for v in result.vertebrae:
        lo, hi = v.ci95
        assert lo <= v.value <= hi
        np.testing.assert_allclose(back["vertebrae"][v.label]["ci95"], v.ci95, rtol=1e-14)
        skew.append(abs((hi - v.value) - (v.value - lo)))
    assert max(skew) > 1e-3  # at least one interval is visibly asymmetric
    assert "profile interval" in back["algorithm"]["parameters"]["uncertainty"]


def test_sr_round_trip(scan):
    path, roi, tmp = scan
    result = apply_calibration(calc(path, roi=roi, exclude={"L3": "fracture"}), _calibration())
    out = write_sr(result, path, tmp / "report.dcm")
    back = read_sr(out)

    for v in result.vertebrae:
        got = back["vertebrae"][v.label]
        assert got["value"] == v.value  # exact: FloatingPointValue (FD) round-trips
        assert got["calibrated_value"] == v.calibrated_value
        assert got["status"] == v.status
        assert got["finding_site"] == SNOMED[v.label]
        if v.value is not None:  # the 95 % interval (TID 310 uncertainty ranges)
            assert v.ci95 is not None
            np.testing.assert_allclose(got["ci95"], v.ci95, rtol=1e-14)
    assert back["vertebrae"]["L3"]["value"] is None
    assert back["vertebrae"]["L3"]["ci95"] is None
    np.testing.assert_allclose(back["l1_l4_ci95"], result.l1_l4_ci95, rtol=1e-14)
    assert back["algorithm"]["parameters"]["uncertainty"].startswith("95% interval")
    assert back["l1_l4"] == result.l1_l4 is not None
    assert back["l1_l4_calibrated"] == result.l1_l4_calibrated is not None
    assert tuple(back["l1_l4_labels"]) == result.l1_l4_labels == ("L1", "L2", "L4")

    src = pydicom.dcmread(path, stop_before_pixels=True)
    assert back["referenced_images"] == [
        {"sop_class_uid": src.SOPClassUID, "sop_instance_uid": src.SOPInstanceUID}
    ]
    assert back["study_instance_uid"] == src.StudyInstanceUID
    assert back["algorithm"]["name"] == "tbscore"
    assert back["algorithm"]["version"] == __version__
    params = back["algorithm"]["parameters"]
    assert params["settings_digest"] == result.settings.digest()
    assert params["calibration"] == "site-A 2026"

    ds = pydicom.dcmread(out)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.22"  # Enhanced SR
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == CODING_SCHEME
    assert ds.PatientID == "SR-1" and ds.Modality == "SR"


def test_sr_from_dataset_without_calibration_and_incomplete(scan):
    path, roi, tmp = scan
    result = calc(path, roi=roi, exclude=["L1", "L2", "L3"])
    assert result.l1_l4 is None
    # an invalid vertebra (no value computed) is kept with its status
    verts = tuple(
        dataclasses.replace(v, status="invalid", value=None, reason="too small")
        if v.label == "L4"
        else v
        for v in result.vertebrae
    )
    result = dataclasses.replace(result, vertebrae=verts)
    out = write_sr(result, pydicom.dcmread(path), tmp / "incomplete.dcm")
    back = read_sr(out)
    assert back["l1_l4"] is None and back["l1_l4_calibrated"] is None
    assert {k: v["status"] for k, v in back["vertebrae"].items()} == {
        "L1": "excluded",
        "L2": "excluded",
        "L3": "excluded",
        "L4": "invalid",
    }
    assert "calibration" not in back["algorithm"]["parameters"]


def test_sr_refuses_another_image(scan):
    path, roi, tmp = scan
    result = calc(path, roi=roi)
    other = write_secondary_capture(
        tmp / "other.dcm", np.random.default_rng(0).random((64, 64)), (1.0, 1.0)
    )
    with pytest.raises(SRError, match="not on this source"):
        write_sr(result, other, tmp / "wrong.dcm")
    with pytest.raises(SRError):
        read_sr(path)  # an image, not an SR


# --- issue 12 finding 9: atomic SR writes, deterministic UIDs --------------------------

FIXED = __import__("datetime").datetime(2026, 1, 2, 3, 4, 5)


def test_sr_same_inputs_give_byte_identical_file(scan):
    """Same image, settings, calibration and version: same UIDs and (with a fixed
    content time) the same bytes; without it only the creation date/time differ."""
    path, roi, tmp = scan
    res = calc(path, roi)
    a = write_sr(res, path, tmp / "det_a.sr.dcm", content_datetime=FIXED)
    b = write_sr(calc(path, roi), path, tmp / "det_b.sr.dcm", content_datetime=FIXED)
    assert a.read_bytes() == b.read_bytes()
    c = write_sr(res, path, tmp / "det_c.sr.dcm")
    da, dc = pydicom.dcmread(a), pydicom.dcmread(c)
    assert da.SOPInstanceUID == dc.SOPInstanceUID
    assert da.SeriesInstanceUID == dc.SeriesInstanceUID
    src = pydicom.dcmread(path, stop_before_pixels=True)
    assert da.StudyInstanceUID == src.StudyInstanceUID  # the SR stays in the image's study
    for kw in ("ContentDate", "ContentTime", "InstanceCreationDate", "InstanceCreationTime"):
        delattr(da, kw)
        delattr(dc, kw)
    for item in [*da.ContributingEquipmentSequence, *dc.ContributingEquipmentSequence]:
        item.pop("ContributionDateTime", None)
    assert da == dc


def test_sr_changed_result_gets_new_uid(scan):
    path, roi, tmp = scan
    base = pydicom.dcmread(write_sr(calc(path, roi), path, tmp / "u0.sr.dcm"))
    # another exclusion: same series (same settings), new instance
    excl = pydicom.dcmread(
        write_sr(calc(path, roi, exclude={"L3": "fracture"}), path, tmp / "u1.sr.dcm")
    )
    assert excl.SeriesInstanceUID == base.SeriesInstanceUID
    assert excl.SOPInstanceUID != base.SOPInstanceUID
    # other settings: new series and new instance
    other = calc(path, roi, settings={"lag_max_mm": 4.0})
    o = pydicom.dcmread(write_sr(other, path, tmp / "u2.sr.dcm"))
    assert o.SeriesInstanceUID != base.SeriesInstanceUID
    assert o.SOPInstanceUID != base.SOPInstanceUID
    # a calibration: new series and instance
    cal = apply_calibration(calc(path, roi), _calibration())
    c = pydicom.dcmread(write_sr(cal, path, tmp / "u3.sr.dcm"))
    assert c.SeriesInstanceUID != base.SeriesInstanceUID
    # another tbscore version: new series and instance
    newer = dataclasses.replace(calc(path, roi), tbscore_version="999.0")
    n = pydicom.dcmread(write_sr(newer, path, tmp / "u4.sr.dcm"))
    assert n.SeriesInstanceUID != base.SeriesInstanceUID
    assert n.SOPInstanceUID != base.SOPInstanceUID


def test_sr_write_is_atomic(scan, monkeypatch):
    """A failure while saving (full disk) leaves neither a partial target nor a
    temporary file, keeps an existing SR intact, and is a typed SRError."""
    path, roi, tmp = scan
    res = calc(path, roi)
    folder = tmp / "atomic"
    target = write_sr(res, path, folder / "x.sr.dcm")
    good = target.read_bytes()

    def full_disk(self, filename, *args, **kwargs):
        with open(filename, "wb") as fh:
            fh.write(b"\0" * 200)  # a partial file, then the disk is full
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pydicom.dataset.Dataset, "save_as", full_disk)
    with pytest.raises(SRError, match="No space left"):
        write_sr(res, path, target)
    with pytest.raises(SRError):
        write_sr(res, path, folder / "new.sr.dcm")
    assert target.read_bytes() == good
    assert sorted(p.name for p in folder.iterdir()) == ["x.sr.dcm"]


def test_sr_valid_under_dciodvfy_and_dsrdump(scan):
    import subprocess

    from conftest import require_tool

    path, roi, tmp = scan
    sr = write_sr(apply_calibration(calc(path, roi), _calibration()), path, tmp / "v.sr.dcm")
    dciodvfy = require_tool("dciodvfy")
    proc = subprocess.run([dciodvfy, str(sr)], capture_output=True, text=True, timeout=60)
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
    assert errors == []
    dsrdump = require_tool("dsrdump")
    proc = subprocess.run([dsrdump, str(sr)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "Imaging Measurement Report" in proc.stdout and "99TBSCORE" in proc.stdout
    assert "range of upper measurement uncertainty" in proc.stdout  # the 95 % interval
    assert read_sr(sr)["l1_l4"] is not None
    # the signed (VERIFIED, interpretation group) SR of clinical sign-off as well
    import datetime as dt

    from tbscore.io.sr import SRVerification

    sign = SRVerification(
        observer_name="Roe^Jane",
        organisation="Test clinic",
        time=dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC),
        category_code="partially_degraded",
        category_label="Partially degraded",
        category_basis="raw",
        frax_mof_adjusted=12.5,
        frax_hip_adjusted=3.25,
    )
    signed = write_sr(calc(path, roi), path, tmp / "v_signed.sr.dcm", verification=sign)
    proc = subprocess.run([dciodvfy, str(signed)], capture_output=True, text=True, timeout=60)
    errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
    assert errors == []
    assert pydicom.dcmread(signed).VerificationFlag == "VERIFIED"


def test_signed_sr_is_a_new_instance_of_the_same_series(tmp_path):
    """Deterministic UIDs (hardening #9) and sign-off (#17) together: signing adds a
    document (new SOP Instance UID) in the SR series of the result; the same signature
    gives the same UID."""
    import datetime as dt

    from tbscore.io.sr import SRVerification, sr_uids

    path = SAMPLE_DIR / "phantom_a_square.dcm"
    result = calc(path, roi=SAMPLE_DIR / "phantom_a_square.roi.json")
    when = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
    sign = SRVerification(observer_name="Roe^Jane", organisation="Test clinic", time=when)
    plain = write_sr(result, path, tmp_path / "plain.dcm", content_datetime=when)
    signed = write_sr(result, path, tmp_path / "s1.dcm", content_datetime=when, verification=sign)
    again = write_sr(result, path, tmp_path / "s2.dcm", content_datetime=when, verification=sign)
    other = SRVerification(observer_name="Doe^John", organisation="Test clinic", time=when)
    third = write_sr(result, path, tmp_path / "s3.dcm", content_datetime=when, verification=other)
    uid = {p.name: pydicom.dcmread(p) for p in (plain, signed, again, third)}
    expected = sr_uids(result, str(pydicom.dcmread(path).SOPInstanceUID))
    assert uid["plain.dcm"].SOPInstanceUID == expected["sop_instance_uid"]
    assert uid["s1.dcm"].SOPInstanceUID == uid["s2.dcm"].SOPInstanceUID
    assert len({d.SOPInstanceUID for d in uid.values()}) == 3
    assert len({d.SeriesInstanceUID for d in uid.values()}) == 1


def test_sr_from_the_kept_header_equals_sr_from_the_file(scan):
    # the loader keeps the header (pixel data dropped): calc --sr and batch hand it to
    # write_sr instead of reading the input again, and the SR is byte-identical
    from tbscore.api import as_image

    path, roi, tmp = scan
    image = as_image(path)
    assert image.header is not None and "PixelData" not in image.header
    assert str(image.header.SOPInstanceUID) == image.metadata.sop_instance_uid
    res = calc(image, roi)
    a = write_sr(res, path, tmp / "from_file.sr.dcm", content_datetime=FIXED)
    b = write_sr(res, image.header, tmp / "from_header.sr.dcm", content_datetime=FIXED)
    assert a.read_bytes() == b.read_bytes()


def _sr_bytes_three_ways(result, source, folder, **kw):
    """The SR written as shipped, with pydicom encoding the whole file, and with
    highdicom given the whole content tree as well (the reference)."""
    import tbscore.io.sr as sr_mod

    out = []
    for stub, fast in ((True, True), (True, False), (False, False)):
        old = sr_mod._STUB_CONTENT, sr_mod._FAST_ENCODE
        sr_mod._STUB_CONTENT, sr_mod._FAST_ENCODE = stub, fast
        try:
            path = write_sr(result, source, folder / f"w{stub:d}{fast:d}.dcm", **kw)
        finally:
            sr_mod._STUB_CONTENT, sr_mod._FAST_ENCODE = old
        out.append(path.read_bytes())
    return out


def test_sr_fast_path_bytes_equal_highdicom_and_pydicom(scan, tmp_path):
    """The stand-in content for highdicom's document and the lean content encoder
    change nothing: same bytes as highdicom + pydicom building and writing it all,
    for calibrated / excluded / invalid / signed reports."""
    import datetime as dt

    from tbscore.io.sr import SRVerification

    path, roi, _ = scan
    when = dt.datetime(2026, 12, 1, 9, 30, tzinfo=dt.UTC)
    calibrated = apply_calibration(calc(path, roi, exclude={"L3": "fracture"}), _calibration())
    sparse = calc(path, roi, exclude=["L1", "L2", "L3"])
    signed = SRVerification(
        observer_name="Roe^Jane",
        organisation="Test clinic",
        time=when,
        category_code="partially_degraded",
        category_label="Partially degraded",
        category_basis="raw",
        frax_mof_adjusted=12.5,
        frax_hip_adjusted=3.25,
    )
    cases = [
        (calibrated, path, {}),
        (sparse, pydicom.dcmread(path), {"institution_name": "Clinic \u00e9"}),
        (calibrated, path, {"verification": signed}),
    ]
    for i, (result, source, kw) in enumerate(cases):
        folder = tmp_path / str(i)
        folder.mkdir()
        shipped, pydicom_all, reference = _sr_bytes_three_ways(
            result, source, folder, content_datetime=when.replace(tzinfo=None), **kw
        )
        assert shipped == pydicom_all == reference, i
