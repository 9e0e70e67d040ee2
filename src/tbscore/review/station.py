"""The reading station's work, without the web layer: studies, ROI edits, re-scoring,
clinical inputs, priors, signing.

A *study* is one analysed DICOM image. Studies come from folders (every DICOM image
under them, by :mod:`tbscore.io.sniff`; SRs and other non-images are skipped) and from
``tbscore batch`` outputs (the CSV journal or the Parquet file: each row's ``input``
image, with the row's status and warnings). Each study has a key (16 hex digits of the
SHA-256 of its resolved path: no PHI in URLs, logs or file names) and a work folder
``<work>/<key>/`` that holds, once signed, ``result.json`` (the result that was
signed), ``roi.json`` (the ROIs it was computed with), ``result.signoff.json`` (the
sign-off record) and the signed files ``report-N.pdf``, ``sr-N.dcm`` (VERIFIED SR) and
``report-N.dcm`` (Encapsulated PDF), N the signature number.

Every change goes through here and is an audit row (:class:`~tbscore.review.audit.Database`).
Scoring is :func:`tbscore.api.calc` (the one ``tbscore calc`` uses), signing is
:func:`tbscore.signing.sign_result` (the one ``tbscore sign`` uses).
"""

from __future__ import annotations

import copy
import csv
import hashlib
import json
import math
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tbscore.core.constants import LABELS
from tbscore.errors import AlreadySignedError, ReviewError, TBSError

__all__ = ["Study", "Station", "STATUSES", "REVIEW_CONFIDENCE"]

#: Worklist statuses.
STATUSES = ("scored", "needs review", "signed", "amended", "error", "waiting")
#: Node statuses the station never scores itself (set aside, or not scored by the node yet).
UNSCORED_NODE_STATUSES = ("error", "waiting")
#: Detected ROIs with an overall confidence below this need review.
REVIEW_CONFIDENCE = 0.8
#: Clinical input fields of the form (name -> type).
INPUT_FIELDS: dict[str, type] = {
    "age": float,
    "sex": str,
    "bmi": float,
    "frax_mof": float,
    "frax_hip": float,
    "bmd_g_cm2": float,
    "t_score": float,
}


def _locked(method: Any) -> Any:
    """Run a station method under the station's lock (edits read, change and write state)."""
    import functools

    @functools.wraps(method)
    def wrapper(self: Station, *args: Any, **kwargs: Any) -> Any:
        with self._lock:
            return method(self, *args, **kwargs)

    return wrapper


def study_key(path: Path) -> str:
    """The study key of an image: 16 hex digits of the SHA-256 of its resolved path."""
    return hashlib.sha256(str(path.resolve()).encode()).hexdigest()[:16]


@dataclass
class Study:
    """One study of the worklist.

    Attributes
    ----------
    key : str
    image : Path
        The DICOM image.
    roi_file : Path or None
        Its ROI side-car (else automatic detection).
    batch : dict or None
        The ``tbscore batch`` row it came from.
    header : dict
        Patient ID, study date and UID, SOP Instance UID (from the header).
    node : dict or None
        What the DICOM node recorded for it (``status``, ``reason``, ``l1_l4``, ``sr``).
    """

    key: str
    image: Path
    roi_file: Path | None = None
    batch: dict | None = None
    header: dict = field(default_factory=dict)
    node: dict | None = None

    @property
    def origin(self) -> str:
        """Where the study came from: ``node``, ``batch`` or ``folder``."""
        return "node" if self.node is not None else "batch" if self.batch else "folder"


def _header(path: Path) -> dict[str, str]:
    from tbscore.io.sniff import read_dicom

    ds = read_dicom(path, stop_before_pixels=True)
    return {
        k: str(getattr(ds, k, "") or "")
        for k in (
            "PatientID",
            "PatientName",
            "StudyDate",
            "StudyInstanceUID",
            "SOPInstanceUID",
            "Modality",
        )
    } | {"has_pixels": "PixelData" in ds or "FloatPixelData" in ds or _is_image_class(ds)}


def _is_image_class(ds: Any) -> bool:
    return bool(getattr(ds, "Rows", None))


def _batch_rows(path: Path) -> list[dict[str, Any]]:
    """Newest rows of a batch CSV journal or Parquet file."""
    from tbscore.batch.output import newest_rows, parse_row, read_parquet_rows

    try:
        if path.suffix.lower() == ".parquet":
            rows = read_parquet_rows(path)
        else:
            with open(path, newline="", encoding="utf-8") as fh:
                rows = [parse_row(r) for r in csv.DictReader(fh)]
    except (OSError, ValueError, KeyError, TBSError) as exc:
        raise ReviewError(f"not a readable tbscore batch output ({exc})", str(path)) from exc
    if rows and "input" not in rows[0]:
        raise ReviewError("not a tbscore batch output (no 'input' column)", str(path))
    return [dict(r) for r in newest_rows(rows)]


def _read_result(path: Path) -> Any:
    """A result JSON the station keeps or the node wrote, as a TBSResult.

    Raises
    ------
    tbscore.errors.ResultFormatError
        The file cannot be read, is not JSON (truncated, hand-edited) or is not a result
        document; named by its file name only (:meth:`TBSResult.from_json`).
    """
    from tbscore.core.result import TBSResult

    return TBSResult.from_json(Path(path))


def _num(value: Any) -> float | None:
    try:
        v = float(value)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


class Station:
    """The studies and the work done on them.

    Parameters
    ----------
    sources : list of path
        Folders of DICOM images, and batch outputs (``.csv`` journal, ``.parquet``).
    db : Database
    work_dir : path
        Where signed results and files go (one folder per study key).
    time_zone : str
        The site's IANA time zone (signatures).
    lsc, lsc_source : float and str, optional
        The site's least significant change of the raw L1–L4 index and where it comes
        from (``tbscore precision``), for the change call against priors.
    include_phi_pdf : bool
        Patient identifiers in the signed report.
    node_items : list of dict, or a callable returning one, optional
        What a ``tbscore serve`` node received, as plain data (the CLI reads the node's
        record: :func:`tbscore.cli.review.node_items`): ``image`` (path), ``status``
        (``scored``, ``needs review``, ``error`` = set aside, ``waiting``), ``reason``,
        ``l1_l4`` (the node's value), ``sr`` (its result SR), ``result_json`` (its full
        result: the study is listed and opened from it, not scored again, until its
        ROIs are edited). Set-aside and waiting
        images are listed with their reason and never scored here. A callable is
        called again by :meth:`refresh` (every worklist view), so what a running node
        receives appears without restarting the station.

    Raises
    ------
    ReviewError
        A source that is neither a folder nor a batch output.
    """

    def __init__(
        self,
        sources: list[str | Path],
        db: Any,
        work_dir: str | Path,
        *,
        time_zone: str = "UTC",
        lsc: float | None = None,
        lsc_source: str | None = None,
        include_phi_pdf: bool = True,
        node_items: list[dict[str, Any]] | Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.db = db
        self.work_dir = Path(work_dir)
        self.time_zone = time_zone
        self.lsc = lsc
        self.lsc_source = lsc_source
        self.include_phi_pdf = include_phi_pdf
        self.studies: dict[str, Study] = {}
        self._cache: dict[tuple[str, str], Any] = {}
        self._auto: dict[str, dict] = {}
        self._lock = threading.RLock()
        for src in sources:
            self._add_source(Path(src))
        self._node_source = node_items if callable(node_items) else None
        for item in node_items() if callable(node_items) else node_items or []:
            self._add_node_item(item)

    def refresh(self) -> None:
        """Read the node's items again (when given as a callable): new images appear,
        statuses change, purged ones leave the list. A failing read keeps the list."""
        if self._node_source is None:
            return
        try:
            items = self._node_source()
        except TBSError:
            return
        with self._lock:
            old = {k for k, st in self.studies.items() if st.node is not None}
            for item in items:
                self._add_node_item(item)
            for key in old - {study_key(Path(i["image"])) for i in items}:
                self.studies.pop(key, None)
                self._auto.pop(key, None)

    # -- discovery -------------------------------------------------------------------
    def _add_image(self, path: Path, batch: dict | None = None) -> None:
        from tbscore.errors import DicomReadError
        from tbscore.io.sidecar import find_roi_file

        try:
            header = _header(path)
        except (DicomReadError, OSError):
            return
        if header["Modality"] == "SR" or not header["has_pixels"]:
            return
        key = study_key(path)
        roi_file = find_roi_file(path)
        self.studies[key] = Study(key, path.resolve(), roi_file, batch, header)

    def _add_node_item(self, item: dict[str, Any]) -> None:
        """A study the DICOM node received; a set-aside one may not even be readable."""
        from tbscore.errors import DicomReadError

        path = Path(item["image"])
        node = {
            "status": str(item.get("status") or "waiting"),
            "reason": str(item.get("reason") or ""),
            "l1_l4": _num(item.get("l1_l4")),
            "sr": None if item.get("sr") is None else Path(item["sr"]),
            "result_json": None if not item.get("result_json") else Path(item["result_json"]),
        }
        key = study_key(path)
        known = self.studies.get(key)
        if known is not None and known.node == node:
            return  # unchanged since the last read: the header is not read again
        try:
            header = _header(path)
        except (DicomReadError, OSError):
            header = {}
        self.studies[key] = Study(key, path.resolve(), None, None, header, node)
        self._cache.pop((key, "node"), None)

    def _check_scorable(self, key: str) -> None:
        """Refuse to score an image the node set aside or has not scored yet."""
        node = self.study(key).node
        if node is not None and node["status"] in UNSCORED_NODE_STATUSES:
            raise ReviewError(
                f"not scored: {node['reason'] or node['status']}", self.study(key).image.name
            )

    def _add_source(self, src: Path) -> None:
        from tbscore.io.sidecar import is_roi_sidecar
        from tbscore.io.sniff import is_dicom

        if src.is_dir():
            for p in sorted(src.rglob("*")):
                if p.is_file() and not p.name.startswith(".") and not is_roi_sidecar(p.name):
                    if is_dicom(p):
                        self._add_image(p)
            return
        if src.is_file() and src.suffix.lower() in (".csv", ".parquet"):
            for row in _batch_rows(src):
                if row.get("status") not in ("ok", "incomplete"):
                    continue
                image = Path(str(row["input"]))
                if not image.is_absolute():
                    image = src.parent / image if (src.parent / image).exists() else image
                if image.is_file():
                    self._add_image(image, batch=row)
            return
        if src.is_file() and is_dicom(src):
            self._add_image(src)
            return
        raise ReviewError("not a folder, a DICOM file or a tbscore batch output", str(src))

    def study(self, key: str) -> Study:
        """The study of a key.

        Raises
        ------
        ReviewError
            Unknown key.
        """
        try:
            return self.studies[key]
        except KeyError:
            raise ReviewError("unknown study") from None

    # -- files -------------------------------------------------------------------------
    def folder(self, key: str) -> Path:
        """The work folder of a study."""
        return self.work_dir / self.study(key).key

    def record(self, key: str) -> Any:
        """The verified sign-off record of a study, or None."""
        from tbscore.clinical.signoff import SignOff, verify
        from tbscore.io.signoff import read_record

        data = read_record(self.folder(key) / "result.signoff.json")
        if data is None:
            return None
        rec = SignOff.from_dict(data)
        verify(rec)
        return rec

    def signed_files(self, key: str) -> list[str]:
        """Names of the signed files of a study, in signing order."""
        folder = self.folder(key)
        if not folder.is_dir():
            return []
        names = [p.name for p in folder.iterdir() if p.name.split("-")[0] in ("report", "sr")]
        return sorted(names, key=lambda n: (int(n.split("-")[1].split(".")[0]), n))

    # -- ROIs and scoring ------------------------------------------------------------
    def auto_roi(self, key: str) -> dict:
        """The automatic ROIs (side-car file or detection) as a ``tbscore-roi/1`` dict (px)."""
        from tbscore.api import as_image, resolve_rois

        with self._lock:
            if key not in self._auto:
                self._check_scorable(key)
                st = self.study(key)
                image = as_image(st.image)
                rois = resolve_rois(st.roi_file, image)
                doc = rois.to_dict("px", spacing_mm=image.spacing_mm)
                doc["source"] = "automatic" if st.roi_file is None else "roi file"
                self._auto[key] = doc
            return copy.deepcopy(self._auto[key])

    def roi(self, key: str) -> dict:
        """The current ROIs of a study (signed, edited, or automatic)."""
        signed = self.folder(key) / "roi.json"
        if signed.exists() and self.record(key) is not None:
            return json.loads(signed.read_text(encoding="utf-8"))
        doc = self.db.state(key).get("roi")
        return doc if doc is not None else self.auto_roi(key)

    def score(self, key: str, roi: dict | None = None) -> Any:
        """The result of a study with ``roi`` (default the current ROIs): ``tbscore.calc``.

        A signed study gives the signed result.
        """
        from tbscore.api import calc

        if roi is None and self.record(key) is not None:
            return _read_result(self.folder(key) / "result.json")
        node = self.study(key).node
        if roi is None and node is not None and node.get("result_json") is not None:
            if self.db.state(key).get("roi") is None:  # the node's result, not rescored
                with self._lock:
                    ck = (key, "node")
                    if ck not in self._cache:
                        self._cache[ck] = _read_result(node["result_json"])
                    return self._cache[ck]
        self._check_scorable(key)
        doc = roi if roi is not None else self.roi(key)
        text = json.dumps(doc, sort_keys=True)
        ck = (key, hashlib.sha256(text.encode()).hexdigest())
        with self._lock:
            if ck not in self._cache:
                self._cache[ck] = calc(self.study(key).image, roi=doc)
            return self._cache[ck]

    def _check_unsigned(self, key: str) -> None:
        rec = self.record(key)
        if rec is not None and rec.signed:
            raise AlreadySignedError(
                "the study is signed and immutable: add an addendum instead", key
            )

    def _edit(self, key: str, user: str, action: str, doc: dict, **detail: Any) -> Any:
        """Re-score with ``doc``; keep it and log it when it scores."""
        with self._lock:
            return self._edit_locked(key, user, action, doc, **detail)

    def _edit_locked(self, key: str, user: str, action: str, doc: dict, **detail: Any) -> Any:
        self._check_unsigned(key)
        before = self.score(key).l1_l4
        try:
            result = self.score(key, doc)
        except TBSError as exc:
            raise ReviewError(f"ROI edit refused: {exc.reason}") from exc
        state = self.db.state(key)
        state["roi"] = doc
        self.db.set_state(key, state)
        self.db.log(user, key, action, l1_l4_before=before, l1_l4_after=result.l1_l4, **detail)
        return result

    @staticmethod
    def _item(doc: dict, label: str) -> dict:
        for item in doc["vertebrae"]:
            if item["label"] == label:
                return item
        raise ReviewError(f"no ROI {label!r} in this study")

    @_locked
    def set_geometry(self, key: str, user: str, label: str, geometry: dict) -> Any:
        """Replace the box or polygon of one vertebra and re-score.

        Parameters
        ----------
        geometry : dict
            ``{"box": [row0, col0, row1, col1]}`` (pixels, half-open) or
            ``{"polygon": [[row, col], ...]}`` (pixel centres).

        Raises
        ------
        ReviewError
            Bad geometry, or ROIs that cannot be scored (outside the image, overlapping).
        AlreadySignedError
            The study is signed.
        """
        doc = self.roi(key)
        item = self._item(doc, label)
        if "box" in geometry:
            box = geometry["box"]
            if not (
                isinstance(box, list) and len(box) == 4 and all(_num(v) is not None for v in box)
            ):
                raise ReviewError("box must be four numbers [row0, col0, row1, col1]")
            item.pop("polygon", None)
            item["box"] = [int(round(float(v))) for v in box]
            new: dict[str, Any] = {"box": item["box"]}
        elif "polygon" in geometry:
            poly = geometry["polygon"]
            if not (
                isinstance(poly, list)
                and len(poly) >= 3
                and all(
                    isinstance(p, list) and len(p) == 2 and all(_num(v) is not None for v in p)
                    for p in poly
                )
            ):
                raise ReviewError("polygon must be a list of at least 3 [row, col] points")
            item.pop("box", None)
            item["polygon"] = [[round(float(r), 2), round(float(c), 2)] for r, c in poly]
            new = {"polygon": item["polygon"]}
        else:
            raise ReviewError("give a box or a polygon")
        item.pop("confidence", None)
        doc["source"] = "edited in tbscore review"
        return self._edit(key, user, "roi_edit", doc, label=label, **new)

    @_locked
    def exclude(self, key: str, user: str, label: str, reason: str) -> Any:
        """Exclude a vertebra (fracture, artefact...) with a reason, and re-score."""
        reason = " ".join(str(reason or "").split())
        if not reason:
            raise ReviewError("an exclusion needs a reason")
        doc = self.roi(key)
        item = self._item(doc, label)
        item["excluded"] = True
        item["exclusion_reason"] = reason[:200]
        return self._edit(key, user, "exclude", doc, label=label, reason=reason[:200])

    @_locked
    def restore(self, key: str, user: str, label: str) -> Any:
        """Put back the automatic ROI of a vertebra (and undo its exclusion)."""
        doc = self.roi(key)
        auto = self._item(self.auto_roi(key), label)
        for i, item in enumerate(doc["vertebrae"]):
            if item["label"] == label:
                doc["vertebrae"][i] = auto
        return self._edit(key, user, "restore", doc, label=label)

    # -- clinical inputs -------------------------------------------------------------
    def dxa_values(self, key: str) -> dict | None:
        """BMD and T-score of L1–L4 from a vendor DXA SR of the same study, if any."""
        from tbscore.io.dxa_sr import find_dxa_sr, read_dxa_sr

        st = self.study(key)
        sr = find_dxa_sr(st.image.parent, st.header.get("StudyInstanceUID"))
        return None if sr is None else read_dxa_sr(sr)

    def inputs(self, key: str) -> dict[str, Any]:
        """The entered clinical inputs (form fields; absent ones are not entered)."""
        return dict(self.db.state(key).get("inputs") or {})

    @_locked
    def set_inputs(self, key: str, user: str, form: dict[str, Any]) -> dict[str, Any]:
        """Store the clinical inputs of the form (blank fields are not entered).

        Raises
        ------
        ReviewError
            A number that is not a number, a sex other than F or M.
        """
        self._check_unsigned(key)
        values: dict[str, Any] = {}
        for name, kind in INPUT_FIELDS.items():
            raw = str(form.get(name) or "").strip()
            if not raw:
                continue
            if kind is float:
                v = _num(raw)
                if v is None:
                    raise ReviewError(f"{name} must be a number, got {raw[:20]!r}")
                values[name] = v
            else:
                if raw.upper() not in ("F", "M"):
                    raise ReviewError("sex must be F or M")
                values[name] = raw.upper()
        state = self.db.state(key)
        old = state.get("inputs") or {}
        state["inputs"] = values
        self.db.set_state(key, state)
        changed = sorted(k for k in set(old) | set(values) if old.get(k) != values.get(k))
        self.db.log(user, key, "inputs", changed=changed)
        return values

    def bone_density(self, key: str) -> dict | None:
        """BMD/T-score for the report: entered values, else the vendor DXA SR."""
        entered = self.inputs(key)
        if "bmd_g_cm2" in entered or "t_score" in entered:
            return {
                "bmd_g_cm2": entered.get("bmd_g_cm2"),
                "t_score": entered.get("t_score"),
                "source": "entered",
            }
        dxa = self.dxa_values(key)
        if dxa is None:
            return None
        return {k: dxa[k] for k in ("bmd_g_cm2", "t_score", "source")}

    # -- priors ----------------------------------------------------------------------
    def priors(self, key: str) -> list[dict[str, Any]]:
        """Earlier studies of the same patient (same PatientID), oldest first.

        Each: ``key``, ``study_date``, ``l1_l4`` (raw index; the signed value of a
        signed study), ``labels``, and ``change`` (:func:`tbscore.clinical.precision.compare`
        of the current value against it, with the site LSC), or an ``error``.
        """
        from tbscore.clinical.precision import compare
        from tbscore.errors import PrecisionError
        from tbscore.render.report import prior_summary

        st = self.study(key)
        pid = st.header.get("PatientID")
        date = st.header.get("StudyDate") or ""
        if not pid:
            return []
        current = self.score(key).l1_l4
        out = []
        for other in self.studies.values():
            odate = other.header.get("StudyDate") or ""
            if other.key == key or other.header.get("PatientID") != pid or not odate:
                continue
            if date and odate >= date:
                continue
            try:
                summary = prior_summary(self.score(other.key))
            except TBSError as exc:
                out.append({"key": other.key, "study_date": odate, "error": exc.reason})
                continue
            summary["key"] = other.key
            summary.pop("patient_id", None)
            if current is not None and summary["l1_l4"]:
                try:
                    summary["change"] = compare(float(current), float(summary["l1_l4"]), self.lsc)
                except PrecisionError as exc:
                    summary["error"] = exc.reason
            out.append(summary)
        return sorted(out, key=lambda d: str(d.get("study_date") or ""))

    # -- worklist --------------------------------------------------------------------
    def status(self, key: str) -> tuple[str, str]:
        """Worklist status of a study and why (``scored``, ``needs review``, ``signed``,
        ``amended``, ``error``)."""
        try:
            rec = self.record(key)
        except TBSError as exc:
            return "error", exc.reason
        if rec is not None and rec.signed:
            last = rec.signatures[-1]
            return ("amended" if rec.status == "amended" else "signed"), (
                f"{last.physician}, {last.display_time()}"
            )
        st = self.study(key)
        if st.node is not None and st.node["status"] in UNSCORED_NODE_STATUSES:
            return st.node["status"], st.node["reason"]
        if (
            st.node is not None
            and st.node.get("result_json") is None
            and self.db.state(key).get("roi") is None
        ):  # no result JSON of the node: its record's status
            return st.node["status"], st.node["reason"]
        if st.batch is not None and self.db.state(key).get("roi") is None:
            warnings = st.batch.get("warnings") or ""
            if st.batch.get("status") != "ok" or warnings:
                return "needs review", str(warnings or st.batch.get("status"))[:200]
            return "scored", "batch"
        try:
            result = self.score(key)
        except TBSError as exc:
            return "error", exc.reason
        if result.l1_l4 is None:
            return "needs review", result.l1_l4_reason or "no L1-L4 value"
        if result.warnings:
            return "needs review", result.warnings[0]
        conf = result.roi_confidence
        if conf is not None and conf < REVIEW_CONFIDENCE:
            return "needs review", f"ROI confidence {conf:.2f} < {REVIEW_CONFIDENCE:.2f}"
        if st.node is not None and st.node["status"] == "needs review":
            return st.node["status"], st.node["reason"]  # e.g. the node's report failed
        return "scored", "scored by the node" if st.node is not None else ""

    def worklist(self) -> list[dict[str, Any]]:
        """One row per study: key, status, reason, patient ID, study date, L1–L4."""
        self.refresh()
        rows = []
        for key, st in sorted(
            self.studies.items(),
            key=lambda kv: (
                kv[1].header.get("PatientID", ""),
                kv[1].header.get("StudyDate", ""),
                kv[0],
            ),
        ):
            status, reason = self.status(key)
            value = None
            if status not in UNSCORED_NODE_STATUSES:
                if (
                    (st.batch is not None or st.node is not None)
                    and self.db.state(key).get("roi") is None
                    and status in ("scored", "needs review")
                ):
                    # the batch's or the node's value: listed without rescoring
                    value = st.node["l1_l4"] if st.node is not None else _num(st.batch.get("l1_l4"))
                else:
                    try:
                        value = self.score(key).l1_l4
                    except TBSError:
                        value = None
            rows.append(
                {
                    "key": key,
                    "status": status,
                    "reason": reason,
                    "l1_l4": value,
                    "patient_id": st.header.get("PatientID", ""),
                    "patient_name": st.header.get("PatientName", ""),
                    "study_date": st.header.get("StudyDate", ""),
                    "file": st.image.name,
                    "source": st.origin,
                    "node_sr": None if st.node is None or not st.node["sr"] else st.node["sr"].name,
                }
            )
        return rows

    # -- signing ---------------------------------------------------------------------
    def _next_number(self, key: str) -> int:
        rec = self.record(key)
        return 1 if rec is None else len(rec.signatures) + 1

    @_locked
    def sign(
        self,
        key: str,
        user: str,
        impression: str,
        recommendation: str = "",
        organisation: str | None = None,
    ) -> Any:
        """Sign the current result as ``user`` (:func:`tbscore.signing.sign_result`).

        Writes ``result.json``, ``roi.json``, ``report-1.pdf``, ``sr-1.dcm`` and
        ``report-1.dcm`` in the study's work folder.

        Raises
        ------
        AlreadySignedError
            Signed already (add an addendum).
        SignOffError
            No impression, or the signing path refused.
        """
        from tbscore.io.atomic import atomic_file

        self._check_unsigned(key)
        doc = self.roi(key)
        result = self.score(key, doc)
        folder = self.folder(key)
        folder.mkdir(parents=True, exist_ok=True)
        entered = self.inputs(key)
        inputs = {
            "age": entered.get("age"),
            "sex": entered.get("sex"),
            "bmi": entered.get("bmi"),
            "frax_mof": entered.get("frax_mof"),
            "frax_hip": entered.get("frax_hip"),
            "threshold_set": None,
            "use_metadata": True,
            "bone_density": self.bone_density(key),
            "calibration": None,
            "priors": [
                {k: p.get(k) for k in ("study_date", "l1_l4", "labels", "sop_instance_uid")}
                for p in self.priors(key)
                if "error" not in p
            ],
            "lsc": self.lsc,
            "lsc_source": self.lsc_source,
            "raw_category": "muted",
        }
        from tbscore.clinical.risk import DEFAULT_THRESHOLD_SET

        inputs["threshold_set"] = DEFAULT_THRESHOLD_SET
        with atomic_file(folder / "result.json") as tmp:
            result.to_json(tmp)
        with atomic_file(folder / "roi.json") as tmp:
            tmp.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")
        return self._sign(
            key,
            user,
            result,
            doc,
            organisation,
            "signature",
            {"l1_l4": result.l1_l4},
            impression=impression,
            recommendation=recommendation,
            inputs=inputs,
        )

    def _sign(
        self,
        key: str,
        user: str,
        result: Any,
        roi: dict,
        organisation: str | None,
        what: str,
        log_extra: dict,
        **sign_kwargs: Any,
    ) -> Any:
        """Sign (or add an addendum) through the one signing path and audit it: the
        numbered report PDF, SR and Encapsulated PDF in the study's folder."""
        from tbscore.signing import sign_result

        folder = self.folder(key)
        n = self._next_number(key)
        done = sign_result(
            result,
            folder / "result.json",
            physician=user,
            outputs=[folder / f"report-{n}.pdf"],
            time_zone=self.time_zone,
            organisation=organisation,
            image=self.study(key).image,
            roi=roi,
            sr=folder / f"sr-{n}.dcm",
            pdf_dicom=folder / f"report-{n}.dcm",
            include_phi=self.include_phi_pdf,
            **sign_kwargs,
        )
        self.db.log(
            user,
            key,
            what,
            number=n,
            status=done.record.status,
            files=[p.name for p in done.written],
            **log_extra,
        )
        return done

    @_locked
    def addendum(self, key: str, user: str, text: str, organisation: str | None = None) -> Any:
        """Add an addendum (its own signature and time) to a signed study."""
        if self.record(key) is None:
            raise ReviewError("the study is not signed yet: sign it before an addendum")
        folder = self.folder(key)
        result = _read_result(folder / "result.json")
        roi = json.loads((folder / "roi.json").read_text(encoding="utf-8"))
        return self._sign(key, user, result, roi, organisation, "addendum", {}, addendum=text)

    # -- page data -------------------------------------------------------------------
    def view(self, key: str) -> dict[str, Any]:
        """What the study page shows: ROIs, values, diagnostics, warnings (JSON-safe)."""
        from tbscore.core.result import format_snr, json_safe
        from tbscore.render.report import orientation_marks

        roi = self.roi(key)
        result = self.score(key)
        verts = []
        for label in LABELS:
            try:
                v = result.vertebra(label)
            except KeyError:
                continue
            verts.append(
                {
                    "label": label,
                    "status": v.status,
                    "value": v.value,
                    "reason": v.reason,
                    "se": v.se,
                    "ci95": v.ci95,
                    "r2": v.r2,
                    "slope_se": v.slope_se,
                    "n_pixels": v.n_pixels,
                    "n_lags": v.n_lags,
                    "snr": v.snr,
                    # as tbscore calc prints it: "no noise" when the ratio is unbounded
                    "snr_text": format_snr(v.snr, v.value is not None),
                    "roi_confidence": v.roi_confidence,
                }
            )
        status, reason = self.status(key)
        return json_safe(
            {
                "key": key,
                "status": status,
                "status_reason": reason,
                "signed": status in ("signed", "amended"),
                "roi": roi,
                "l1_l4": result.l1_l4,
                "l1_l4_se": result.l1_l4_se,
                "l1_l4_ci95": result.l1_l4_ci95,
                "l1_l4_labels": list(result.l1_l4_labels),
                "l1_l4_reason": result.l1_l4_reason,
                "warnings": list(result.warnings),
                "vertebrae": verts,
                "method": result.method,
                "lag_range_mm": result.lag_range_mm,
                "pixel_spacing_mm": result.pixel_spacing_mm,
                "orientation": orientation_marks(
                    (result.metadata or {}).get("patient_orientation")
                ),
            }
        )
