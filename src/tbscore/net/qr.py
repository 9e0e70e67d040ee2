"""Query/Retrieve SCU (Study Root): C-FIND studies, then C-GET or C-MOVE them.

Used by ``tbscore pull`` (into a folder that ``tbscore batch`` then scores) and by the
node's catch-up pull (``--reconcile``), which feeds retrieved instances into the
node's own receive path.
"""

from __future__ import annotations

import datetime as _dt
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tbscore.errors import AssociationError, NetError
from tbscore.net.address import Peer
from tbscore.net.scu import DEFAULT_TIMEOUTS, Timeouts, associate, make_ae, pynetdicom, status_text
from tbscore.net.sop import DXA_IMAGE_CLASSES, STUDY_EXTRA_CLASSES, available_syntaxes

__all__ = [
    "StudyQuery",
    "PullSummary",
    "find_studies",
    "find_instances",
    "retrieve",
    "date_range",
    "FolderStore",
]

#: Study Root Query/Retrieve Information Model SOP classes.
FIND = "1.2.840.10008.5.1.4.1.2.2.1"
MOVE = "1.2.840.10008.5.1.4.1.2.2.2"
GET = "1.2.840.10008.5.1.4.1.2.2.3"

_DATE_RE = re.compile(r"^\d{8}$")


def _check_date(text: str) -> str:
    if not _DATE_RE.match(text):
        raise NetError(f"date {text!r} is not YYYYMMDD")
    try:
        _dt.datetime.strptime(text, "%Y%m%d")
    except ValueError as exc:
        raise NetError(f"date {text!r} is not a calendar date") from exc
    return text


def date_range(text: str) -> str:
    """A DICOM date range ``A-B`` from ``YYYYMMDD-YYYYMMDD`` (either side may be empty)."""
    a, sep, b = str(text).partition("-")
    if not sep:
        raise NetError(f"date range {text!r} is not YYYYMMDD-YYYYMMDD")
    a, b = a.strip(), b.strip()
    if a:
        _check_date(a)
    if b:
        _check_date(b)
    if not a and not b:
        raise NetError("empty date range")
    return f"{a}-{b}"


@dataclass(frozen=True)
class StudyQuery:
    """Study-level matching keys (empty: universal matching)."""

    study_date: str = ""
    accession_number: str = ""
    study_instance_uid: str = ""

    @classmethod
    def from_args(
        cls,
        date: str | None = None,
        date_range_text: str | None = None,
        accession: str | None = None,
    ) -> StudyQuery:
        if date:
            return cls(study_date=_check_date(date))
        if date_range_text:
            return cls(study_date=date_range(date_range_text))
        if accession:
            if "\\" in accession or "*" in accession or len(accession) > 16:
                raise NetError(f"invalid accession number {accession!r}")
            return cls(accession_number=accession)
        raise NetError("give --date, --date-range or --accession")


def _c_find(peer: Peer, ae_title: str, timeouts: Timeouts, ident: Any) -> list[Any]:
    ae = make_ae(ae_title, timeouts)
    ae.add_requested_context(FIND)
    out = []
    with associate(ae, peer) as assoc:
        waited_from = time.monotonic()
        for status, found in assoc.send_c_find(ident, FIND):
            if not status:
                # pynetdicom yields an empty status both after the DIMSE timeout and
                # at once when the peer aborts (its is_aborted flag is set a moment
                # later, by another thread); the time waited tells them apart
                if time.monotonic() - waited_from < 0.9 * timeouts.dimse_s:
                    # what Orthanc does with a query from an AE title it does not know
                    raise AssociationError(
                        "C-FIND: the peer ended the association without an answer (does "
                        f"it allow C-FIND from AE title {ae_title}?)",
                        str(peer),
                    )
                raise AssociationError(
                    f"C-FIND: no response within {timeouts.dimse_s:g} s", str(peer)
                )
            waited_from = time.monotonic()
            code = int(status.Status)
            if code in (0xFF00, 0xFF01):
                if found is not None:
                    out.append(found)
            elif code != 0x0000:
                raise AssociationError(f"C-FIND failed: {status_text(code)}", str(peer))
    return out


def find_studies(
    peer: Peer, query: StudyQuery, ae_title: str = "TBSCORE", timeouts: Timeouts = DEFAULT_TIMEOUTS
) -> list[dict[str, str]]:
    """Study Root C-FIND at STUDY level; one dict per study (UID, date, accession,
    modalities)."""
    from pydicom.dataset import Dataset

    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = query.study_instance_uid
    ident.StudyDate = query.study_date
    ident.AccessionNumber = query.accession_number
    ident.ModalitiesInStudy = ""
    ident.NumberOfStudyRelatedInstances = ""
    out = []
    for ds in _c_find(peer, ae_title, timeouts, ident):
        uid = str(ds.get("StudyInstanceUID", "") or "")
        if uid:
            out.append(
                {
                    "study_instance_uid": uid,
                    "study_date": str(ds.get("StudyDate", "") or ""),
                    "accession_number": str(ds.get("AccessionNumber", "") or ""),
                    "instances": str(ds.get("NumberOfStudyRelatedInstances", "") or ""),
                }
            )
    return out


def find_instances(
    peer: Peer, study_uid: str, ae_title: str = "TBSCORE", timeouts: Timeouts = DEFAULT_TIMEOUTS
) -> list[dict[str, str]]:
    """Every instance of a study: SERIES-level C-FIND, then IMAGE level per series
    (the hierarchical Study Root model); dicts with series, SOP instance and class UIDs
    (the class may be empty: not every PACS returns it) and the series modality."""
    from pydicom.dataset import Dataset

    ident = Dataset()
    ident.QueryRetrieveLevel = "SERIES"
    ident.StudyInstanceUID = study_uid
    ident.SeriesInstanceUID = ""
    ident.Modality = ""
    out = []
    for series in _c_find(peer, ae_title, timeouts, ident):
        s_uid = str(series.get("SeriesInstanceUID", "") or "")
        modality = str(series.get("Modality", "") or "")
        if not s_uid:
            continue
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = s_uid
        q.SOPInstanceUID = ""
        q.SOPClassUID = ""
        for ds in _c_find(peer, ae_title, timeouts, q):
            out.append(
                {
                    "study_instance_uid": study_uid,
                    "series_instance_uid": s_uid,
                    "sop_instance_uid": str(ds.get("SOPInstanceUID", "") or ""),
                    "sop_class_uid": str(ds.get("SOPClassUID", "") or ""),
                    "modality": modality,
                }
            )
    return out


@dataclass
class PullSummary:
    """Counts of a retrieve (C-GET/C-MOVE sub-operations as reported by the peer)."""

    studies: int = 0
    completed: int = 0
    failed: int = 0
    warning: int = 0
    errors: list[str] = field(default_factory=list)
    #: key sets (studies) whose retrieve got its final response
    keys_done: int = 0


#: ``store(event) -> status``: what to do with each instance received.
StoreHandler = Callable[[Any], int]


def _retrieve_ident(level: str, keys: dict[str, str]) -> Any:
    from pydicom.dataset import Dataset

    ident = Dataset()
    ident.QueryRetrieveLevel = level
    for k, v in keys.items():
        setattr(ident, k, v)
    return ident


def retrieve(
    peer: Peer,
    level: str,
    keys: dict[str, str] | list[dict[str, str]],
    *,
    method: str,
    ae_title: str,
    store: StoreHandler | None = None,
    timeouts: Timeouts = DEFAULT_TIMEOUTS,
    summary: PullSummary | None = None,
) -> PullSummary:
    """Retrieve the instances matching ``keys`` at ``level`` (``STUDY``, ``SERIES``,
    ``IMAGE``). A list of key sets is retrieved one after the other over one
    association (a day of studies does not pay for one association each); a key set
    whose retrieve fails is counted in ``summary.errors`` and the others go on.

    ``method="get"``: C-GET; the instances come back on this association and go to
    ``store``. ``method="move"``: C-MOVE to our own AE title ``ae_title``; the peer
    must know it (host and port of our storage SCP, which the caller runs).
    """
    pnd = pynetdicom()
    summary = summary or PullSummary()
    idents = [_retrieve_ident(level, k) for k in (keys if isinstance(keys, list) else [keys])]
    ae = make_ae(ae_title, timeouts)
    ext_neg: list[Any] = []
    handlers: list[Any] = []
    if method == "get":
        if store is None:
            raise NetError("C-GET needs a store handler")
        ae.add_requested_context(GET)
        syntaxes = available_syntaxes()
        for cls in {**DXA_IMAGE_CLASSES, **STUDY_EXTRA_CLASSES}:
            ae.add_requested_context(cls, syntaxes)
            ext_neg.append(pnd.build_role(cls, scp_role=True))
        handlers.append((pnd.evt.EVT_C_STORE, store))
        model = GET
    elif method == "move":
        ae.add_requested_context(MOVE)
        model = MOVE
    else:
        raise NetError(f"retrieve method must be 'get' or 'move', not {method!r}")
    with associate(ae, peer, ext_neg=ext_neg, evt_handlers=handlers) as assoc:
        for ident in idents:
            if not assoc.is_established:
                raise AssociationError(
                    f"C-{method.upper()}: the peer ended the association", str(peer)
                )
            if method == "get":
                responses = assoc.send_c_get(ident, model)
            else:
                responses = assoc.send_c_move(ident, ae_title, model)
            final = None
            for status, _ds in responses:
                if not status:
                    raise AssociationError(f"C-{method.upper()}: no response", str(peer))
                final = status
            if final is not None:
                code = int(final.Status)
                summary.completed += int(final.get("NumberOfCompletedSuboperations", 0) or 0)
                summary.failed += int(final.get("NumberOfFailedSuboperations", 0) or 0)
                summary.warning += int(final.get("NumberOfWarningSuboperations", 0) or 0)
                if code not in (0x0000, 0xB000):
                    summary.errors.append(f"C-{method.upper()} {status_text(code)}")
            summary.keys_done += 1
    return summary


class FolderStore:
    """A store handler that writes each instance as received into
    ``folder/<StudyInstanceUID>/<SOPInstanceUID>.dcm`` (durably, names made safe)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.written: list[Path] = []

    def __call__(self, event: Any) -> int:
        from tbscore.batch.naming import safe_filename, safe_path
        from tbscore.net.spool import durable_write

        try:
            data = event.encoded_dataset(include_meta=True)
            ds = event.dataset
            study = safe_filename(str(ds.get("StudyInstanceUID", "") or "no-study"))
            uid = str(event.request.AffectedSOPInstanceUID)
            sub = self.folder / study
            sub.mkdir(exist_ok=True)
            self.written.append(durable_write(safe_path(sub, uid, ".dcm"), data))
        except OSError:
            return 0xA700
        except Exception:
            return 0xC210
        return 0x0000
