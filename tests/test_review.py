"""The reading station (``tbscore review``): rules through the Flask test client, and one
end-to-end run in a real headless Chromium (selenium; Debian chromium + chromium-driver).
"""

from __future__ import annotations

import io
import json
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import SAMPLE_DIR, require_tool
from review_fixture import SR_BMD, SR_T, make_node_spool, make_study_folder

pytest.importorskip("flask")

from tbscore.cli import EXIT_ERROR, main  # noqa: E402
from tbscore.errors import InputError  # noqa: E402
from tbscore.review.app import create_app  # noqa: E402
from tbscore.review.audit import Database  # noqa: E402
from tbscore.review.station import Station  # noqa: E402
from tbscore.review.users import add_user, load_users  # noqa: E402

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    d = tmp_path_factory.mktemp("studies")
    make_study_folder(d)
    return d


def _station(folder: Path, tmp: Path, **kw) -> Station:
    return Station([folder], Database(tmp / "db.sqlite"), tmp / "work", **kw)


def _key(station: Station, name: str) -> str:
    return next(k for k, s in station.studies.items() if s.image.name == name)


def _token(client, key: str | None = None) -> str:
    html = client.get(f"/study/{key}" if key else "/").get_data(as_text=True)
    return re.search(r'name="csrf-token" content="([^"]+)"', html).group(1)


@pytest.fixture
def local(folder, tmp_path):
    """A single-user (loopback) app, its station, the current study's key and a client."""
    station = _station(folder, tmp_path, lsc=0.01, lsc_source="entered")
    app = create_app(station, local_user="Jane Roe", trusted_hosts=["localhost", "127.0.0.1"])
    key = _key(station, "current.dcm")
    client = app.test_client()
    return station, key, client, _token(client, key)


def test_vendor_dxa_sr_gives_l1_l4_values_only(folder):
    import pydicom

    from tbscore.io.dxa_sr import find_dxa_sr, read_dxa_sr

    uid = pydicom.dcmread(folder / "current.dcm", stop_before_pixels=True).StudyInstanceUID
    sr = find_dxa_sr(folder, uid)
    assert sr is not None and sr.name == "vendor_dxa.dcm"
    values = read_dxa_sr(sr)
    # the L1-L4 region's BMD and T-score; not the L2 BMD, not the Z-score
    assert values["bmd_g_cm2"] == pytest.approx(SR_BMD)
    assert values["t_score"] == pytest.approx(SR_T)
    assert "Lunar iDXA" in values["source"]
    assert find_dxa_sr(folder, "1.2.3.4") is None  # another study's SR is never taken
    with pytest.raises(InputError, match="not a DICOM Structured Report"):
        read_dxa_sr(folder / "current.dcm")


def test_csrf_refused_and_nothing_changes(local):
    station, key, client, token = local
    before = station.view(key)["l1_l4"]
    body = {"label": "L1", "box": [36, 66, 58, 98]}
    assert client.post(f"/api/study/{key}/roi", json=body).status_code == 400
    r = client.post(f"/api/study/{key}/roi", json=body, headers={"X-CSRF-Token": "x" + token})
    assert r.status_code == 400
    r = client.post(f"/study/{key}/sign", data={"impression": "no token"})
    assert r.status_code == 400
    # a request addressed to another host name (DNS rebinding to 127.0.0.1) is refused
    r = client.get(f"/study/{key}", headers={"Host": "evil.example"})
    assert r.status_code == 400
    assert station.db.trail(key) == [] and station.view(key)["l1_l4"] == before
    assert station.record(key) is None


def test_roi_edit_rescores_like_calc_and_is_audited(local):
    from tbscore.api import calc

    station, key, client, token = local
    hdr = {"X-CSRF-Token": token}
    auto = client.get(f"/api/study/{key}").get_json()
    # the SNR column as `tbscore calc` prints it: "no noise" where the ratio is unbounded
    from tbscore.core.result import format_snr

    snr = {x["label"]: (x["snr"], x["snr_text"]) for x in auto["vertebrae"]}
    assert ("no noise" in [t for _, t in snr.values()]) and any(v for v, _ in snr.values())
    assert all(t == format_snr(v) for v, t in snr.values())
    r = client.post(
        f"/api/study/{key}/roi", json={"label": "L1", "box": [36, 66, 58, 98]}, headers=hdr
    )
    assert r.status_code == 200
    edited = r.get_json()
    doc = json.loads(json.dumps(auto["roi"]))
    doc["vertebrae"][0]["box"] = [36, 66, 58, 98]
    expected = calc(station.study(key).image, roi=doc)  # what `tbscore calc --roi` gives
    assert edited["l1_l4"] == pytest.approx(expected.l1_l4, rel=1e-12)
    assert edited["l1_l4"] != pytest.approx(auto["l1_l4"], rel=1e-6)
    assert edited["vertebrae"][0]["value"] == pytest.approx(expected.vertebra("L1").value)

    r = client.post(f"/api/study/{key}/exclude", json={"label": "L3", "reason": ""}, headers=hdr)
    assert r.status_code == 400  # a reason is required
    r = client.post(
        f"/api/study/{key}/exclude", json={"label": "L3", "reason": "fracture"}, headers=hdr
    )
    view = r.get_json()
    assert view["l1_l4_labels"] == ["L1", "L2", "L4"]
    assert view["vertebrae"][2]["status"] == "excluded"
    doc["vertebrae"][2].update(excluded=True, exclusion_reason="fracture")
    assert view["l1_l4"] == pytest.approx(calc(station.study(key).image, roi=doc).l1_l4)

    r = client.post(
        f"/api/study/{key}/roi", json={"label": "L2", "box": [0, 0, 300, 300]}, headers=hdr
    )
    assert r.status_code == 400 and "ROI edit refused" in r.get_json()["error"]

    # an outline instead of a box (vertices at pixel centres): re-scored the same way
    poly = [[70, 66], [70, 93], [87, 93], [87, 70]]
    view = client.post(
        f"/api/study/{key}/roi", json={"label": "L2", "polygon": poly}, headers=hdr
    ).get_json()
    doc["vertebrae"][1].pop("box")
    doc["vertebrae"][1]["polygon"] = poly
    assert view["roi"]["vertebrae"][1]["polygon"] == poly
    assert view["l1_l4"] == pytest.approx(calc(station.study(key).image, roi=doc).l1_l4)

    for label in ("L1", "L2", "L3"):
        view = client.post(
            f"/api/study/{key}/restore", json={"label": label}, headers=hdr
        ).get_json()
    assert view["l1_l4"] == pytest.approx(auto["l1_l4"], rel=1e-12)
    trail = station.db.trail(key)
    assert [a["action"] for a in trail] == ["roi_edit", "exclude", "roi_edit"] + ["restore"] * 3
    assert all(a["user"] == "Jane Roe" for a in trail)
    assert trail[0]["detail"]["l1_l4_before"] == pytest.approx(auto["l1_l4"])
    assert trail[0]["detail"]["l1_l4_after"] == pytest.approx(edited["l1_l4"])
    assert trail[1]["detail"]["reason"] == "fracture"


def test_signed_is_immutable_addendum_and_append_only_audit(local):
    import pydicom

    station, key, client, token = local
    hdr = {"X-CSRF-Token": token}
    page = client.get(f"/study/{key}").get_data(as_text=True)
    assert "vendor DXA SR" in page and "0.987" in page  # BMD prefilled from the vendor SR
    assert "Prior scans" in page and "2024-11-20" in page and "<svg" in page
    r = client.post(
        f"/study/{key}/inputs",
        data={"csrf_token": token, "age": "66", "sex": "F", "frax_mof": "12"},
    )
    assert r.status_code == 302
    assert (
        client.post(f"/study/{key}/sign", data={"csrf_token": token, "impression": ""}).status_code
        == 400
    )
    r = client.post(
        f"/study/{key}/sign",
        data={
            "csrf_token": token,
            "impression": "Texture within normal.",
            "recommendation": "Routine follow-up.",
        },
    )
    assert r.status_code == 302
    files = station.signed_files(key)
    assert files == ["report-1.dcm", "report-1.pdf", "sr-1.dcm"]
    folder = station.folder(key)
    assert all(not (folder / f).stat().st_mode & stat.S_IWUSR for f in files)
    sr = pydicom.dcmread(folder / "sr-1.dcm")
    assert (sr.CompletionFlag, sr.VerificationFlag) == ("COMPLETE", "VERIFIED")
    assert str(sr.VerifyingObserverSequence[0].VerifyingObserverName) == "Roe^Jane"
    # the station's signed SR and Encapsulated PDF pass dciodvfy (installed in CI)
    dciodvfy = require_tool("dciodvfy")
    for name in ("sr-1.dcm", "report-1.dcm"):
        proc = subprocess.run(
            [dciodvfy, str(folder / name)], capture_output=True, text=True, timeout=60
        )
        errors = [ln for ln in (proc.stdout + proc.stderr).splitlines() if ln.startswith("Error")]
        assert not errors, (name, errors)
    rec = station.record(key)
    assert rec.status == "final" and rec.inputs["bone_density"]["bmd_g_cm2"] == SR_BMD
    assert rec.inputs["age"] == 66 and len(rec.inputs["priors"]) == 1
    assert station.status(key)[0] == "signed"

    # immutable: ROI edits, inputs and a second signature are refused
    r = client.post(
        f"/api/study/{key}/roi", json={"label": "L1", "box": [36, 66, 58, 98]}, headers=hdr
    )
    assert r.status_code == 409
    assert (
        client.post(f"/study/{key}/inputs", data={"csrf_token": token, "age": "70"}).status_code
        == 409
    )
    assert (
        client.post(f"/study/{key}/sign", data={"csrf_token": token, "impression": "x"}).status_code
        == 409
    )
    assert station.record(key).inputs["age"] == 66

    r = client.post(
        f"/study/{key}/addendum",
        data={"csrf_token": token, "addendum": "Prior comparison reviewed."},
    )
    assert r.status_code == 302
    rec = station.record(key)
    assert rec.status == "amended" and [s.kind for s in rec.signatures] == ["final", "addendum"]
    assert station.status(key)[0] == "amended"
    assert "report-2.pdf" in station.signed_files(key)
    assert client.get(f"/study/{key}/files/report-2.pdf").data[:5] == b"%PDF-"
    assert client.get(f"/study/{key}/files/..%2Fdb.sqlite").status_code == 404

    actions = [a["action"] for a in station.db.trail(key)]
    assert actions == ["inputs", "signature", "addendum"]
    con = sqlite3.connect(station.db.path)
    for sql in ("UPDATE audit SET user = 'x'", "DELETE FROM audit"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            con.execute(sql)
    con.close()
    assert len(station.db.trail(key)) == 3


def test_login_required_beyond_loopback(folder, tmp_path, capsys, monkeypatch):
    # no accounts: a non-loopback host is refused before anything is served
    assert (
        main(["review", str(folder), "--db", str(tmp_path / "x.sqlite"), "--host", "0.0.0.0"])
        == EXIT_ERROR
    )
    assert "--users" in capsys.readouterr().err
    from tbscore.cli.review import is_loopback

    assert [is_loopback(h) for h in ("127.0.0.1", "127.0.0.2", "::1", "localhost")] == [True] * 4
    assert not any(is_loopback(h) for h in ("0.0.0.0", "10.0.0.5", "127.evil.example", "::"))
    users = tmp_path / "users.json"
    monkeypatch.setattr("sys.stdin", io.StringIO("short\n"))
    assert main(["review", "--users", str(users), "--add-user", "Jane Roe"]) == EXIT_ERROR
    assert "at least 8 characters" in capsys.readouterr().err and not users.exists()
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    assert main(["review", "--users", str(users), "--add-user", "Jane Roe"]) == 0
    assert PASSWORD not in users.read_text() and "scrypt" in users.read_text()
    assert stat.S_IMODE(users.stat().st_mode) == 0o600
    station = _station(folder, tmp_path)
    app = create_app(station, users=load_users(users))
    client = app.test_client()
    key = _key(station, "current.dcm")
    r = client.get("/")
    assert r.status_code == 302 and r.headers["Location"].endswith("/login")
    assert client.get(f"/api/study/{key}").status_code == 401
    assert client.get(f"/study/{key}/image.png").status_code == 302
    token = re.search(
        r'name="csrf_token" value="([^"]+)"', client.get("/login").get_data(as_text=True)
    ).group(1)
    r = client.post("/login", data={"csrf_token": token, "user": "Jane Roe", "password": "nope"})
    assert r.status_code == 401
    r = client.post("/login", data={"csrf_token": token, "user": "Jane Roe", "password": PASSWORD})
    assert r.status_code == 302
    assert client.get("/").status_code == 200
    assert client.get(f"/api/study/{key}").status_code == 200


def test_worklist_from_batch_output(tmp_path):
    import shutil

    d = tmp_path / "in"
    d.mkdir()
    for stem in ("phantom_a_square", "phantom_b_nonsquare"):
        for suffix in (".dcm", ".roi.json"):
            shutil.copy(SAMPLE_DIR / f"{stem}{suffix}", d / f"{stem}{suffix}")
    out = tmp_path / "results.csv"
    assert main(["batch", str(d), "-o", str(out)]) in (0, 1)
    station = Station([out], Database(tmp_path / "db.sqlite"), tmp_path / "work")
    rows = {r["file"]: r for r in station.worklist()}
    assert set(rows) == {"phantom_a_square.dcm", "phantom_b_nonsquare.dcm"}
    assert {r["source"] for r in rows.values()} == {"batch"}
    assert rows["phantom_b_nonsquare.dcm"]["status"] == "needs review"  # batch warnings
    assert rows["phantom_a_square.dcm"]["status"] == "scored"


# ----------------------------------------------------------------- real browser
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _driver():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = require_tool("chromium", "chromium-browser")
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--window-size=1500,1100",
    ):
        opts.add_argument(arg)
    return webdriver.Chrome(service=Service(require_tool("chromedriver")), options=opts)


@pytest.fixture
def server(folder, tmp_path):
    """``tbscore review`` in the mode that needs login, bound to 127.0.0.1, stopped by PID."""
    users = tmp_path / "users.json"
    add_user(users, "Jane Roe", PASSWORD, organisation="General Hospital")
    port = _free_port()
    db = tmp_path / "review.sqlite"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tbscore",
            "review",
            str(folder),
            "--db",
            str(db),
            "--users",
            str(users),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--lsc",
            "0.02",
            "--tz",
            "Europe/Zurich",
            "--quiet-requests",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env=os.environ | {"PYTHONUNBUFFERED": "1"},
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(proc.stdout.read().decode()) from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}", tmp_path / "review-signed"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


def test_browser_edit_exclude_sign_addendum(server):
    pytest.importorskip("selenium")
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    pdffonts = require_tool("pdffonts")
    dsrdump = require_tool("dsrdump")
    url, work = server
    drv = _driver()
    other = None
    try:
        wait = WebDriverWait(drv, 20, ignored_exceptions=(StaleElementReferenceException,))
        drv.get(url + "/")
        assert drv.current_url.endswith("/login")
        drv.find_element(By.ID, "login-user").send_keys("Jane Roe")
        drv.find_element(By.ID, "login-password").send_keys(PASSWORD)
        drv.find_element(By.ID, "login-submit").click()
        wait.until(lambda d: d.find_elements(By.ID, "worklist"))
        links = {a.text: a for a in drv.find_elements(By.CSS_SELECTOR, "#worklist a.open")}
        assert set(links) == {"current.dcm", "prior.dcm"}
        links["current.dcm"].click()
        wait.until(lambda d: d.execute_script("return window.tbsEditor && tbsEditor.ready()"))
        before = drv.execute_script("return tbsEditor.value()")
        # the 95 % CI ("0.724–1.143") and SNR ("no noise") cells are one line each
        lines = drv.execute_script(
            "return Array.from(document.querySelectorAll('#values tbody tr')).map(function (tr) {"
            " return [3, 7].map(function (i) { var r = document.createRange();"
            " r.selectNodeContents(tr.cells[i]); return [tr.cells[i].textContent,"
            " r.getClientRects().length]; }); });"
        )
        cells = [c for row in lines for c in row]
        assert len(cells) == 8 and any(re.fullmatch(r"\d\.\d{3}–\d\.\d{3}", t) for t, _ in cells)
        assert all(n == 1 for _, n in cells), cells
        canvas = drv.find_element(By.ID, "editor")
        x, y = drv.execute_script("return tbsEditor.handle('L1', 'corner', 2)")
        w, h = canvas.size["width"], canvas.size["height"]
        (
            ActionChains(drv)
            .move_to_element_with_offset(canvas, int(x - w / 2), int(y - h / 2))
            .click_and_hold()
            .move_by_offset(-6, -4)
            .move_by_offset(-3, -2)
            .release()
            .perform()
        )
        wait.until(
            lambda d: (
                d.execute_script("return tbsEditor.ready() ? tbsEditor.value() : null")
                not in (None, before)
            )
        )
        shown = drv.find_element(By.ID, "l1l4").text
        assert shown == f"{drv.execute_script('return tbsEditor.value()'):.3f}"

        drv.find_element(By.ID, "reason-L3").send_keys("fracture")
        drv.find_element(By.ID, "exclude-L3").click()
        wait.until(lambda d: "excluded" in d.find_element(By.ID, "row-L3").text)
        assert "L1, L2, L4" in drv.find_element(By.ID, "l1l4-ci").text

        drv.find_element(By.ID, "impression").send_keys("Degraded microarchitecture not seen.")
        drv.find_element(By.ID, "sign").click()
        wait.until(lambda d: d.find_elements(By.ID, "signed-block"))
        names = [a.text for a in drv.find_elements(By.CSS_SELECTOR, "a.signed-file")]
        assert names == ["report-1.dcm", "report-1.pdf", "sr-1.dcm"]
        signed = next(work.iterdir())
        fonts = subprocess.run(
            [pdffonts, signed / "report-1.pdf"], capture_output=True, text=True, check=True
        ).stdout.splitlines()[2:]
        assert fonts and all(" yes " in line for line in fonts)  # every font embedded
        dump = subprocess.run(
            [dsrdump, signed / "sr-1.dcm"], capture_output=True, text=True, check=True
        ).stdout
        assert re.search(r"Verification Flag\s*:\s*VERIFIED", dump)
        assert "Roe^Jane, General Hospital" in dump

        drv.get(drv.current_url)  # reopen the signed study
        assert not drv.find_elements(By.ID, "sign")
        drv.find_element(By.ID, "addendum").send_keys("L3 excluded: fracture on lateral view.")
        drv.find_element(By.ID, "add-addendum").click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "ol.signatures li")) == 2)
        assert "amended" in drv.find_element(By.ID, "signed-block").text
        study_url = drv.current_url.split("#")[0]

        other = _driver()  # a second browser session, never logged in
        other.get(study_url)
        assert other.current_url.endswith("/login")
        other.get(url + "/api/study/" + study_url.rsplit("/", 1)[1])
        assert "login required" in other.find_element(By.TAG_NAME, "body").text
    finally:
        drv.quit()
        if other is not None:
            other.quit()


# ----------------------------------------------------------------- node worklist
def test_worklist_from_the_dicom_node_spool(tmp_path, monkeypatch):
    """Issue 17: `tbscore review --node-spool` (or the spool given as DIR) lists what the
    node received: the scored image with the node's value and SR (not rescored for the
    worklist), the set-aside image as "error" with the node's typed reason (never
    scored, not even when opened), and not the unscored companion PDF."""
    import tbscore.api
    from tbscore.cli.review import node_items
    from tbscore.net.ledger import read_record

    spool = tmp_path / "spool"
    uids = make_node_spool(spool, tmp_path)
    from tbscore.net.ledger import Ledger

    running = Ledger(spool / "ledger.sqlite")  # as a running node holds it
    record = {r["sop_instance_uid"]: r for r in read_record(spool / "ledger.sqlite")}
    assert record[uids["scored"]]["state"] == "scored"
    assert record[uids["set_aside"]]["code"] == "dicom_read_error"
    items, companions = node_items(spool)
    assert companions == 1 and len(items) == 2

    calls = []
    real_calc = tbscore.api.calc
    monkeypatch.setattr(tbscore.api, "calc", lambda *a, **k: calls.append(a) or real_calc(*a, **k))
    station = Station([], Database(tmp_path / "db.sqlite"), tmp_path / "work", node_items=items)
    app = create_app(station, local_user="Jane Roe", trusted_hosts=["localhost"])
    client = app.test_client()
    html = client.get("/").get_data(as_text=True)
    rows = {r["file"]: r for r in station.worklist()}
    assert set(rows) == {f"{uids['scored']}.dcm", f"{uids['set_aside']}.dcm"}
    scored, aside = rows[f"{uids['scored']}.dcm"], rows[f"{uids['set_aside']}.dcm"]
    assert {scored["source"], aside["source"]} == {"node"}
    node_value = record[uids["scored"]]["l1_l4"]
    # the node's result JSON beside its SR, judged by the station's rules (warnings)
    from tbscore.core.result import TBSResult
    from tbscore.net.spool import result_json_beside

    node_result = TBSResult.from_json(result_json_beside(record[uids["scored"]]["sr_path"]))
    assert node_result.l1_l4 == node_value
    if node_result.warnings:  # phantom A without ROI file: "... check the labels"
        assert (scored["status"], scored["reason"]) == ("needs review", node_result.warnings[0])
    else:
        assert scored["status"] == "scored"
    assert scored["l1_l4"] == node_value and scored["node_sr"] == f"{uids['scored']}.sr.dcm"
    assert aside["status"] == "error" and aside["l1_l4"] is None
    assert "dicom_read_error" in aside["reason"] and "set aside by the node" in aside["reason"]
    assert not calls  # the worklist shows the node's results without rescoring
    assert uids["companion"] not in html and "dicom_read_error" in html
    assert f"{node_value:.3f}" in html and "status-error" in html

    r = client.get(f"/study/{aside['key']}")
    assert r.status_code == 400 and "dicom_read_error" in r.get_data(as_text=True)
    assert not calls  # a set-aside image is never scored
    r = client.get(f"/study/{scored['key']}")
    assert r.status_code == 200 and f"{uids['scored']}.sr.dcm" in r.get_data(as_text=True)
    assert not calls  # opened from the node's result JSON, not scored again
    assert station.score(scored["key"]).l1_l4 == pytest.approx(node_value, rel=1e-12)

    # an ROI edit (here an exclusion) of a node study is re-scored like any other
    token = _token(client, scored["key"])
    r = client.post(
        f"/api/study/{scored['key']}/exclude",
        json={"label": "L1", "reason": "artefact"},
        headers={"X-CSRF-Token": token},
    )
    assert r.status_code == 200 and calls
    assert r.get_json()["l1_l4"] != pytest.approx(node_value, rel=1e-9)

    # the command line: the spool given as DIR is recognised as one
    seen = {}
    monkeypatch.setattr("werkzeug.serving.run_simple", lambda *a, **k: seen.update(app=a[2]))
    assert main(["review", str(spool), "--db", str(tmp_path / "cli.sqlite"), "--port", "1"]) == 0
    listed = seen["app"].test_client().get("/").get_data(as_text=True)
    assert "dicom_read_error" in listed and uids["companion"] not in listed
    assert uids["scored"] in listed
    running.purged(uids["scored"])  # the running node changes its record: seen at once
    listed = seen["app"].test_client().get("/").get_data(as_text=True)
    assert uids["scored"] not in listed and uids["set_aside"] in listed
    running.close()


def test_node_images_waiting_are_listed_not_scored(tmp_path, monkeypatch):
    """An image the node has received but not scored yet is "waiting": the station does
    not score it (an image that stalls the node's worker must not stall the station)."""
    import tbscore.api
    from netutil import image_copies
    from tbscore.cli.review import node_items
    from tbscore.net.ledger import Ledger
    from tbscore.net.spool import Spool

    spool = Spool(tmp_path / "spool", min_free_mb=0)
    (img,) = image_copies(tmp_path / "in", 1)
    import pydicom

    uid = str(pydicom.dcmread(img, stop_before_pixels=True).SOPInstanceUID)
    target = spool.incoming_path(uid)
    target.write_bytes(img.read_bytes())
    ledger = Ledger(spool.ledger_path)
    ledger.add_image(uid, "1.2.840.10008.5.1.4.1.1.7", "DXA1", str(target), 1, score=True)
    ledger.close()
    items, _ = node_items(spool.root)
    monkeypatch.setattr(tbscore.api, "calc", lambda *a, **k: pytest.fail("scored"))
    station = Station([], Database(tmp_path / "db.sqlite"), tmp_path / "work", node_items=items)
    (row,) = station.worklist()
    assert (row["status"], row["l1_l4"], row["source"]) == ("waiting", None, "node")
    client = create_app(station, local_user="Jane Roe", trusted_hosts=["localhost"]).test_client()
    r = client.get(f"/study/{row['key']}")
    assert r.status_code == 400 and "not scored yet" in r.get_data(as_text=True)


def test_unexpected_error_is_a_typed_page_without_traceback_or_phi(tmp_path, monkeypatch, caplog):
    """Issue 17: a hand-edited (truncated) node result.json is a typed error of that row
    (the worklist still opens); any other exception inside a request is an "internal
    error" page (500, JSON under /api/) naming only the error class, logged as one line
    with the class and the endpoint, no traceback, message or path (unless log_details)."""
    import logging

    from tbscore.cli.review import node_items
    from tbscore.net.ledger import read_record
    from tbscore.net.spool import result_json_beside

    spool = tmp_path / "spool"
    uids = make_node_spool(spool, tmp_path)
    record = {r["sop_instance_uid"]: r for r in read_record(spool / "ledger.sqlite")}
    rj = result_json_beside(record[uids["scored"]]["sr_path"])
    rj.write_text(rj.read_text(encoding="utf-8")[:100], encoding="utf-8")  # hand-edited
    items, _ = node_items(spool)
    station = Station([], Database(tmp_path / "db.sqlite"), tmp_path / "work", node_items=items)
    client = create_app(station, local_user="Jane Roe", trusted_hosts=["localhost"]).test_client()
    r = client.get("/")
    assert r.status_code == 200
    (row,) = [x for x in station.worklist() if x["file"] == f"{uids['scored']}.dcm"]
    assert row["status"] == "error" and "result JSON cannot be read" in row["reason"]
    r = client.get(f"/study/{row['key']}")
    assert r.status_code == 400 and "JSONDecodeError" in r.get_data(as_text=True)
    assert str(tmp_path) not in r.get_data(as_text=True)

    # a bug: an exception that is not a TBSError, with a path and a name in its message
    secret = f"{tmp_path}/PHANTOM^A.dcm"

    def broken(*args, **kwargs):
        raise KeyError(secret)

    monkeypatch.setattr(station, "view", broken)
    caplog.set_level(logging.DEBUG)
    for log_details in (False, True):
        caplog.clear()
        app = create_app(
            station, local_user="Jane Roe", trusted_hosts=["localhost"], log_details=log_details
        )
        client = app.test_client()
        r = client.get(f"/study/{row['key']}")
        page = r.get_data(as_text=True)
        assert r.status_code == 500 and "Internal error" in page and "KeyError" in page
        for leak in (str(tmp_path), "PHANTOM", "Traceback", ".py"):
            assert leak not in page, leak
        r = client.get(f"/api/study/{row['key']}")
        assert r.status_code == 500 and r.get_json()["code"] == "internal_error"
        assert "KeyError" in r.get_json()["error"] and str(tmp_path) not in r.get_data(as_text=True)
        assert client.get("/no-such-page").status_code == 404  # HTTP errors stay Flask's
        logged = [x for x in caplog.records if x.name.startswith(("tbscore", "flask", "werkzeug"))]
        assert [(x.name, x.getMessage()) for x in logged] == [
            ("tbscore.review", "internal error KeyError in study"),
            ("tbscore.review", "internal error KeyError in api_view"),
        ]
        if log_details:  # the site asked for the traceback (tbscore review --log-phi)
            assert all(x.exc_info is not None for x in logged) and "PHANTOM" in caplog.text
        else:
            assert all(x.exc_info is None for x in logged)
            assert str(tmp_path) not in caplog.text and "PHANTOM" not in caplog.text
