"""Start-up cost: CPU seconds of ``import tbscore``, ``tbscore --help``, ``--version`` and
a one-image ``calc``, now and at an earlier commit measured in the same run.

Run: ``python benchmarks/bench_startup.py [--repeat 5] [--before b8b1742]``.

Each command runs ``--repeat`` times as a fresh ``python`` process; the figure is the
minimum over the runs of the CPU time (user + system, ``resource.getrusage`` of the
finished children) -- the least disturbed run, so the figures are stable on a busy
machine where wall times are not. The CLI commands run as
``python -c "from tbscore.cli import main; ..."``, what the ``tbscore`` console script
does. ``--before COMMIT`` (default ``b8b1742``, the last commit before the layered
package) is checked out in a temporary ``git worktree`` under ``/tmp`` and measured with
``PYTHONPATH=<worktree>/src`` in the same run (same interpreter and libraries); the
table shows both and the ratio before/after. ``--before ""`` measures the current tree
only. The one-image ``calc`` scores ``sample_dicom/phantom_a_square.dcm`` with its ROI
file (numba kernels loaded from the on-disk cache after the first run).

Targets (issue 13): ``import tbscore`` <= 0.3 CPU-s, ``tbscore --help`` and
``--version`` <= 0.3 CPU-s.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "sample_dicom" / "phantom_a_square.dcm"
CLI = "import sys; from tbscore.cli import main; sys.exit(main(sys.argv[1:]))"

COMMANDS: dict[str, list[str]] = {
    "import tbscore": ["-c", "import tbscore"],
    "tbscore --help": ["-c", CLI, "--help"],
    "tbscore --version": ["-c", CLI, "--version"],
    "tbscore calc (1 image)": [
        "-c",
        CLI,
        "calc",
        str(SAMPLE),
        "--roi",
        str(SAMPLE.with_name(SAMPLE.stem + ".roi.json")),
        "--json",
    ],
}


def cpu_seconds(args: list[str], env: dict[str, str], repeat: int) -> float:
    """Minimum over ``repeat`` fresh processes of their CPU time (user + system, s)."""
    best = float("inf")
    for _ in range(repeat):
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        proc = subprocess.run(
            [sys.executable, *args], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
        )
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if proc.returncode not in (0, 1):
            raise RuntimeError(f"{args!r} failed: {proc.stderr.decode()[-500:]}")
        used = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        best = min(best, used)
    return best


def measure(src: Path, repeat: int) -> dict[str, float]:
    """CPU seconds of every command with ``tbscore`` imported from ``src``."""
    env = dict(os.environ, PYTHONPATH=str(src))
    return {name: cpu_seconds(args, env, repeat) for name, args in COMMANDS.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=5, help="processes per command (min taken)")
    ap.add_argument("--before", default="b8b1742", help="earlier commit to compare ('' none)")
    args = ap.parse_args()

    print(f"python {platform.python_version()} on {platform.machine()}, {os.cpu_count()} CPUs")
    print(f"CPU seconds, min of {args.repeat} fresh processes\n")
    after = measure(ROOT / "src", args.repeat)
    before: dict[str, float] | None = None
    tmp = None
    if args.before:
        tmp = Path(tempfile.mkdtemp(prefix="tbscore-before-"))
        tree = tmp / "tree"
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(tree), args.before],
            check=True,
            capture_output=True,
        )
        try:
            before = measure(tree / "src", args.repeat)
        finally:
            subprocess.run(
                ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(tree)],
                capture_output=True,
            )
            shutil.rmtree(tmp, ignore_errors=True)
    width = max(map(len, COMMANDS))
    if before is None:
        print(f"{'command':<{width}}  {'now':>8}")
        for name, value in after.items():
            print(f"{name:<{width}}  {value:8.3f}")
        return
    print(f"{'command':<{width}}  {args.before:>8}  {'now':>8}  {'before/now':>10}")
    for name, value in after.items():
        old = before[name]
        print(f"{name:<{width}}  {old:8.3f}  {value:8.3f}  {old / value:9.1f}x")


if __name__ == "__main__":
    main()
