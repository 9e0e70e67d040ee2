"""The node's spool folder: received instances, result files and the record.

Layout::

    SPOOL/ledger.sqlite      the record (:class:`tbscore.net.ledger.Ledger`)
    SPOOL/incoming/UID.dcm   received instances, as received (DICOM Part 10)
    SPOOL/results/UID.sr.dcm result files, written once and resent as they are
    SPOOL/results/UID.result.json the full result of the SR (``tbscore calc``'s JSON),
                             kept for the reading station (never sent)

File names come from SOP Instance UIDs, which are untrusted text: they go through
:func:`tbscore.batch.naming.safe_path`, so no name leaves the spool.
"""

from __future__ import annotations

import errno
import shutil
from pathlib import Path

from tbscore.batch.naming import safe_path
from tbscore.batch.output import _fsync_dir
from tbscore.errors import NetError
from tbscore.io.atomic import atomic_file

__all__ = [
    "Spool",
    "is_spool",
    "result_json_beside",
    "LEDGER_NAME",
    "durable_write",
    "free_bytes",
    "RESULT_RESERVE_BYTES",
    "REPORT_RESERVE_BYTES",
]

MiB = 1024 * 1024

#: Bytes kept free for every accepted image not scored yet: its result SR (about
#: 20 KiB for four vertebrae), its result JSON (about 10 KiB) and the rows and
#: journal pages of the record that its scoring and sends will write. Counted against
#: the free-space floor on receipt, so an image is only acknowledged when there is room
#: for everything it promises.
RESULT_RESERVE_BYTES = 64 * 1024
#: Added to it when the node also writes the PDF report (about 190 KiB).
REPORT_RESERVE_BYTES = 512 * 1024


#: File name of the node record in the spool folder.
LEDGER_NAME = "ledger.sqlite"


def is_spool(folder: str | Path) -> bool:
    """Whether ``folder`` is a node spool (its record and its ``incoming/`` folder)."""
    root = Path(folder)
    return (root / LEDGER_NAME).is_file() and (root / "incoming").is_dir()


def result_json_beside(sr_path: str | Path) -> Path:
    """The result JSON kept beside a result SR (``UID.sr.dcm`` -> ``UID.result.json``)."""
    p = Path(sr_path)
    stem = p.name[: -len(".sr.dcm")] if p.name.endswith(".sr.dcm") else p.stem
    return p.with_name(stem + ".result.json")


def free_bytes(folder: str | Path) -> int:
    """Bytes available to this user on the file system of ``folder``."""
    return int(shutil.disk_usage(folder).free)


def durable_write(target: Path, data: bytes) -> Path:
    """Write ``data`` to ``target`` so that it survives a crash once this returns:
    temporary file, fsync, rename, fsync of the folder.

    Raises
    ------
    OSError
        Disk full or another write error; no partial file is left under ``target``.
    """
    with atomic_file(target) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)
    _fsync_dir(target.parent)
    return target


class Spool:
    """The spool folder ``root`` (created if missing) with a free-space floor.

    Parameters
    ----------
    root : path
        Spool folder.
    min_free_mb : float
        Free-space floor (MiB). An instance is refused (status 0xA700) when writing it
        would leave less than this, so there is always room for what was promised.
    """

    def __init__(
        self, root: str | Path, min_free_mb: float = 200.0, result_reserve: int = 0
    ) -> None:
        self.root = Path(root)
        self.min_free_bytes = int(float(min_free_mb) * MiB)
        #: bytes kept per unscored image (default :data:`RESULT_RESERVE_BYTES`)
        self.result_reserve = int(result_reserve) or RESULT_RESERVE_BYTES
        try:
            self.incoming.mkdir(parents=True, exist_ok=True)
            self.results.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise NetError(f"cannot create the spool ({exc.strerror or exc})", str(root)) from exc

    @property
    def incoming(self) -> Path:
        return self.root / "incoming"

    @property
    def results(self) -> Path:
        return self.root / "results"

    @property
    def ledger_path(self) -> Path:
        return self.root / LEDGER_NAME

    def incoming_path(self, sop_instance_uid: str) -> Path:
        return safe_path(self.incoming, sop_instance_uid, ".dcm")

    def result_path(self, sop_instance_uid: str) -> Path:
        return safe_path(self.results, sop_instance_uid, ".sr.dcm")

    def report_path(self, sop_instance_uid: str) -> Path:
        return safe_path(self.results, sop_instance_uid, ".pdf.dcm")

    def has_room(self, nbytes: int, unscored: int = 0) -> bool:
        """Whether ``nbytes`` more, plus the result of that image and of the
        ``unscored`` images already accepted (``result_reserve`` bytes each), still
        leave the free-space floor."""
        need = int(nbytes) + (int(unscored) + 1) * self.result_reserve
        try:
            return free_bytes(self.root) - need >= self.min_free_bytes
        except OSError:
            return False

    @staticmethod
    def is_disk_full(exc: OSError) -> bool:
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
