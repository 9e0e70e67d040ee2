"""Helpers of the network tests: free ports, a fake PACS, a node subprocess, images.

Every server listens on 127.0.0.1 only, is started by the test and stopped by PID (the
node) or by its own shutdown (the in-process fake PACS); every wait is bounded.
"""

from __future__ import annotations

import hashlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import defaultdict
from pathlib import Path

import pydicom
from pydicom.uid import generate_uid
from pynetdicom import AE, AllStoragePresentationContexts, evt
from pynetdicom.sop_class import Verification

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_dicom" / "phantom_a_square.dcm"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    """Poll ``predicate`` until it returns a truthy value (returned) or fail."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(interval)


class FakePACS:
    """A pynetdicom Storage SCP in this process that records what it receives.

    ``status`` is the C-STORE status it answers; ``delay`` seconds it waits first;
    ``require_calling_aet`` restricts callers (set at any time).
    """

    def __init__(self, port: int | None = None, ae_title: str = "PACS") -> None:
        self.port = port or free_port()
        self.ae_title = ae_title
        self.status = 0x0000
        self.delay = 0.0
        self.received: dict[str, list[str]] = defaultdict(list)  # uid -> sha256 of bytes
        self.datasets: dict[str, pydicom.Dataset] = {}
        self.times: dict[str, float] = {}
        self._lock = threading.Lock()
        self.ae = AE(ae_title)
        for cx in AllStoragePresentationContexts:
            self.ae.add_supported_context(cx.abstract_syntax)
        self.ae.add_supported_context(Verification)
        self.ae.network_timeout = 10
        self.server = None

    def _store(self, event) -> int:
        if self.delay:
            time.sleep(self.delay)
        if self.status != 0x0000:
            return self.status
        data = event.encoded_dataset(include_meta=False)
        uid = str(event.request.AffectedSOPInstanceUID)
        with self._lock:
            self.received[uid].append(hashlib.sha256(data).hexdigest())
            self.datasets[uid] = event.dataset
            self.times.setdefault(uid, time.time())
        return 0x0000

    @property
    def peer(self) -> str:
        return f"{self.ae_title}@127.0.0.1:{self.port}"

    def start(self) -> FakePACS:
        self.server = self.ae.start_server(
            ("127.0.0.1", self.port), block=False, evt_handlers=[(evt.EVT_C_STORE, self._store)]
        )
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

    def count(self) -> int:
        with self._lock:
            return len(self.received)


class FakeQR:
    """A Study Root C-FIND / C-GET SCP serving the Part-10 files of ``files``
    (pynetdicom, 127.0.0.1, this process); matches StudyDate (single date) or
    StudyInstanceUID."""

    FIND = "1.2.840.10008.5.1.4.1.2.2.1"
    GET = "1.2.840.10008.5.1.4.1.2.2.3"

    def __init__(self, files: list[Path]) -> None:
        import pydicom
        from pynetdicom import AE, StoragePresentationContexts, evt

        self.datasets = [pydicom.dcmread(f) for f in files]
        self.port = free_port()
        self.associations = 0
        #: abort the association after this many C-GET responses (a PACS failing)
        self.abort_after: int | None = None
        self.gets = 0  # C-GET requests answered
        ae = AE("QR")
        ae.add_supported_context(self.FIND)
        ae.add_supported_context(self.GET)
        for cx in StoragePresentationContexts:
            ae.add_supported_context(cx.abstract_syntax, scu_role=False, scp_role=True)
        self.server = ae.start_server(
            ("127.0.0.1", self.port),
            block=False,
            evt_handlers=[
                (evt.EVT_C_FIND, self._find),
                (evt.EVT_C_GET, self._get),
                (evt.EVT_REQUESTED, self._requested),
            ],
        )

    @property
    def peer(self) -> str:
        return f"QR@127.0.0.1:{self.port}"

    def _match(self, ident) -> list:
        date = str(ident.get("StudyDate", "") or "")
        study = str(ident.get("StudyInstanceUID", "") or "")
        return [
            ds
            for ds in self.datasets
            if (not date or str(ds.StudyDate) == date)
            and (not study or str(ds.StudyInstanceUID) == study)
        ]

    def _find(self, event):
        from pydicom.dataset import Dataset

        seen = set()
        for ds in self._match(event.identifier):
            if ds.StudyInstanceUID in seen:
                continue
            seen.add(ds.StudyInstanceUID)
            rsp = Dataset()
            rsp.QueryRetrieveLevel = "STUDY"
            rsp.StudyInstanceUID = ds.StudyInstanceUID
            rsp.StudyDate = ds.StudyDate
            rsp.AccessionNumber = ""
            yield 0xFF00, rsp

    def _requested(self, event) -> None:
        self.associations += 1

    def _get(self, event):
        self.gets += 1
        if self.abort_after is not None and self.gets > self.abort_after:
            self.abort_after = None
            event.assoc.abort()
            return
        matches = self._match(event.identifier)
        yield len(matches)
        for ds in matches:
            yield 0xFF00, ds

    def stop(self) -> None:
        self.server.shutdown()


class CutProxy:
    """A TCP proxy 127.0.0.1:port -> target that cuts its first ``cuts`` connections
    after ``after`` bytes from the client (an association lost mid-send)."""

    def __init__(self, target_port: int, *, cuts: int, after: int) -> None:
        self.port = free_port()
        self.target = target_port
        self.cuts_left = cuts
        self.after = after
        self.cut_done = 0
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", self.port))
        self._sock.listen(8)
        self._sock.settimeout(0.2)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _pipe(self, src, dst, limit):
        sent = 0
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if limit is not None and sent + len(data) > limit:
                    dst.sendall(data[: limit - sent])
                    self.cut_done += 1
                    break
                dst.sendall(data)
                sent += len(data)
        except OSError:
            pass
        for s in (src, dst):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    def _serve(self):
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target), timeout=5)
            except OSError:
                client.close()
                continue
            limit = None
            if self.cuts_left > 0:
                self.cuts_left -= 1
                limit = self.after
            threading.Thread(target=self._pipe, args=(client, upstream, limit), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, None), daemon=True).start()

    def stop(self):
        self._stop.set()
        self._sock.close()


class NodeProcess:
    """``tbscore serve`` in a subprocess; started() waits for its "listening" line."""

    def __init__(
        self,
        spool: Path,
        port: int,
        args: list[str],
        env: dict | None = None,
        prefix: list[str] | None = None,
    ) -> None:
        self.spool = Path(spool)
        self.port = port
        self.args = args
        self.env = {**os.environ, **(env or {})}
        self.prefix = prefix or []
        self.proc: subprocess.Popen | None = None
        self.log = self.spool.parent / f"{self.spool.name}-node-{port}.log"

    @property
    def peer(self) -> str:
        return f"TBS@127.0.0.1:{self.port}"

    def start(self, timeout: float = 120.0) -> NodeProcess:
        cmd = [
            *self.prefix,
            sys.executable,
            "-m",
            "tbscore",
            "serve",
            "--spool",
            str(self.spool),
            "--port",
            str(self.port),
            *self.args,
        ]
        self._fh = open(self.log, "ab")
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT, env=self.env)
        wait_until(
            lambda: b"listening on" in self.log.read_bytes() or self.proc.poll() is not None,
            timeout,
            "the node to listen",
            0.1,
        )
        if self.proc.poll() is not None:
            raise AssertionError("node exited:\n" + self.log.read_text(errors="replace"))
        return self

    def kill9(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        if self.proc is not None:
            self._fh.close()

    def ledger(self):
        import sqlite3

        db = sqlite3.connect(f"file:{self.spool / 'ledger.sqlite'}?mode=ro", uri=True, timeout=10)
        db.row_factory = sqlite3.Row
        return db

    def images(self) -> dict[str, dict]:
        with self.ledger() as db:
            return {r["sop_instance_uid"]: dict(r) for r in db.execute("SELECT * FROM images")}

    def sends(self) -> list[dict]:
        with self.ledger() as db:
            return [dict(r) for r in db.execute("SELECT * FROM sends ORDER BY id")]


def image_copies(
    folder: Path,
    n: int,
    *,
    marker: str = "",
    source: Path = SAMPLE,
    study_date: str | None = None,
) -> list[Path]:
    """``n`` copies of a sample image with new SOP Instance UIDs (and new studies),
    dated ``study_date`` (YYYYMMDD) when given."""
    folder.mkdir(parents=True, exist_ok=True)
    out = []
    for i in range(n):
        ds = pydicom.dcmread(source)
        uid = generate_uid(prefix="1.2.826.0.1.3680043.10.1" + (marker or "") + ".")
        ds.SOPInstanceUID = uid
        ds.file_meta.MediaStorageSOPInstanceUID = uid
        ds.StudyInstanceUID = generate_uid()
        ds.SeriesInstanceUID = generate_uid()
        if study_date is not None:
            ds.StudyDate = study_date
        path = folder / f"img{marker}{i:03d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def uid_of(path: Path) -> str:
    return str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)


def die_while_warming_up(conn, cfg) -> None:
    """A scoring-worker entry point that dies before it reports ready (exit code 3)."""
    os._exit(3)


def hang_while_warming_up(conn, cfg) -> None:
    """A scoring-worker entry point that never reports ready."""
    time.sleep(3600)
