"""DICOM network node and clients (``pip install 'tbscore[net]'``, pynetdicom).

* :mod:`tbscore.net.node` -- ``tbscore serve``: Storage SCP that scores DXA images and
  sends the DICOM SR results to PACS destinations, with a persistent record
  (:mod:`tbscore.net.ledger`) and supervised workers (:mod:`tbscore.net.workers`).
* :mod:`tbscore.net.scu` -- echo and send (``tbscore echo``, ``tbscore send``).
* :mod:`tbscore.net.qr` -- Study Root query/retrieve (``tbscore pull``).

Layer: above :mod:`tbscore.batch` and :mod:`tbscore.export`, below :mod:`tbscore.cli`.
See docs/network.md.
"""

from tbscore.net.address import Peer, parse_peer

__all__ = ["Peer", "parse_peer"]
