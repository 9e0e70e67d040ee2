"""The DICOM node behind ``tbscore serve``: receive, score, send back.

Flow of one image::

    densitometer/PACS --C-STORE--> receive(): free-space floor, duplicate check,
        durable write to SPOOL/incoming, record committed, THEN status 0x0000
    Supervisor --> worker process: tbscore.api.calc (automatic ROIs) + SR written once
        to SPOOL/results, record: scored + one pending send per destination
    Sender (one thread per destination) --C-STORE of the stored SR file--> PACS,
        record: sent | pending with capped backoff | refused (with the reason)

See docs/network.md for the failure semantics.
"""

from __future__ import annotations

import logging
import threading
import time
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from tbscore.errors import NetError
from tbscore.net.address import check_ae_title, parse_peer
from tbscore.net.ledger import Ledger
from tbscore.net.scu import StoreSession, Timeouts, make_ae, pynetdicom, start_server
from tbscore.net.sop import DXA_IMAGE_CLASSES, VERIFICATION, accepted_classes, available_syntaxes
from tbscore.net.spool import REPORT_RESERVE_BYTES, RESULT_RESERVE_BYTES, Spool, durable_write
from tbscore.net.workers import Supervisor

__all__ = ["NodeConfig", "Node", "load_config"]

log = logging.getLogger("tbscore.net")

#: Seconds a sender keeps its association to a destination open without sending.
SENDER_IDLE_S = 5.0

#: Series modalities that hold no image to score (reconcile skips them).
_NOT_IMAGES = frozenset({"SR", "KO", "PR", "DOC"})


@dataclass
class NodeConfig:
    """Settings of a node (``tbscore serve`` options; a ``serve.toml`` holds the same
    keys with underscores). Times in seconds, sizes in MiB or pixels."""

    spool: str = "tbscore-spool"
    ae_title: str = "TBS"
    bind: str = "127.0.0.1"
    port: int = 11112
    forward: list[str] = field(default_factory=list)
    allow_aet: list[str] = field(default_factory=list)
    accept: str = "dxa"
    workers: int = 2
    job_timeout: float = 60.0
    max_pixels: int = 4_000_000
    min_free_mb: float = 200.0
    retry_base: float = 5.0
    retry_cap: float = 600.0
    reconcile: str | None = None
    reconcile_every: float = 3600.0
    reconcile_days: int = 1
    connect_timeout: float = 10.0
    acse_timeout: float = 30.0
    dimse_timeout: float = 60.0
    network_timeout: float = 60.0
    settings: str | None = None
    calibration: str | None = None
    report_pdf: bool = False

    def timeouts(self) -> Timeouts:
        return Timeouts(
            self.connect_timeout, self.acse_timeout, self.dimse_timeout, self.network_timeout
        )

    def check(self) -> NodeConfig:
        """Validate; returns ``self``. Raises :class:`NetError`."""
        self.ae_title = check_ae_title(self.ae_title)
        self.forward = [str(parse_peer(f)) for f in self.forward]
        self.allow_aet = [check_ae_title(a, "--allow-aet title") for a in self.allow_aet]
        accepted_classes(self.accept)
        if self.reconcile:
            self.reconcile = str(parse_peer(self.reconcile))
        if not 1 <= int(self.port) <= 65535:
            raise NetError(f"port {self.port} out of range 1-65535")
        for name in ("job_timeout", "retry_base", "retry_cap", "reconcile_every"):
            if float(getattr(self, name)) <= 0:
                raise NetError(f"{name} must be positive")
        if int(self.workers) < 1:
            raise NetError("--workers must be at least 1")
        return self


def parse_duration(text: str | float) -> float:
    """Seconds from ``90``, ``90s``, ``15m``, ``1h``, ``1d``."""
    if isinstance(text, int | float):
        return float(text)
    t = str(text).strip().lower()
    scale = {"s": 1, "m": 60, "h": 3600, "d": 86400}.get(t[-1:], None)
    try:
        return float(t[:-1]) * scale if scale else float(t)
    except ValueError as exc:
        raise NetError(f"duration {text!r} is not like 90s, 15m, 1h") from exc


def load_config(path: str | Path) -> dict[str, Any]:
    """Keys of a ``serve.toml`` (top level or a ``[serve]`` table), validated against
    :class:`NodeConfig`."""
    try:
        with open(path, "rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise NetError(f"cannot read ({exc.strerror or exc})", str(path)) from exc
    except tomllib.TOMLDecodeError as exc:
        raise NetError(f"invalid TOML ({exc})", str(path)) from exc
    doc = doc.get("serve", doc)
    known = {f.name for f in fields(NodeConfig)}
    unknown = sorted(set(doc) - known)
    if unknown:
        raise NetError(f"unknown keys {', '.join(unknown)}", str(path))
    return dict(doc)


class _Sender(threading.Thread):
    """Drains the queue of one destination: sends each due result file as stored."""

    def __init__(self, node: Node, destination: str) -> None:
        super().__init__(name=f"tbscore-send-{destination}", daemon=True)
        self.node = node
        self.destination = destination
        self.peer = parse_peer(destination)
        self.wake = threading.Event()
        cfg = node.config
        # one association kept open between sends (opened, used and released in
        # this thread only)
        self.session = StoreSession(self.peer, cfg.ae_title, cfg.timeouts(), SENDER_IDLE_S)

    def run(self) -> None:
        try:
            self._run()
        finally:
            try:
                self.session.close()
            except Exception:  # pragma: no cover - never let stop() hang on a peer
                log.exception("sender %s: closing the association", self.destination)

    def _run(self) -> None:
        cfg, ledger = self.node.config, self.node.ledger
        while not self.node.stopping.is_set():
            try:
                rows = ledger.due_sends(self.destination)
                if not rows:
                    self.session.close_if_idle()
                    nxt = ledger.next_due(self.destination)
                    wait = 1.0 if nxt is None else min(1.0, max(0.0, nxt - time.time()))
                    self.wake.wait(wait)
                    self.wake.clear()
                    continue
                by_path = {r.path: r for r in rows}
                started: set[str] = set()  # tries already counted by send_started

                def before(path: str, by_path: dict = by_path, started: set = started) -> None:
                    ledger.send_started(by_path[path].id)
                    started.add(path)

                def result(o: Any, by_path: dict = by_path, started: set = started) -> None:
                    row = by_path[o.path]
                    counted = o.path in started
                    if o.state == "sent":
                        ledger.sent(row.id)
                        self.node.stats["sent"] += 1
                    elif o.state == "refused":
                        log.warning(
                            "%s refused %s: %s", self.destination, row.sop_instance_uid, o.reason
                        )
                        ledger.send_refused(row.id, o.reason, counted=counted)
                    else:
                        ledger.send_failed(
                            row.id,
                            o.reason,
                            base_s=cfg.retry_base,
                            cap_s=cfg.retry_cap,
                            counted=counted,
                        )

                missing = [r for r in rows if not Path(r.path).is_file()]
                for r in missing:
                    ledger.send_refused(r.id, "result file missing from the spool")
                self.session.send(
                    [r.path for r in rows if r not in missing],
                    on_result=result,
                    before_send=before,
                )
            except Exception:  # never let a sender die
                log.exception("sender %s", self.destination)
                time.sleep(1.0)


class Node:
    """A running ``tbscore serve`` node (see the module docstring).

    Parameters
    ----------
    config : NodeConfig
    """

    def __init__(self, config: NodeConfig) -> None:
        self.config = config.check()
        reserve = RESULT_RESERVE_BYTES + (REPORT_RESERVE_BYTES if config.report_pdf else 0)
        self.spool = Spool(config.spool, config.min_free_mb, reserve)
        self.ledger = Ledger(self.spool.ledger_path)
        self.stopping = threading.Event()
        self.stats: dict[str, int] = {"received": 0, "duplicates": 0, "refused_space": 0, "sent": 0}
        self._lock = threading.Lock()
        self._server: Any = None
        self._senders = [_Sender(self, d) for d in config.forward]
        cfg = {
            "max_pixels": int(config.max_pixels),
            "settings": config.settings,
            "calibration": config.calibration,
            "report_pdf": bool(config.report_pdf),
        }
        self.supervisor = Supervisor(
            self.ledger,
            self.spool,
            config.forward,
            n_workers=config.workers,
            job_timeout_s=config.job_timeout,
            cfg=cfg,
            on_scored=self._wake_senders,
        )
        self._scored_classes = set(DXA_IMAGE_CLASSES)
        self._reconciler: threading.Thread | None = None

    def _wake_senders(self) -> None:
        for s in self._senders:
            s.wake.set()

    # ------------------------------------------------------------------ receive
    def receive(self, sop_class: str, sop_uid: str, data: bytes, calling_aet: str) -> int:
        """Keep one received instance; the C-STORE status to answer.

        Success only once the file is fsynced in the spool and recorded; a duplicate
        SOP instance is acknowledged without being stored or scored again; 0xA700 when
        the write would go below the free-space floor (or the disk is full).
        """
        if not sop_uid:
            return 0xA900
        with self._lock:
            if self.ledger.seen(sop_uid):
                self.stats["duplicates"] += 1
                return 0x0000
            if not self.spool.has_room(len(data), self.ledger.unscored()):
                self.stats["refused_space"] += 1
                log.warning("refused %s: free space below the floor", sop_uid)
                return 0xA700
            target = self.spool.incoming_path(sop_uid)
            try:
                durable_write(target, data)
                self.ledger.add_image(
                    sop_uid,
                    sop_class,
                    calling_aet,
                    str(target),
                    len(data),
                    score=sop_class in self._scored_classes,
                )
            except OSError as exc:
                target.unlink(missing_ok=True)
                log.warning("refused %s: %s", sop_uid, exc)
                return 0xA700
            except Exception as exc:  # sqlite full or locked: the sender will retry
                target.unlink(missing_ok=True)
                log.warning("refused %s: %s", sop_uid, exc)
                return 0xA700
            self.stats["received"] += 1
        self.supervisor.notify()
        return 0x0000

    def _handle_store(self, event: Any) -> int:
        try:
            data = event.encoded_dataset(include_meta=True)
        except Exception:
            return 0xC210
        req = event.request
        aet = event.assoc.requestor.ae_title
        return self.receive(
            str(req.AffectedSOPClassUID), str(req.AffectedSOPInstanceUID), data, str(aet).strip()
        )

    # ------------------------------------------------------------------ lifecycle
    def _make_server_ae(self) -> Any:
        pnd = pynetdicom()
        ae = make_ae(self.config.ae_title, self.config.timeouts())
        # On the acceptor side pynetdicom uses the ACSE timeout for the ARTIM timer:
        # how long a new connection may stay without an A-ASSOCIATE-RQ, and how long
        # a connection that sent garbage (answered with an A-ABORT) is kept open
        # waiting for the peer to close it. Both are idle connections; bound them by
        # the network timeout too (the socket timeout in start_server only covers a
        # PDU that stops half way, because pynetdicom reads only after select()).
        ae.acse_timeout = min(self.config.acse_timeout, self.config.network_timeout)
        syntaxes = available_syntaxes()
        ae.add_supported_context(VERIFICATION)
        classes = accepted_classes(self.config.accept)
        if classes is None:
            for cx in pnd.AllStoragePresentationContexts:
                ae.add_supported_context(cx.abstract_syntax, syntaxes)
            for cls in DXA_IMAGE_CLASSES:
                if cls not in {c.abstract_syntax for c in ae.supported_contexts}:
                    ae.add_supported_context(cls, syntaxes)
        else:
            for cls in classes:
                ae.add_supported_context(cls, syntaxes)
        if self.config.allow_aet:
            ae.require_calling_aet = list(self.config.allow_aet)
        ae.maximum_associations = 16
        return ae

    def start(self) -> None:
        """Recover the record, warm the workers up, start the senders, then open the
        port (not before: the first image must not wait for a cold start)."""
        requeued = self.ledger.recover()
        if requeued:
            log.info("requeued %d interrupted job(s)", requeued)
        self.supervisor.start()
        for s in self._senders:
            s.start()
        pnd = pynetdicom()
        ae = self._make_server_ae()
        try:
            self._server = start_server(
                ae,
                (self.config.bind, int(self.config.port)),
                [(pnd.evt.EVT_C_STORE, self._handle_store)],
            )
        except OSError as exc:
            self.supervisor.stop()
            raise NetError(
                f"cannot listen on {self.config.bind}:{self.config.port} ({exc.strerror or exc})"
            ) from exc
        if self.config.reconcile:
            self._reconciler = threading.Thread(
                target=self._reconcile_loop, name="tbscore-reconcile", daemon=True
            )
            self._reconciler.start()
        self.supervisor.notify()

    def stop(self) -> None:
        """Close the port, stop senders and workers (pending work stays recorded)."""
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
        self._wake_senders()
        for s in self._senders:
            s.join(timeout=10.0)
        self.supervisor.stop()
        self.ledger.close()

    # ------------------------------------------------------------------ reconcile
    def reconcile_once(self) -> dict[str, int]:
        """Catch-up pull: ask the ``--reconcile`` peer for the DXA instances of the
        studies of the last ``reconcile_days`` days and C-GET those not in the record
        into the normal receive path."""
        import datetime as dt

        from tbscore.net.qr import StudyQuery, find_instances, find_studies, retrieve

        cfg = self.config
        peer = parse_peer(cfg.reconcile or "")
        today = dt.date.today()
        first = today - dt.timedelta(days=max(0, int(cfg.reconcile_days)))
        query = StudyQuery(study_date=f"{first:%Y%m%d}-{today:%Y%m%d}")
        known = self.ledger.known_uids()
        missing = 0
        pulled = 0
        for study in find_studies(peer, query, cfg.ae_title, cfg.timeouts()):
            for inst in find_instances(
                peer, study["study_instance_uid"], cfg.ae_title, cfg.timeouts()
            ):
                uid = inst["sop_instance_uid"]
                cls = inst["sop_class_uid"]
                if uid in known or (cls and cls not in self._scored_classes):
                    continue
                if not cls and inst["modality"] in _NOT_IMAGES:
                    continue  # a PACS that returns no SOP class: skip SR/KO/PR series
                missing += 1
                summary = retrieve(
                    peer,
                    "IMAGE",
                    {
                        "StudyInstanceUID": inst["study_instance_uid"],
                        "SeriesInstanceUID": inst["series_instance_uid"],
                        "SOPInstanceUID": uid,
                    },
                    method="get",
                    ae_title=cfg.ae_title,
                    store=self._handle_store,
                    timeouts=cfg.timeouts(),
                )
                pulled += summary.completed
        return {"missing": missing, "pulled": pulled}

    def _reconcile_loop(self) -> None:
        while not self.stopping.is_set():
            try:
                found = self.reconcile_once()
                if found["missing"]:
                    log.info("reconcile: %(missing)d missing, %(pulled)d pulled", found)
            except Exception as exc:
                log.warning("reconcile failed: %s", exc)
            self.stopping.wait(self.config.reconcile_every)
