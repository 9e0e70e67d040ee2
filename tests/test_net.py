"""Tier 1 network tests: the node against a pynetdicom fake PACS on 127.0.0.1.

One rule per test (docs/network.md, "Failure semantics"): acknowledge after the
fsync, duplicates never rescored, non-DXA classes refused at association, bad images
set aside with tbscore's typed reason, job time limit, worker killed, garbage and idle
connections, calling AE restriction, destination down / rejecting / cutting the
connection / refusing, kill -9 mid-queue, free-space floor and a real full disk.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pydicom
import pytest

pytest.importorskip("pynetdicom")

from conftest import (  # noqa: E402
    REQUIRE_TOOLS_ENV,
    WORKER_HOOKS,
    make_dataset,
    require_tool,
    worker_hook_env,
)
from netutil import (  # noqa: E402
    SAMPLE,
    CutProxy,
    FakePACS,
    FakeQR,
    NodeProcess,
    free_port,
    image_copies,
    uid_of,
    wait_until,
)
from tbscore.errors import AssociationError  # noqa: E402
from tbscore.net.address import parse_peer  # noqa: E402
from tbscore.net.scu import Timeouts, echo, send_files  # noqa: E402
from tbscore.net.spool import result_json_beside  # noqa: E402

STALL = ".999"  # UID marker of images whose job stalls (TBSCORE_NET_TEST_STALL)
T = Timeouts(connect_s=5, acse_s=5, dimse_s=15, network_s=15)


def send(paths, node, aet="DXA1"):
    return send_files(paths, parse_peer(node.peer), aet, T)


@pytest.fixture(scope="module")
def pacs():
    p = FakePACS().start()
    yield p
    p.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory, pacs):
    spool = tmp_path_factory.mktemp("net") / "spool"
    site = tmp_path_factory.mktemp("site")
    (site / "sitecustomize.py").write_text(WORKER_HOOKS, encoding="utf-8")
    # part of the settings from a serve.toml (options override its keys)
    config = spool.parent / "serve.toml"
    config.write_text(
        'accept = "study"\njob_timeout = 10\nmax_pixels = 1000000\n'
        'allow_aet = ["DXA1", "TBSCORE"]\nworkers = 1\n'
    )
    n = NodeProcess(
        spool,
        free_port(),
        [
            "--config",
            str(config),
            "--forward",
            pacs.peer,
            "--workers",
            "2",
            "--min-free-mb",
            "1",
            "--network-timeout",
            "2",
            "--retry-base",
            "0.2",
            "--retry-cap",
            "1",
        ],
        # the stall hook lives in the test-only sitecustomize (conftest.WORKER_HOOKS)
        env=worker_hook_env(site, TBSCORE_NET_TEST_STALL="3680043.10.1.999."),
    ).start()
    yield n
    n.stop()


def _state(node, uid, states=("scored", "set_aside"), timeout=120.0):
    return wait_until(
        lambda: (r := node.images().get(uid)) and r["state"] in states and r,
        timeout,
        f"image {uid} to reach {states}",
    )


def test_round_trip_sr_in_same_study_and_value_matches_calc(node, pacs, tmp_path):
    from tbscore.api import calc
    from tbscore.io.sr import read_sr

    (path,) = image_copies(tmp_path, 1)
    src = pydicom.dcmread(path)
    out = send([path], node)
    assert [o.state for o in out] == ["sent"]
    rec = _state(node, src.SOPInstanceUID)
    assert rec["state"] == "scored" and rec["attempts"] == 1
    sr_uid = wait_until(
        lambda: next(
            (
                u
                for u, ds in list(pacs.datasets.items())
                if ds.get("StudyInstanceUID") == src.StudyInstanceUID
            ),
            None,
        ),
        20,
        "the SR at the PACS",
    )
    sr = pacs.datasets[sr_uid]
    assert sr.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.22"
    assert sr.PatientID == src.PatientID
    # what the PACS got is byte for byte the SR file stored in the spool
    stored = pydicom.dcmread(rec["sr_path"])
    assert stored.SOPInstanceUID == sr_uid
    saved = tmp_path / "got.sr.dcm"
    sr.save_as(saved, enforce_file_format=False)
    assert read_sr(rec["sr_path"])["l1_l4"] == pytest.approx(calc(path).l1_l4, abs=1e-12)


def test_duplicates_acknowledged_not_rescored_not_resent(node, pacs, tmp_path):
    (path,) = image_copies(tmp_path, 1)
    uid = uid_of(path)
    assert send([path], node)[0].state == "sent"
    rec = _state(node, uid)
    wait_until(
        lambda: any(s["state"] == "sent" for s in node.sends() if s["sop_instance_uid"] == uid),
        20,
        "the SR sent",
    )
    before = pacs.count()
    assert [o.state for o in send([path, path], node)] == ["sent", "sent"]
    time.sleep(1.0)
    again = node.images()[uid]
    assert again["duplicates"] == 2
    assert again["scored_at"] == rec["scored_at"] and again["attempts"] == 1
    assert pacs.count() == before
    assert len([s for s in node.sends() if s["sop_instance_uid"] == uid]) == 1


def test_non_dxa_sop_class_refused_at_association(node, tmp_path):
    ct = make_dataset(np.zeros((8, 8), np.uint16), modality="CT")
    ct.SOPClassUID = ct.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ct.save_as(tmp_path / "ct.dcm", enforce_file_format=True)
    (ok,) = image_copies(tmp_path, 1)
    out = {Path(o.path).name: o for o in send([tmp_path / "ct.dcm", ok], node)}
    assert out["ct.dcm"].state == "refused"
    assert "does not accept SOP class 1.2.840.10008.5.1.4.1.1.2" in out["ct.dcm"].reason
    assert out[ok.name].state == "sent"
    assert ct.SOPInstanceUID not in node.images()


def test_accept_study_stores_the_rest_unscored_and_queue_list_purge(node, pacs, tmp_path):
    """--accept study (from serve.toml): the densitometer's PDF and colour screenshot
    are acknowledged and kept, never scored or forwarded; ``tbscore queue list`` shows
    them, ``purge`` deletes finished files and a resent image is still not rescored."""
    import json
    import re
    from datetime import UTC, datetime

    from tbscore.io.pdf_dicom import encapsulated_pdf

    (img,) = image_copies(tmp_path, 1)
    src = pydicom.dcmread(img)
    pdf = encapsulated_pdf(b"%PDF-1.4\n%%EOF\n", src, title="vendor report", when=datetime.now(UTC))
    pdf.save_as(tmp_path / "report.dcm", enforce_file_format=True)
    shot = make_dataset(np.zeros((32, 32, 3), np.uint8), photometric="RGB", NumberOfFrames=1)
    shot.SOPClassUID = shot.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.4"
    shot.StudyInstanceUID = src.StudyInstanceUID
    shot.save_as(tmp_path / "shot.dcm", enforce_file_format=True)
    out = send([img, tmp_path / "report.dcm", tmp_path / "shot.dcm"], node)
    assert [o.state for o in out] == ["sent"] * 3, [o.reason for o in out]
    for uid in (pdf.SOPInstanceUID, shot.SOPInstanceUID):
        assert node.images()[uid]["state"] == "stored"
    rec = _state(node, src.SOPInstanceUID)
    assert rec["state"] == "scored" and result_json_beside(rec["sr_path"]).is_file()
    wait_until(
        lambda: all(
            s["state"] == "sent"
            for s in node.sends()
            if s["sop_instance_uid"] == rec["sop_instance_uid"]
        ),
        20,
        "the SR sent",
    )
    sent_uids = {s["sop_instance_uid"] for s in node.sends()}
    assert pdf.SOPInstanceUID not in sent_uids and shot.SOPInstanceUID not in sent_uids

    def queue(*args):
        r = subprocess.run(
            [sys.executable, "-m", "tbscore", "queue", *args, "--spool", str(node.spool)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert r.returncode == 0, r.stderr
        return r.stdout

    doc = json.loads(queue("list", "--json"))
    assert doc["counts"]["images"]["stored"] >= 2 and doc["counts"]["images"]["scored"] >= 1
    purged = re.search(r"purged the files of (\d+) finished", queue("purge"))
    assert purged and int(purged[1]) >= 3  # at least this test's image, PDF and screenshot
    for uid in (src.SOPInstanceUID, pdf.SOPInstanceUID, shot.SOPInstanceUID):
        assert node.images()[uid]["path"] == ""
    assert not Path(rec["path"]).exists() and not Path(rec["sr_path"]).exists()
    assert not result_json_beside(rec["sr_path"]).exists()  # the JSON kept for tbscore review
    # the record stays: the image sent again is a duplicate, not rescored
    assert send([img], node)[0].state == "sent"
    again = node.images()[src.SOPInstanceUID]
    assert again["duplicates"] == 1 and again["scored_at"] == rec["scored_at"]


def test_calling_aet_restricted(node):
    with pytest.raises(AssociationError, match="rejected"):
        echo(parse_peer(node.peer), "STRANGER", T)
    assert echo(parse_peer(node.peer), "DXA1", T) < 5


def _bad_images(folder: Path) -> dict[str, tuple[Path, str]]:
    folder.mkdir()
    rng = np.random.default_rng(3)
    cases = {}

    def save(name, ds, code):
        ds.save_as(folder / name, enforce_file_format=True)
        cases[str(ds.SOPInstanceUID)] = (folder / name, code)

    save(
        "colour.dcm",
        make_dataset(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8), photometric="RGB"),
        "colour_image",
    )
    nopix = make_dataset(np.zeros((16, 16), np.uint16))
    del nopix.PixelData
    save("nopix.dcm", nopix, "not_an_image")
    save(
        "nospacing.dcm",
        make_dataset(rng.integers(0, 4000, (200, 160), dtype=np.uint16), spacing=None),
        "missing_pixel_spacing",
    )
    save(
        "noise.dcm",
        make_dataset(rng.integers(0, 4000, (200, 160), dtype=np.uint16)),
        "detection_failed",
    )
    broken = make_dataset(np.zeros((200, 160), np.uint16))
    broken.PixelData = broken.PixelData[:1000]
    save("truncated.dcm", broken, "dicom_read_error")
    save("large.dcm", make_dataset(np.zeros((1100, 1000), np.uint16)), "image_too_large")
    return cases


def test_bad_images_accepted_and_set_aside_with_typed_reason(node, tmp_path):
    cases = _bad_images(tmp_path / "bad")
    out = send([p for p, _ in cases.values()], node)
    assert {o.state for o in out} == {"sent"}, [(o.path, o.reason) for o in out]
    for uid, (path, code) in cases.items():
        rec = _state(node, uid)
        assert rec["state"] == "set_aside", (path.name, rec)
        assert rec["code"] == code, (path.name, rec["code"], rec["reason"])
        assert rec["reason"]
    assert not [s for s in node.sends() if s["sop_instance_uid"] in cases]


def test_stalled_job_set_aside_after_time_limit_and_worker_restarted(node, tmp_path):
    (stall,) = image_copies(tmp_path, 1, marker=STALL)
    (ok,) = image_copies(tmp_path / "ok", 1)
    t0 = time.monotonic()
    send([stall], node)
    rec = _state(node, uid_of(stall))
    assert rec["code"] == "job_timeout" and "10 s" in rec["reason"]
    assert time.monotonic() - t0 >= 10
    send([ok], node)
    rec = _state(node, uid_of(ok))
    assert rec["state"] == "scored", rec


def test_killed_worker_job_set_aside_and_worker_replaced(node, tmp_path):
    (stall,) = image_copies(tmp_path, 1, marker=STALL)
    (ok,) = image_copies(tmp_path / "ok", 1)
    send([stall], node)
    rec = _state(node, uid_of(stall), states=("scoring",), timeout=120)
    os.kill(rec["worker_pid"], signal.SIGKILL)
    rec = _state(node, uid_of(stall))
    assert rec["code"] == "worker_died" and "signal 9" in rec["reason"]
    send([ok], node)
    rec = _state(node, uid_of(ok))
    assert rec["state"] == "scored", rec


def _closed_after(sock: socket.socket, limit: float) -> float:
    """Seconds until the node closes ``sock`` (fails after ``limit``)."""
    t0 = time.monotonic()
    sock.settimeout(limit)
    try:
        while sock.recv(4096):
            pass
    except ConnectionResetError:
        pass
    finally:
        sock.close()
    return time.monotonic() - t0


def test_garbage_bytes_and_idle_connections_closed_by_timeout(node):
    """Garbage (an HTTP request, a PDU header announcing 1 GB) and a silent client
    are closed after the 2 s network timeout; the node serves others meanwhile."""
    peer = parse_peer(node.peer)
    socks = []
    for payload in (
        b"GET / HTTP/1.1\r\n\r\n" + os.urandom(200),
        b"\x07\x00GET / HTTP/1.1\r\n" + os.urandom(50),
        b"",
    ):
        s = socket.create_connection(("127.0.0.1", node.port), timeout=10)
        if payload:
            s.sendall(payload)
        socks.append(s)
    assert echo(peer, "DXA1", T) < 5
    for s in socks:
        assert _closed_after(s, 20) < 15


def test_free_space_floor_refuses_with_a700(tmp_path):
    n = NodeProcess(
        tmp_path / "spool", free_port(), ["--workers", "1", "--min-free-mb", str(10**9)]
    ).start()
    try:
        out = send([SAMPLE], n, "TBSCORE")
        assert out[0].state == "temporary" and out[0].status == 0xA700
        assert "0xA700" in out[0].reason
        assert list((tmp_path / "spool" / "incoming").iterdir()) == []
        assert n.images() == {}
    finally:
        n.stop()


def test_destinations_down_rejecting_cutting_refusing_then_fixed(tmp_path):
    """Four destinations fail in four ways; each recovers; 0 lost, 0 duplicates."""
    down_port = free_port()
    rejecting = FakePACS(ae_title="REJ").start()
    rejecting.ae.require_calling_aet = ["SOMEONE"]
    behind_proxy = FakePACS(ae_title="CUT").start()
    proxy = CutProxy(behind_proxy.port, cuts=2, after=3000)
    refusing = FakePACS(ae_title="REF").start()
    refusing.status = 0xC000
    dests = {
        "down": f"DOWN@127.0.0.1:{down_port}",
        "rej": rejecting.peer,
        "cut": f"CUT@127.0.0.1:{proxy.port}",
        "ref": refusing.peer,
    }
    args = ["--workers", "2", "--min-free-mb", "1", "--retry-base", "0.2", "--retry-cap", "1"]
    for d in dests.values():
        args += ["--forward", d]
    n = NodeProcess(tmp_path / "spool", free_port(), args).start()
    down = None
    try:
        paths = image_copies(tmp_path / "in", 5)
        uids = {uid_of(p) for p in paths}
        assert {o.state for o in send(paths, n, "TBSCORE")} == {"sent"}

        def by_dest():
            out = {}
            for s in n.sends():
                out.setdefault(s["destination"], []).append(s)
            return out

        wait_until(
            lambda: all(len(by_dest().get(d, [])) == 5 for d in dests.values()),
            60,
            "all results queued",
        )
        wait_until(
            lambda: all(s["state"] == "refused" for s in by_dest()[dests["ref"]]),
            20,
            "permanent refusals set aside",
        )
        assert all("0xC000" in s["last_error"] for s in by_dest()[dests["ref"]])
        wait_until(
            lambda: all(
                s["attempts"] >= 2 and s["state"] == "pending"
                for d in ("down", "rej")
                for s in by_dest()[dests[d]]
            ),
            20,
            "retries with backoff",
        )
        assert all("rejected" in s["last_error"] for s in by_dest()[dests["rej"]])
        assert all("connection refused" in s["last_error"] for s in by_dest()[dests["down"]])
        # fix everything
        down = FakePACS(port=down_port, ae_title="DOWN").start()
        rejecting.ae.require_calling_aet = []
        refusing.status = 0x0000
        rc = subprocess.run(
            [
                sys.executable,
                "-m",
                "tbscore",
                "queue",
                "retry",
                "--spool",
                str(n.spool),
                "--destination",
                dests["ref"],
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rc.returncode == 0, rc.stderr
        for pacs in (down, rejecting, behind_proxy, refusing):
            wait_until(lambda p=pacs: p.count() == 5, 30, f"{pacs.ae_title} drained")
        time.sleep(0.5)
        for pacs in (down, rejecting, behind_proxy, refusing):
            assert all(len(v) == 1 for v in pacs.received.values()), pacs.ae_title
            refs = {
                str(
                    ds.CurrentRequestedProcedureEvidenceSequence[0]
                    .ReferencedSeriesSequence[0]
                    .ReferencedSOPSequence[0]
                    .ReferencedSOPInstanceUID
                )
                for ds in pacs.datasets.values()
            }
            assert refs == uids, pacs.ae_title
        assert proxy.cut_done == 2
        assert all(s["state"] == "sent" for s in n.sends())
    finally:
        n.stop()
        proxy.stop()
        for p in (down, rejecting, behind_proxy, refusing):
            if p is not None:
                p.stop()


def test_kill9_mid_queue_then_restart_nothing_lost_nothing_rescored(tmp_path):
    pacs = FakePACS().start()
    pacs.delay = 0.25
    port = free_port()
    args = [
        "--forward",
        pacs.peer,
        "--workers",
        "2",
        "--min-free-mb",
        "1",
        "--retry-base",
        "0.2",
        "--retry-cap",
        "1",
    ]
    n = NodeProcess(tmp_path / "spool", port, args).start()
    try:
        paths = image_copies(tmp_path / "in", 8)
        uids = {uid_of(p) for p in paths}
        assert {o.state for o in send(paths, n, "TBSCORE")} == {"sent"}
        wait_until(lambda: pacs.count() >= 2, 60, "the first results at the PACS")
        n.kill9()
        before = {u: r for u, r in n.images().items()}
        assert len(before) == 8  # every acknowledged image is in the record
        assert pacs.count() < 8  # killed mid-queue
        n.start()
        wait_until(lambda: pacs.count() == 8, 60, "the queue to drain after the restart")
        time.sleep(0.5)
        after = n.images()
        assert {r["state"] for r in after.values()} == {"scored"}
        for u, r in before.items():
            if r["state"] == "scored":  # never rescored
                assert after[u]["scored_at"] == r["scored_at"]
        refs = set()
        for ds in pacs.datasets.values():
            ev = ds.CurrentRequestedProcedureEvidenceSequence[0]
            refs.add(
                str(
                    ev.ReferencedSeriesSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
                )
            )
        assert refs == uids
        # the only possible repeat is the one send in flight at the kill, and it is
        # the identical file (same SOP Instance UID, same bytes)
        repeats = [v for v in pacs.received.values() if len(v) > 1]
        assert len(repeats) <= 1 and all(len(set(v)) == 1 for v in repeats)
    finally:
        n.stop()
        pacs.stop()


def _require_private_tmpfs() -> None:
    """Skip (fail in CI, TBSCORE_REQUIRE_TOOLS=1) without unshare or without a user
    and mount namespace in which a tmpfs can be mounted."""
    require_tool("unshare")
    r = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=1m none /mnt"],
        capture_output=True,
        timeout=20,
    )
    if r.returncode != 0:
        msg = f"no user+mount namespace for a private tmpfs here: {r.stderr.decode()[-300:]}"
        if os.environ.get(REQUIRE_TOOLS_ENV) == "1":
            pytest.fail(msg)
        pytest.skip(msg)


def test_real_full_disk_on_small_tmpfs_is_temporary(tmp_path):
    """The spool on a 2 MiB tmpfs (private mount namespace): images that no longer
    fit answer 0xA700; every accepted image is scored and its SR sent; the node and
    its workers stay alive and answer."""
    _require_private_tmpfs()
    pacs = FakePACS().start()
    mnt = tmp_path / "small"
    mnt.mkdir()
    port = free_port()
    n = NodeProcess(
        mnt / "spool",
        port,
        ["--forward", pacs.peer, "--workers", "1", "--min-free-mb", "0.5"],
        prefix=[
            "unshare",
            "-rm",
            "sh",
            "-c",
            f'mount -t tmpfs -o size=2m none "{mnt}" && exec "$0" "$@"',
        ],
    )
    n.log = tmp_path / "node.log"
    try:
        n.start()
        paths = image_copies(tmp_path / "in", 40)
        out = send(paths, n, "TBSCORE")
        accepted = [o for o in out if o.state == "sent"]
        full = [o for o in out if o.state == "temporary"]
        assert accepted and full, [o.reason for o in out][:3]
        assert all(o.status == 0xA700 for o in full)
        wait_until(lambda: pacs.count() == len(accepted), 60, "every accepted image's SR")
        assert echo(parse_peer(n.peer), "TBSCORE", T) < 5
        # temporary: once the accepted images are scored their reserve is free again,
        # and a resend of the refused images gets some of them in
        again = send([Path(o.path) for o in full], n, "TBSCORE")
        more = [o for o in again if o.state == "sent"]
        assert more and {o.state for o in again} <= {"sent", "temporary"}
        wait_until(lambda: pacs.count() == len(accepted) + len(more), 60, "the resent SRs")
    finally:
        n.stop()
        pacs.stop()


def test_ledger_backoff_counts_tries_that_never_reached_the_file(tmp_path):
    """A destination that is down never gets send_started (no association): its tries
    are still counted and the delay doubles up to the cap, as for a mid-send failure."""
    from tbscore.net.ledger import Ledger, backoff_s

    led = Ledger(tmp_path / "ledger.sqlite")
    led.add_image("1.2.3", "1.2.840.10008.5.1.4.1.1.7", "DXA1", "x.dcm", 10, score=True)
    led.scored("1.2.3", "x.sr.dcm", 1.2, ["A@127.0.0.1:1", "B@127.0.0.1:2"])
    down, mid = led.sends()
    delays = {"down": [], "mid": []}
    for _ in range(5):
        t0 = time.time()
        led.send_failed(down["id"], "no connection", base_s=1.0, cap_s=4.0, counted=False)
        led.send_started(mid["id"])
        led.send_failed(mid["id"], "lost", base_s=1.0, cap_s=4.0)
        rows = {r["id"]: r for r in led.sends()}
        delays["down"].append(round(rows[down["id"]]["next_try"] - t0))
        delays["mid"].append(round(rows[mid["id"]]["next_try"] - t0))
    assert delays["down"] == delays["mid"] == [backoff_s(i, 1.0, 4.0) for i in range(1, 6)]
    assert delays["down"] == [1, 2, 4, 4, 4]
    rows = {r["id"]: r for r in led.sends()}
    assert rows[down["id"]]["attempts"] == rows[mid["id"]]["attempts"] == 5
    led.send_refused(down["id"], "no presentation context", counted=False)
    assert {r["id"]: r for r in led.sends()}[down["id"]]["attempts"] == 6
    led.close()


def test_store_session_keeps_one_association_between_sends(tmp_path):
    """The node's sender keeps its association open between results that come one at
    a time, reopens it after the idle time, and reports a destination that went away
    as temporary (then opens a new association once it is back)."""
    from tbscore.net.scu import StoreSession

    pacs = FakePACS().start()
    try:
        paths = image_copies(tmp_path, 4)
        session = StoreSession(parse_peer(pacs.peer), "TBSCORE", T, idle_s=60)
        for p in paths[:2]:
            assert [o.state for o in session.send([p])] == ["sent"]
        assert session.opened == 1 and pacs.count() == 2
        session.close_if_idle()  # not idle long enough: kept
        assert [o.state for o in session.send([paths[2]])] == ["sent"]
        assert session.opened == 1
        session.idle_s = 0
        session.close_if_idle()
        assert [o.state for o in session.send([paths[3]])] == ["sent"]
        assert session.opened == 2 and pacs.count() == 4
        session.close()
    finally:
        pacs.stop()
    down = StoreSession(parse_peer(f"GONE@127.0.0.1:{free_port()}"), "TBSCORE", T)
    (o,) = down.send([paths[0]])
    assert o.state == "temporary" and "no connection" in o.reason and down.opened == 0


def test_pull_a_day_over_one_association_and_after_an_abort(tmp_path):
    """tbscore pull --get: one association for the C-FIND, one for every C-GET of the
    day; when the PACS aborts it part way, the studies not finished are retrieved one
    association each and nothing is missing."""
    import datetime as dt

    day = dt.date.today().strftime("%Y%m%d")
    files = image_copies(tmp_path / "pacs", 4, study_date=day)
    other = image_copies(tmp_path / "other", 1)  # another day: not pulled
    qr = FakeQR(files + other)
    try:
        for abort_after, associations in ((None, 2), (1, 5)):
            qr.associations = qr.gets = 0
            qr.abort_after = abort_after
            out = tmp_path / f"pulled-{abort_after}"
            r = subprocess.run(
                [sys.executable, "-m", "tbscore", "pull", "--from", qr.peer, "--date", day]
                + ["--get", "--to", str(out)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert r.returncode == 0, r.stdout + r.stderr
            assert {uid_of(p) for p in out.rglob("*.dcm")} == {uid_of(f) for f in files}
            assert qr.associations == associations, (abort_after, qr.associations)
    finally:
        qr.stop()


def test_report_pdf_sent_as_encapsulated_pdf_in_the_same_study(tmp_path):
    """--report-pdf: beside the SR, the 77089 report goes to the PACS as DICOM
    Encapsulated PDF in the image's study; both are queued sends of the one image."""
    from tbscore.io.pdf_dicom import ENCAPSULATED_PDF_SOP_CLASS

    pacs = FakePACS().start()
    n = NodeProcess(
        tmp_path / "spool",
        free_port(),
        ["--forward", pacs.peer, "--workers", "1", "--min-free-mb", "1", "--report-pdf"],
    ).start()
    try:
        (img,) = image_copies(tmp_path / "in", 1)
        src = pydicom.dcmread(img, stop_before_pixels=True)
        assert send([img], n, "TBSCORE")[0].state == "sent"
        wait_until(lambda: pacs.count() == 2, 60, "the SR and the PDF report at the PACS")
        by_class = {str(ds.SOPClassUID): ds for ds in pacs.datasets.values()}
        assert set(by_class) == {"1.2.840.10008.5.1.4.1.1.88.22", ENCAPSULATED_PDF_SOP_CLASS}
        pdf = by_class[ENCAPSULATED_PDF_SOP_CLASS]
        assert pdf.StudyInstanceUID == src.StudyInstanceUID and pdf.PatientID == src.PatientID
        assert bytes(pdf.EncapsulatedDocument).startswith(b"%PDF-")
        sends = [s for s in n.sends() if s["sop_instance_uid"] == src.SOPInstanceUID]
        assert sorted(Path(s["path"]).name.split(".")[-2] for s in sends) == ["pdf", "sr"]
        assert n.images()[src.SOPInstanceUID]["code"] is None
    finally:
        n.stop()
        pacs.stop()


@pytest.mark.parametrize(
    ("entry", "wait_s", "match"),
    [
        ("die_while_warming_up", 60.0, r"died while warming up \(exit code 3;"),
        ("hang_while_warming_up", 1.0, r"did not warm up in 1 s"),
    ],
)
def test_worker_lost_while_warming_up_is_a_typed_net_error(
    tmp_path, monkeypatch, entry, wait_s, match
):
    """Issue 16: Supervisor.start raised a bare EOFError when a worker died before it was
    ready (and RuntimeError when one hung); both are NetError naming the reason, and no
    worker is left running."""
    import netutil
    from tbscore.errors import NetError
    from tbscore.net import workers
    from tbscore.net.ledger import Ledger
    from tbscore.net.spool import Spool

    monkeypatch.setattr(workers, "worker_main", getattr(netutil, entry))
    ledger = Ledger(tmp_path / "ledger.sqlite")
    sup = workers.Supervisor(
        ledger, Spool(tmp_path / "spool", min_free_mb=0), [], n_workers=2, job_timeout_s=5, cfg={}
    )
    try:
        with pytest.raises(NetError, match=match):
            sup.start(ready_timeout_s=wait_s)
        assert len(sup._workers) == 2 and not any(w.proc.is_alive() for w in sup._workers)
    finally:
        sup.stop(timeout_s=1)
        ledger.close()


def test_echo_errors_name_the_peer_once(capsys):
    """Issue 16: `tbscore echo` printed 'AET@HOST:PORT: no connection to AET@HOST:PORT'."""
    from tbscore.cli import EXIT_ERROR, main

    down = f"ANY@127.0.0.1:{free_port()}"
    pacs = FakePACS()
    pacs.ae.require_called_aet = True  # another called AE title is rejected
    pacs.start()
    try:
        wrong = f"WRONG@127.0.0.1:{pacs.port}"
        for peer, why in ((down, "no connection"), (wrong, "association rejected")):
            assert main(["echo", peer, "--timeout", "5"]) == EXIT_ERROR
            err = capsys.readouterr().err
            assert err.startswith(f"tbscore: error: {peer}: {why}"), err
            assert err.count("127.0.0.1") == 1, err
        assert main(["echo", f"PACS@127.0.0.1:{pacs.port}", "--timeout", "5"]) == 0
        assert "success" in capsys.readouterr().out
    finally:
        pacs.stop()
