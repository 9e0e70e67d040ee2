"""Batch scoring: discovery, statuses, duplicates, resume after a kill, executors."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from conftest import make_dataset, worker_hook_env
from tbscore.batch import (
    COLUMNS,
    BatchError,
    CsvJournal,
    batch,
    discover,
    is_dicom,
    iter_batch,
    journal_path,
    run_batch,
    safe_filename,
    safe_path,
)
from tbscore.batch.naming import UnsafePathError
from tbscore.cli import EXIT_ERROR, EXIT_INCOMPLETE, EXIT_OK, main
from tbscore.cli.exit import EXIT_NOTHING_SCORED
from tbscore.errors import SettingsError
from tbscore.sim.phantom import synthetic_spine

LABELS = ("L1", "L2", "L3", "L4")
VOLATILE = ("elapsed_s",)


def _detection_available() -> bool:
    try:
        import tbscore.core.detect  # noqa: F401
    except ImportError:
        return False
    return True


# -- test data -------------------------------------------------------------------------
def spine(seed: int) -> tuple[np.ndarray, dict]:
    """A small synthetic spine (uint16) and its tbscore-roi/1 document."""
    image, truth = synthetic_spine(0.6, shape=(200, 160), spacing_mm=(1.0, 1.0), rng=seed)
    pixels = np.clip(np.round(image), 0, 65535).astype(np.uint16)
    roi = {
        "format": "tbscore-roi/1",
        "units": "px",
        "image_shape": [200, 160],
        "vertebrae": [{"label": lab, "box": truth["vertebrae"][lab]["box"]} for lab in LABELS],
    }
    return pixels, roi


def write_scan(path: Path, seed: int, *, roi: str | Path | None = "sibling", **kw) -> Path:
    """Write a spine DICOM; its ROI next to it (``"sibling"``), at ``roi``, or nowhere."""
    pixels, doc = spine(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_dataset(pixels, **kw).save_as(path, enforce_file_format=True)
    if roi is not None:
        target = path.with_name(path.name[: -len(".dcm")] + ".roi.json")
        if roi != "sibling":
            target = Path(roi)
            target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(doc))
    return path


@pytest.fixture(scope="module")
def mixed(tmp_path_factory) -> tuple[Path, Path, dict[str, tuple[str, str]]]:
    """A folder of good and bad inputs and the expected (status, error_code) per file."""
    root = tmp_path_factory.mktemp("mixed")
    scans = root / "scans"
    rois = root / "rois"
    expect: dict[str, tuple[str, str]] = {}

    write_scan(scans / "a.dcm", 1)
    expect["a.dcm"] = ("ok", "")
    write_scan(scans / "sub" / "b.dcm", 2, roi=rois / "sub" / "b.roi.json")  # mirrored
    expect["sub/b.dcm"] = ("ok", "")
    write_scan(scans / "c.dcm", 3, roi=rois / "c.roi.json")  # flat --roi-dir
    expect["c.dcm"] = ("ok", "")
    # incomplete: three of four vertebrae excluded in the ROI file
    pixels, doc = spine(4)
    for item in doc["vertebrae"][1:]:
        item.update(excluded=True, exclusion_reason="fracture")
    make_dataset(pixels).save_as(scans / "d.dcm", enforce_file_format=True)
    (scans / "d.roi.json").write_text(json.dumps(doc))
    expect["d.dcm"] = ("incomplete", "no_l1_l4_value")
    # without preamble (recognised by content)
    write_scan(root / "tmp" / "bare.dcm", 5)
    (scans / "bare").write_bytes((root / "tmp" / "bare.dcm").read_bytes()[132:])
    shutil.copy(root / "tmp" / "bare.roi.json", scans / "bare.roi.json")
    expect["bare"] = ("ok", "")
    # duplicates: a byte copy and a re-export with new UIDs, each with a copy of the ROIs
    shutil.copy(scans / "a.dcm", scans / "z_copy_of_a.dcm")
    shutil.copy(scans / "a.roi.json", scans / "z_copy_of_a.roi.json")
    expect["z_copy_of_a.dcm"] = ("duplicate", "")
    write_scan(scans / "z_reexport_a.dcm", 1)
    expect["z_reexport_a.dcm"] = ("duplicate", "")
    # failures
    good = (scans / "c.dcm").read_bytes()
    (scans / "truncated.dcm").write_bytes(good[: len(good) // 2])
    expect["truncated.dcm"] = ("error", "dicom_read_error")
    (scans / "notes.txt").write_text("not an image\n")
    expect["notes.txt"] = ("excluded", "not_dicom")
    (scans / "random.dcm").write_bytes(np.random.default_rng(0).bytes(4000))
    expect["random.dcm"] = ("excluded", "not_dicom")
    from pydicom.data import get_testdata_file

    shutil.copy(get_testdata_file("CT_small.dcm", download=False), scans / "ct.dcm")
    expect["ct.dcm"] = ("error", "unsupported_image")
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 0] = 200
    make_dataset(rgb, photometric="RGB", modality="OT").save_as(
        scans / "screenshot.dcm", enforce_file_format=True
    )
    expect["screenshot.dcm"] = ("excluded", "colour_image")  # a report screenshot
    write_scan(scans / "nospacing.dcm", 6, spacing=None)
    expect["nospacing.dcm"] = ("error", "missing_pixel_spacing")
    ds = make_dataset(np.zeros((16, 16), np.uint16), modality="SR")
    for keyword in ("PixelData", "Rows", "Columns", "BitsAllocated", "BitsStored"):
        delattr(ds, keyword)
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"
    ds.save_as(scans / "report_sr.dcm", enforce_file_format=True)
    expect["report_sr.dcm"] = ("excluded", "not_an_image")
    write_scan(scans / "noroi.dcm", 7, roi=None)
    expect["noroi.dcm"] = ("error", "roi_error")  # until automatic detection exists
    (scans / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")  # hidden: no row
    shutil.rmtree(root / "tmp")
    return scans, rois, expect


def _rel(row: dict, scans: Path) -> str:
    return Path(row["input"]).relative_to(scans).as_posix()


def _stable(row: dict) -> dict:
    return {k: v for k, v in row.items() if k not in VOLATILE}


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


# -- names and discovery ---------------------------------------------------------------
@pytest.mark.parametrize(
    "hostile",
    [
        "../../etc/passwd",
        "/abs/path",
        "a/../../b",
        "..",
        ".",
        "...",
        "",
        "   ",
        "a\x00b",
        "\x00",
        "CON",
        "nul.json",
        "Com1",
        "LPT9.txt",
        "..\\..\\windows\\system32",
        "C:\\x",
        "x" * 5000,
        "é/ü\n\r\t",
        ".hidden",
        "1.2.840.10008.5.1.4.1.1.7",
    ],
)
def test_safe_filename_hostile(tmp_path, hostile):
    name = safe_filename(hostile)
    assert name and name not in (".", "..") and ".." not in name
    assert "/" not in name and "\\" not in name and "\x00" not in name
    assert all(c.isascii() and c.isprintable() and c != " " for c in name)
    assert not name.startswith(".") and len(name) <= 120
    assert name.split(".")[0].upper() not in ("CON", "NUL", "COM1", "LPT9")
    path = safe_path(tmp_path, hostile, ".json")
    assert path.parent == tmp_path.resolve()
    path.write_text("{}")  # really creatable
    if hostile.startswith("1.2.840"):
        assert name == hostile  # UIDs stay readable


def test_safe_filename_long_names_stay_distinct():
    a, b = safe_filename("x" * 300 + "a"), safe_filename("x" * 300 + "b")
    assert a != b and len(a) == len(b) == 120


def test_safe_path_refuses_symlink_escape(tmp_path):
    outside = tmp_path / "outside.json"
    folder = tmp_path / "cases"
    folder.mkdir()
    (folder / "evil.json").symlink_to(outside)
    with pytest.raises(UnsafePathError):
        safe_path(folder, "evil", ".json")


def test_is_dicom_by_content(tmp_path, dicom_file):
    path = dicom_file(np.zeros((16, 16), np.uint16), name="noext")
    assert is_dicom(path)
    bare = tmp_path / "bare.txt"
    bare.write_bytes(path.read_bytes()[132:])  # no preamble, misleading extension
    assert is_dicom(bare)
    assert is_dicom(path.read_bytes())
    fake = tmp_path / "fake.dcm"
    fake.write_bytes(b"\0" * 128 + b"NOPE" + b"x" * 100)
    assert not is_dicom(fake)
    (tmp_path / "empty.dcm").write_bytes(b"")
    assert not is_dicom(tmp_path / "empty.dcm")
    assert not is_dicom(tmp_path / "missing.dcm")


def test_discover_order_and_filters(tmp_path):
    for rel in ["b/2.dcm", "b/1.dcm", "a.dcm", "a.roi.json", ".hidden/x.dcm", "skip.tmp", "c/.x"]:
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x")
    (tmp_path / "out.csv").write_text("x")
    found = discover([tmp_path, tmp_path / "a.dcm"], ignore=["*.tmp"], skip=[tmp_path / "out.csv"])
    rels = [Path(i.path).relative_to(tmp_path).as_posix() for i in found]
    assert rels == ["a.dcm", "b/1.dcm", "b/2.dcm"]  # a.dcm given twice: listed once
    assert [i.index for i in found] == [0, 1, 2]
    assert found[1].rel_parent == "b" and not found[1].explicit and found[1].size == 1
    with pytest.raises(BatchError, match="no such file"):
        discover([tmp_path / "nope"])


# -- statuses --------------------------------------------------------------------------
def test_mixed_folder_statuses(mixed, tmp_path):
    scans, rois, expect = mixed
    out = tmp_path / "results.csv"
    summary = run_batch([scans], out, roi_dir=rois, progress=False)
    rows = _csv_rows(out)
    assert list(rows[0]) == list(COLUMNS)
    got = {_rel(r, scans): r for r in rows}
    assert sorted(got) == sorted(expect), "one row per input, nothing else"
    assert len(rows) == len(expect)
    for name, (status, code) in expect.items():
        row = got[name]
        if name == "noroi.dcm" and _detection_available():
            assert row["status"] in ("ok", "incomplete", "error")
            continue
        assert (row["status"], row["error_code"]) == (status, code), (name, row["error"])
        if status in ("error", "excluded", "incomplete"):
            assert row["error"].startswith(row["input"] + ": "), row["error"]
        else:
            assert row["error"] == "" or status == "duplicate"
    assert "automatic detection" in got["noroi.dcm"]["error"] or _detection_available()
    assert "colour image" in got["screenshot.dcm"]["error"]
    assert "modality CT" in got["ct.dcm"]["error"]
    assert "no pixel spacing" in got["nospacing.dcm"]["error"]
    assert "not a DICOM file" in got["random.dcm"]["error"]
    # values, provenance and the duplicate rule
    a = got["a.dcm"]
    assert float(a["l1_l4"]) > 0 and a["l1_l4_n"] == "4" and a["l1_status"] == "ok"
    assert a["roi_source"].startswith("file:") and a["sop_instance_uid"]
    assert len(a["file_sha256"]) == 64 and len(a["pixel_sha256"]) == 64
    for dup in ("z_copy_of_a.dcm", "z_reexport_a.dcm"):
        assert got[dup]["duplicate_of"] == a["input"]
        assert got[dup]["pixel_sha256"] == a["pixel_sha256"] and got[dup]["l1_l4"] == ""
    assert got["sub/b.dcm"]["roi_source"] == f"file:{rois / 'sub' / 'b.roi.json'}"
    assert got["c.dcm"]["roi_source"] == f"file:{rois / 'c.roi.json'}"
    assert got["d.dcm"]["l1_status"] == "ok" and got["d.dcm"]["l2_status"] == "excluded"
    assert {r["settings_digest"] for r in rows} == {a["settings_digest"]}
    # summary and exit code
    assert summary.n_inputs == len(expect) and summary.n_scored == len(expect)
    assert summary.counts["duplicate"] == 2 and summary.counts["excluded"] == 4
    assert summary.exit_code == EXIT_INCOMPLETE
    assert summary.error_counts["not_dicom"] == 2
    text = summary.format()
    assert "unsupported_image" in text and "duplicate" in text
    assert "colour_image" in text and "calibration" not in text


def test_colour_image_excluded_in_folder_error_when_named(mixed, tmp_path):
    """A colour image (report screenshot) is ColourImageError, an UnsupportedImageError;
    found in a folder it is ``excluded``, named explicitly it is an ``error``."""
    from tbscore.errors import ColourImageError, UnsupportedImageError
    from tbscore.io.load import load_dicom

    scans, _, _ = mixed
    shot = scans / "screenshot.dcm"
    with pytest.raises(UnsupportedImageError, match="colour image") as info:
        load_dicom(shot)
    assert isinstance(info.value, ColourImageError) and info.value.code == "colour_image"
    out = tmp_path / "named.csv"
    summary = run_batch(shot, out, progress=False)
    (row,) = _csv_rows(out)
    assert (row["status"], row["error_code"]) == ("error", "colour_image")
    assert row["error"].startswith(f"{shot}: colour image") and len(row["file_sha256"]) == 64
    assert summary.exit_code == EXIT_NOTHING_SCORED


def test_batch_package_is_callable(mixed):
    """``tbscore.batch(...)`` (the package, called) is ``tbscore.batch.batch(...)``."""
    pytest.importorskip("pandas")
    import tbscore.batch

    scans, rois, expect = mixed
    assert callable(tbscore.batch) and tbscore.batch.run_batch is run_batch
    by_module = tbscore.batch(scans, roi_dir=rois, progress=False)
    by_function = tbscore.batch.batch(scans, roi_dir=rois, progress=False)
    assert len(by_module) == len(expect)
    volatile = list(VOLATILE)
    assert by_module.drop(columns=volatile).equals(by_function.drop(columns=volatile))
    with pytest.raises(TypeError):
        tbscore.batch()  # paths is required, as for batch()


@pytest.mark.skipif(
    not hasattr(__import__("tbscore"), "__getattr__"),
    reason="needs the lazy module-level __getattr__ for 'batch' in tbscore/__init__.py",
)
def test_plain_import_tbscore_batch_is_lazy():
    """``import tbscore; tbscore.batch(...)`` works, without importing pandas or dask."""
    code = (
        "import sys, tbscore\n"
        "assert 'tbscore.batch' not in sys.modules\n"
        "assert callable(tbscore.batch) and tbscore.batch.run_batch\n"
        "heavy = [m for m in ('pandas', 'pyarrow', 'dask', 'distributed') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_keep_duplicates_and_dataframe(mixed):
    pytest.importorskip("pandas")
    scans, rois, _ = mixed
    df = batch(scans, roi_dir=rois, dedupe=False, progress=False)
    assert len(df) == len(df["input"].unique())
    assert "duplicate" not in set(df["status"])
    assert list(df.columns) == list(COLUMNS)
    assert df["l1_l4"].dtype == np.float64 and str(df["l1_l4_n"].dtype) == "Int64"
    assert list(df["input"]) == [inp.path for inp in discover([scans])]  # input order
    assert df.attrs["summary"].n_inputs == len(df)


# -- resume ----------------------------------------------------------------------------
def test_resume_skips_scored_and_refuses_other_settings(mixed, tmp_path):
    scans, rois, expect = mixed
    out = tmp_path / "r.csv"
    first = run_batch(scans, out, roi_dir=rois, progress=False)
    size = out.stat().st_size
    again = run_batch(scans, out, roi_dir=rois, progress=False)
    assert again.n_scored == 0 and again.n_resumed == len(expect)
    assert again.counts == first.counts and again.exit_code == first.exit_code
    assert out.stat().st_size == size
    with pytest.raises(BatchError, match="other settings"):
        run_batch(scans, out, roi_dir=rois, settings={"lag_max_mm": 2.5}, progress=False)
    with pytest.raises(BatchError, match="other options"):
        run_batch(scans, out, roi_dir=rois, exclude=["L4"], progress=False)
    assert out.stat().st_size == size
    new = run_batch(
        scans, out, roi_dir=rois, settings={"lag_max_mm": 2.5}, force_new=True, progress=False
    )
    assert new.n_scored == len(expect)
    assert len(list(tmp_path.glob("r.csv.*.bak"))) == 1


def test_resume_after_move_and_change(tmp_path):
    src = tmp_path / "in"
    for i in range(3):
        write_scan(src / f"s{i}.dcm", 10 + i)
    out = tmp_path / "r.csv"
    run_batch(src, out, progress=False)
    moved = tmp_path / "moved"
    src.rename(moved)
    summary = run_batch(moved, out, progress=False)
    assert summary.n_scored == 0 and summary.n_resumed == 3  # matched by file sha256
    write_scan(moved / "s1.dcm", 99)  # new content at a known path: scored again
    summary = run_batch(moved, out, progress=False)
    assert summary.n_scored == 1 and summary.n_resumed == 2
    assert len(_csv_rows(out)) == 4


def test_changed_file_keeps_newest_row_in_parquet_and_dataframe(tmp_path):
    """A file re-scored after a change: the CSV journal keeps both rows (append-only),
    the Parquet file and batch() only the newest."""
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    src = tmp_path / "in"
    for i in range(2):
        write_scan(src / f"s{i}.dcm", 40 + i)
    out = tmp_path / "r.parquet"
    run_batch(src, out, progress=False)
    old = pd.read_parquet(out).set_index("input")
    write_scan(src / "s1.dcm", 99)  # new content at the same path
    df = batch(src, out, progress=False)
    s1 = str(src / "s1.dcm")
    journal = _csv_rows(journal_path(out))
    assert [r["input"] for r in journal] == [str(src / "s0.dcm"), s1, s1]
    stale, newest = journal[1], journal[2]
    assert stale["file_sha256"] == old.loc[s1, "file_sha256"] != newest["file_sha256"]
    table = pd.read_parquet(out)
    assert list(table["input"]) == [str(src / "s0.dcm"), s1]
    assert table.set_index("input").loc[s1, "file_sha256"] == newest["file_sha256"]
    assert list(df["input"]) == list(table["input"])
    assert df.set_index("input").loc[s1, "file_sha256"] == newest["file_sha256"]
    again = batch(src, out, progress=False)  # all resumed: still one row per input
    assert list(again["input"]) == list(table["input"]) and again.attrs["summary"].n_scored == 0
    assert len(pd.read_parquet(out)) == 2


def test_newest_rows_keeps_claimed_rows():
    from tbscore.batch.output import newest_rows

    rows = [{"input": "a", "n": 0}, {"input": "b", "n": 1}, {"input": "a", "n": 2}]
    assert [r["n"] for r in newest_rows(rows)] == [1, 2]
    assert [r["n"] for r in newest_rows(rows, keep={0})] == [0, 1, 2]  # claimed by a moved file
    assert newest_rows([]) == []


def test_resume_refuses_adding_or_dropping_sr_dir(tmp_path, capsys):
    """Adding --sr-dir to a resume (or dropping it) is refused before any work."""
    pytest.importorskip("highdicom")
    src = tmp_path / "in"
    write_scan(src / "s0.dcm", 45)
    plain, with_sr = tmp_path / "plain.csv", tmp_path / "sr.csv"
    srs = tmp_path / "srs"
    assert main(["batch", str(src), "-o", str(plain)]) == EXIT_OK
    assert json.loads(_csv_rows(plain)[0]["batch_options"]).get("sr") is None
    capsys.readouterr()
    assert main(["batch", str(src), "-o", str(plain), "--sr-dir", str(srs)]) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "other options" in err and "--sr-dir" in err
    assert not srs.exists() and len(_csv_rows(plain)) == 1  # nothing done
    summary = run_batch(src, with_sr, sr_dir=srs, progress=False)
    assert summary.exit_code == EXIT_OK and len(list(srs.glob("*.sr.dcm"))) == 1
    assert json.loads(_csv_rows(with_sr)[0]["batch_options"])["sr"] is True
    with pytest.raises(BatchError, match="other options.*--sr-dir"):
        run_batch(src, with_sr, progress=False)
    assert run_batch(src, with_sr, sr_dir=srs, progress=False).n_resumed == 1


def test_torn_line_is_repaired(tmp_path):
    src = tmp_path / "in"
    for i in range(3):
        write_scan(src / f"s{i}.dcm", 20 + i)
    out = tmp_path / "r.csv"
    list(iter_batch(src / "s0.dcm", out, progress=False))
    with open(out, "ab") as fh:
        fh.write(b"/some/where/s1.dcm,ok,,,,0.1,/some/wh")  # killed mid-write
    summary = run_batch(src, out, progress=False)
    assert summary.repaired and "torn" in summary.repaired
    rows = _csv_rows(out)
    assert [Path(r["input"]).name for r in rows] == ["s0.dcm", "s1.dcm", "s2.dcm"]
    with CsvJournal(out) as journal:
        assert journal.repaired is None and len(journal.rows) == 3
        for force_new in (False, True):
            with pytest.raises(BatchError, match="another tbscore batch"):
                run_batch(src, out, progress=False, force_new=force_new)


def test_corrupt_journal_and_foreign_csv_refused(tmp_path, dicom_file):
    path = dicom_file(np.zeros((16, 16), np.uint16))
    foreign = tmp_path / "foreign.csv"
    foreign.write_text("a,b\n1,2\n")
    with pytest.raises(BatchError, match="columns differ"):
        run_batch(path, foreign, progress=False)
    out = tmp_path / "r.csv"
    run_batch(path, out, progress=False)
    with open(out, "a") as fh:
        fh.write("garbage\n")
        fh.write(out.read_text().splitlines()[1] + "\n")
    with pytest.raises(BatchError, match="corrupt row at line 3"):
        run_batch(path, out, progress=False)


def test_kill_and_resume_subprocess(tmp_path, worker_hooks):
    """SIGKILL a running ``tbscore batch``; the resumed output equals a clean run."""
    src = tmp_path / "in"
    for i in range(8):
        write_scan(src / f"s{i}.dcm", 30 + i)
    shutil.copy(src / "s3.dcm", src / "s3_copy.dcm")
    (src / "junk.bin").write_bytes(b"junk")
    write_scan(src / "noroi.dcm", 50, roi=None)
    n_inputs = 11
    out = tmp_path / "killed.csv"
    env = worker_hook_env(worker_hooks, TBSCORE_TEST_DELAY="0.3")
    cmd = [sys.executable, "-m", "tbscore.cli", "batch", str(src), "-o", str(out), "--jobs", "2"]
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if out.exists() and out.read_bytes().count(b"\n") >= 3:  # header + 2 rows
                break
            time.sleep(0.02)
        else:
            pytest.fail("no rows written in 30 s")
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # the orphaned workers of this test
        except ProcessLookupError:
            pass
        proc.stdout.close()
        proc.stderr.close()
    partial = _csv_rows(out)
    assert 2 <= len(partial) < n_inputs
    with open(out, "ab") as fh:  # as if killed in the middle of writing a row
        fh.write(b"".join(out.read_bytes().splitlines(keepends=True)[-1:])[:37])

    resumed = run_batch(src, out, progress=False, path_format="relative")  # as the CLI
    assert resumed.n_resumed == len(partial) and resumed.n_scored == n_inputs - len(partial)
    assert resumed.repaired
    clean_out = tmp_path / "clean.csv"
    clean = run_batch(src, clean_out, progress=False, path_format="relative")
    rows, ref = _csv_rows(out), _csv_rows(clean_out)
    assert len(rows) == len(ref) == n_inputs
    assert len({r["input"] for r in rows}) == n_inputs
    key = lambda r: r["input"]  # noqa: E731
    assert sorted(map(_stable, rows), key=key) == sorted(map(_stable, ref), key=key)
    assert resumed.counts == clean.counts and resumed.exit_code == clean.exit_code


# -- executors -------------------------------------------------------------------------
def test_process_pool_same_rows_and_crash_isolation(mixed, tmp_path, monkeypatch, worker_hooks):
    scans, rois, expect = mixed
    ref = {r["input"]: _stable(r) for r in iter_batch(scans, roi_dir=rois, progress=False)}
    monkeypatch.setenv("TBSCORE_TEST_CRASH", "screenshot")
    rows = list(iter_batch(scans, tmp_path / "p.csv", jobs=2, roi_dir=rois, progress=False))
    got = {r["input"]: _stable(r) for r in rows}
    assert sorted(got) == sorted(ref)
    crashed = got.pop(str(scans / "screenshot.dcm"))
    ref.pop(str(scans / "screenshot.dcm"))
    assert crashed["status"] == "error" and crashed["error_code"] == "worker_crashed"
    assert got == ref


def test_dask_local_cluster_same_rows(mixed, tmp_path):
    pytest.importorskip("dask")
    distributed = pytest.importorskip("distributed")
    pytest.importorskip("pyarrow")
    scans, rois, _ = mixed
    ref = {r["input"]: _stable(r) for r in iter_batch(scans, roi_dir=rois, progress=False)}
    with distributed.LocalCluster(  # separate processes: jobs and rows are pickled
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        with distributed.Client(cluster, set_as_default=False) as client:
            rows = list(iter_batch(scans, roi_dir=rois, scheduler=client, progress=False))
        out = tmp_path / "d.parquet"
        summary = run_batch(scans, out, roi_dir=rois, scheduler=cluster.scheduler_address)
    assert {r["input"]: _stable(r) for r in rows} == ref
    assert summary.n_scored == len(ref) and out.exists() and journal_path(out).exists()


# -- parquet, per-case JSON, CLI -------------------------------------------------------
def test_parquet_output_and_resume_from_journal(mixed, tmp_path):
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    scans, rois, expect = mixed
    out = tmp_path / "r.parquet"
    run_batch(scans, out, roi_dir=rois, progress=False)
    df = pd.read_parquet(out)
    assert len(df) == len(expect) and list(df.columns) == list(COLUMNS)
    assert df["l1_l4"].dtype == np.float64
    assert journal_path(out).name == "r.parquet.journal.csv"
    assert not list(tmp_path.glob(".r.parquet.tmp*"))
    journal_path(out).unlink()  # rebuilt from the parquet file
    again = run_batch(scans, out, roi_dir=rois, progress=False)
    assert again.n_scored == 0 and again.n_resumed == len(expect)
    assert len(pd.read_parquet(out)) == len(expect)


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_per_case_json_names_are_safe(tmp_path):
    src = tmp_path / "in"
    hostile = ["../../evil", "/abs/evil", "a/../../b", "CON"]
    for i, uid in enumerate(hostile):
        write_scan(src / f"s{i}.dcm", 60 + i, SOPInstanceUID=uid)
    write_scan(src / "normal.dcm", 70)
    (src / "notes.txt").write_text("x")
    cases = tmp_path / "out" / "cases"
    run_batch(src, tmp_path / "out" / "r.csv", per_case_dir=cases, progress=False)
    files = sorted(p.name for p in cases.iterdir())
    assert len(files) == 6
    assert all((cases / f).resolve().parent == cases.resolve() for f in files)
    assert not (tmp_path / "evil.json").exists() and not Path("/abs/evil.json").exists()
    docs = [json.loads((cases / f).read_text()) for f in files]
    scored = [d for d in docs if d["result"] is not None]
    assert len(scored) == 5
    assert all("patient_name" not in d["result"]["metadata"] for d in scored)
    assert {d["batch"]["status"] for d in docs} == {"ok", "excluded"}


def test_cli_batch(mixed, tmp_path, capsys):
    scans, rois, expect = mixed
    out = tmp_path / "cli.csv"
    assert main(["batch", str(scans), "-o", str(out), "--roi-dir", str(rois)]) == EXIT_INCOMPLETE
    text = capsys.readouterr()
    assert "duplicate" in text.out and f"{len(expect)}/{len(expect)}" in text.err
    good = [str(scans / "a.dcm"), str(scans / "c.dcm")]
    out2 = tmp_path / "good.csv"
    assert main(["batch", *good, "-o", str(out2), "--roi-dir", str(rois)]) == EXIT_OK
    # an explicit non-DICOM file is an error, not excluded
    assert (
        main(["batch", str(scans / "notes.txt"), "-o", str(tmp_path / "n.csv")])
        == EXIT_NOTHING_SCORED
    )
    assert _csv_rows(tmp_path / "n.csv")[0]["status"] == "error"
    # settings are validated before any work: no output is created
    bad = tmp_path / "bad.yaml"
    bad.write_text("lag_max_mm: -1\n")
    out3 = tmp_path / "never.csv"
    assert main(["batch", str(scans), "-o", str(out3), "--settings", str(bad)]) == EXIT_ERROR
    assert "lag_max_mm" in capsys.readouterr().err and not out3.exists()
    assert main(["batch", str(tmp_path / "missing"), "-o", str(out3)]) == EXIT_ERROR
    assert main(["batch", str(scans), "-o", str(tmp_path / "r.txt")]) == EXIT_ERROR
    with pytest.raises(SettingsError):
        run_batch(scans, settings={"no_such_setting": 1})


def test_log_progress_lines(mixed):
    import io

    scans, rois, expect = mixed
    stream = io.StringIO()
    run_batch(scans, roi_dir=rois, progress="log", stream=stream)
    lines = stream.getvalue().splitlines()
    assert lines and lines[-1].startswith(f"tbscore batch: {len(expect)}/{len(expect)}")
    assert "scans/s" in lines[-1] and "ETA" in lines[-1]


def test_duplicate_rule_independent_of_completion_order(mixed, monkeypatch):
    """Results arriving last-in-first-out give the same rows as in-order scoring."""
    from tbscore.batch import runner
    from tbscore.batch.worker import score_input

    class LifoExecutor:
        slots, chunk = 1, 1

        def __init__(self, job, *args):
            self.job, self.stack = job, []

        @property
        def pending(self):
            return len(self.stack)

        def submit(self, inp):
            self.stack.append(inp)

        def poll(self, timeout):
            inp = self.stack.pop()
            return [(inp, score_input(self.job, inp))]

        def close(self, cancel=False):
            pass

    scans, rois, _ = mixed
    ref = {r["input"]: _stable(r) for r in iter_batch(scans, roi_dir=rois, progress=False)}
    monkeypatch.setattr(runner, "make_executor", LifoExecutor)
    rows = list(iter_batch(scans, roi_dir=rois, progress=False))
    assert [r["input"] for r in rows] != [i.path for i in discover([scans])]  # out of order
    assert {r["input"]: _stable(r) for r in rows} == ref


def test_calibration_and_sr_dir(tmp_path, capsys):
    """--calibration fills the calibrated columns, --sr-dir writes one SR per result
    (read back equal), a resume must repeat the calibration, and SRs are never inputs."""
    pytest.importorskip("highdicom")
    from tbscore.core.calibration import Calibration
    from tbscore.io.calibration import save_calibration
    from tbscore.io.sr import read_sr

    src = tmp_path / "in"
    for i in range(3):
        write_scan(src / f"s{i}.dcm", 80 + i)
    shutil.copy(src / "s0.dcm", src / "z_copy.dcm")  # a duplicate (walked after s0)
    shutil.copy(src / "s0.roi.json", src / "z_copy.roi.json")
    (src / "notes.txt").write_text("x")
    cal = Calibration(
        name="site A",
        method="ols",
        a=0.2,
        b=0.9,
        a_ci=(0.1, 0.3),
        b_ci=(0.8, 1.0),
        n=30,
        r=0.9,
        residual_sd=0.03,
    )
    cal_path = save_calibration(cal, tmp_path / "cal.json")
    srs = src / "sr"  # inside the walked folder: must not be scored on a re-run
    out = tmp_path / "r.csv"
    argv = ["batch", str(src), "-o", str(out), "--calibration", str(cal_path)]
    assert main([*argv, "--sr-dir", str(srs)]) == EXIT_OK
    assert "  calibration: site A (reference = 0.2000 + 0.9000 * tbscore)\n" in (
        capsys.readouterr().out
    )
    rows = {Path(r["input"]).name: r for r in _csv_rows(out)}
    assert set(rows) == {"s0.dcm", "s1.dcm", "s2.dcm", "z_copy.dcm", "notes.txt"}
    assert rows["z_copy.dcm"]["status"] == "duplicate"
    for name in ("s0.dcm", "s1.dcm", "s2.dcm"):
        row = rows[name]
        assert row["status"] == "ok" and row["calibration"] == "site A"
        raw = float(row["l1_l4"])
        assert float(row["l1_l4_calibrated"]) == pytest.approx(0.2 + 0.9 * raw, abs=1e-6)
        sr_path = srs / row["sr_file"]
        assert sr_path.parent == srs and sr_path.name.endswith(".sr.dcm")
        back = read_sr(sr_path)
        assert back["l1_l4"] == pytest.approx(raw, rel=1e-9)
        assert back["l1_l4_calibrated"] == pytest.approx(float(row["l1_l4_calibrated"]), rel=1e-9)
        for lab in LABELS:
            value = float(row[lab.lower()])
            assert back["vertebrae"][lab]["value"] == pytest.approx(value, rel=1e-9)
    assert not any(p.name.startswith(".") for p in srs.iterdir())  # no temporary files left
    capsys.readouterr()
    # resuming without the calibration would mix raw-only rows in: refused before any work
    assert main(["batch", str(src), "-o", str(out)]) == EXIT_ERROR
    assert "calibration" in capsys.readouterr().err
    # the same command resumes: nothing new, and the SRs are not inputs
    assert main([*argv, "--sr-dir", str(srs)]) == EXIT_OK
    assert len(_csv_rows(out)) == 5
    # a bad calibration file is refused before any work
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    out2 = tmp_path / "never.csv"
    assert main(["batch", str(src), "-o", str(out2), "--calibration", str(bad)]) == EXIT_ERROR
    assert not out2.exists()


def test_sr_failure_is_an_error_row(tmp_path, monkeypatch):
    """An SR that cannot be written makes the row an error with the reason; values kept."""
    pytest.importorskip("highdicom")
    import tbscore.io.sr as sr_mod

    def fail(*args, **kwargs):
        raise sr_mod.SRError("disk full", "x.sr.dcm")

    monkeypatch.setattr(sr_mod, "write_sr", fail)
    write_scan(tmp_path / "in" / "s.dcm", 90)
    summary = run_batch(tmp_path / "in", tmp_path / "r.csv", sr_dir=tmp_path / "sr", progress=False)
    assert summary.exit_code == EXIT_INCOMPLETE
    (row,) = _csv_rows(tmp_path / "r.csv")
    assert row["status"] == "error" and row["error_code"] == "sr_error"
    assert "disk full" in row["error"] and float(row["l1_l4"]) > 0 and row["sr_file"] == ""
