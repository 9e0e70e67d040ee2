"""Cases run by tests/test_net_orthanc.py inside a private network namespace.

Not collected on its own (no ``test_`` prefix); refuses to run outside the namespace.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pydicom
import pytest

if os.environ.get("TBSCORE_IN_NETNS") != "1":  # pragma: no cover - guard
    pytest.skip("runs only inside tests/test_net_orthanc.py's namespace", allow_module_level=True)

sys.path.insert(0, str(Path(__file__).resolve().parent))
from netutil import ROOT, NodeProcess, free_port, image_copies, uid_of, wait_until  # noqa: E402

ORTHANC = "/usr/sbin/Orthanc" if Path("/usr/sbin/Orthanc").exists() else "Orthanc"
TODAY = dt.date.today().strftime("%Y%m%d")


class Orthanc:
    def __init__(self, folder: Path, aet: str, modalities: dict[str, list]) -> None:
        self.aet = aet
        self.port = free_port()
        self.http = free_port()
        folder.mkdir(parents=True)
        self.config = folder / "orthanc.json"
        self.config.write_text(
            json.dumps(
                {
                    "Name": f"tbscore-test-{aet}",
                    "StorageDirectory": str(folder / "db"),
                    "IndexDirectory": str(folder / "db"),
                    "DicomAet": aet,
                    "DicomPort": self.port,
                    "HttpPort": self.http,
                    "RemoteAccessAllowed": False,
                    "AuthenticationEnabled": False,
                    "DicomCheckModalityHost": False,
                    "DicomModalities": modalities,
                    "DicomScuTimeout": 10,
                    "DicomAssociationCloseDelay": 0,
                    "Plugins": [],
                    "ConcurrentJobs": 2,
                }
            )
        )
        self.log = open(folder / "orthanc.log", "wb")
        self.proc = subprocess.Popen(
            [ORTHANC, str(self.config)], stdout=self.log, stderr=subprocess.STDOUT
        )
        wait_until(self._up, 30, f"Orthanc {aet} to answer", 0.2)

    def _up(self):
        if self.proc.poll() is not None:
            raise AssertionError("Orthanc exited")
        try:
            return self.get("/system")
        except OSError:
            return None

    @property
    def peer(self) -> str:
        return f"{self.aet}@127.0.0.1:{self.port}"

    def get(self, path: str):
        with urllib.request.urlopen(f"http://127.0.0.1:{self.http}{path}", timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: str):
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.http}{path}", data=body.encode(), method="POST"
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            return json.loads(r.read() or b"null")

    def instances(self) -> list[dict]:
        return [self.get(f"/instances/{i}/simplified-tags") for i in self.get("/instances")]

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture(scope="module")
def ports():
    return {"node": free_port(), "puller": free_port()}


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory, ports):
    o = Orthanc(
        tmp_path_factory.mktemp("orthanc") / "pacs",
        "ORTHANC",
        {
            "NODE": ["TBS", "127.0.0.1", ports["node"]],
            "PULLER": ["PULLER", "127.0.0.1", ports["puller"]],
        },
    )
    yield o
    o.stop()


@pytest.fixture(scope="module")
def node(tmp_path_factory, orthanc, ports):
    n = NodeProcess(
        tmp_path_factory.mktemp("node") / "spool",
        ports["node"],
        [
            "--forward",
            orthanc.peer,
            "--workers",
            "2",
            "--min-free-mb",
            "1",
            "--retry-base",
            "0.5",
            "--retry-cap",
            "2",
        ],
    ).start()
    yield n
    n.stop()


def _today_copies(folder: Path, n: int) -> list[Path]:
    return image_copies(folder, n, study_date=TODAY)


def _study_of(orthanc, study_uid):
    return [i for i in orthanc.instances() if i.get("StudyInstanceUID") == study_uid]


def _storescu(path: Path, aet: str, called: str, port: int) -> None:
    r = subprocess.run(
        ["storescu", "-aet", aet, "-aec", called, "127.0.0.1", str(port), str(path)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stdout + r.stderr


def test_densitometer_to_node_to_orthanc(node, orthanc, tmp_path):
    (img,) = _today_copies(tmp_path, 1)
    src = pydicom.dcmread(img, stop_before_pixels=True)
    _storescu(img, "DXA1", "TBS", node.port)
    found = wait_until(lambda: _study_of(orthanc, src.StudyInstanceUID), 90, "the SR in Orthanc")
    (sr,) = found
    assert sr["SOPClassUID"] == "1.2.840.10008.5.1.4.1.1.88.22"
    assert sr["PatientID"] == src.PatientID
    study = [
        s
        for s in orthanc.get("/studies?expand")
        if s["MainDicomTags"]["StudyInstanceUID"] == src.StudyInstanceUID
    ]
    assert len(study) == 1 and study[0]["PatientMainDicomTags"]["PatientID"] == src.PatientID


def test_orthanc_routes_to_node_and_gets_sr_back_once(node, orthanc, tmp_path):
    (img,) = _today_copies(tmp_path, 1)
    src = pydicom.dcmread(img, stop_before_pixels=True)
    _storescu(img, "DXA1", "ORTHANC", orthanc.port)
    (inst,) = [
        i
        for i in orthanc.get("/instances?expand")
        if i["MainDicomTags"]["SOPInstanceUID"] == src.SOPInstanceUID
    ]
    orthanc.post(
        "/modalities/NODE/store", json.dumps({"Resources": [inst["ID"]], "Synchronous": True})
    )
    wait_until(
        lambda: len(_study_of(orthanc, src.StudyInstanceUID)) == 2,
        90,
        "image + SR in the same study",
    )
    # Orthanc re-routes the image (as its auto-routing does): no second result
    orthanc.post(
        "/modalities/NODE/store", json.dumps({"Resources": [inst["ID"]], "Synchronous": True})
    )
    time.sleep(3)
    assert len(_study_of(orthanc, src.StudyInstanceUID)) == 2
    assert node.images()[src.SOPInstanceUID]["duplicates"] == 1


def test_reconcile_pulls_what_the_routing_missed(orthanc, tmp_path):
    """Orthanc's routing "succeeded" but the node never got the image: the catch-up
    pull (C-FIND today's studies, C-GET what the record lacks) scores it. Images the
    other node already scored come back with the same SR UIDs (deterministic), so
    Orthanc holds one result each."""
    (img,) = _today_copies(tmp_path, 1)
    src = pydicom.dcmread(img, stop_before_pixels=True)
    _storescu(img, "DXA1", "ORTHANC", orthanc.port)  # never routed to any node
    before = {i["SOPInstanceUID"] for i in orthanc.instances()}
    n = NodeProcess(
        tmp_path / "spool",
        free_port(),
        [
            "--forward",
            orthanc.peer,
            "--workers",
            "1",
            "--min-free-mb",
            "1",
            "--reconcile",
            orthanc.peer,
            "--reconcile-every",
            "2s",
        ],
    ).start()
    try:
        wait_until(
            lambda: len(_study_of(orthanc, src.StudyInstanceUID)) == 2,
            120,
            "the catch-up pull, scoring and SR",
        )
        assert n.images()[src.SOPInstanceUID]["state"] == "scored"
        wait_until(lambda: all(s["state"] == "sent" for s in n.sends()), 60, "sends done")
        after = {i["SOPInstanceUID"] for i in orthanc.instances()}
        assert len(after - before) == 1  # only the new image's SR is new
    finally:
        n.stop()


def test_pull_by_date_with_move_and_get(orthanc, ports, tmp_path):
    paths = _today_copies(tmp_path / "in", 3)
    for p in paths:
        _storescu(p, "DXA1", "ORTHANC", orthanc.port)
    wanted = {str(i["SOPInstanceUID"]) for i in orthanc.instances() if i.get("StudyDate") == TODAY}
    assert {uid_of(p) for p in paths} <= wanted
    # Orthanc answers C-FIND/C-MOVE/C-GET only from AE titles in its DicomModalities
    # (DicomAlwaysAllowFind/Get are false by default): both pulls call as PULLER
    for extra in (["--port", str(ports["puller"])], ["--get"]):
        extra = [*extra, "--ae-title", "PULLER"]
        out = tmp_path / ("move" if "--port" in extra else "get")
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "tbscore",
                "pull",
                "--from",
                orthanc.peer,
                "--date",
                TODAY,
                "--to",
                str(out),
                *extra,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        got = {uid_of(p) for p in out.rglob("*.dcm")}
        assert got == wanted, (extra, r.stdout)
    # an AE title Orthanc does not know: refused, and the message says what to check
    r = subprocess.run(
        [sys.executable, "-m", "tbscore", "pull", "--from", orthanc.peer, "--date", TODAY]
        + ["--to", str(tmp_path / "stranger"), "--get", "--ae-title", "STRANGER"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert r.returncode == 2 and "allow C-FIND from AE title STRANGER" in r.stderr, r.stderr
    assert "Traceback" not in r.stderr


def test_export_package_sent_to_second_ae(tmp_path):
    analysis = Orthanc(tmp_path / "analysis", "ANALYSIS", {})
    try:
        r = subprocess.run(
            [
                sys.executable,
                "-m",
                "tbscore",
                "export",
                str(ROOT / "sample_dicom"),
                "-o",
                str(tmp_path / "pkg"),
                "--send",
                analysis.peer,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert r.returncode == 0, r.stdout + r.stderr
        got = analysis.instances()
        sent = list((tmp_path / "pkg").rglob("*.dcm"))
        assert len(got) == len(sent) == 4
        originals = {
            str(pydicom.dcmread(p, stop_before_pixels=True).PatientName)
            for p in (ROOT / "sample_dicom").glob("*.dcm")
        }
        assert not {i.get("PatientName") for i in got} & originals
    finally:
        analysis.stop()
