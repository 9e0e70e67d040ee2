"""Package plumbing (issue 13): ``python -m tbscore`` and the ``py.typed`` marker."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from importlib import resources
from pathlib import Path

import tbscore

ROOT = Path(__file__).resolve().parents[1]


def test_python_m_tbscore_is_the_cli():
    proc = subprocess.run(
        [sys.executable, "-m", "tbscore", "--version"], capture_output=True, text=True
    )
    assert proc.returncode == 0 and proc.stdout.strip() == f"tbscore {tbscore.__version__}"
    proc = subprocess.run(
        [sys.executable, "-m", "tbscore", "calc", "/nonexistent.dcm"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_py_typed_is_shipped():
    assert resources.files("tbscore").joinpath("py.typed").is_file()
    cfg = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "py.typed" in cfg["tool"]["setuptools"]["package-data"]["tbscore"]
