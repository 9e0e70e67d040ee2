"""The batch pool's fork-server preload for batches whose inputs have ROI files.

As :mod:`tbscore.batch.preload`, without the automatic detector's kernels (about
0.3 CPU-s): :class:`tbscore.batch.executors.LocalExecutor` uses it when the runner
found an ROI file for every input it looked at (:func:`tbscore.batch.worker.may_detect`).
A worker that has to detect all the same loads them on its first detection.
"""

from __future__ import annotations

try:  # best effort: a worker forked from a server that could not warm up does it itself
    from tbscore.batch.worker import warm_up

    warm_up(detection=False)
except Exception:  # pragma: no cover - the fork server must start whatever happens
    pass
