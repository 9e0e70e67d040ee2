"""Detection parameters are settings (issue 13): validated, in the digest, on every path.

``roi_inset_mm``, ``min_confidence``, ``min_vertebra_confidence`` and ``allow_inverted``
reach :func:`tbscore.core.detect.detect` from :class:`Settings` only (through
``tbscore.api.resolve_rois``), so ``calc``, ``score``, ``batch`` and ``calibrate``
detect with what the result's settings (and digest) say.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import tbscore
from conftest import make_dataset
from tbscore.cli import main
from tbscore.core import detect as detect_mod
from tbscore.core.settings import DETECTION_DEFAULTS, Settings, parse_setting_assignments
from tbscore.errors import DetectionError, SettingsError
from tbscore.sim.phantom import synthetic_spine


@pytest.fixture(scope="module")
def spine() -> np.ndarray:
    image, _ = synthetic_spine(0.6, shape=(260, 200), rng=3)
    return np.clip(np.round(image), 0, 65535).astype(np.uint16)


@pytest.fixture(scope="module")
def spine_file(spine, tmp_path_factory):
    path = tmp_path_factory.mktemp("det") / "spine.dcm"
    make_dataset(spine).save_as(path, enforce_file_format=True)
    return path


def test_defaults_are_the_detectors_defaults():
    import inspect

    params = inspect.signature(detect_mod.detect).parameters
    for key, default in DETECTION_DEFAULTS.items():
        assert params[key].default == default == getattr(Settings(), key)


@pytest.mark.parametrize(
    "change",
    [
        {"roi_inset_mm": 2.0},
        {"min_confidence": 0.5},
        {"min_vertebra_confidence": 0.2},
        {"allow_inverted": False},
    ],
)
def test_each_detection_setting_changes_the_digest(change):
    base = Settings()
    other = Settings.from_dict({**base.to_dict(), **change})
    assert other.digest() != base.digest()
    # and back: the default value gives the default digest (older results keep theirs)
    (key,) = change
    assert other.replace(**{key: DETECTION_DEFAULTS[key]}).digest() == base.digest()
    assert key in other.to_dict()


@pytest.mark.parametrize(
    "item",
    [
        "roi_inset_mm=-1",
        "roi_inset_mm=50",
        "roi_inset_mm=nan",
        'roi_inset_mm="3"',
        "min_confidence=1.5",
        "min_confidence=-0.1",
        "min_vertebra_confidence=2",
        "allow_inverted=1",
        'allow_inverted="yes"',
    ],
)
def test_absurd_detection_values_are_settings_errors(item, spine_file, capsys):
    with pytest.raises(SettingsError, match=item.split("=")[0]):
        Settings.from_dict(parse_setting_assignments([item]))
    assert main(["calc", str(spine_file), "-s", item]) == 2
    assert item.split("=")[0] in capsys.readouterr().err


def test_inset_changes_what_calc_detects(spine, tmp_path):
    ref = tbscore.calc(spine, spacing=(1.0, 1.0))
    assert ref.roi_source == "detected"
    wide = tbscore.calc(spine, spacing=(1.0, 1.0), settings={"roi_inset_mm": 1.0})
    tight = tbscore.calc(spine, spacing=(1.0, 1.0), settings={"roi_inset_mm": 5.0})
    for lab in ("L1", "L2", "L3", "L4"):
        n = {r.settings.roi_inset_mm: r.vertebra(lab).n_pixels for r in (ref, wide, tight)}
        assert n[1.0] > n[3.0] > n[5.0], n
    assert wide.settings.digest() != ref.settings.digest()
    # recorded in the result's provenance
    assert json.loads(wide.to_json())["settings"]["roi_inset_mm"] == 1.0


def test_confidence_settings_change_what_detection_accepts(spine):
    # without the pelvis the labels are inferred: overall confidence 0.6 x the bodies'
    no_crests, _ = synthetic_spine(0.6, shape=(260, 200), rng=3, pelvis=False)
    found = tbscore.calc(no_crests, spacing=(1.0, 1.0))
    assert 0.4 <= found.roi_confidence < 0.7
    with pytest.raises(DetectionError, match="confidence .* < 0.70"):
        tbscore.calc(no_crests, spacing=(1.0, 1.0), settings={"min_confidence": 0.7})
    # L1 cut by the border: below min_vertebra_confidence it is excluded, at 0 kept
    cut_image, truth = synthetic_spine(0.5, shape=(300, 200), rng=18)
    cut = cut_image[truth["vertebrae"]["L1"]["body_box"][0] + 10 :]
    ref = tbscore.calc(cut, spacing=(1.0, 1.0))
    assert ref.l1_l4_labels == ("L2", "L3", "L4")
    assert ref.vertebra("L1").status == "excluded"
    kept = tbscore.calc(cut, spacing=(1.0, 1.0), settings={"min_vertebra_confidence": 0.0})
    assert kept.vertebra("L1").status != "excluded"
    assert kept.l1_l4_labels == ("L1", "L2", "L3", "L4")
    # bone dark: found in the inverted image unless allow_inverted is false
    inverted = (65535 - spine).astype(np.uint16)
    assert tbscore.calc(inverted, spacing=(1.0, 1.0)).l1_l4 is not None
    with pytest.raises(DetectionError):
        tbscore.calc(inverted, spacing=(1.0, 1.0), settings={"allow_inverted": False})


def test_cli_settings_file_and_set_reach_detection(spine_file, tmp_path, capsys):
    assert main(["calc", str(spine_file), "--json"]) == 0
    ref = json.loads(capsys.readouterr().out)
    cfg = tmp_path / "s.toml"
    cfg.write_text("[tbs]\nroi_inset_mm = 1.5\n")
    assert main(["calc", str(spine_file), "--json", "--settings", str(cfg)]) == 0
    from_file = json.loads(capsys.readouterr().out)
    assert main(["calc", str(spine_file), "--json", "-s", "roi_inset_mm=1.5"]) == 0
    from_set = json.loads(capsys.readouterr().out)
    assert from_file["settings"]["roi_inset_mm"] == from_set["settings"]["roi_inset_mm"] == 1.5
    assert from_file["settings_digest"] == from_set["settings_digest"] != ref["settings_digest"]
    px = lambda doc: [v["n_pixels"] for v in doc["vertebrae"]]  # noqa: E731
    assert px(from_file) == px(from_set)
    assert all(a > b for a, b in zip(px(from_set), px(ref), strict=True))
    no_crests, _ = synthetic_spine(0.6, shape=(260, 200), rng=3, pelvis=False)
    path = tmp_path / "no_crests.dcm"
    make_dataset(np.clip(np.round(no_crests), 0, 65535).astype(np.uint16)).save_as(
        path, enforce_file_format=True
    )
    assert main(["calc", str(path), "--json"]) == 0
    capsys.readouterr()
    assert main(["calc", str(path), "-s", "min_confidence=0.7"]) == 2
    assert "detection confidence" in capsys.readouterr().err


def test_batch_detects_with_the_job_settings(spine_file, tmp_path):
    from tbscore.batch import iter_batch

    rows = {}
    for inset in (3.0, 1.0):
        settings = Settings(roi_inset_mm=inset)
        (row,) = list(iter_batch([spine_file], settings=settings, progress=False))
        assert row["status"] == "ok", row["error"]
        assert row["settings_digest"] == settings.digest()
        rows[inset] = row
    assert rows[1.0]["l1_pixels"] > rows[3.0]["l1_pixels"]
    assert rows[1.0]["result_key"] != rows[3.0]["result_key"]
