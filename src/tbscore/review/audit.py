"""The station's database: an append-only audit trail and the working state of studies.

stdlib :mod:`sqlite3`. The ``audit`` table is append-only: triggers refuse every
``UPDATE`` and ``DELETE`` (``RAISE(ABORT, ...)``), so a row, once written, stays as it
was. A row says who (the logged-in user), when (UTC, ISO 8601), which study (its key:
a hash of the image path, no PHI), what (``roi_edit``, ``exclude``, ``restore``,
``inputs``, ``signature``, ``addendum``, ``login``...) and the details as JSON (ROI
geometry, values before/after, the input fields changed -- never names or IDs).

The ``state`` table holds the current, unsigned work on a study (edited ROIs, clinical
inputs, draft impression); it changes freely, every change being also an audit row.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tbscore.errors import ReviewError

__all__ = ["Database"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    user TEXT NOT NULL,
    study TEXT NOT NULL,
    action TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
BEGIN SELECT RAISE(ABORT, 'audit trail is append-only'); END;
CREATE TABLE IF NOT EXISTS state (
    study TEXT PRIMARY KEY,
    data TEXT NOT NULL
);
"""


class Database:
    """The station database (one file; safe to share between the server's threads).

    Parameters
    ----------
    path : path
        The sqlite file (created with its tables when missing).

    Raises
    ------
    ReviewError
        The file cannot be opened as a database.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._con = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._con.executescript(_SCHEMA)
        except (OSError, sqlite3.DatabaseError) as exc:
            raise ReviewError(f"cannot open the review database ({exc})", str(path)) from exc

    def close(self) -> None:
        """Close the connection."""
        self._con.close()

    def log(self, user: str, study: str, action: str, **detail: Any) -> None:
        """Append one audit row (UTC time now)."""
        at = datetime.now(UTC).isoformat(timespec="milliseconds")
        text = json.dumps(detail, sort_keys=True, default=str)
        with self._lock:
            self._con.execute(
                "INSERT INTO audit (at, user, study, action, detail) VALUES (?, ?, ?, ?, ?)",
                (at, user, study, action, text),
            )

    def trail(self, study: str | None = None) -> list[dict[str, Any]]:
        """Audit rows, oldest first (of one study, or all)."""
        sql = "SELECT id, at, user, study, action, detail FROM audit"
        args: tuple = ()
        if study is not None:
            sql += " WHERE study = ?"
            args = (study,)
        with self._lock:
            rows = self._con.execute(sql + " ORDER BY id", args).fetchall()
        return [
            {
                "id": r[0],
                "at": r[1],
                "user": r[2],
                "study": r[3],
                "action": r[4],
                "detail": json.loads(r[5]),
            }
            for r in rows
        ]

    def state(self, study: str) -> dict[str, Any]:
        """The working state of a study (``{}`` when none)."""
        with self._lock:
            row = self._con.execute("SELECT data FROM state WHERE study = ?", (study,)).fetchone()
        return {} if row is None else json.loads(row[0])

    def set_state(self, study: str, data: dict[str, Any]) -> None:
        """Replace the working state of a study."""
        text = json.dumps(data, sort_keys=True)
        with self._lock:
            self._con.execute(
                "INSERT INTO state (study, data) VALUES (?, ?) "
                "ON CONFLICT(study) DO UPDATE SET data = excluded.data",
                (study, text),
            )
