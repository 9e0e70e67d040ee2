"""Tier 2: the node against a REAL Orthanc (Debian package) and dcmtk's storescu.

Orthanc 1.10 listens on every interface, so the cases (tests/orthanc_netns_cases.py)
run in a subprocess inside a private network namespace that has only loopback
(``unshare -rn``, then ``ip link set lo up``): nothing outside the test can reach the
servers, and they can reach nothing. CI installs the tools (TBSCORE_REQUIRE_TOOLS=1
turns a missing tool into a failure).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import require_tool

pytest.importorskip("pynetdicom")

HERE = Path(__file__).resolve().parent


def test_orthanc_round_trips_in_private_network_namespace():
    require_tool("Orthanc")
    require_tool("storescu")
    require_tool("unshare")
    require_tool("ip")
    probe = subprocess.run(
        ["unshare", "-rn", "sh", "-c", "ip link set lo up"], capture_output=True, timeout=30
    )
    if probe.returncode != 0:
        msg = f"unshare -rn unavailable here: {probe.stderr.decode(errors='replace')}"
        if os.environ.get("TBSCORE_REQUIRE_TOOLS") == "1":
            pytest.fail(msg)
        pytest.skip(msg)
    env = {**os.environ, "TBSCORE_IN_NETNS": "1"}
    cmd = (
        "ip link set lo up && exec "
        f'"{sys.executable}" -m pytest -q -x -p no:cacheprovider -o addopts="" '
        f'"{HERE / "orthanc_netns_cases.py"}"'
    )
    r = subprocess.run(
        ["unshare", "-rn", "sh", "-c", cmd],
        capture_output=True,
        text=True,
        timeout=420,
        cwd=HERE.parent,
        env=env,
    )
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-3000:]
    assert " passed" in r.stdout
