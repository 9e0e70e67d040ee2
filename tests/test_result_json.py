"""``dumps_indented`` (the result JSON writer) gives exactly ``json.dumps(indent=...)``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import tbscore
from tbscore.core.result import dumps_indented, dumps_indented_reference

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


# lists that are equal (==) but written differently, or equal and written alike: the
# per-call memo of dumps_indented must never give one the other's text
_LOOKALIKES = [
    [0.0, 1.5],
    [-0.0, 1.5],
    [0, 1.5],
    [1, 2],
    [1.0, 2.0],
    [True, 2],
    [1, 2.0],
    [math.nan, 1.0],
    [math.inf, -math.inf],
    [1e16, 1e-7],
    [10000000000000000, 1e-7],
    [[0, 1], [1, 0]],
    [[0.0, 1], [1, 0]],
    [[-0.0, 1], [1, 0]],
    [[True, 1], [1, 0]],
    [(0, 1), (1, False)],
    ["é\n", "[],\n{"],
]


@settings(max_examples=300, deadline=None)
@given(
    st.lists(st.sampled_from(range(len(_LOOKALIKES))), min_size=1, max_size=8),
    st.lists(st.text(max_size=4), min_size=8, max_size=8, unique=True),
    st.sampled_from([0, 1, 2, "\t"]),
    st.booleans(),
)
def test_repeated_and_lookalike_lists_written_as_json_dumps(picks, keys, indent, nest):
    """Equal-looking number lists repeated at one level and at different levels (the
    lag distances of every vertebra, the lag vectors): the text of ``json.dumps`` each time."""
    lists = [_LOOKALIKES[i] for i in picks]
    obj: object = {k: v for k, v in zip(keys, lists, strict=False)}
    if nest:
        obj = [obj, {"v": [dict(obj), lists]}, lists]
    assert dumps_indented(obj, indent) == dumps_indented_reference(obj, indent)


_np_leaf = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True).map(np.float64),
    st.integers(-(2**40), 2**40).map(np.int64),
    st.booleans().map(np.bool_),
    st.floats(width=32).map(np.float32),
)
_safe_tree = st.recursive(
    _leaf | st.sampled_from([0.0, -0.0, 1e16, -1e16, 1e-7, 5e-324]) | _np_leaf,
    lambda kids: (
        st.lists(kids, max_size=5)
        | st.tuples(kids, kids)
        | st.lists(st.floats(), max_size=6)
        | st.lists(st.lists(st.integers(-3, 3), min_size=1, max_size=2), max_size=4)
        | st.dictionaries(st.text(max_size=6), kids, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(_safe_tree, st.sampled_from([0, 1, 2, "\t"]))
def test_dumps_json_safe_is_json_dumps_of_json_safe(obj, indent):
    """The result writer (no json_safe copy) gives the text of json.dumps(json_safe(obj))."""
    from tbscore.core.result import dumps_json_safe, json_safe

    assert dumps_json_safe(obj, indent) == dumps_indented_reference(json_safe(obj), indent)


@pytest.mark.parametrize("stem", sorted(p.stem for p in SAMPLES.glob("*.dcm")))
def test_result_json_of_every_sample_is_json_dumps_of_to_dict(stem):
    p = SAMPLES / f"{stem}.dcm"
    res = tbscore.calc(p, p.with_name(p.stem + ".roi.json"))
    for indent in (2, 1):
        for phi in (True, False):
            want = json.dumps(res.to_dict(include_phi=phi), indent=indent) + "\n"
            assert res.to_json(indent=indent, include_phi=phi) == want


def test_result_json_with_nan_and_numpy_values_is_json_dumps_of_to_dict():
    """Values json_safe changes (nan, inf, numpy scalars, tuples) in a result."""
    from dataclasses import replace

    p = SAMPLES / "phantom_a_square.dcm"
    res = tbscore.calc(p, p.with_name(p.stem + ".roi.json"))
    v0 = res.vertebrae[0]
    odd = replace(
        v0,
        value=math.nan,
        r2=np.float64(0.5),
        n_pixels=np.int64(7),
        variogram=(math.inf, *v0.variogram[1:]),
        ci95=(np.float64(-0.0), np.float32(1.5)),
    )
    res = replace(res, vertebrae=(odd, *res.vertebrae[1:]), l1_l4=math.nan)
    assert res.to_json() == json.dumps(res.to_dict(), indent=2) + "\n"
