"""Helpers shared by the benchmark scripts (run as ``python benchmarks/NAME.py``, so this
folder is first on ``sys.path``)."""

from __future__ import annotations

import resource
import statistics
import subprocess
import time
from collections.abc import Callable
from typing import Any


def cpu_per_call(fn: Callable[[], Any], repeat: int) -> float:
    """CPU seconds per call of ``fn`` (mean of ``repeat`` calls, after one warm-up call)."""
    fn()
    t0 = time.process_time()
    for _ in range(repeat):
        fn()
    return (time.process_time() - t0) / repeat


def _block_means(fn: Callable[[], Any], block: int, blocks: int) -> list[float]:
    """Mean CPU seconds per call of ``fn`` in each of ``blocks`` blocks of ``block``
    calls, after one warm-up call (numba compilation or cache load, first-call
    imports)."""
    fn()
    samples = []
    for _ in range(blocks):
        t0 = time.process_time()
        for _ in range(block):
            fn()
        samples.append((time.process_time() - t0) / block)
    return samples


def cpu_min(fn: Callable[[], Any], block: int, blocks: int) -> float:
    """Smallest mean CPU seconds per call of ``fn`` over ``blocks`` blocks of ``block``
    calls, after one warm-up call (the figure a busy machine moves least)."""
    return min(_block_means(fn, block, blocks))


def cpu_median(fn: Callable[[], Any], block: int, blocks: int) -> float:
    """Median over ``blocks`` blocks of ``block`` calls of the mean CPU seconds per call
    of ``fn``, after one warm-up call."""
    return statistics.median(_block_means(fn, block, blocks))


def child_cpu(cmd: list[str], env: dict[str, str] | None = None, cwd: Any = None) -> float:
    """User + system CPU seconds of one child process running ``cmd`` (which must
    succeed; its standard output is discarded)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(cmd, env=env, cwd=cwd, check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime


def spy_calls(module: Any, name: str, run: Callable[[], Any]) -> list[tuple]:
    """The positional arguments of every call of ``module.name`` made while ``run()`` runs.

    The attribute is replaced by a recording wrapper for the duration of ``run`` and put
    back afterwards (also when ``run`` raises).
    """
    calls: list[tuple] = []
    real = getattr(module, name)

    def spy(*args, **kw):
        calls.append(args)
        return real(*args, **kw)

    setattr(module, name, spy)
    try:
        run()
    finally:
        setattr(module, name, real)
    return calls
