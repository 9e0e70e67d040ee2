"""``dumps_indented`` (the result JSON writer) gives exactly ``json.dumps(indent=...)``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tbscore
from tbscore.core.result import dumps_indented

SAMPLES = Path(__file__).resolve().parents[1] / "sample_dicom"

_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
_tree = st.recursive(
    _leaf,
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.tuples(kids, kids)
        | st.lists(st.floats(allow_nan=False), max_size=6)
        | st.lists(st.integers(), max_size=6)
        | st.dictionaries(st.text(max_size=6), kids, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=300, deadline=None)
@given(_tree, st.sampled_from([0, 1, 2, 4, "\t"]))
def test_same_text_as_json_dumps(obj, indent):
    assert dumps_indented(obj, indent) == json.dumps(obj, indent=indent)


class _Odd:
    def __str__(self) -> str:
        return "odd"


@settings(max_examples=300, deadline=None)
@given(
    st.recursive(
        _leaf | st.builds(_Odd),
        lambda kids: st.lists(kids, max_size=5) | st.dictionaries(st.text(max_size=6), kids),
        max_leaves=30,
    ),
    st.sampled_from([1, 2]),
)
def test_same_text_or_error_as_json_dumps_with_the_case_file_options(obj, indent):
    """With ``allow_nan=False, default=str`` (the per-case JSON of a batch): the text of
    ``json.dumps`` with them, or its ValueError for a non-finite float."""
    kw = {"allow_nan": False, "default": str}
    try:
        want = json.dumps(obj, indent=indent, **kw)
    except ValueError:
        with pytest.raises(ValueError):
            dumps_indented(obj, indent, **kw)
        return
    assert dumps_indented(obj, indent, **kw) == want


def test_other_values_go_to_json_dumps():
    assert dumps_indented({1: [math.nan]}, 2) == json.dumps({1: [math.nan]}, indent=2)
    try:
        dumps_indented({"x": object()}, 2)
    except TypeError:
        pass
    else:  # pragma: no cover
        raise AssertionError("json.dumps refuses an object; so must dumps_indented")


def test_result_json_unchanged():
    p = SAMPLES / "phantom_a_square.dcm"
    res = tbscore.calc(p, p.with_name(p.stem + ".roi.json"))
    assert res.to_json() == json.dumps(res.to_dict(), indent=2) + "\n"
    assert res.to_json(indent=1) == json.dumps(res.to_dict(), indent=1) + "\n"


def test_from_json_bad_files_are_typed_errors_naming_the_file(tmp_path):
    """Unreadable, non-JSON, non-object and wrong-shape result files raise
    ResultFormatError (a TBSError) naming the file, never a bare JSON/OS error."""
    from tbscore.core.result import TBSResult
    from tbscore.errors import ResultFormatError

    cases = {
        "cut.json": '{"format": "tbscore-result/1", "vert',
        "list.json": "[1, 2]",
        "shape.json": '{"format": "tbscore-result/1"}',
        "latin1.json": None,
    }
    for name, text in cases.items():
        path = tmp_path / name
        if text is None:
            path.write_bytes(b"\xff\xfe{\x00")
        else:
            path.write_text(text, encoding="utf-8")
        with pytest.raises(ResultFormatError) as info:
            TBSResult.from_json(path)
        assert info.value.source == name, name
    with pytest.raises(ResultFormatError) as info:
        TBSResult.from_json(tmp_path / "missing.json")
    assert info.value.source == "missing.json"
