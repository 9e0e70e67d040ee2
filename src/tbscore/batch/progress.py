"""Progress display: a tqdm bar on a terminal, sparse log lines otherwise."""

from __future__ import annotations

import os
import sys
import time
from collections import Counter
from typing import IO, Any

__all__ = ["Progress", "make_progress"]


#: Narrower terminals get log lines instead of a bar (a 0-column pty shows no bar at all).
MIN_BAR_COLUMNS = 20


def _columns(stream: IO[str]) -> int | None:
    """Width of the terminal behind ``stream`` (``$COLUMNS`` if it has none)."""
    try:
        return os.get_terminal_size(stream.fileno()).columns
    except (AttributeError, OSError, ValueError):
        env = os.environ.get("COLUMNS", "")
        return int(env) if env.isdigit() else None


def _eta(seconds: float) -> str:
    seconds = int(round(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}"


class Progress:
    """Reports rows as they are written.

    Parameters
    ----------
    total : int
        Inputs to score in this run.
    mode : {"bar", "log", "none"}
        ``bar``: a tqdm bar with rate and ETA (log lines on a terminal narrower than
        :data:`MIN_BAR_COLUMNS`); ``log``: one line every ``every`` rows or
        ``interval`` seconds (whichever first) plus a last one; ``none``: silent.
    stream : file
        Where to write (default ``sys.stderr``).
    """

    def __init__(
        self,
        total: int,
        mode: str = "log",
        *,
        stream: IO[str] | None = None,
        every: int = 100,
        interval: float = 10.0,
    ) -> None:
        if mode not in ("bar", "log", "none"):
            raise ValueError(f"progress mode must be bar, log or none, not {mode!r}")
        self.total = total
        self.mode = mode
        self.stream = stream if stream is not None else sys.stderr
        self.every = max(1, every)
        self.interval = interval
        self.done = 0
        self.counts: Counter[str] = Counter()
        self._t0 = time.monotonic()
        self._last_t = self._t0
        self._last_n = 0
        self._bar: Any = None
        cols = _columns(self.stream) if mode == "bar" else None
        if cols is not None and cols < MIN_BAR_COLUMNS:
            self.mode = "log"  # a zero-width terminal would show nothing at all
        if self.mode == "bar" and total:
            try:
                from tqdm.auto import tqdm
            except ImportError:  # no tqdm: log lines instead
                self.mode = "log"
                return
            self._bar = tqdm(
                total=total, unit="scan", file=self.stream, dynamic_ncols=True, smoothing=0.1
            )

    def message(self, text: str) -> None:
        """Write a line (through the bar when there is one)."""
        if self.mode == "none":
            return
        if self._bar is not None:
            self._bar.write(text, file=self.stream)
        else:
            print(text, file=self.stream, flush=True)

    def update(self, status: str) -> None:
        """One row written with ``status``."""
        self.done += 1
        self.counts[status] += 1
        if self._bar is not None:
            self._bar.set_postfix_str(self._counts(), refresh=False)
            self._bar.update(1)
        elif self.mode == "log":
            now = time.monotonic()
            if self.done - self._last_n >= self.every or now - self._last_t >= self.interval:
                self._log(now)

    def tick(self) -> None:
        """Called while waiting: a log line if ``interval`` passed with no row."""
        if self.mode == "log" and self.total:
            now = time.monotonic()
            if now - self._last_t >= self.interval:
                self._log(now)

    def _counts(self) -> str:
        return ", ".join(f"{k} {v}" for k, v in sorted(self.counts.items()))

    def _log(self, now: float) -> None:
        self._last_t, self._last_n = now, self.done
        elapsed = now - self._t0
        rate = self.done / elapsed if elapsed > 0 else 0.0
        left = self.total - self.done
        eta = _eta(left / rate) if rate > 0 else "?"
        print(
            f"tbscore batch: {self.done}/{self.total} ({self._counts() or 'none yet'}), "
            f"{rate:.1f} scans/s, ETA {eta}",
            file=self.stream,
            flush=True,
        )

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self.mode == "log" and self.total and self.done != self._last_n:
            self._log(time.monotonic())


def make_progress(
    progress: bool | str | None, total: int, stream: IO[str] | None = None
) -> Progress:
    """``None``/``True``/``"auto"``: a bar if ``stream`` is a terminal, else log lines;
    ``False``/``"none"``: silent; ``"bar"`` or ``"log"``: that."""
    stream = stream if stream is not None else sys.stderr
    if progress is None or progress is True or progress == "auto":
        isatty = getattr(stream, "isatty", None)
        mode = "bar" if isatty is not None and isatty() else "log"
    elif progress is False:
        mode = "none"
    else:
        mode = str(progress)
    return Progress(total, mode, stream=stream)
