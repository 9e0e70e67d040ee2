"""Golden test: the outputs on ``sample_dicom/`` are those of the pre-move tree.

``tests/golden/files/`` was made by ``tests/golden/make_golden.py --update`` run on
commit ``b8b1742`` (before the layered package); this test produces the same outputs
with the current tree (in-process API calls) and compares the normalised texts. What
is normalised (times, elapsed seconds, generated UIDs, the version, temporary paths,
digests of files holding generated UIDs) is listed in ``make_golden.py``; everything
else must be identical. After an intended output change, regenerate with
``python tests/golden/make_golden.py --update`` and review the diff.
"""

from __future__ import annotations

import difflib
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent / "golden"))
import make_golden  # noqa: E402

EXPECTED = sorted(p.name for p in make_golden.FILES.iterdir())


@pytest.fixture(scope="module")
def produced(tmp_path_factory) -> dict[str, str]:
    return make_golden.produce(tmp_path_factory.mktemp("golden"))


def test_golden_set_is_complete(produced):
    assert sorted(produced) == EXPECTED
    assert {"batch.csv", "report.html", "report.json", "sr.json", "manifest.json"} <= set(EXPECTED)


@pytest.mark.parametrize("name", EXPECTED)
def test_output_unchanged(produced, name):
    want = (make_golden.FILES / name).read_text(encoding="utf-8")
    got = produced[name]
    if got != want:
        diff = difflib.unified_diff(
            want.splitlines(), got.splitlines(), "golden", "now", lineterm="", n=1
        )
        pytest.fail(f"{name} differs from the golden file:\n" + "\n".join(list(diff)[:40]))


def test_normalisation_keeps_what_matters():
    """Only run-dependent parts are replaced: values, dates and input digests stay."""
    text = (
        '{"l1_l4": 1.2345, "elapsed_s": 0.31, "created": "2026-12-01T22:55:01.5+00:00", '
        '"study_date": "20240101", "uid": "2.25.1234567", "sop": "1.2.3.4.5", '
        f'"file_sha256": "{"a" * 64}", "path": "/tmp/x/out.csv", "v": "0.1.0"}}'
    )
    out = make_golden.normalise_text(text, tmp="/tmp/x", version="0.1.0")
    assert '"l1_l4": 1.2345' in out and "20240101" in out and "1.2.3.4.5" in out
    assert "a" * 64 in out  # input digests kept outside the manifest
    assert '"elapsed_s": <ELAPSED>' in out and "<TIME>" in out and "<UID>" in out
    assert "<TMP>/out.csv" in out and '"<VERSION>"' in out
    manifest = make_golden.normalise_text(text, tmp="/tmp/x", version="0.1.0", new_files=True)
    assert "a" * 64 not in manifest
    assert make_golden.normalise_text('"l1_l4": 1.2346', tmp="/t", version="0") != (
        make_golden.normalise_text('"l1_l4": 1.2345', tmp="/t", version="0")
    )
    # last-bit differences between machines are not changes; a change of 1e-6 is
    assert make_golden.normalise_text('"v": 1.147674727108758', tmp="/t", version="0") == (
        make_golden.normalise_text('"v": 1.147674727108759', tmp="/t", version="0")
    )
    assert make_golden.normalise_text('"v": 1.147674727108758', tmp="/t", version="0") != (
        make_golden.normalise_text('"v": 1.147675727108758', tmp="/t", version="0")
    )
