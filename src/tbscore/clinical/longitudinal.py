"""Longitudinal change: consecutive scans of a subject against a least significant change.

Pure clinical logic (no I/O). The least significant change (LSC) comes from the site's
precision study (ISCD: LSC = 2.77 × RMS-SD of repeat scans, at 95 % confidence); a
change between two consecutive scans is called significant when its magnitude exceeds
the LSC. Without an LSC, changes are reported but not called.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

__all__ = ["Scan", "Change", "consecutive_changes", "visit_sort_key", "ISCD_LSC_FACTOR"]

#: ISCD: LSC (95 % confidence) = 2.77 × precision error (RMS-SD).
ISCD_LSC_FACTOR = 2.77


@dataclass(frozen=True)
class Scan:
    """One scored scan of a subject.

    Attributes
    ----------
    subject : str
    visit : str
        Visit label (``""`` when unknown).
    value : float
        L1–L4 value (raw or calibrated, as chosen by the caller; never mixed).
    date : str
        Study date ``YYYYMMDD`` (``""`` when unknown).
    order : int
        Tie-breaker (e.g. the manifest line).
    """

    subject: str
    visit: str
    value: float
    date: str = ""
    order: int = 0


@dataclass(frozen=True)
class Change:
    """The change from one scan of a subject to the next.

    Attributes
    ----------
    subject, visit_from, visit_to : str
    value_from, value_to, delta : float
        ``delta = value_to - value_from`` (TBS units).
    percent : float
        ``100 * delta / value_from`` (NaN when ``value_from`` is 0).
    years : float or None
        Time between the study dates, when both are known (365.25-day years).
    significant : bool or None
        ``|delta| > lsc``; ``None`` without an LSC.
    call : str
        ``"decrease"``, ``"increase"``, ``"no significant change"`` or ``"not called
        (no LSC)"``.
    """

    subject: str
    visit_from: str
    visit_to: str
    value_from: float
    value_to: float
    delta: float
    percent: float
    years: float | None
    significant: bool | None
    call: str


def visit_sort_key(label: str) -> tuple:
    """Natural sort key of a visit label (``"m6" < "m12"``, ``"2" < "10"``)."""
    parts = re.split(r"(\d+(?:\.\d+)?)", label.strip().lower())
    return tuple((0, float(p)) if re.fullmatch(r"\d+(?:\.\d+)?", p) else (1, p) for p in parts if p)


def _years(a: str, b: str) -> float | None:
    import datetime as dt

    try:
        da = dt.date(int(a[:4]), int(a[4:6]), int(a[6:8]))
        db = dt.date(int(b[:4]), int(b[4:6]), int(b[6:8]))
    except (ValueError, IndexError):
        return None
    return (db - da).days / 365.25


def consecutive_changes(scans: Iterable[Scan], lsc: float | None = None) -> list[Change]:
    """Changes between consecutive scans of each subject.

    Scans are ordered per subject by study date when every scan of the subject has one,
    else by visit label (natural order), then by ``order``.

    Parameters
    ----------
    scans : iterable of Scan
        Non-finite values are ignored.
    lsc : float, optional
        Least significant change (TBS units, > 0).

    Returns
    -------
    list of Change
        Subjects in first-seen order, then chronologically.

    Raises
    ------
    ValueError
        ``lsc`` not a positive finite number.
    """
    if lsc is not None and not (isinstance(lsc, int | float) and math.isfinite(lsc) and lsc > 0):
        raise ValueError(f"lsc must be a positive number (TBS units), got {lsc!r}")
    by_subject: dict[str, list[Scan]] = {}
    for s in scans:
        if s.subject and math.isfinite(s.value):
            by_subject.setdefault(s.subject, []).append(s)
    out: list[Change] = []
    for subject, items in by_subject.items():
        dated = all(len(s.date) >= 8 for s in items)
        items.sort(key=lambda s: ((s.date if dated else ""), visit_sort_key(s.visit), s.order))
        for a, b in zip(items, items[1:], strict=False):
            delta = b.value - a.value
            pct = 100.0 * delta / a.value if a.value else math.nan
            if lsc is None:
                sig, call = None, "not called (no LSC)"
            else:
                sig = abs(delta) > lsc
                call = ("decrease" if delta < 0 else "increase") if sig else "no significant change"
            out.append(
                Change(
                    subject,
                    a.visit,
                    b.visit,
                    a.value,
                    b.value,
                    delta,
                    pct,
                    _years(a.date, b.date) if dated else None,
                    sig,
                    call,
                )
            )
    return out


def subjects_with_repeats(scans: Sequence[Scan]) -> int:
    """Number of subjects with at least two scans."""
    counts: dict[str, int] = {}
    for s in scans:
        counts[s.subject] = counts.get(s.subject, 0) + 1
    return sum(1 for n in counts.values() if n >= 2)
