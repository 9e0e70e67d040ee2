"""Shared fixtures: small DICOM files built with pydicom; test-only batch worker hooks."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "sample_dicom"


def make_dataset(
    pixels: np.ndarray,
    *,
    spacing: tuple[float, float] | None = (1.0, 1.0),
    spacing_tag: str = "PixelSpacing",
    photometric: str = "MONOCHROME2",
    modality: str = "BMD",
    **attrs,
) -> FileDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset("", {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = "TEST^PATIENT"
    ds.PatientID = "ID123"
    arr = np.asarray(pixels)
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.SamplesPerPixel = 1 if arr.ndim == 2 else arr.shape[2]
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored = arr.dtype.itemsize * 8
    ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 1 if np.issubdtype(arr.dtype, np.signedinteger) else 0
    if arr.ndim == 3:
        ds.PlanarConfiguration = 0
    if spacing is not None:
        setattr(ds, spacing_tag, [f"{spacing[0]:g}", f"{spacing[1]:g}"])
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    return ds


@pytest.fixture
def dicom_file(tmp_path):
    """Factory: write a DICOM file and return its path."""

    def _make(pixels, name="img.dcm", **kw):
        ds = make_dataset(pixels, **kw)
        path = tmp_path / name
        ds.save_as(path, enforce_file_format=True)
        return path

    return _make


#: Set by ``.ci/run``: a test that needs an external tool (dciodvfy, Orthanc, Chromium,
#: pdffonts, ...) fails instead of skipping when the tool is missing.
REQUIRE_TOOLS_ENV = "TBSCORE_REQUIRE_TOOLS"


def require_tool(*names: str) -> str:
    """Path of the first of ``names`` found on PATH; skip the test if none is found,
    or fail it when ``TBSCORE_REQUIRE_TOOLS=1`` (CI installs every tool)."""
    import os
    import shutil

    for name in names:
        path = shutil.which(name)
        if path:
            return path
    msg = f"external tool not found: {' or '.join(names)}"
    if os.environ.get(REQUIRE_TOOLS_ENV) == "1":
        pytest.fail(msg + f" ({REQUIRE_TOOLS_ENV}=1: CI must install it)")
    pytest.skip(msg)


# ----------------------------------------------------------------- batch worker hooks
#: A ``sitecustomize`` for the processes a test starts (``tbscore batch`` subprocesses
#: and the ``spawn`` worker processes of a pool): when one of the variables is set, it
#: wraps ``tbscore.batch.worker._score`` (inside the per-input time limit) to
#: ``TBSCORE_TEST_DELAY``: sleep that many seconds before each input;
#: ``TBSCORE_TEST_CRASH``: exit at once (``os._exit(70)``, as if killed) on an input whose
#: path contains this text; ``TBSCORE_TEST_HANG``: on a matching input block SIGALRM and
#: sleep ``TBSCORE_TEST_HANG_S`` seconds (600), like native code the soft time limit
#: cannot stop. ``TBSCORE_NET_TEST_STALL``: a DICOM node job
#: (``tbscore.net.workers.score_job``) whose SOP Instance UID contains this text sleeps
#: for an hour, a stalled worker for the job time limit. Production code has no test
#: hooks; these live only here.
WORKER_HOOKS = """\
import os

_NET_STALL = os.environ.get("TBSCORE_NET_TEST_STALL")
if _NET_STALL:
    import time

    import tbscore.net.workers as _net

    _net_real = _net.score_job

    def _net_hooked(job, cfg):
        if _NET_STALL in job["uid"]:
            time.sleep(3600)
        return _net_real(job, cfg)

    _net.score_job = _net_hooked

_DELAY = os.environ.get("TBSCORE_TEST_DELAY")
_CRASH = os.environ.get("TBSCORE_TEST_CRASH")
_HANG = os.environ.get("TBSCORE_TEST_HANG")
if _DELAY or _CRASH or _HANG:
    import signal
    import time

    import tbscore.batch.worker as _worker

    _real = _worker._score

    def _hooked(job, inp):
        if _DELAY:
            time.sleep(float(_DELAY))
        if _CRASH and _CRASH in inp.path:
            os._exit(70)
        if _HANG and _HANG in inp.path:
            signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
            time.sleep(float(os.environ.get("TBSCORE_TEST_HANG_S", "600")))
        return _real(job, inp)

    _worker._score = _hooked
"""


def worker_hook_env(site: Path, **variables: str) -> dict[str, str]:
    """``os.environ`` with ``site`` (from :func:`worker_hooks`) first on PYTHONPATH and
    the hook ``variables`` set: the environment of a ``tbscore batch`` subprocess."""
    import os

    old = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    path = os.pathsep.join([str(site), *(p for p in old if p != str(site))])
    return {**os.environ, "PYTHONPATH": path, **variables}


@pytest.fixture
def worker_hooks(tmp_path, monkeypatch) -> Path:
    """Test-only worker hooks (:data:`WORKER_HOOKS`) for every process started from now
    on: writes the ``sitecustomize`` and puts its folder first on PYTHONPATH. Set the
    hook variables with ``monkeypatch.setenv`` (or :func:`worker_hook_env`)."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(WORKER_HOOKS, encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", worker_hook_env(site)["PYTHONPATH"])
    return site
