"""T/Z-score reference table format and loader, with a FAKE table (tbscore ships none)."""

from __future__ import annotations

import json

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tbscore.clinical.reference import REFERENCE_FORMAT, ReferenceTable, ReferenceTableError
from tbscore.errors import InputError
from tbscore.io.reference import load_reference_table

FAKE = {
    "format": REFERENCE_FORMAT,
    "name": "fake_test_table",
    "version": "0",
    "quantity": "L1-L4 TBS",
    "unit": "1",
    "sex": "female",
    "citation": "FAKE table for tests only; not from any source",
    "young_adult": {"mean": 1.4, "sd": 0.1},
    "age_bands": [
        {"age_min": 60, "age_max": 70, "mean": 1.25, "sd": 0.1},
        {"age_min": 50, "age_max": 60, "mean": 1.3, "sd": 0.1},
    ],
}


def test_load_and_scores(tmp_path):
    path = tmp_path / "ref.json"
    path.write_text(json.dumps(FAKE))
    table = ReferenceTable.from_dict(load_reference_table(path))
    assert table.t_score(1.2) == pytest.approx(-2.0)
    assert table.z_score(1.2, 65) == pytest.approx(-0.5)
    assert table.z_score(1.2, 59.9) == pytest.approx(-1.0)
    with pytest.raises(ReferenceTableError, match="no age band"):
        table.z_score(1.2, 80)


@pytest.mark.parametrize(
    "patch, match",
    [
        ({"citation": ""}, "citation"),
        ({"format": "x"}, "tbscore-reference/1"),
        ({"young_adult": {"mean": 1.4, "sd": 0}}, "positive"),
        ({"age_bands": [{"age_min": 50, "age_max": 60, "mean": 1, "sd": 0.1},
                        {"age_min": 55, "age_max": 65, "mean": 1, "sd": 0.1}]}, "overlap"),
    ],
)  # fmt: skip
def test_malformed_tables_are_refused(patch, match):
    with pytest.raises(ReferenceTableError, match=match):
        ReferenceTable.from_dict({**FAKE, **patch})


def test_loader_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_reference_table(tmp_path / "none.json")
    bad = tmp_path / "bad.json"
    bad.write_text("[1]")
    with pytest.raises(InputError, match="not a JSON object"):
        load_reference_table(bad)


@given(value=st.floats(0.5, 2.0), mean=st.floats(0.8, 1.6), sd=st.floats(0.01, 0.5))
def test_t_score_inverts_property(value, mean, sd):
    table = ReferenceTable.from_dict({**FAKE, "young_adult": {"mean": mean, "sd": sd}})
    assert mean + sd * table.t_score(value) == pytest.approx(value)
