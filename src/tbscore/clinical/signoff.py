"""Physician sign-off of a TBS report (CPT 77092): signatures, addenda, report status.

Pure logic, no I/O (records are read and written by :mod:`tbscore.io.signoff`).

A :class:`SignOff` is the record of one study's interpretation: the digest of the
technical result it interprets, the clinical inputs, the impression and recommendation,
and the signatures. The first signature (``kind="final"``) makes the report final; a
signed report is immutable: later changes are addenda (``kind="addendum"``), each with
its own physician, time and text, and the status becomes ``amended``. Every signature
carries a SHA-256 digest of what it signs, chained to the previous signature, so an edit
of the record after signing (a changed impression, a removed addendum, another result)
is detected by :func:`verify`.

Times are timezone-aware and shown in the site's time zone (IANA name, e.g.
``"Europe/Zurich"``; :func:`signing_time`).
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any

from tbscore.errors import AlreadySignedError, SignOffError

__all__ = [
    "SIGNOFF_FORMAT",
    "STATUSES",
    "Signature",
    "SignOff",
    "result_digest",
    "signing_time",
    "sign",
    "add_addendum",
    "verify",
    "calibration_warnings",
    "category_caveat",
    "WIDE_SLOPE_CI",
    "MIN_CALIBRATION_PAIRS",
]

SIGNOFF_FORMAT = "tbscore-signoff/1"

#: Report status: not signed yet, signed, signed with at least one addendum.
STATUSES = ("preliminary", "final", "amended")

#: A calibration fitted on fewer pairs than this is flagged (ISCD-style minimum sample).
MIN_CALIBRATION_PAIRS = 30

#: A calibration slope whose 95 % CI is wider than this fraction of the slope is flagged
#: (e.g. slope 0.57, CI 0.29–0.85: width 0.56 = 98 % of the slope).
WIDE_SLOPE_CI = 0.25


def _canonical(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


def result_digest(result_dict: dict[str, Any]) -> str:
    """SHA-256 (hex) of a result document (``TBSResult.to_dict()``), key order ignored."""
    return hashlib.sha256(_canonical(result_dict)).hexdigest()


def signing_time(time_zone: str, now: datetime | None = None) -> datetime:
    """The current time (or ``now``) in the site's time zone.

    Parameters
    ----------
    time_zone : str
        IANA time-zone name, e.g. ``"Europe/Zurich"`` or ``"UTC"``.
    now : datetime, optional
        A timezone-aware time to convert (tests, imports); default: now.

    Raises
    ------
    SignOffError
        Unknown time zone, or a naive ``now``.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        tz = ZoneInfo(str(time_zone))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise SignOffError(f"unknown time zone {time_zone!r} (use an IANA name)") from exc
    if now is None:
        now = datetime.now(tz)
    elif now.tzinfo is None:
        raise SignOffError("signing time must be timezone-aware")
    return now.astimezone(tz)


@dataclass(frozen=True)
class Signature:
    """One signature: the final sign-off or an addendum.

    Attributes
    ----------
    kind : {"final", "addendum"}
    physician : str
        Interpreting physician (as they sign, e.g. ``"Dr Jane Roe, MD"``).
    signed_at : str
        ISO 8601 time with UTC offset, in ``time_zone``.
    time_zone : str
        IANA name of the site's time zone.
    text : str
        The addendum text (empty for the final signature, which signs the impression).
    organisation : str or None
        The physician's organisation.
    digest : str
        SHA-256 of what this signature signs (record content and previous signature).
    """

    kind: str
    physician: str
    signed_at: str
    time_zone: str
    text: str = ""
    organisation: str | None = None
    digest: str = ""

    @property
    def time(self) -> datetime:
        """``signed_at`` as an aware datetime."""
        return datetime.fromisoformat(self.signed_at)

    def display_time(self) -> str:
        """``YYYY-MM-DD HH:MM <abbreviation> (<zone>)``, e.g. ``2026-12-01 23:10 CET
        (Europe/Zurich)``."""
        t = signing_time(self.time_zone, self.time)
        return f"{t:%Y-%m-%d %H:%M} {t.tzname()} ({self.time_zone})"


@dataclass(frozen=True)
class SignOff:
    """Sign-off record of one interpretation (``tbscore-signoff/1``).

    Attributes
    ----------
    result_sha256 : str
        :func:`result_digest` of the result interpreted.
    impression, recommendation : str
    inputs : dict
        Clinical inputs of the signed interpretation (age, sex, BMI, FRAX, BMD, T-score,
        threshold set, calibration, priors, LSC), so an addendum re-renders the same
        report.
    signatures : tuple of Signature
    """

    result_sha256: str
    impression: str
    recommendation: str = ""
    inputs: dict[str, Any] = field(default_factory=dict)
    signatures: tuple[Signature, ...] = ()

    @property
    def status(self) -> str:
        """``preliminary`` (unsigned), ``final`` or ``amended`` (with addenda)."""
        if not self.signatures:
            return "preliminary"
        return "amended" if len(self.signatures) > 1 else "final"

    @property
    def signed(self) -> bool:
        return bool(self.signatures)

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe record."""
        return {
            "format": SIGNOFF_FORMAT,
            "status": self.status,
            "result_sha256": self.result_sha256,
            "impression": self.impression,
            "recommendation": self.recommendation,
            "inputs": self.inputs,
            "signatures": [s.__dict__.copy() for s in self.signatures],
        }

    @classmethod
    def from_dict(cls, data: Any) -> SignOff:
        """Rebuild a record written by :meth:`to_dict` (digests checked by :func:`verify`).

        Raises
        ------
        SignOffError
            Not a sign-off record.
        """
        if not isinstance(data, dict) or data.get("format") != SIGNOFF_FORMAT:
            raise SignOffError(f"not a {SIGNOFF_FORMAT} record")
        try:
            sigs = tuple(Signature(**s) for s in data.get("signatures") or ())
            return cls(
                result_sha256=str(data["result_sha256"]),
                impression=str(data["impression"]),
                recommendation=str(data.get("recommendation") or ""),
                inputs=dict(data.get("inputs") or {}),
                signatures=sigs,
            )
        except (KeyError, TypeError) as exc:
            raise SignOffError(f"malformed {SIGNOFF_FORMAT} record ({exc})") from exc


def _signature_digest(record: SignOff, sig: Signature, previous: str) -> str:
    payload = {
        "result_sha256": record.result_sha256,
        "impression": record.impression,
        "recommendation": record.recommendation,
        "inputs": record.inputs,
        "previous": previous,
        "kind": sig.kind,
        "physician": sig.physician,
        "organisation": sig.organisation,
        "signed_at": sig.signed_at,
        "time_zone": sig.time_zone,
        "text": sig.text,
    }
    return hashlib.sha256(_canonical(payload)).hexdigest()


def _clean(text: str | None, what: str, *, required: bool) -> str:
    value = " ".join(str(text or "").split()) if what == "physician" else str(text or "").strip()
    if required and not value:
        raise SignOffError(f"{what} must not be empty")
    if len(value) > 20000:
        raise SignOffError(f"{what} is too long ({len(value)} characters, at most 20000)")
    return value


def _new_signature(
    record: SignOff,
    kind: str,
    physician: str,
    when: datetime,
    time_zone: str,
    text: str,
    organisation: str | None,
) -> Signature:
    t = signing_time(time_zone, when)
    previous = record.signatures[-1].digest if record.signatures else ""
    sig = Signature(
        kind=kind,
        physician=_clean(physician, "physician", required=True),
        signed_at=t.isoformat(timespec="seconds"),
        time_zone=str(time_zone),
        text=text,
        organisation=(organisation or None),
    )
    return replace(sig, digest=_signature_digest(record, sig, previous))


def sign(
    result_sha256: str,
    *,
    physician: str,
    impression: str,
    when: datetime,
    time_zone: str,
    recommendation: str = "",
    organisation: str | None = None,
    inputs: dict[str, Any] | None = None,
    existing: SignOff | None = None,
) -> SignOff:
    """Sign an interpretation (final report).

    Parameters
    ----------
    result_sha256 : str
        :func:`result_digest` of the result interpreted.
    physician : str
        Interpreting physician.
    impression : str
        The impression (required), e.g. ``"Normal trabecular microarchitecture."``.
    when : datetime
        Timezone-aware signing time.
    time_zone : str
        The site's IANA time zone (the time is shown and stored in it).
    recommendation : str
    organisation : str, optional
    inputs : dict, optional
        Clinical inputs of the interpretation (stored with the signature).
    existing : SignOff, optional
        The study's current record, if any.

    Returns
    -------
    SignOff
        Status ``final``.

    Raises
    ------
    AlreadySignedError
        ``existing`` is already signed (use :func:`add_addendum`).
    SignOffError
        Empty physician or impression, unknown time zone, naive time.
    """
    if existing is not None and existing.signed:
        first = existing.signatures[0]
        raise AlreadySignedError(
            f"already signed by {first.physician} at {first.signed_at}; a signed report is "
            "immutable: add an addendum instead"
        )
    record = SignOff(
        result_sha256=str(result_sha256),
        impression=_clean(impression, "impression", required=True),
        recommendation=_clean(recommendation, "recommendation", required=False),
        inputs=json.loads(json.dumps(inputs or {})),
    )
    sig = _new_signature(record, "final", physician, when, time_zone, "", organisation)
    return replace(record, signatures=(sig,))


def add_addendum(
    record: SignOff,
    result_sha256: str,
    *,
    physician: str,
    text: str,
    when: datetime,
    time_zone: str,
    organisation: str | None = None,
) -> SignOff:
    """Append an addendum to a signed record (status ``amended``).

    Raises
    ------
    SignOffError
        The record is not signed yet, does not verify, belongs to another result, the
        addendum is empty, or it would be dated before the previous signature.
    """
    if not record.signed:
        raise SignOffError("the report is not signed yet: sign it before adding an addendum")
    verify(record)
    if record.result_sha256 != result_sha256:
        raise SignOffError(
            "the result differs from the one that was signed (SHA-256 mismatch); an "
            "addendum must refer to the signed result"
        )
    sig = _new_signature(
        record,
        "addendum",
        physician,
        when,
        time_zone,
        _clean(text, "addendum", required=True),
        organisation,
    )
    if sig.time < record.signatures[-1].time:
        raise SignOffError("an addendum cannot be dated before the previous signature")
    return replace(record, signatures=(*record.signatures, sig))


def verify(record: SignOff) -> None:
    """Check the signature chain of a record.

    Raises
    ------
    SignOffError
        A signature's digest does not match the record (edited after signing), the
        first signature is not the final one, or a later one is not an addendum.
    """
    previous = ""
    for i, sig in enumerate(record.signatures):
        expected = "final" if i == 0 else "addendum"
        if sig.kind != expected:
            raise SignOffError(f"signature {i + 1} is {sig.kind!r}, expected {expected!r}")
        if _signature_digest(record, sig, previous) != sig.digest:
            raise SignOffError(
                f"signature {i + 1} ({sig.physician}) does not match the record: it was "
                "edited after signing"
            )
        previous = sig.digest


# --------------------------------------------------------------------------------------
# caveats shown in a signed report
# --------------------------------------------------------------------------------------


def _num(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def calibration_warnings(calibration: dict[str, Any] | None) -> tuple[str, ...]:
    """Warnings about a calibration's support: fewer than :data:`MIN_CALIBRATION_PAIRS`
    pairs, or a slope 95 % CI wider than :data:`WIDE_SLOPE_CI` of the slope.

    Parameters
    ----------
    calibration : dict or None
        ``TBSResult.calibration`` (keys ``n``, ``b``, ``b_ci``).
    """
    if not calibration:
        return ()
    out = []
    n = _num(calibration.get("n"))
    if n is None:
        out.append("The calibration does not state its number of pairs.")
    elif n < MIN_CALIBRATION_PAIRS:
        out.append(
            f"The calibration was fitted on {n:g} pairs (fewer than {MIN_CALIBRATION_PAIRS}); "
            "its calibrated values are uncertain."
        )
    b = _num(calibration.get("b"))
    ci = calibration.get("b_ci")
    if isinstance(ci, list | tuple) and len(ci) == 2 and b:
        lo, hi = _num(ci[0]), _num(ci[1])
        if lo is not None and hi is not None and (hi - lo) > WIDE_SLOPE_CI * abs(b):
            out.append(
                f"The calibration slope's 95 % CI ({lo:.3f}–{hi:.3f}) is wide (more than "
                f"{WIDE_SLOPE_CI:.0%} of the slope {b:.3f}); its calibrated values are "
                "uncertain."
            )
    return tuple(out)


def category_caveat(basis: str, calibration: dict[str, Any] | None) -> str | None:
    """Why a category (and TBS-adjusted FRAX) must be shown muted, or None.

    A category assigned from the raw uncalibrated index, or from a calibration flagged
    by :func:`calibration_warnings`, is indicative only.
    """
    if basis == "raw":
        return (
            "indicative only: assigned from the raw, uncalibrated tbscore index; the "
            "thresholds were derived for TBS iNsight values"
        )
    if calibration_warnings(calibration):
        return "indicative only: the calibration to the TBS iNsight scale is weak (see warnings)"
    return None
