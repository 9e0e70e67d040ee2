"""DICOM peer addresses written ``AET@HOST:PORT``."""

from __future__ import annotations

import re
from dataclasses import dataclass

from tbscore.errors import NetError

__all__ = ["Peer", "parse_peer", "check_ae_title"]

#: AE titles: 1-16 characters of the Default Character Repertoire, no backslash or
#: control characters, not only spaces (PS3.5 6.2, VR AE).
_AET_RE = re.compile(r"^[\x20-\x5b\x5d-\x7e]{1,16}$")
_PEER_RE = re.compile(r"^(?P<aet>[^@]+)@(?P<host>\[[0-9A-Fa-f:.]+\]|[^:@\[\]]+):(?P<port>\d{1,5})$")


def check_ae_title(aet: str, what: str = "AE title") -> str:
    """``aet`` stripped of surrounding spaces, or :class:`NetError` if it is not a valid
    AE title (1-16 printable ASCII characters without backslash)."""
    text = str(aet).strip()
    if not text or not _AET_RE.match(text):
        raise NetError(f"invalid {what} {aet!r}: 1-16 printable ASCII characters, no backslash")
    return text


@dataclass(frozen=True)
class Peer:
    """A DICOM application entity on the network.

    Attributes
    ----------
    aet : str
        Its AE title (the *called* AE title of our requests).
    host : str
        Host name or IP address.
    port : int
        TCP port (1-65535).
    """

    aet: str
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.aet}@{host}:{self.port}"


def parse_peer(text: str) -> Peer:
    """Parse ``AET@HOST:PORT`` (IPv6 hosts in brackets: ``PACS@[::1]:104``).

    Raises
    ------
    NetError
        The text is not of that form, the AE title is invalid or the port is out of
        range.
    """
    m = _PEER_RE.match(str(text).strip())
    if not m:
        raise NetError(f"peer address {text!r} is not of the form AET@HOST:PORT")
    port = int(m["port"])
    if not 1 <= port <= 65535:
        raise NetError(f"port {port} of {text!r} is out of range 1-65535")
    host = m["host"].strip("[]")
    return Peer(check_ae_title(m["aet"], f"AE title in {text!r}"), host, port)
