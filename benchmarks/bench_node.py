"""DICOM node benchmark: latency image -> SR in the PACS, burst drain rate, first
image after start.

Run: ``python benchmarks/bench_node.py [--n-latency 20] [--burst 100] [--workers 2]``.

Everything on 127.0.0.1: a pynetdicom fake PACS in this process (``tests/netutil.py``)
and ``tbscore serve`` in a subprocess, forwarding to it; copies of the bundled sample
``phantom_a_square.dcm`` (200 x 160 pixels) with new UIDs, scored with automatic
L1-L4 detection.

* ``start``: seconds from launching ``tbscore serve`` to its "listening" line (the
  workers' warm-up is inside, by design);
* ``first image``: image sent -> its SR stored in the PACS, for the first image after
  the port opened;
* ``warm latency``: the same, one image at a time, median and 90th percentile over
  ``--n-latency`` images; beside it the CPU time of the scoring steps in this process
  (``calc`` with detection, ``write_sr``) measured in the same run, the peer the
  network overhead compares with;
* ``burst``: ``--burst`` images sent over one association as fast as possible, drained
  rate = images / (last SR stored - first image sent); beside it the CPU time the node
  and its workers used per image in the burst (/proc), against the in-process peer;
* ``pull``: ``tbscore pull --from QR@127.0.0.1:PORT --date TODAY --get --to DIR`` (the
  command, as a user runs it, Python start included) against a pynetdicom Study Root
  Query/Retrieve SCP in this process (``tests/netutil.FakeQR``) holding ``--pull-studies``
  studies of that day, one image each: C-FIND, then one C-GET per study. The peer
  beside it is ``tbscore --help`` (the start-up of the same command).

Wall-clock figures on a shared machine vary with its load; the ``load`` line says
what it was. Report ratios against the in-process scoring peer, not absolute times.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from netutil import FakePACS, FakeQR, NodeProcess, free_port, image_copies, uid_of  # noqa: E402
from tbscore.net.address import parse_peer  # noqa: E402
from tbscore.net.scu import Timeouts, send_files  # noqa: E402

T = Timeouts(connect_s=10, acse_s=30, dimse_s=60, network_s=60)


#: SR SOP Instance UID -> the image it references, filled as SRs arrive (each SR is
#: looked at once, so waiting for results costs this process almost no CPU: on a
#: 2-core machine a busy poll would take it from the node's workers)
_REFS: dict[str, str] = {}


def _sr_time(pacs: FakePACS, uid: str, timeout: float = 120.0) -> float:
    """Time the SR referencing image ``uid`` was stored at the PACS."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for sr_uid, ds in list(pacs.datasets.items()):
            if sr_uid in _REFS:
                continue
            try:
                _REFS[sr_uid] = str(
                    ds.CurrentRequestedProcedureEvidenceSequence[0]
                    .ReferencedSeriesSequence[0]
                    .ReferencedSOPSequence[0]
                    .ReferencedSOPInstanceUID
                )
            except (AttributeError, IndexError):
                _REFS[sr_uid] = ""
        for sr_uid, ref in _REFS.items():
            if ref == uid:
                return pacs.times[sr_uid]
        time.sleep(0.002)
    raise TimeoutError(f"no SR for {uid}")


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid`` and its live
    descendants (Linux /proc; the node and its worker processes)."""
    tick = os.sysconf("SC_CLK_TCK")
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total


def _pull_one_day(tmp: Path, n_studies: int) -> tuple[float, float, int]:
    """Wall seconds of ``tbscore pull --get`` of one day (n studies), of ``tbscore
    --help`` (its start-up), and the number of files pulled."""
    import datetime as dt
    import subprocess

    day = dt.date.today().strftime("%Y%m%d")
    files = image_copies(tmp / "qr", n_studies, marker=".7", study_date=day)
    qr = FakeQR(files)
    try:
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "tbscore", "--help"], capture_output=True, check=True)
        help_s = time.perf_counter() - t0
        out = tmp / "pulled"
        t0 = time.perf_counter()
        r = subprocess.run(
            [sys.executable, "-m", "tbscore", "pull", "--from", qr.peer, "--date", day]
            + ["--get", "--to", str(out)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        pull_s = time.perf_counter() - t0
        assert r.returncode == 0, r.stdout + r.stderr
    finally:
        qr.stop()
    return pull_s, help_s, len(list(out.rglob("*.dcm")))


def _peer_cpu(path: Path, n: int = 5) -> tuple[float, float]:
    """CPU seconds of calc (detection) and write_sr in this process, median of n."""
    import pydicom

    from tbscore.api import calc
    from tbscore.io.sr import write_sr

    calc(path)
    c, s = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(n):
            t0 = time.process_time()
            r = calc(path)
            t1 = time.process_time()
            write_sr(r, pydicom.dcmread(path, stop_before_pixels=True), Path(tmp) / "x.dcm")
            c.append(t1 - t0)
            s.append(time.process_time() - t1)
    return statistics.median(c), statistics.median(s)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-latency", type=int, default=20)
    ap.add_argument("--burst", type=int, default=100)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--pull-studies", type=int, default=20, help="studies in the pulled day")
    a = ap.parse_args()
    print(
        f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, python {sys.version.split()[0]}"
    )
    with tempfile.TemporaryDirectory(prefix="bench-node-") as tmp:
        tmp = Path(tmp)
        pacs = FakePACS().start()
        node = NodeProcess(
            tmp / "spool",
            free_port(),
            [
                "--forward",
                pacs.peer,
                "--workers",
                str(a.workers),
                "--min-free-mb",
                "1",
                "--retry-base",
                "0.2",
                "--retry-cap",
                "1",
            ],
        )
        t0 = time.monotonic()
        node.start(timeout=600)
        start_s = time.monotonic() - t0
        peer = parse_peer(node.peer)
        try:
            imgs = image_copies(tmp / "lat", a.n_latency + 1)
            lat = []
            for p in imgs:
                uid = uid_of(p)
                t_send = time.time()
                (o,) = send_files([p], peer, "BENCH", T)
                assert o.state == "sent", o
                lat.append(_sr_time(pacs, uid) - t_send)
            first, warm = lat[0], lat[1:]
            burst = image_copies(tmp / "burst", a.burst)
            uids = [uid_of(p) for p in burst]
            cpu0 = _tree_cpu_s(node.proc.pid)
            t_send = time.time()
            out = send_files(burst, peer, "BENCH", T)
            bad = [(o.state, o.reason) for o in out if o.state != "sent"]
            assert not bad, bad[:3]
            acked = time.time() - t_send
            last = max(_sr_time(pacs, u, 600) for u in uids)
            rate = a.burst / (last - t_send)
            burst_cpu = _tree_cpu_s(node.proc.pid) - cpu0
        finally:
            node.stop()
            pacs.stop()
        calc_cpu, sr_cpu = _peer_cpu(imgs[0])
        pull_s, help_s, pulled = _pull_one_day(tmp, a.pull_studies)
    q = statistics.quantiles(warm, n=10)
    print(f"start (warm-up included)     {start_s:7.2f} s   workers={a.workers}")
    print(f"first image -> SR in PACS    {first * 1000:7.0f} ms")
    print(
        f"warm latency image -> SR     median {statistics.median(warm) * 1000:.0f} ms, "
        f"p90 {q[8] * 1000:.0f} ms (n={len(warm)})"
    )
    print(
        f"  peer: in-process calc+detect {calc_cpu * 1000:.0f} ms CPU, write_sr "
        f"{sr_cpu * 1000:.0f} ms CPU; latency / peer = "
        f"{statistics.median(warm) / (calc_cpu + sr_cpu):.2f}"
    )
    print(
        f"burst of {a.burst}: all acknowledged in {acked:.2f} s ({a.burst / acked:.0f} img/s), "
        f"drained at {rate:.1f} images/s with {a.workers} workers"
    )
    print(
        f"  node + workers CPU in the burst: {burst_cpu / a.burst * 1000:.0f} ms per image "
        f"({a.burst / burst_cpu:.1f} images per CPU-s); peer calc+write_sr "
        f"{(calc_cpu + sr_cpu) * 1000:.0f} ms; node / peer = "
        f"{burst_cpu / a.burst / (calc_cpu + sr_cpu):.2f}"
    )
    print(
        f"pull of one day ({a.pull_studies} studies, C-FIND + C-GET): {pull_s:.2f} s for "
        f"{pulled} files; peer tbscore --help {help_s:.2f} s; pull / peer = {pull_s / help_s:.1f}"
    )


if __name__ == "__main__":
    main()
