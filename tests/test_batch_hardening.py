"""Batch hardening (issue 12): time limit, duplicate key, CSV injection, parent death
and SIGTERM, symlinked outputs, exit code when nothing is scored, cut headers."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import make_dataset, worker_hook_env
from tbscore.batch import BatchError, CsvJournal, journal_path, run_batch
from tbscore.batch.runner import EXIT_NOTHING_SCORED as RUNNER_NOTHING
from tbscore.cli import main
from tbscore.cli.exit import EXIT_NOTHING_SCORED, EXIT_TERMINATED
from tbscore.io.tabular import FORMULA_TRIGGERS, csv_safe
from tbscore.sim.phantom import synthetic_spine

LABELS = ("L1", "L2", "L3", "L4")
HOSTILE_UID = "=cmd|' /C calc'!A0"


def _spine(seed: int) -> tuple[np.ndarray, dict]:
    image, truth = synthetic_spine(0.6, shape=(200, 160), spacing_mm=(1.0, 1.0), rng=seed)
    pixels = np.clip(np.round(image), 0, 65535).astype(np.uint16)
    roi = {
        "format": "tbscore-roi/1",
        "units": "px",
        "vertebrae": [{"label": lab, "box": truth["vertebrae"][lab]["box"]} for lab in LABELS],
    }
    return pixels, roi


def _scan(path: Path, seed: int, *, roi: bool = True, **kw) -> Path:
    pixels, doc = _spine(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    make_dataset(pixels, **kw).save_as(path, enforce_file_format=True)
    if roi:
        path.with_name(path.stem + ".roi.json").write_text(json.dumps(doc))
    return path


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _by_name(path: Path) -> dict[str, dict]:
    return {Path(r["input"]).name: r for r in _rows(path)}


# -- 5: CSV formula injection ------------------------------------------------------------
@given(st.text(max_size=12))
def test_csv_safe_never_leaves_a_formula(text):
    out = csv_safe(text)
    assert csv_safe(out) == out  # idempotent
    head = out.lstrip(" \n")[:1]
    if head in FORMULA_TRIGGERS or out[:1] in FORMULA_TRIGGERS:
        float(out)  # only plain numbers keep a leading sign
    assert out == text or out == "'" + text


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (HOSTILE_UID, "'" + HOSTILE_UID),
        ("+1+2", "'+1+2"),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("\t=1", "'\t=1"),
        ("\r=1", "'\r=1"),
        ("  =1+1", "'  =1+1"),
        ("-0.745", "-0.745"),
        ("1e-3", "1e-3"),
        (-0.745, -0.745),
        (3, 3),
        (None, None),
        ("L1-L4", "L1-L4"),
    ],
)
def test_csv_safe_examples(value, expected):
    assert csv_safe(value) == expected


@pytest.mark.filterwarnings("ignore:Invalid value for VR UI")
def test_hostile_uid_is_text_in_batch_and_calc_csv(tmp_path, capsys):
    scan = _scan(tmp_path / "in" / "evil.dcm", 3, SOPInstanceUID=HOSTILE_UID)
    out = tmp_path / "r.csv"
    run_batch(tmp_path / "in", out, progress=False, timeout=None)
    cells = [c for line in csv.reader(io.StringIO(out.read_text())) for c in line]
    assert "'" + HOSTILE_UID in cells
    assert not [c for c in cells if c[:1] in FORMULA_TRIGGERS and not _is_number(c)]
    # the journal reads back identically (resume keeps working)
    assert run_batch(tmp_path / "in", out, progress=False).n_resumed == 1

    assert main(["calc", str(scan), "--roi", str(scan.with_suffix(".roi.json")), "--csv"]) == 0
    text = capsys.readouterr().out
    cells = [c for line in csv.reader(io.StringIO(text)) for c in line]
    assert "'" + HOSTILE_UID in cells
    assert not [c for c in cells if c[:1] in FORMULA_TRIGGERS and not _is_number(c)]


def _is_number(cell: str) -> bool:
    try:
        float(cell)
    except ValueError:
        return False
    return True


# -- 2: duplicates -------------------------------------------------------------------------
def test_same_pixels_other_spacing_are_not_duplicates(tmp_path):
    """Four scans with the same pixels: only the one with the same spacing (and ROIs)
    is a duplicate; the others are scored on their own; an error is never a duplicate."""
    src = tmp_path / "in"
    _scan(src / "a_1.0.dcm", 11)
    _scan(src / "b_1.0_copy.dcm", 11)  # same pixels, spacing, ROIs: the duplicate
    _scan(src / "c_0.8.dcm", 11, spacing=(0.8, 0.8))
    _scan(src / "d_1.3.dcm", 11, spacing=(1.3, 1.3))
    _scan(src / "e_rescaled.dcm", 11, RescaleSlope="2", RescaleIntercept="0")
    _scan(src / "f_noroi_error.dcm", 11, roi=False)  # detection fails on this phantom
    summary = run_batch(src, tmp_path / "r.csv", progress=False)
    rows = _by_name(tmp_path / "r.csv")
    assert len({r["pixel_sha256"] for r in rows.values()}) == 1  # one pixel hash for all
    assert rows["b_1.0_copy.dcm"]["status"] == "duplicate"
    assert rows["b_1.0_copy.dcm"]["duplicate_of"] == rows["a_1.0.dcm"]["input"]
    for name in ("c_0.8.dcm", "d_1.3.dcm", "e_rescaled.dcm"):
        assert rows[name]["status"] in ("ok", "incomplete"), (name, rows[name]["error"])
        assert rows[name]["duplicate_of"] == ""
    assert float(rows["c_0.8.dcm"]["row_mm"]) == 0.8 and float(rows["d_1.3.dcm"]["col_mm"]) == 1.3
    assert rows["f_noroi_error.dcm"]["status"] != "duplicate"
    assert summary.counts["duplicate"] == 1
    # each one's own value: the same as scoring it alone
    alone = tmp_path / "alone.csv"
    run_batch(src / "c_0.8.dcm", alone, progress=False)
    assert _rows(alone)[0]["l1_l4"] == rows["c_0.8.dcm"]["l1_l4"]


def _key(path: Path, roi: Path | None = None, **job) -> str:
    from tbscore.api import as_image
    from tbscore.batch.worker import Job, result_key

    return result_key(Job(**job), as_image(path), roi)


def test_result_key_of_the_stored_pixels_and_their_transform(tmp_path):
    """The key of a loaded scan is its stored-pixel digest and the loader's gray-level
    transform: copies with new UIDs share it; another RescaleSlope, RescaleIntercept,
    MONOCHROME1 or BitsStored (the same stored pixels) gives another key; and the
    transform the image carries reproduces its gray levels bit for bit."""
    import pydicom

    from tbscore.api import as_image
    from tbscore.io.load import gray_levels

    src = tmp_path / "in"
    base = _scan(src / "a.dcm", 11)
    copy = _scan(src / "b_new_uids.dcm", 11)
    other = {
        "slope": _scan(src / "c.dcm", 11, RescaleSlope="2", RescaleIntercept="0"),
        "intercept": _scan(src / "d.dcm", 11, RescaleSlope="1", RescaleIntercept="-5"),
        "mono1": _scan(src / "e.dcm", 11, photometric="MONOCHROME1"),
        "mono1_bits": _scan(src / "f.dcm", 11, photometric="MONOCHROME1", BitsStored=15),
        "pixels": _scan(src / "g.dcm", 12),
    }
    roi = base.with_name("a.roi.json")
    a, b = as_image(base), as_image(copy)
    assert a.metadata.sop_instance_uid != b.metadata.sop_instance_uid
    assert a.pixel_transform == (False, None, 1.0, 0.0)
    assert _key(base, roi) == _key(copy, roi)
    keys = {name: _key(path, roi) for name, path in other.items()}
    assert len(set(keys.values()) | {_key(base, roi)}) == len(other) + 1, keys
    assert _key(base, None) != _key(base, roi)  # detection against the ROI file
    assert _key(base, roi, spacing=(1.0, 1.0)) != _key(base, roi)  # the batch options
    for path in (base, *other.values()):
        image = as_image(path)
        stored = pydicom.dcmread(path).pixel_array
        again = gray_levels(stored, *image.pixel_transform)
        assert again.tobytes() == image.pixels.tobytes(), path.name


def test_result_key_of_an_array_hashes_its_gray_levels(tmp_path):
    """An image made from an array has no transform: its key hashes the gray levels,
    so equal arrays share a key and any changed gray level changes it."""
    from tbscore.api import as_image
    from tbscore.batch.worker import Job, result_key

    pixels, _ = _spine(3)
    a = as_image(pixels.astype(np.float64), spacing=(1.0, 1.0))
    assert a.pixel_transform is None
    same = as_image(pixels.astype(np.float64).copy(), spacing=(1.0, 1.0))
    changed = pixels.astype(np.float64)
    changed[5, 7] += 0.5
    job = Job()
    assert result_key(job, a, None) == result_key(job, same, None)
    assert result_key(job, a, None) != result_key(job, as_image(changed, spacing=(1.0, 1.0)), None)


def test_copies_with_new_uids_are_still_duplicates(tmp_path):
    """Byte-different copies (new UIDs) of one scan are duplicates of the first; the
    same stored pixels under MONOCHROME1 or another RescaleSlope are scored alone."""
    src = tmp_path / "in"
    _scan(src / "a.dcm", 21)
    _scan(src / "b.dcm", 21)
    _scan(src / "c.dcm", 21)
    _scan(src / "d_mono1.dcm", 21, photometric="MONOCHROME1")
    _scan(src / "e_slope.dcm", 21, RescaleSlope="0.5")
    run_batch(src, tmp_path / "r.csv", progress=False)
    rows = _by_name(tmp_path / "r.csv")
    assert len({r["file_sha256"] for r in rows.values()}) == 5
    assert [rows[n]["status"] for n in ("b.dcm", "c.dcm")] == ["duplicate", "duplicate"]
    assert rows["b.dcm"]["duplicate_of"] == rows["c.dcm"]["duplicate_of"] == rows["a.dcm"]["input"]
    assert rows["b.dcm"]["result_key"] == rows["a.dcm"]["result_key"]
    for name in ("d_mono1.dcm", "e_slope.dcm"):
        assert rows[name]["status"] in ("ok", "incomplete"), (name, rows[name]["error"])
        assert rows[name]["result_key"] != rows["a.dcm"]["result_key"]


# -- 12: symlinked output ------------------------------------------------------------------
def test_symlinked_output_shares_the_lock(tmp_path):
    pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    _scan(tmp_path / "in" / "a.dcm", 1)
    (tmp_path / "real").mkdir()
    real = tmp_path / "real" / "r.parquet"
    link = tmp_path / "link.parquet"
    link.symlink_to(real)
    assert journal_path(link) == journal_path(real)
    with CsvJournal(journal_path(real)):  # a batch writing the real file
        with pytest.raises(BatchError, match="another tbscore batch"):
            run_batch(tmp_path / "in", link, progress=False)
    run_batch(tmp_path / "in", link, progress=False)
    assert link.is_symlink() and real.is_file()  # the link was not replaced by a file


# -- 13: exit codes, cut headers -----------------------------------------------------------
def test_nothing_scored_exits_3_and_cut_header_is_an_error(tmp_path, capsys):
    assert RUNNER_NOTHING == EXIT_NOTHING_SCORED == 3
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["batch", str(empty), "-o", str(tmp_path / "e.csv")]) == EXIT_NOTHING_SCORED
    (empty / "notes.txt").write_text("hello\n")
    assert main(["batch", str(empty), "-o", str(tmp_path / "n.csv")]) == EXIT_NOTHING_SCORED
    assert "nothing scored" in capsys.readouterr().out
    good = _scan(tmp_path / "g" / "a.dcm", 2)
    data = good.read_bytes()
    cut = tmp_path / "cut"
    cut.mkdir()
    for n in (200, 700, 1100):
        (cut / f"cut{n}.dcm").write_bytes(data[:n])
    assert main(["batch", str(cut), "-o", str(tmp_path / "c.csv")]) == EXIT_NOTHING_SCORED
    rows = _rows(tmp_path / "c.csv")
    assert [(r["status"], r["error_code"]) for r in rows] == [("error", "dicom_read_error")] * 3
    assert all("cut" in r["error"] for r in rows)
    assert main(["batch", str(tmp_path / "g"), "-o", str(tmp_path / "g.csv")]) == 0


# -- 1: per-input time limit ---------------------------------------------------------------
def test_timeout_inline_writes_a_row_and_goes_on(tmp_path, monkeypatch):
    from tbscore.batch import worker

    real = worker._score

    def slow(job, inp):
        if "stuck" in inp.path:
            time.sleep(600)
        return real(job, inp)

    monkeypatch.setattr(worker, "_score", slow)
    _scan(tmp_path / "in" / "a_stuck.dcm", 1)
    _scan(tmp_path / "in" / "b_good.dcm", 2)
    t0 = time.monotonic()
    summary = run_batch(tmp_path / "in", tmp_path / "r.csv", progress=False, timeout=1.0)
    assert time.monotonic() - t0 < 60
    rows = _by_name(tmp_path / "r.csv")
    assert (rows["a_stuck.dcm"]["status"], rows["a_stuck.dcm"]["error_code"]) == (
        "error",
        "timeout",
    )
    assert "time limit of 1 s" in rows["a_stuck.dcm"]["error"]
    assert rows["b_good.dcm"]["status"] == "ok" and summary.exit_code == 1
    with pytest.raises(BatchError, match="timeout"):
        run_batch(tmp_path / "in", tmp_path / "x.csv", timeout=-1)


def test_timeout_in_worker_pool_ends_native_hang(tmp_path, monkeypatch, worker_hooks):
    monkeypatch.setenv("TBSCORE_TEST_HANG", "stuck")
    for i, name in enumerate(("a_good", "b_stuck", "c_good", "d_good")):
        _scan(tmp_path / "in" / f"{name}.dcm", 20 + i)
    t0 = time.monotonic()
    summary = run_batch(
        tmp_path / "in", tmp_path / "r.csv", jobs=2, progress=False, timeout=1.0, chunksize=2
    )
    assert time.monotonic() - t0 < 120
    rows = _by_name(tmp_path / "r.csv")
    assert (rows["b_stuck.dcm"]["status"], rows["b_stuck.dcm"]["error_code"]) == (
        "error",
        "timeout",
    )
    for name in ("a_good.dcm", "c_good.dcm", "d_good.dcm"):  # a_good shared its chunk
        assert rows[name]["status"] == "ok", rows[name]["error"]
    assert summary.counts == {"ok": 3, "error": 1}


# -- 11: parent death, SIGTERM -------------------------------------------------------------
def _children(pid: int) -> list[int]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            fields = stat[stat.rindex(")") + 2 :].split()
            if int(fields[1]) == pid and fields[0] != "Z":
                out.append(int(entry))
    return out


def _descendants(pid: int) -> list[int]:
    """Children of ``pid`` and theirs (the workers of a fork server are grandchildren)."""
    out = []
    for kid in _children(pid):
        out += [kid, *_descendants(kid)]
    return out


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


def _start(src: Path, out: Path, env: dict) -> tuple[subprocess.Popen, list[int]]:
    cmd = [sys.executable, "-m", "tbscore.cli", "batch", str(src), "-o", str(out)]
    proc = subprocess.Popen(
        [*cmd, "--jobs", "2", "--progress", "none"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:  # until a row is written: the workers run
        if out.exists() and out.read_bytes().count(b"\n") >= 2:
            kids = _descendants(proc.pid)
            if len(kids) >= 2:
                return proc, kids
        time.sleep(0.05)
    proc.kill()
    pytest.fail("no row written in 90 s")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="needs Linux /proc")
def test_parent_killed_or_terminated_leaves_no_process(tmp_path, worker_hooks):
    src = tmp_path / "in"
    for i in range(6):
        _scan(src / f"s{i}.dcm", 40 + i)
    env = worker_hook_env(worker_hooks, TBSCORE_TEST_DELAY="0.5")
    procs: list[int] = []
    try:
        # SIGKILL of the parent alone: the workers and the resource tracker exit
        proc, kids = _start(src, tmp_path / "k.csv", env)
        procs = kids
        proc.kill()
        proc.wait(10)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and any(map(_alive, kids)):
            time.sleep(0.1)
        assert not [p for p in kids if _alive(p)], "workers outlived the killed parent"
        proc.stdout.close()
        proc.stderr.close()

        # SIGTERM: like Ctrl-C (message, rc 143, nothing left running, resumable)
        out = tmp_path / "t.csv"
        proc, kids = _start(src, out, env)
        procs = kids
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=30)
        assert proc.returncode == EXIT_TERMINATED
        assert b"run the same command again to resume" in err
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(map(_alive, kids)):
            time.sleep(0.1)
        assert not [p for p in kids if _alive(p)]
        done = len(_rows(out))
        assert 1 <= done < 6
        resumed = run_batch(src, out, progress=False)
        assert resumed.n_resumed == done and len(_rows(out)) == 6
    finally:
        for pid in procs:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


@pytest.mark.skipif(
    "forkserver" not in __import__("multiprocessing").get_all_start_methods(),
    reason="no fork server on this platform (workers are spawned)",
)
def test_pool_workers_come_from_a_warm_fork_server_in_the_current_environment(monkeypatch):
    """Pool workers are forked from the fork server, which has imported tbscore and the
    kernels (its preload); a pool made after os.environ changed gets a new server, so
    workers see the environment a spawned worker would (the test hooks rely on it)."""
    from tbscore.batch.executors import LocalExecutor, fork_server_pid, stop_fork_server
    from tbscore.batch.worker import Job

    probe = "(__import__('os').getppid(), 'tbscore.core.variogram' in __import__('sys').modules)"
    env_probe = "__import__('os').environ.get('TBSCORE_FORKSERVER_PROBE')"
    monkeypatch.setenv("TBSCORE_FORKSERVER_PROBE", "one")
    ex = LocalExecutor(Job(), jobs=1)
    try:
        first = fork_server_pid()
        ppid, loaded = ex._pool.submit(eval, probe).result(timeout=60)
        assert first is not None and ppid == first  # forked by the server
        assert loaded  # the preload imported the kernels before the fork
        got = ex._pool.submit(eval, env_probe).result(timeout=60)
        assert got == "one"
    finally:
        ex.close()
    monkeypatch.setenv("TBSCORE_FORKSERVER_PROBE", "two")
    ex = LocalExecutor(Job(), jobs=1)
    try:
        assert fork_server_pid() not in (None, first)  # a new server, new environment
        got = ex._pool.submit(eval, env_probe).result(timeout=60)
        assert got == "two"
    finally:
        ex.close()
        stop_fork_server()


def test_may_detect_only_when_an_input_lacks_its_roi(tmp_path):
    """The warm-up decision: no detector kernels when every input has an ROI file (by
    the side-car rule or a manifest ``roi``), else (or when only the SOPInstanceUID rule
    could find one) they are loaded."""
    from tbscore.batch.discover import Input, discover
    from tbscore.batch.worker import Job, may_detect

    _scan(tmp_path / "a" / "one.dcm", 1)
    _scan(tmp_path / "a" / "two.dcm", 2)
    inputs = discover([tmp_path / "a"])
    assert len(inputs) == 2 and not may_detect(Job(), inputs)
    _scan(tmp_path / "a" / "three.dcm", 3, roi=False)
    inputs = discover([tmp_path / "a"])
    assert may_detect(Job(), inputs)
    assert not may_detect(Job(), inputs, looks=1)  # only the first one looked at
    named = [Input(i, inp.path, roi="x.roi.json") for i, inp in enumerate(inputs)]
    assert not may_detect(Job(), named)


@pytest.mark.skipif(
    "forkserver" not in __import__("multiprocessing").get_all_start_methods(),
    reason="no fork server on this platform (workers are spawned)",
)
def test_pool_without_detector_kernels_still_detects(tmp_path):
    """A pool whose fork server skipped the detector's kernels (detection=False) has
    not imported the detector, and a worker still scores an input without ROI file
    (the kernels load on its first detection) as the inline executor does."""
    from tbscore.batch.discover import discover
    from tbscore.batch.executors import LocalExecutor, stop_fork_server
    from tbscore.batch.worker import Job, score_input

    _scan(tmp_path / "noroi.dcm", 4, roi=False)
    (inp,) = discover([tmp_path])
    job = Job()
    ex = LocalExecutor(job, jobs=1, detection=False)
    try:
        probe = "'tbscore.core.detect' in __import__('sys').modules"
        assert ex._pool.submit(eval, probe).result(timeout=60) is False
        got = ex._pool.submit(score_input, job, inp).result(timeout=120)["row"]
    finally:
        ex.close()
        stop_fork_server()
    want = score_input(job, inp)["row"]
    assert (got["status"], got.get("l1_l4"), got.get("roi_source")) == (
        want["status"],
        want.get("l1_l4"),
        want.get("roi_source"),
    )


# -- issue 14 (h14r): the journal's reusable line writer -----------------------------------
_CELL = st.one_of(
    st.none(),
    st.text(max_size=8),
    st.sampled_from(["a,b", 'say "hi"', "", " ", "x\ny", "'=1", "1e3"]),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=True, allow_infinity=True),
)


@given(st.lists(st.lists(_CELL, min_size=1, max_size=12), min_size=1, max_size=4))
def test_line_writer_matches_the_reference(lines):
    """One reused writer (as a journal keeps it) writes every line byte for byte as the
    former per-line writer with its explicit None/float conversions."""
    from tbscore.batch.output import _csv_line, _csv_line_reference, _LineWriter

    writer = _LineWriter()
    for values in lines:
        expected = _csv_line_reference(values)
        assert writer.line(values) == expected
        assert _csv_line(iter(values)) == expected


def test_discover_real_paths_per_folder_and_links(tmp_path):
    """discover takes a folder's real path once and a file's only when it is a link:
    a file reached through a link (file or folder above) is listed once, under the
    first path in walk order, and a link to the skipped output is skipped too."""
    from tbscore.batch.discover import discover

    real = tmp_path / "real"
    (real / "sub").mkdir(parents=True)
    for name in ("a.dcm", "sub/b.dcm", "out.csv"):
        (real / name).write_bytes(b"x")
    (real / "a_link.dcm").symlink_to(real / "a.dcm")
    (real / "sub" / "out_link.csv").symlink_to(real / "out.csv")
    (tmp_path / "via").symlink_to(real, target_is_directory=True)
    inputs = discover([tmp_path / "via", real], skip=[real / "out.csv"])
    got = [os.path.relpath(i.path, tmp_path) for i in inputs]
    assert got == ["via/a.dcm", "via/sub/b.dcm"]
    assert len({os.path.realpath(i.path) for i in inputs}) == len(inputs)
