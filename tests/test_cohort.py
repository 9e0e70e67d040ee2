"""Cohort workflow (issue 18): manifest input, per-scanner calibration map, -s settings,
--validate dry run, the cohort QC report and longitudinal change."""

from __future__ import annotations

import csv
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from cohort_fixture import SCANNERS, make_cohort
from conftest import SAMPLE_DIR
from tbscore.batch import run_batch
from tbscore.batch.manifest import read_manifest
from tbscore.batch.output import BatchError
from tbscore.batch.table import read_table
from tbscore.cli import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK, main
from tbscore.clinical.longitudinal import Scan, consecutive_changes, visit_sort_key
from tbscore.core.calibration import CalibrationError, fit_calibration
from tbscore.core.calibration_map import CalibrationMap, CalibrationRule, ScannerInfo
from tbscore.core.settings import Settings, parse_setting_assignments
from tbscore.errors import SettingsError
from tbscore.io.calibration import save_calibration
from tbscore.io.calibration_map import load_calibration_map

pytest.importorskip("pandas")


def _tree(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*"))}


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """The synthetic cohort scored once: (root, manifest, output parquet)."""
    root = tmp_path_factory.mktemp("cohort")
    manifest = make_cohort(root)
    out = root / "results.parquet"
    summary = run_batch((), out, manifest=manifest, progress="none")
    assert summary.exit_code == EXIT_INCOMPLETE  # the planted failure
    return root, manifest, out


# ----------------------------------------------------------------------------- manifest


def _small_manifest(tmp_path: Path) -> Path:
    shutil.copytree(SAMPLE_DIR, tmp_path / "imgs")
    m = tmp_path / "m.csv"
    m.write_text(
        "image,roi,subject,visit,site,status,arm\n"
        "imgs/phantom_a_square.dcm,imgs/phantom_a_square.roi.json,S1,1,A,x1,=1+1\n"
        "imgs/missing.dcm,,S2,1,B,x2,b\n"
        ",,S3,1,B,x3,c\n"
        "imgs/phantom_b_nonsquare.dcm,,S1,1,A,x4,d\n",
        encoding="utf-8",
    )
    return m


@pytest.mark.parametrize("suffix", [".csv", ".jsonl", ".parquet"])
def test_manifest_passthrough_and_line_numbered_errors(tmp_path, suffix):
    m = _small_manifest(tmp_path)
    out = tmp_path / f"out{suffix}"
    s = run_batch((), out, manifest=m, progress="none")
    assert s.exit_code == EXIT_INCOMPLETE
    df = read_table(out)
    assert list(df["manifest_line"]) == ["2", "3", "4", "5"]
    assert list(df["subject"]) == ["S1", "S2", "S3", "S1"]
    assert list(df["site"]) == ["A", "B", "B", "A"]
    # a manifest column named like a batch column is kept, renamed
    assert list(df["manifest_status"]) == ["x1", "x2", "x3", "x4"]
    # pass-through text is neutralised like every CSV cell (OWASP formula rule)
    assert list(df["arm"]) == ["'=1+1", "b", "c", "d"]
    assert list(df["status"]) == ["ok", "error", "error", "ok"]
    assert df["error"][1].startswith("line 3: image file not found")
    assert df["error"][2] == "line 4: empty 'image'"
    assert (df["error_code"][1:3] == "manifest_error").all()
    assert math.isclose(df["l1_l4"][0], 1.1477, abs_tol=5e-4)  # ROI from the manifest
    # the journal is the durable record; a second run resumes and scores nothing
    assert (tmp_path / f"out{suffix}.journal.csv").is_file()
    s2 = run_batch((), out, manifest=m, progress="none")
    assert s2.n_scored == 0 and s2.n_resumed == 2
    assert len(read_table(out)) == 4


def test_manifest_warns_duplicate_subject_visit(tmp_path):
    m = read_manifest(_small_manifest(tmp_path))
    assert any("duplicate subject 'S1', visit '1'" in w for w in m.warnings)
    assert [r.line for r in m.rows if r.error] == [3, 4]


@pytest.mark.parametrize(
    "text, reason",
    [
        ("path,subject\nx.dcm,S1\n", "no 'image' column"),
        ("", "empty"),
        ("image,image\nx,y\n", "repeats"),
        ("image,subject\n", "no data line"),
    ],
)
def test_bad_manifest_is_a_typed_error(tmp_path, text, reason, capsys):
    m = tmp_path / "m.csv"
    m.write_text(text, encoding="utf-8")
    with pytest.raises(BatchError, match=reason):
        read_manifest(m)
    rc = main(["batch", "--manifest", str(m), "-o", str(tmp_path / "o.csv")])
    assert rc == EXIT_ERROR
    assert "m.csv" in capsys.readouterr().err
    assert not (tmp_path / "o.csv").exists()


def test_binary_manifest_refused(tmp_path):
    m = tmp_path / "m.csv"
    m.write_bytes(b"image\n\x00\x01\x02")
    with pytest.raises(BatchError, match="not a text CSV"):
        read_manifest(m)


def test_manifest_and_paths_are_exclusive(tmp_path):
    m = _small_manifest(tmp_path)
    with pytest.raises(BatchError, match="not both"):
        run_batch([tmp_path / "imgs"], tmp_path / "o.csv", manifest=m, progress="none")


# ----------------------------------------------------------------------------- calibration map


def _cal(tmp_path: Path, name: str, a: float, b: float) -> Path:
    x = np.linspace(0.6, 1.4, 12)
    cal = fit_calibration(x, a + b * x + 0.001 * np.sin(7 * x), method="ols", name=name)
    return save_calibration(cal, tmp_path / f"{name}.json")


def _map(tmp_path: Path, strict: bool, second: bool = True) -> Path:
    _cal(tmp_path, "acme", 0.1, 1.0)
    _cal(tmp_path, "bone", -0.2, 1.5)
    text = (
        f'strict = {"true" if strict else "false"}\n\n[[rule]]\nname = "acme"\n'
        'manufacturer = "acme*"\nmodel = "Densi*"\ncalibration = "acme.json"\n'
    )
    if second:
        text += '\n[[rule]]\nname = "bone"\nmanufacturer = "Bone Corp"\ncalibration = "bone.json"\n'
    p = tmp_path / "map.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_calibration_map_selects_first_matching_rule(tmp_path):
    cmap = load_calibration_map(_map(tmp_path, strict=False))
    acme = cmap.select(ScannerInfo("ACME Medical", "Densi 1000", "2.1", (1.0, 1.0)))
    bone = cmap.select(ScannerInfo("bone corp", "anything", None, (0.5, 0.5)))
    assert acme.name == "acme" and bone.name == "bone"
    assert cmap.select(ScannerInfo("Other", "X", None, (1.0, 1.0))) is None
    rule = CalibrationRule("s", acme.calibration, spacing_mm=(1.0, 1.0))
    assert rule.matches(ScannerInfo(spacing_mm=(1.004, 0.997)))
    assert not rule.matches(ScannerInfo(spacing_mm=(1.05, 1.0)))
    assert not rule.matches(ScannerInfo())
    with pytest.raises(ValueError, match="repeat"):
        CalibrationMap((rule, rule))


def test_batch_with_calibration_map_records_rule_per_row(cohort, tmp_path):
    root, manifest, _ = cohort
    out = tmp_path / "cal.csv"
    s = run_batch(
        (), out, manifest=manifest, calibration_map=_map(tmp_path, strict=False), progress="none"
    )
    df = read_table(out)
    ok = df[df["status"] == "ok"]
    for _, row in ok.iterrows():
        expect = {"Acme Medical": ("acme", 0.1, 1.0), "Bone Corp": ("bone", -0.2, 1.5)}
        name, a, b = expect[row["manufacturer"]]
        assert row["calibration_rule"] == name
        assert row["calibration"] == name
        assert math.isclose(row["l1_l4_calibrated"], a + b * row["l1_l4"], abs_tol=0.01)
    assert s.counts["ok"] == len(ok)


def test_strict_map_without_match_is_an_error_row(cohort, tmp_path):
    root, manifest, _ = cohort
    out = tmp_path / "strict.csv"
    run_batch(
        (),
        out,
        manifest=manifest,
        calibration_map=_map(tmp_path, True, second=False),
        progress="none",
    )
    df = read_table(out)
    bone = df[df["manufacturer"] == SCANNERS[1][0]]
    assert len(bone) > 0 and (bone["error_code"] == "no_calibration_match").all()
    assert (df[df["manufacturer"] == SCANNERS[0][0]]["status"] == "ok").all()


@pytest.mark.parametrize(
    "text, reason",
    [
        ('[[rule]]\nname = "a"\n', "'calibration'"),
        ('strict = 1\n[[rule]]\ncalibration = "acme.json"\n', "strict"),
        ('[[rule]]\ncalibration = "acme.json"\ncolour = "red"\n', "unknown keys"),
        ('[[rule]]\ncalibration = "nothere.json"\n', "cannot read calibration"),
        ('[[rule]]\ncalibration = "acme.json"\nspacing_mm = [1]\n', "spacing_mm"),
        ("rule = 3 = 4\n", "not valid TOML"),
    ],
)
def test_bad_calibration_map(tmp_path, text, reason):
    _cal(tmp_path, "acme", 0.1, 1.0)
    p = tmp_path / "bad.toml"
    p.write_text(text, encoding="utf-8")
    with pytest.raises(CalibrationError, match=reason):
        load_calibration_map(p)


def test_calibrate_per_scanner_group_writes_map(tmp_path, capsys):
    rows = ["reference,tbscore,manufacturer,model"]
    rng = np.random.default_rng(3)
    for man, model, a, b in (("Acme", "D1", 0.1, 1.0), ("Bone", "L9", -0.3, 1.6)):
        for x in np.linspace(0.7, 1.4, 10):
            rows.append(f"{a + b * x + rng.normal(0, 0.004):.5f},{x:.5f},{man},{model}")
    pairs = tmp_path / "pairs.csv"
    pairs.write_text("\n".join(rows) + "\n", encoding="utf-8")
    out = tmp_path / "cals"
    assert (
        main(
            [
                "calibrate",
                str(pairs),
                "--group-by",
                "manufacturer,model",
                "--method",
                "ols",
                "-o",
                str(out),
            ]
        )
        == EXIT_OK
    )
    cmap = load_calibration_map(out / "calibration-map.toml")
    assert cmap.strict and cmap.names == ["Acme_D1", "Bone_L9"]
    bone = cmap.select(ScannerInfo("bone", "l9"))
    assert abs(bone.calibration.b - 1.6) < 0.05 and abs(bone.calibration.a + 0.3) < 0.05
    assert cmap.select(ScannerInfo("Acme", "L9")) is None
    assert (
        main(["calibrate", str(pairs), "--group-by", "colour", "-o", str(tmp_path / "x")])
        == EXIT_ERROR
    )


# ----------------------------------------------------------------------------- -s settings


def test_set_settings_parsing():
    got = parse_setting_assignments(
        ["min_r2=0.5", 'directions=["vertical", "horizontal"]', "lag-max-mm=2.5", "parallel=true"]
    )
    assert got == {
        "min_r2": 0.5,
        "directions": ["vertical", "horizontal"],
        "lag_max_mm": 2.5,
        "parallel": True,
    }
    s = Settings.from_dict({**Settings().to_dict(), **got})
    assert s.directions == ("vertical", "horizontal") and s.min_r2 == 0.5
    for bad in (["novalue"], ["=3"], ["a=1", "a=2"]):
        with pytest.raises(SettingsError):
            parse_setting_assignments(bad)


@pytest.mark.parametrize(
    "item, reason",
    [
        ("min_r2=2", "min_r2"),
        ("bogus=1", "unknown setting"),
        ("min_lags=abc", "min_lags"),
        ('directions=["up"]', "unknown direction"),
        ("lag_min_mm", "KEY=VALUE"),
    ],
)
def test_set_settings_validated_at_the_cli(tmp_path, item, reason, capsys):
    out = tmp_path / "o.csv"
    rc = main(["batch", str(SAMPLE_DIR), "-o", str(out), "-s", item])
    assert rc == EXIT_ERROR
    assert reason in capsys.readouterr().err
    assert not out.exists()


def test_set_settings_changes_the_result(tmp_path, capsys):
    dcm = SAMPLE_DIR / "phantom_a_square.dcm"
    roi = SAMPLE_DIR / "phantom_a_square.roi.json"
    assert main(["calc", str(dcm), "--roi", str(roi), "--json"]) == EXIT_OK
    base = json.loads(capsys.readouterr().out)
    assert (
        main(
            [
                "calc",
                str(dcm),
                "--roi",
                str(roi),
                "--json",
                "-s",
                "lag_max_mm=2.0",
                "-s",
                'directions=["vertical","horizontal"]',
            ]
        )
        == EXIT_OK
    )
    other = json.loads(capsys.readouterr().out)
    assert other["settings"]["lag_max_mm"] == 2.0
    assert other["settings"]["directions"] == ["vertical", "horizontal"]
    assert other["l1_l4"] != base["l1_l4"]


# ----------------------------------------------------------------------------- --validate


def test_validate_touches_no_output(cohort, tmp_path, capsys):
    root, manifest, _ = cohort
    before = _tree(root)
    out = tmp_path / "new" / "res.csv"
    rc = main(
        [
            "batch",
            "--manifest",
            str(manifest),
            "-o",
            str(out),
            "--validate",
            "--calibration-map",
            str(_map(tmp_path, strict=True, second=False)),
        ]
    )
    text = capsys.readouterr().out
    assert rc == EXIT_INCOMPLETE  # the broken file, and bone-corp scans without a rule
    assert "would_score" in text and "not a DICOM file" in text
    assert "no calibration rule matches" in text
    assert "acme" in text
    assert not out.exists() and not out.parent.exists()
    assert _tree(root) == before


def test_validate_reports_resume_and_bad_roi(tmp_path, capsys):
    m = _small_manifest(tmp_path)
    out = tmp_path / "o.csv"
    run_batch((), out, manifest=m, progress="none")
    bad_roi = tmp_path / "imgs" / "phantom_b_nonsquare.roi.json"
    bad_roi.write_text("{not json", encoding="utf-8")
    before = _tree(tmp_path)
    rc = main(["batch", "--manifest", str(m), "-o", str(out), "--validate"])
    text = capsys.readouterr().out
    assert rc == EXIT_INCOMPLETE
    assert "would_resume" in text and "line 3" in text
    assert _tree(tmp_path) == before
    # with a fresh output the bad ROI side-car is found before any computation
    rc = main(["batch", "--manifest", str(m), "-o", str(tmp_path / "fresh.csv"), "--validate"])
    text = capsys.readouterr().out
    assert "phantom_b_nonsquare.dcm" in text and rc == EXIT_INCOMPLETE
    assert not (tmp_path / "fresh.csv").exists()


def test_validate_refuses_output_with_other_settings(tmp_path, capsys):
    m = _small_manifest(tmp_path)
    out = tmp_path / "o.csv"
    run_batch((), out, manifest=m, progress="none")
    rc = main(["batch", "--manifest", str(m), "-o", str(out), "--validate", "-s", "lag_max_mm=2.5"])
    assert rc == EXIT_ERROR
    assert "other settings" in capsys.readouterr().err


# ----------------------------------------------------------------------------- longitudinal


def test_consecutive_changes_order_and_calls():
    scans = [
        Scan("A", "m12", 1.20, "20220101"),
        Scan("A", "baseline", 1.30, "20210101"),
        Scan("A", "m24", 1.21, "20230101"),
        Scan("B", "2", 1.00),
        Scan("B", "10", 0.90),
        Scan("C", "1", 1.1),
        Scan("D", "1", math.nan),
    ]
    ch = consecutive_changes(scans, lsc=0.05)
    assert [(c.subject, c.visit_from, c.visit_to) for c in ch] == [
        ("A", "baseline", "m12"),
        ("A", "m12", "m24"),
        ("B", "2", "10"),
    ]
    assert [c.call for c in ch] == ["decrease", "no significant change", "decrease"]
    assert math.isclose(ch[0].delta, -0.10) and math.isclose(ch[0].years, 365 / 365.25)
    assert ch[2].years is None
    assert all(c.call == "not called (no LSC)" for c in consecutive_changes(scans))
    assert visit_sort_key("m6") < visit_sort_key("m12")
    with pytest.raises(ValueError):
        consecutive_changes(scans, lsc=-1)


# ----------------------------------------------------------------------------- cohort report


def test_cohort_report_from_planted_cohort(cohort):
    from tbscore.cohort import summarize

    root, _, out = cohort
    rep = summarize(out, lsc=0.05, thumbnails=3)
    t = rep.tables
    counts = dict(zip(t["status"]["status"], t["status"]["n"], strict=True))
    assert counts == {"ok": 17, "error": 1}
    assert list(t["reasons"]["error_code"]) == ["not_dicom"]
    # the very rough texture and the noise-dominated scan, nothing else
    assert set(t["outliers"]["input"]) == {"sub07_v2.dcm", "noisy.dcm"}
    assert "noisy.dcm" in set(t["review"]["input"])
    assert "R²" in t["review"].set_index("input").loc["noisy.dcm", "why"]
    assert set(t["by_group"]["scanner"]) >= {" ".join(s[:2]) for s in SCANNERS}
    assert len(t["changes"]) == 8 and (t["changes"]["call"] != "not called (no LSC)").all()
    assert {"status", "distribution", "groups", "covariates", "confidence", "longitudinal"} <= set(
        rep.figures
    )
    assert any("raw tbscore index" in n for n in rep.notes)
    assert rep.thumbnails and rep.thumbnails[0][1][:8] == b"\x89PNG\r\n\x1a\n"
    html = rep.to_html(root / "cohort.html")
    imgs = html.count('src="data:image/png;base64,')
    assert imgs == len(rep.figures) + sum(1 for t in rep.thumbnails if t[1])
    for src in html.split('src="data:image/png;base64,')[1:]:
        assert len(src.split('"', 1)[0]) > 2000  # a real image, not an empty one
    assert "sub07_v2.dcm" in html and "not interchangeable with TBS iNsight" in html


def test_cohort_report_says_when_settings_are_mixed(cohort, tmp_path):
    from tbscore.cohort import summarize

    _, _, out = cohort
    df = read_table(out)
    df.loc[df.index[:3], "settings_digest"] = "0000000000000000"
    rep = summarize(df, thumbnails=0)
    assert any(n.startswith("MIXED settings digest") for n in rep.notes)
    assert any("not called" in n for n in rep.notes)


def test_summarize_cli(cohort, tmp_path, capsys):
    _, _, out = cohort
    prec = tmp_path / "precision.json"
    prec.write_text(json.dumps({"lsc": 0.04}), encoding="utf-8")
    html = tmp_path / "c.html"
    assert (
        main(
            ["summarize", str(out), "-o", str(html), "--precision", str(prec), "--thumbnails", "1"]
        )
        == EXIT_OK
    )
    assert "written" in capsys.readouterr().out and html.stat().st_size > 20000
    assert main(["summarize", str(out), "-o", str(tmp_path / "c.pdf")]) == EXIT_ERROR
    assert main(["summarize", str(tmp_path / "nothere.csv"), "-o", str(html)]) == EXIT_ERROR
    assert main(["summarize", str(out), "-o", str(html), "--lsc", "-1"]) == EXIT_ERROR
