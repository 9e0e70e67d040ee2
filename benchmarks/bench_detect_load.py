"""The detector's start-up cost: loading its numba kernels from a warm cache (what a batch
worker pays before its first automatic-ROI scan) and compiling them on a cold one.

Run: ``python benchmarks/bench_detect_load.py [--repeat 5] [--cold 1] [--peer OLD_SRC]``.

Each figure is the CPU time (``time.process_time``, user + system of the process) of a
fresh ``python`` process, measured inside it after ``import numpy, scipy.ndimage,
scipy.signal, numba`` (their import is the same for every detector and is not counted):

* ``import + warm_up_kernels``: ``from tbscore.core import detect`` and
  ``detect.warm_up_kernels()`` (every specialisation a detection uses);
* ``import + first detect``: ``from tbscore.core import detect`` and one
  ``detect.detect()`` of ``sample_dicom/phantom_a_square.dcm``'s pixels (read before the
  clock starts), what a worker's first scan pays for the detector; the steady time of
  a detection (a second call, printed beside it) is part of it;
* ``cold compile``: ``import + warm_up_kernels`` with an empty ``NUMBA_CACHE_DIR``.

The first use of numba in a process costs ~0.2 CPU-s of its own (its typing and target
registries), whatever is compiled or loaded; a batch worker pays it once for all of
tbscore's kernels. The warm rows are therefore also given "after numba's own start-up"
(a trivial function compiled before the clock starts): the detector's own share.

Warm figures are the minimum over ``--repeat`` processes (the least disturbed run, the
figure is stable on a busy machine), with one cache directory per source tree filled
by a first, untimed process; cold figures the minimum over ``--cold`` processes, each
on a fresh cache. ``--peer SRC`` measures another tree (``PYTHONPATH=SRC``, e.g. main's
``src`` unpacked by ``git archive``) in the same run, alternating with this one, and
prints both. Byte code is cached (``PYTHONPYCACHEPREFIX`` in the temporary directory), as
an installed package has it.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_dicom" / "phantom_a_square.dcm"

CHILD = r"""
import json, sys, time
import numpy, scipy.ndimage, scipy.signal, numba  # not counted
mode = sys.argv[1]
if sys.argv[3] == "1":  # numba's own start-up (typing and target registries) first
    @numba.njit("float64(float64)")
    def _trivial(x):
        return x + 1.0
if mode == "detect":
    from tbscore.io.load import load_dicom
    scan = load_dicom(sys.argv[2])
    pixels, spacing = scan.pixels, scan.spacing_mm
t0 = time.process_time()
from tbscore.core import detect
if mode == "detect":
    detect.detect(pixels, spacing)
else:
    detect.warm_up_kernels()
t1 = time.process_time()
steady = 0.0
if mode == "detect":
    detect.detect(pixels, spacing)
    steady = time.process_time() - t1
print(json.dumps({"cpu": t1 - t0, "steady": steady}))
"""


def _run(src: Path, cache: str, mode: str, numba_first: bool = False) -> dict[str, float]:
    # byte code cached beside the numba cache (as an installed package has it), whatever
    # PYTHONDONTWRITEBYTECODE says
    env = dict(os.environ, PYTHONPATH=str(src), NUMBA_CACHE_DIR=cache)
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = os.path.join(os.path.dirname(cache), "pyc")
    out = subprocess.run(
        [sys.executable, "-c", CHILD, mode, str(SAMPLE), "1" if numba_first else "0"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Print the detector's warm-load and cold-compile CPU seconds (this tree, peer)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="warm processes (min taken)")
    ap.add_argument("--cold", type=int, default=1, help="cold-cache processes (0: none)")
    ap.add_argument("--peer", type=Path, default=None, help="another tree's src (PYTHONPATH)")
    args = ap.parse_args()
    trees = {"this": ROOT / "src"}
    if args.peer is not None:
        trees = {"peer": args.peer.resolve(), "this": ROOT / "src"}
    with tempfile.TemporaryDirectory(prefix="detect_load_") as tmp:
        caches = {name: os.path.join(tmp, name) for name in trees}
        for name, src in trees.items():  # fill the caches (untimed)
            _run(src, caches[name], "warm")
            _run(src, caches[name], "detect")
        res: dict[str, dict[str, float]] = {
            n: {k: float("inf") for k in ("warm", "warm_own", "detect", "detect_own", "steady")}
            for n in trees
        }
        for _ in range(args.repeat):
            for name, src in trees.items():
                res[name]["warm"] = min(res[name]["warm"], _run(src, caches[name], "warm")["cpu"])
                d = _run(src, caches[name], "detect")
                res[name]["detect"] = min(res[name]["detect"], d["cpu"])
                res[name]["steady"] = min(res[name]["steady"], d["steady"])
                w = _run(src, caches[name], "warm", True)["cpu"]
                res[name]["warm_own"] = min(res[name]["warm_own"], w)
                d = _run(src, caches[name], "detect", True)["cpu"]
                res[name]["detect_own"] = min(res[name]["detect_own"], d)
        for name in trees:
            res[name]["cold"] = float("nan")
        for k in range(args.cold):
            for name, src in trees.items():
                fresh = os.path.join(tmp, f"cold_{name}_{k}")
                c = _run(src, fresh, "warm")["cpu"]
                prev = res[name]["cold"]
                res[name]["cold"] = c if prev != prev else min(prev, c)
    load = os.getloadavg()
    print(f"CPU-s, fresh processes; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")
    print(f"{'measure':<44}" + "".join(f"{n:>10}" for n in trees))
    rows = [
        (f"import + warm_up_kernels, warm (min of {args.repeat})", "warm"),
        (f"import + first detect, warm (min of {args.repeat})", "detect"),
        ("  of which a steady detect (second call)", "steady"),
        ("the same after numba's own start-up:", ""),
        ("  import + warm_up_kernels", "warm_own"),
        ("  import + first detect", "detect_own"),
        (f"cold compile: import + warm_up (min of {args.cold})", "cold"),
    ]
    for label, key in rows:
        if not key:
            print(label)
            continue
        print(f"{label:<44}" + "".join(f"{res[n][key]:>10.3f}" for n in trees))


if __name__ == "__main__":
    main()
