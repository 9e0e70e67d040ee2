"""User accounts of the reading station: a JSON file of hashed passwords.

Format ``tbscore-review-users/1``::

    {"format": "tbscore-review-users/1",
     "users": {"Jane Roe": {"password": "scrypt:32768:8:1$...", "organisation": "..."}}}

The user name is the name that signs reports. Passwords are hashed with
:func:`werkzeug.security.generate_password_hash` (scrypt, salted) and checked with
:func:`~werkzeug.security.check_password_hash`; the file never holds a password.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tbscore.errors import ReviewError

__all__ = ["USERS_FORMAT", "load_users", "add_user", "check_password"]

USERS_FORMAT = "tbscore-review-users/1"


def load_users(path: str | Path) -> dict[str, dict[str, Any]]:
    """The accounts of a users file (name -> entry).

    Raises
    ------
    ReviewError
        Missing, unreadable or malformed file (naming it).
    """
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReviewError("users file does not exist (create it with --add-user)", str(p)) from None
    except (OSError, ValueError) as exc:
        raise ReviewError(f"unreadable users file ({exc})", str(p)) from exc
    if not isinstance(data, dict) or data.get("format") != USERS_FORMAT:
        raise ReviewError(f"not a users file (format must be {USERS_FORMAT!r})", str(p))
    users = data.get("users")
    if not isinstance(users, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("password"), str) for v in users.values()
    ):
        raise ReviewError("users must map names to entries with a password hash", str(p))
    return users


def add_user(
    path: str | Path, name: str, password: str, *, organisation: str | None = None
) -> Path:
    """Add (or replace) an account, storing only the salted scrypt hash.

    Raises
    ------
    ReviewError
        Empty name, password shorter than 8 characters, or a bad existing file.
    """
    from werkzeug.security import generate_password_hash

    from tbscore.io.atomic import atomic_file

    name = " ".join(name.split())
    if not name:
        raise ReviewError("user name is empty")
    if len(password) < 8:
        raise ReviewError("password must have at least 8 characters")
    p = Path(path)
    users = load_users(p) if p.exists() else {}
    entry: dict[str, Any] = {"password": generate_password_hash(password, method="scrypt")}
    if organisation:
        entry["organisation"] = organisation
    users[name] = entry
    text = json.dumps({"format": USERS_FORMAT, "users": users}, indent=1) + "\n"
    p.parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(p) as tmp:
        tmp.write_text(text, encoding="utf-8")
        tmp.chmod(0o600)
    return p


def check_password(users: dict[str, dict[str, Any]], name: str, password: str) -> bool:
    """Whether ``name`` is an account and ``password`` is its password."""
    from werkzeug.security import check_password_hash

    entry = users.get(name)
    if entry is None:
        # same work for an unknown name, so timing does not tell which names exist
        check_password_hash("scrypt:32768:8:1$x$" + "0" * 128, password)
        return False
    return bool(check_password_hash(entry["password"], password))
