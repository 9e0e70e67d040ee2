"""Lazy start-up: ``import tbscore`` and ``tbscore --help`` load no heavy library.

Not a timing test (CPU-time figures are in ``benchmarks/bench_startup.py``): it checks
*which* modules are loaded, in a fresh interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys

HEAVY = ("numpy", "numba", "scipy", "matplotlib", "pydicom", "skimage", "jinja2", "yaml")


def _loaded_after(code: str) -> list[str]:
    probe = (
        f"{code}\nimport json, sys\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({HEAVY!r}))))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_import_tbscore_loads_no_heavy_library():
    assert _loaded_after("import tbscore") == []


def test_help_parser_loads_no_heavy_library():
    code = "from tbscore.cli import build_parser\nbuild_parser().format_help()"
    assert _loaded_after(code) == []


def test_facade_names_resolve_lazily():
    code = (
        "import sys, tbscore\n"
        "assert 'tbscore.api' not in sys.modules\n"
        "from tbscore import Settings, calc, TBSResult, load_dicom, VertebraROIs\n"
        "import tbscore.api, tbscore.io.load\n"
        "assert calc is tbscore.api.calc and load_dicom is tbscore.io.load.load_dicom\n"
        "assert callable(tbscore.batch) and tbscore.Settings().digest()\n"
    )
    assert "numpy" in _loaded_after(code)  # the names really imported their modules
