"""Imported by the batch pool's fork server before it forks any worker.

:class:`tbscore.batch.executors.LocalExecutor` starts its workers with the
``forkserver`` method and this module as the server's preload: the server imports
numpy, pydicom and tbscore and loads the numba kernels (:func:`warm_up`) once, and
every worker forked from it starts with them in memory instead of paying for the
imports and numba's start-up itself (see ``benchmarks/bench_scan.py``).
"""

from __future__ import annotations

try:  # best effort: a worker forked from a server that could not warm up does it itself
    from tbscore.batch.worker import warm_up

    warm_up()
except Exception:  # pragma: no cover - the fork server must start whatever happens
    pass
