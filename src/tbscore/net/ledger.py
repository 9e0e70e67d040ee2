"""The node's persistent record (stdlib sqlite): what was received, scored and sent.

One row per received SOP instance (``images``) and one per (result file, destination)
pair (``sends``). Every state change is a committed transaction (WAL journal,
``synchronous=FULL``), so after ``kill -9`` or a power cut the record says exactly
which images still have to be scored and which result files still have to be sent.

Image states: ``received`` (waiting for a worker), ``scoring`` (given to a worker),
``scored`` (result file written, sends queued), ``set_aside`` (no result, with a code
and a reason), ``stored`` (accepted but not a DXA image: kept, never scored).

Send states: ``pending`` (waiting, with the time of the next try), ``sent``,
``refused`` (the destination refused the file permanently; kept with the reason until
``tbscore queue retry``).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbscore.errors import NetError

__all__ = ["Ledger", "SendRow", "backoff_s", "read_record"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    sop_instance_uid TEXT PRIMARY KEY,
    sop_class_uid TEXT NOT NULL,
    calling_aet TEXT,
    path TEXT NOT NULL,
    nbytes INTEGER,
    received_at REAL NOT NULL,
    state TEXT NOT NULL,
    code TEXT,
    reason TEXT,
    attempts INTEGER NOT NULL DEFAULT 0,
    not_before REAL NOT NULL DEFAULT 0,
    worker_pid INTEGER,
    sr_path TEXT,
    l1_l4 REAL,
    scored_at REAL,
    duplicates INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS images_state ON images(state, not_before);
CREATE TABLE IF NOT EXISTS sends (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    sop_instance_uid TEXT NOT NULL,
    destination TEXT NOT NULL,
    path TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    next_try REAL NOT NULL DEFAULT 0,
    last_error TEXT,
    created_at REAL NOT NULL,
    sent_at REAL,
    UNIQUE (sop_instance_uid, destination, path)
);
CREATE INDEX IF NOT EXISTS sends_due ON sends(destination, state, next_try);
"""


#: WAL pages between automatic checkpoints (4 KiB each).
WAL_CHECKPOINT_PAGES = 32
#: Size the WAL file is cut back to after a checkpoint (bytes).
WAL_SIZE_LIMIT_BYTES = 256 * 1024


def backoff_s(attempts: int, base_s: float, cap_s: float) -> float:
    """Delay before the next try after ``attempts`` failed tries (s): ``base_s``
    doubled per failure, never more than ``cap_s``."""
    return float(min(cap_s, base_s * 2.0 ** max(0, min(attempts - 1, 30))))


@dataclass(frozen=True)
class SendRow:
    """One queued file for one destination."""

    id: int
    sop_instance_uid: str
    destination: str
    path: str
    attempts: int


class Ledger:
    """The sqlite record in ``path`` (created if missing).

    Thread-safe: one connection guarded by a lock, shared by the C-STORE handler
    threads, the supervisor and the senders of one node. Other processes (``tbscore
    queue``) open their own :class:`Ledger` on the same file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.RLock()
        try:
            self._db = sqlite3.connect(
                self.path, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            # Keep the journal small: sqlite's default checkpoints the WAL only every
            # 1000 pages (4 MiB), which on a nearly full spool eats the room kept
            # for results (and a commit that cannot grow the WAL fails with "disk
            # full"). Checkpoint every 32 pages (128 KiB) and cut the file back to
            # 256 KiB after a checkpoint a reader had held up.
            self._db.execute(f"PRAGMA wal_autocheckpoint={WAL_CHECKPOINT_PAGES}")
            self._db.execute(f"PRAGMA journal_size_limit={WAL_SIZE_LIMIT_BYTES}")
            self._db.executescript(_SCHEMA)
        except sqlite3.Error as exc:
            raise NetError(f"cannot open the node record ({exc})", str(self.path)) from exc

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # ------------------------------------------------------------------ helpers
    def _tx(self, statements: Iterable[tuple[str, tuple[Any, ...]]]) -> None:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                for sql, params in statements:
                    self._db.execute(sql, params)
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def _all(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self._lock:
            return [dict(r) for r in self._db.execute(sql, params).fetchall()]

    # ------------------------------------------------------------------ images
    def seen(self, sop_instance_uid: str) -> bool:
        """Whether this SOP instance was received before; counts the duplicate."""
        with self._lock:
            cur = self._db.execute(
                "UPDATE images SET duplicates = duplicates + 1 WHERE sop_instance_uid = ?",
                (sop_instance_uid,),
            )
            return cur.rowcount > 0

    def add_image(
        self,
        sop_instance_uid: str,
        sop_class_uid: str,
        calling_aet: str,
        path: str,
        nbytes: int,
        *,
        score: bool,
    ) -> None:
        """Record a received instance (committed before the C-STORE is acknowledged)."""
        self._tx(
            [
                (
                    "INSERT INTO images (sop_instance_uid, sop_class_uid, calling_aet, path,"
                    " nbytes, received_at, state) VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (
                        sop_instance_uid,
                        sop_class_uid,
                        calling_aet,
                        path,
                        nbytes,
                        time.time(),
                        "received" if score else "stored",
                    ),
                )
            ]
        )

    def recover(self, max_attempts: int = 2) -> int:
        """After a restart: jobs left ``scoring`` by a killed node go back to
        ``received``, or are set aside when they were interrupted ``max_attempts``
        times already (an image that brings the node down must not do it forever).
        Returns the number of jobs requeued."""
        with self._lock:
            self._tx(
                [
                    (
                        "UPDATE images SET state = 'set_aside', code = 'interrupted', reason = "
                        "'scoring was interrupted ' || attempts || ' times (node restarted)', "
                        "worker_pid = NULL WHERE state = 'scoring' AND attempts >= ?",
                        (max_attempts,),
                    ),
                ]
            )
            cur = self._db.execute(
                "UPDATE images SET state = 'received', worker_pid = NULL WHERE state = 'scoring'"
            )
            return cur.rowcount

    def unscored(self) -> int:
        """Images accepted for scoring whose result is not written yet."""
        with self._lock:
            row = self._db.execute(
                "SELECT COUNT(*) FROM images WHERE state IN ('received', 'scoring')"
            ).fetchone()
        return int(row[0])

    def next_jobs(self, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` images waiting for a worker, oldest first."""
        return self._all(
            "SELECT sop_instance_uid, path, attempts FROM images WHERE state = 'received' "
            "AND not_before <= ? ORDER BY received_at LIMIT ?",
            (time.time(), int(limit)),
        )

    def start_job(self, sop_instance_uid: str, worker_pid: int) -> None:
        self._tx(
            [
                (
                    "UPDATE images SET state = 'scoring', attempts = attempts + 1, "
                    "worker_pid = ? WHERE sop_instance_uid = ?",
                    (worker_pid, sop_instance_uid),
                )
            ]
        )

    def delay_job(self, sop_instance_uid: str, delay_s: float, reason: str) -> None:
        """A temporary failure (disk full): back to ``received`` after ``delay_s``."""
        self._tx(
            [
                (
                    "UPDATE images SET state = 'received', attempts = MAX(attempts - 1, 0), "
                    "not_before = ?, reason = ?, worker_pid = NULL WHERE sop_instance_uid = ?",
                    (time.time() + delay_s, reason, sop_instance_uid),
                )
            ]
        )

    def set_aside(self, sop_instance_uid: str, code: str, reason: str) -> None:
        self._tx(
            [
                (
                    "UPDATE images SET state = 'set_aside', code = ?, reason = ?, "
                    "worker_pid = NULL, scored_at = ? WHERE sop_instance_uid = ?",
                    (code, reason, time.time(), sop_instance_uid),
                )
            ]
        )

    def scored(
        self,
        sop_instance_uid: str,
        sr_path: str,
        l1_l4: float | None,
        destinations: Iterable[str],
        *,
        code: str | None = None,
        reason: str | None = None,
        extra_paths: Iterable[str] = (),
    ) -> None:
        """Record the result file and queue it (and the ``extra_paths``, e.g. the PDF
        report) for every destination, in one transaction (a crash leaves either both
        or neither)."""
        now = time.time()
        stmts: list[tuple[str, tuple[Any, ...]]] = [
            (
                "UPDATE images SET state = 'scored', sr_path = ?, l1_l4 = ?, code = ?, "
                "reason = ?, scored_at = ?, worker_pid = NULL WHERE sop_instance_uid = ?",
                (sr_path, l1_l4, code, reason, now, sop_instance_uid),
            )
        ]
        stmts += [
            (
                "INSERT OR IGNORE INTO sends (sop_instance_uid, destination, path, state, "
                "created_at) VALUES (?, ?, ?, 'pending', ?)",
                (sop_instance_uid, dest, path, now),
            )
            for path in (sr_path, *extra_paths)
            for dest in destinations
        ]
        self._tx(stmts)

    def image(self, sop_instance_uid: str) -> dict[str, Any] | None:
        rows = self._all("SELECT * FROM images WHERE sop_instance_uid = ?", (sop_instance_uid,))
        return rows[0] if rows else None

    def images(self, state: str | None = None) -> list[dict[str, Any]]:
        if state is None:
            return self._all("SELECT * FROM images ORDER BY received_at")
        return self._all("SELECT * FROM images WHERE state = ? ORDER BY received_at", (state,))

    def known_uids(self) -> set[str]:
        return {r["sop_instance_uid"] for r in self._all("SELECT sop_instance_uid FROM images")}

    # ------------------------------------------------------------------ sends
    def due_sends(self, destination: str, limit: int = 50) -> list[SendRow]:
        rows = self._all(
            "SELECT id, sop_instance_uid, destination, path, attempts FROM sends WHERE "
            "destination = ? AND state = 'pending' AND next_try <= ? ORDER BY id LIMIT ?",
            (destination, time.time(), int(limit)),
        )
        return [SendRow(**r) for r in rows]

    def next_due(self, destination: str) -> float | None:
        with self._lock:
            row = self._db.execute(
                "SELECT MIN(next_try) FROM sends WHERE destination = ? AND state = 'pending'",
                (destination,),
            ).fetchone()
        return None if row[0] is None else float(row[0])

    def send_started(self, send_id: int) -> None:
        """Count the try before it is made, so a crash mid-send still counts it."""
        self._tx([("UPDATE sends SET attempts = attempts + 1 WHERE id = ?", (send_id,))])

    def sent(self, send_id: int) -> None:
        self._tx(
            [
                (
                    "UPDATE sends SET state = 'sent', sent_at = ?, last_error = NULL WHERE id = ?",
                    (time.time(), send_id),
                )
            ]
        )

    def send_failed(
        self,
        send_id: int,
        reason: str,
        *,
        base_s: float,
        cap_s: float,
        counted: bool = True,
    ) -> None:
        """A temporary failure: try again after the capped backoff.

        ``counted`` says whether :meth:`send_started` already counted this try. A try
        that failed before the file went out (destination down, association rejected
        or timed out) was not counted there and is counted here, so the backoff of a
        destination that never answers grows like that of one that fails mid-send.
        """
        with self._lock:
            row = self._db.execute("SELECT attempts FROM sends WHERE id = ?", (send_id,)).fetchone()
            attempts = (int(row[0]) if row else 0) + (0 if counted else 1)
            self._tx(
                [
                    (
                        "UPDATE sends SET attempts = ?, next_try = ?, last_error = ? WHERE id = ?",
                        (
                            attempts,
                            time.time() + backoff_s(attempts, base_s, cap_s),
                            reason,
                            send_id,
                        ),
                    )
                ]
            )

    def send_refused(self, send_id: int, reason: str, *, counted: bool = True) -> None:
        """A permanent refusal: set aside with the reason (``counted`` as in
        :meth:`send_failed`)."""
        self._tx(
            [
                (
                    "UPDATE sends SET state = 'refused', last_error = ?, attempts = attempts + ? "
                    "WHERE id = ?",
                    (reason, 0 if counted else 1, send_id),
                )
            ]
        )

    def sends(self, state: str | None = None) -> list[dict[str, Any]]:
        if state is None:
            return self._all("SELECT * FROM sends ORDER BY id")
        return self._all("SELECT * FROM sends WHERE state = ? ORDER BY id", (state,))

    def retry(self, destination: str | None = None) -> int:
        """Refused sends (of ``destination``, or all) back to ``pending``, due now."""
        sql = (
            "UPDATE sends SET state = 'pending', next_try = 0, attempts = 0 "
            "WHERE state IN ('refused', 'pending')"
        )
        params: tuple[Any, ...] = ()
        if destination is not None:
            sql += " AND destination = ?"
            params = (destination,)
        with self._lock:
            return self._db.execute(sql, params).rowcount

    def purgeable(self) -> list[dict[str, Any]]:
        """Images whose work is over (every send done, or set aside / stored) and whose
        files are still in the spool."""
        return self._all(
            "SELECT * FROM images i WHERE state IN ('scored', 'set_aside', 'stored') AND "
            "path != '' AND NOT EXISTS (SELECT 1 FROM sends s WHERE "
            "s.sop_instance_uid = i.sop_instance_uid AND s.state != 'sent')"
        )

    def send_paths(self, sop_instance_uid: str) -> list[str]:
        """The result files queued for this image (SR, PDF report)."""
        rows = self._all(
            "SELECT DISTINCT path FROM sends WHERE sop_instance_uid = ?", (sop_instance_uid,)
        )
        return [r["path"] for r in rows]

    def purged(self, sop_instance_uid: str) -> None:
        """The files of this image were deleted; the row stays so a duplicate is still
        recognised and never rescored."""
        self._tx(
            [
                (
                    "UPDATE images SET path = '', sr_path = NULL WHERE sop_instance_uid = ?",
                    (sop_instance_uid,),
                )
            ]
        )

    def counts(self) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {"images": {}, "sends": {}}
        for r in self._all("SELECT state, COUNT(*) AS n FROM images GROUP BY state"):
            out["images"][r["state"]] = r["n"]
        for r in self._all("SELECT state, COUNT(*) AS n FROM sends GROUP BY state"):
            out["sends"][r["state"]] = r["n"]
        return out


def read_record(path: str | Path) -> list[dict[str, Any]]:
    """A read-only snapshot of a node record, for other programs (the reading station).

    Opens ``path`` read-only (sqlite ``mode=ro``: nothing is created, migrated or
    written, a running node is not disturbed) and returns one dict per received
    instance, oldest first: the ``images`` columns (see the module docstring for the
    states) plus ``result_files``, the result files queued for it (SR, PDF report).

    Raises
    ------
    NetError
        No record at ``path``, or not a readable node record (naming the file).
    """
    p = Path(path)
    if not p.is_file():
        raise NetError("no node record (ledger.sqlite) here", str(p))
    try:
        con = sqlite3.connect(f"{p.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0)
    except sqlite3.Error as exc:
        raise NetError(f"cannot open the node record ({exc})", str(p)) from exc
    try:
        con.row_factory = sqlite3.Row
        rows = [dict(r) for r in con.execute("SELECT * FROM images ORDER BY received_at")]
        files: dict[str, list[str]] = {}
        for r in con.execute("SELECT DISTINCT sop_instance_uid, path FROM sends ORDER BY id"):
            files.setdefault(r["sop_instance_uid"], []).append(r["path"])
    except sqlite3.Error as exc:
        raise NetError(f"not a readable node record ({exc})", str(p)) from exc
    finally:
        con.close()
    for row in rows:
        row["result_files"] = files.get(row["sop_instance_uid"], [])
    return rows
