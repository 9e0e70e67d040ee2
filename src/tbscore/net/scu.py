"""DICOM client side (SCU): echo, send files, query and retrieve, with timeouts on
every association.

Every association is opened, used and released (or, after a failure, aborted) in the
thread that opened it; nothing here aborts an association from another thread.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tbscore.errors import AssociationError, NetError
from tbscore.net.address import Peer, check_ae_title

__all__ = [
    "Timeouts",
    "DEFAULT_TIMEOUTS",
    "pynetdicom",
    "make_ae",
    "associate",
    "echo",
    "send_files",
    "StoreSession",
    "open_association",
    "SendOutcome",
    "status_text",
    "is_success",
    "is_temporary",
]

#: C-STORE statuses that mean "try again later" (out of resources, PS3.4 B.2.3).
_TEMPORARY = range(0xA700, 0xA800)
#: Warning statuses: the instance was stored.
_WARNINGS = (0xB000, 0xB006, 0xB007)


@dataclass(frozen=True)
class Timeouts:
    """Timeouts of every association (s): TCP connect, association negotiation
    (ACSE), waiting for a DIMSE response, and an idle network connection."""

    connect_s: float = 10.0
    acse_s: float = 30.0
    dimse_s: float = 60.0
    network_s: float = 60.0


#: The default timeouts.
DEFAULT_TIMEOUTS = Timeouts()


def pynetdicom():
    """The ``pynetdicom`` module, or :class:`NetError` with the install hint."""
    try:
        import pynetdicom as pnd
    except ImportError as exc:  # pragma: no cover - depends on the installation
        raise NetError("DICOM networking needs pynetdicom: pip install 'tbscore[net]'") from exc
    return pnd


def make_ae(ae_title: str, timeouts: Timeouts = Timeouts()) -> Any:
    """A pynetdicom ``AE`` with our AE title and every timeout set."""
    pnd = pynetdicom()
    ae = pnd.AE(ae_title=check_ae_title(ae_title))
    ae.connection_timeout = timeouts.connect_s
    ae.acse_timeout = timeouts.acse_s
    ae.dimse_timeout = timeouts.dimse_s
    ae.network_timeout = timeouts.network_s
    return ae


def status_text(status: int) -> str:
    """``0xA700 (Out of resources)`` style text of a DIMSE status."""
    try:
        from pynetdicom.status import code_to_category

        category = code_to_category(status)
    except Exception:  # pragma: no cover
        category = ""
    return f"0x{status:04X}" + (f" ({category})" if category else "")


def is_success(status: int) -> bool:
    return status == 0x0000 or status in _WARNINGS


def is_temporary(status: int) -> bool:
    return status in _TEMPORARY


def no_delay(sock: Any) -> None:
    """Set TCP_NODELAY on ``sock`` (a no-op for anything else).

    A C-STORE goes out as a small command PDU followed by data PDUs of at most the
    peer's maximum PDU size (16 KiB by default). With Nagle's algorithm on, a PDU
    smaller than the segment size (every one of them on loopback, the last piece of
    each one elsewhere) waits for the ACK of the previous segment, which the peer
    delays by up to 40 ms: about 40 ms lost per image and per response. DCMTK sets
    TCP_NODELAY for the same reason.
    """
    import socket

    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (AttributeError, OSError):
        pass


def _rejection(assoc: Any, connected: bool = True) -> str:
    """Why no association was established. The peer is not named: the
    :class:`AssociationError` carries it as ``source`` (``AET@HOST:PORT: reason``) and
    the queue lists it beside each destination's last error."""
    if not connected:
        return "no connection (connection refused or timed out)"
    if assoc.is_rejected:
        rsp = getattr(getattr(assoc, "acceptor", None), "primitive", None)
        parts = []
        for attr in ("result_str", "source_str", "reason_str"):
            value = getattr(rsp, attr, None) if rsp is not None else None
            if value:
                parts.append(str(value))
        return "association rejected" + (f" ({'; '.join(parts)})" if parts else "")
    if assoc.is_aborted:
        return "association aborted by the peer"
    return "no association (connection refused or timed out)"


@contextmanager
def associate(
    ae: Any, peer: Peer, *, ext_neg: Sequence[Any] | None = None, evt_handlers: Any = None
) -> Iterator[Any]:
    """An established association with ``peer`` (released at the end, aborted after
    an error), or :class:`AssociationError` with the reason."""
    assoc = open_association(ae, peer, ext_neg=ext_neg, evt_handlers=evt_handlers)
    ok = False
    try:
        yield assoc
        ok = True
    finally:
        if assoc.is_established:
            if ok:
                assoc.release()
            else:
                assoc.abort()


def open_association(
    ae: Any, peer: Peer, *, ext_neg: Sequence[Any] | None = None, evt_handlers: Any = None
) -> Any:
    """An established association with ``peer``, or :class:`AssociationError` with the
    reason; the caller releases it (in the same thread)."""
    # pynetdicom reports a refused TCP connection as an aborted association; the
    # connection-open event tells the two apart for the reason recorded.
    connected: list[bool] = []

    def opened(event: Any) -> None:
        connected.append(True)
        no_delay(getattr(event.assoc.dul.socket, "socket", None))

    handlers = [(pynetdicom().evt.EVT_CONN_OPEN, opened)]
    kwargs: dict[str, Any] = {"ae_title": peer.aet}
    if ext_neg:
        kwargs["ext_neg"] = list(ext_neg)
    kwargs["evt_handlers"] = handlers + list(evt_handlers or [])
    try:
        assoc = ae.associate(peer.host, peer.port, **kwargs)
    except (OSError, ValueError, RuntimeError) as exc:
        raise AssociationError(f"cannot connect ({exc})", str(peer)) from exc
    if not assoc.is_established:
        raise AssociationError(_rejection(assoc, bool(connected)), str(peer))
    return assoc


def echo(peer: Peer, ae_title: str = "TBSCORE", timeouts: Timeouts = Timeouts()) -> float:
    """C-ECHO ``peer``; the round trip in seconds.

    Raises
    ------
    AssociationError
        No association, or no (or a failed) C-ECHO response.
    """
    from tbscore.net.sop import VERIFICATION

    ae = make_ae(ae_title, timeouts)
    ae.add_requested_context(VERIFICATION)
    t0 = time.perf_counter()
    with associate(ae, peer) as assoc:
        status = assoc.send_c_echo()
        if not status or int(status.Status) != 0:
            text = status_text(int(status.Status)) if status else "no response"
            raise AssociationError(f"C-ECHO failed: {text}", str(peer))
    return time.perf_counter() - t0


@dataclass(frozen=True)
class SendOutcome:
    """What became of one file sent with :func:`send_files`.

    ``state`` is ``"sent"``, ``"temporary"`` (try again later: no association, out of
    resources, connection lost) or ``"refused"`` (the peer refused this file, or it is
    not a DICOM file we can send)."""

    path: str
    state: str
    reason: str = ""
    status: int | None = None


def _file_header(path: Path) -> tuple[str, str, str] | None:
    """``(SOPClassUID, SOPInstanceUID, TransferSyntaxUID)`` of a Part-10 file, read by
    the one DICOM read rule (:func:`tbscore.io.sniff.read_dicom`); None when it is not
    one (a bare stream has no transfer syntax to send it with)."""
    from tbscore.io.sniff import read_dicom

    try:
        ds = read_dicom(path, stop_before_pixels=True)
        return (
            str(ds.SOPClassUID),
            str(ds.SOPInstanceUID),
            str(ds.file_meta.TransferSyntaxUID),
        )
    except Exception:
        return None


def _headers(
    paths: Iterable[str | Path], done: Callable[[SendOutcome], None]
) -> list[tuple[str, tuple[str, str, str]]]:
    items = []
    for p in paths:
        head = _file_header(Path(p))
        if head is None:
            done(SendOutcome(str(p), "refused", "not a readable DICOM Part-10 file"))
        else:
            items.append((str(p), head))
    return items


def _store_group(
    assoc: Any,
    peer: Peer,
    group: list[tuple[str, tuple[str, str, str]]],
    done: Callable[[SendOutcome], None],
    before_send: Callable[[str], None] | None,
) -> None:
    """C-STORE each file of ``group`` on the established ``assoc``."""
    lost = None
    for path, (cls, _uid, ts) in group:
        if lost is not None:
            done(SendOutcome(path, "temporary", lost))
            continue
        if not any(
            c.abstract_syntax == cls and c.transfer_syntax[0] == ts for c in assoc.accepted_contexts
        ):
            done(
                SendOutcome(
                    path,
                    "refused",
                    f"{peer} does not accept SOP class {cls} with transfer syntax {ts}",
                )
            )
            continue
        if before_send is not None:
            before_send(path)
        try:
            status = assoc.send_c_store(Path(path))
        except (ValueError, AttributeError, OSError) as exc:
            done(SendOutcome(path, "refused", f"cannot send ({exc})"))
            continue
        if not status:
            lost = "association lost during C-STORE (timeout or abort)"
            done(SendOutcome(path, "temporary", lost))
            continue
        code = int(status.Status)
        if is_success(code):
            done(SendOutcome(path, "sent", "", code))
        elif is_temporary(code):
            done(SendOutcome(path, "temporary", f"C-STORE {status_text(code)}", code))
        else:
            done(SendOutcome(path, "refused", f"C-STORE {status_text(code)}", code))
        if not assoc.is_established:
            lost = "association ended by the peer"


def _chunked_file_sending() -> Any:
    pnd = pynetdicom()
    # Send each file's own bytes (no decode / re-encode): a retry resends exactly the
    # stored file. Process-wide pynetdicom option; every send of tbscore is of a file.
    pnd._config.STORE_SEND_CHUNKED_DATASET = True
    return pnd


def send_files(
    paths: Iterable[str | Path],
    peer: Peer,
    ae_title: str = "TBSCORE",
    timeouts: Timeouts = Timeouts(),
    *,
    on_result: Callable[[SendOutcome], None] | None = None,
    before_send: Callable[[str], None] | None = None,
) -> list[SendOutcome]:
    """C-STORE each file to ``peer`` as stored (the file's own bytes and transfer
    syntax), over as few associations as the 128-context limit allows.

    Never raises for a file or a peer problem: each file gets a :class:`SendOutcome`.
    ``before_send(path)`` is called just before a file goes out, ``on_result`` as soon
    as its outcome is known.
    """
    _chunked_file_sending()
    out: list[SendOutcome] = []

    def done(o: SendOutcome) -> None:
        out.append(o)
        if on_result is not None:
            on_result(o)

    items = _headers(paths, done)
    # one association per group of at most 128 (class, syntax) contexts
    groups: list[list[tuple[str, tuple[str, str, str]]]] = []
    current: list[tuple[str, tuple[str, str, str]]] = []
    contexts: set[tuple[str, str]] = set()
    for item in items:
        key = (item[1][0], item[1][2])
        if key not in contexts and len(contexts) >= 128:
            groups.append(current)
            current, contexts = [], set()
        contexts.add(key)
        current.append(item)
    if current:
        groups.append(current)
    for group in groups:
        ae = make_ae(ae_title, timeouts)
        for cls, ts in sorted({(h[0], h[2]) for _, h in group}):
            ae.add_requested_context(cls, ts)
        try:
            with associate(ae, peer) as assoc:
                _store_group(assoc, peer, group, done, before_send)
        except AssociationError as exc:
            sent = {o.path for o in out}
            for path, _h in group:
                if path not in sent:
                    done(SendOutcome(path, "temporary", exc.reason))
    return out


class StoreSession:
    """Sends files to one peer over an association kept open between calls.

    The node's sender of a destination uses one: results that come one at a time
    (the usual case) do not each pay for a new association. The association is opened
    when needed (with a context for every (SOP class, transfer syntax) seen so far),
    reopened when a file needs a context it lacks or the peer ended it, and released
    after ``idle_s`` seconds without a send (:meth:`close_if_idle`). Every call must
    come from the same thread (pynetdicom associations are never touched from another
    thread here).

    Parameters
    ----------
    peer : Peer
    ae_title : str
        Our (calling) AE title.
    timeouts : Timeouts
    idle_s : float
        Seconds an unused association stays open (s).
    """

    def __init__(
        self, peer: Peer, ae_title: str, timeouts: Timeouts = Timeouts(), idle_s: float = 5.0
    ) -> None:
        self.peer = peer
        self.ae_title = ae_title
        self.timeouts = timeouts
        self.idle_s = float(idle_s)
        self._assoc: Any = None
        self._contexts: set[tuple[str, str]] = set()
        self._last_use = 0.0
        self.opened = 0  # associations opened (for tests and benchmarks)

    def _usable(self, keys: set[tuple[str, str]]) -> bool:
        a = self._assoc
        if a is None or not a.is_established:
            return False
        accepted = {(c.abstract_syntax, c.transfer_syntax[0]) for c in a.accepted_contexts}
        # a key the peer refused before is not asked again on this association
        return keys <= self._contexts and bool(accepted) and len(self._contexts) <= 128

    def send(
        self,
        paths: Iterable[str | Path],
        *,
        on_result: Callable[[SendOutcome], None] | None = None,
        before_send: Callable[[str], None] | None = None,
    ) -> list[SendOutcome]:
        """Like :func:`send_files`, on the kept association (never raises for a file
        or a peer problem)."""
        _chunked_file_sending()
        out: list[SendOutcome] = []

        def done(o: SendOutcome) -> None:
            out.append(o)
            if on_result is not None:
                on_result(o)

        items = _headers(paths, done)
        if not items:
            return out
        keys = {(h[0], h[2]) for _, h in items}
        if not self._usable(keys):
            self.close()
            wanted = self._contexts | keys
            if len(wanted) > 128:
                wanted = keys
            if len(wanted) > 128:  # pragma: no cover - the node sends SR files only
                return out + send_files(
                    [p for p, _ in items],
                    self.peer,
                    self.ae_title,
                    self.timeouts,
                    on_result=on_result,
                    before_send=before_send,
                )
            ae = make_ae(self.ae_title, self.timeouts)
            for cls, ts in sorted(wanted):
                ae.add_requested_context(cls, ts)
            try:
                self._assoc = open_association(ae, self.peer)
            except AssociationError as exc:
                for path, _h in items:
                    done(SendOutcome(path, "temporary", exc.reason))
                return out
            self.opened += 1
            self._contexts = wanted
        try:
            _store_group(self._assoc, self.peer, items, done, before_send)
        finally:
            self._last_use = time.monotonic()
            if any(o.state == "temporary" for o in out):
                self.close()  # lost or refused for resources: start afresh next time
        return out

    def close_if_idle(self) -> None:
        """Release the association when unused for ``idle_s`` seconds."""
        if self._assoc is not None and time.monotonic() - self._last_use >= self.idle_s:
            self.close()

    def close(self) -> None:
        """Release (or, when it is broken, abort) the association, in this thread."""
        a, self._assoc = self._assoc, None
        if a is None:
            return
        try:
            if a.is_established:
                a.release()
        except Exception:  # pragma: no cover - a peer gone mid-release
            try:
                a.abort()
            except Exception:
                pass


def start_server(ae: Any, address: tuple[str, int], evt_handlers: list[Any]) -> Any:
    """``ae.start_server(address, block=False, evt_handlers=...)`` with one addition:
    every accepted connection gets the AE's network timeout as its socket timeout
    (and TCP_NODELAY, see :func:`no_delay`).

    pynetdicom reads a PDU with blocking ``recv`` calls; a peer that sends a few
    garbage bytes (or a PDU header announcing more data than it sends) and then stays
    silent would otherwise hold its connection and thread forever (the ARTIM and
    network timers are only checked between PDUs). With the socket timeout the read
    fails after ``network_timeout`` seconds and pynetdicom closes the connection in
    its own thread. Returns the running server (stop it with ``shutdown()``).
    """
    import threading

    from pynetdicom.transport import ThreadedAssociationServer

    class _Server(ThreadedAssociationServer):
        def get_request(self):  # type: ignore[override]
            sock, addr = super().get_request()
            sock.settimeout(self.ae.network_timeout)
            no_delay(sock)
            return sock, addr

    server = ae.make_server(address, evt_handlers=evt_handlers, server_class=_Server)
    # as AE.start_server does: the server's shutdown() removes itself from this list
    ae._servers.append(server)
    thread = threading.Thread(target=server.serve_forever, name="tbscore-scp", daemon=True)
    thread.start()
    return server
