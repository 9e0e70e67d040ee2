"""Tests of tbscore.clinical.billing: CPT data, service mapping, summaries and table."""

from __future__ import annotations

import json
from decimal import Decimal
from importlib import resources

import pytest

from tbscore.clinical.billing import (
    BillingError,
    billing_summary,
    cpt_code,
    cpt_codes,
    format_table,
    modifier_rule,
    schedule_info,
    service_code,
)
from tbscore.errors import TBSError

# REFERENCE.md table: code -> (component, total RVU, PFS QP, PFS non-QP, OPPS payment)
REFERENCE = {
    "77089": ("global", "1.19", "39.95", "39.75", None),
    "77090": ("technical", "0.09", "3.02", "3.01", "88.91"),
    "77091": ("technical", "0.80", "26.85", "26.72", "88.91"),
    "77092": ("professional", "0.30", "10.07", "10.02", None),
}


def test_data_file_ships_in_package():
    f = resources.files("tbscore.clinical").joinpath("data", "medicare_2026.json")
    assert f.is_file()
    data = json.loads(f.read_text(encoding="utf-8"))
    assert set(data["codes"]) == set(REFERENCE)


@pytest.mark.parametrize("code", sorted(REFERENCE))
def test_rates_match_reference(code):
    component, rvu, qp, non_qp, opps = REFERENCE[code]
    c = cpt_code(code)
    assert c.code == code
    assert c.component == component
    assert c.total_rvu == Decimal(rvu)
    assert c.pfs_qp_rate == Decimal(qp)
    assert c.pfs_non_qp_rate == Decimal(non_qp)
    assert c.pfs_rate("qp") == Decimal(qp)
    assert c.pfs_rate("non_qp") == Decimal(non_qp)
    if opps is None:
        assert not c.opps_payable
        assert c.opps_payment_rate is None and c.opps_apc is None
        assert c.opps_description == "not payable under OPPS"
    else:
        assert c.opps_payable
        assert c.opps_payment_rate == Decimal(opps)
        assert c.opps_apc == "5521"
        assert c.opps_relative_weight == Decimal("0.9726")
        assert c.opps_status_indicator == "S"
    assert c.effective_date == "2026-01-01"
    assert "Medimaps" in c.source and "2026" in c.source
    assert c.descriptor.startswith("TBS")
    json.dumps(c.to_dict())


def test_cpt_code_accepts_int_and_lists_all():
    assert cpt_code(77091) is cpt_code("77091")
    assert [c.code for c in cpt_codes()] == ["77089", "77090", "77091", "77092"]


@pytest.mark.parametrize("bad", ["77080", "12345", "", "7709"])
def test_unknown_code_raises(bad):
    with pytest.raises(BillingError, match="known codes: 77089, 77090, 77091, 77092"):
        cpt_code(bad)
    assert issubclass(BillingError, ValueError) and issubclass(BillingError, TBSError)


@pytest.mark.parametrize(
    ("service", "code"),
    [
        ("calc", "77091"),
        ("interpret", "77092"),
        ("score", "77089"),
        ("export", "77090"),
        ("CALC", "77091"),
    ],
)
def test_service_code(service, code):
    assert service_code(service).code == code


def test_unknown_service_raises():
    with pytest.raises(BillingError, match="known services"):
        service_code("dxa")


def test_modifier_rule():
    rule = modifier_rule()
    assert "-26" in rule and "-TC" in rule and "not" in rule.lower()


def test_schedule_info():
    info = schedule_info()
    assert info["payer"] == "Medicare"
    assert info["effective_date"] == "2026-01-01"
    assert info["current_as_of"] == "2025-12-01"
    json.dumps(info)


def _by_code(rows):
    return {(r["code"], r["schedule"]): r for r in rows}


def test_hospital_outpatient_split_billing():
    rows = billing_summary(["calc", "interpret"], "hospital_outpatient")
    by = _by_code(rows)
    assert set(by) == {("77091", "OPPS"), ("77092", "PFS")}
    assert by[("77091", "OPPS")]["unit_rate"] == 88.91
    assert by[("77091", "OPPS")]["billed_by"] == "facility"
    assert by[("77092", "PFS")]["unit_rate"] == 10.07
    assert by[("77092", "PFS")]["billed_by"] == "professional"
    assert sum(r["total"] for r in rows) == pytest.approx(98.98)


def test_hospital_outpatient_score_is_split_not_77089():
    rows = billing_summary(["score"], "hospital_outpatient")
    assert {(r["code"], r["schedule"]) for r in rows} == {("77091", "OPPS"), ("77092", "PFS")}
    assert all(r["note"] and "not payable under OPPS" in r["note"] for r in rows)


def test_mixed_set_hospital_totals():
    rows = billing_summary(
        {"score": 2, "calc": 1, "interpret": 1, "export": 1}, "hospital_outpatient"
    )
    by = _by_code(rows)
    assert [r["code"] for r in rows] == ["77090", "77091", "77092"]
    assert by[("77090", "OPPS")]["count"] == 1
    assert by[("77090", "OPPS")]["total"] == 88.91
    assert by[("77091", "OPPS")]["count"] == 3
    assert by[("77091", "OPPS")]["total"] == 266.73
    assert by[("77092", "PFS")]["count"] == 3
    assert by[("77092", "PFS")]["total"] == 30.21
    grand = sum(Decimal(str(r["total"])) for r in rows)
    assert grand == Decimal("385.85")
    # non-QP changes only the PFS line
    rows_nq = billing_summary(
        {"score": 2, "calc": 1, "interpret": 1, "export": 1}, "hospital_outpatient", rate="non_qp"
    )
    assert sum(Decimal(str(r["total"])) for r in rows_nq) == Decimal("385.70")


def test_office_global_and_split():
    rows = billing_summary({"score": 2, "calc": 1}, "office")
    by = _by_code(rows)
    assert set(by) == {("77089", "PFS"), ("77091", "PFS")}
    assert by[("77089", "PFS")]["total"] == 79.90
    assert sum(Decimal(str(r["total"])) for r in rows) == Decimal("106.75")
    rows_nq = billing_summary({"score": 2, "calc": 1}, "office", rate="non_qp")
    assert sum(Decimal(str(r["total"])) for r in rows_nq) == Decimal("106.22")
    assert all(r["rate_basis"] == "PFS non-QP" for r in rows_nq)

    split = billing_summary(["score"], "office", split=True)
    assert {(r["code"], r["schedule"]) for r in split} == {("77091", "PFS"), ("77092", "PFS")}
    assert sum(Decimal(str(r["total"])) for r in split) == Decimal("36.92")
    assert billing_summary(["score"], "imaging_center")[0]["code"] == "77089"


def test_rows_carry_dated_source_and_are_json_safe():
    rows = billing_summary(["score", "export"], "office")
    for r in rows:
        assert r["effective_date"] == "2026-01-01"
        assert "Medimaps" in r["source"] and "2025-12-01" in r["source"]
        assert r["payer"] == "Medicare" and r["currency"] == "USD"
        assert {
            "code",
            "descriptor",
            "component",
            "count",
            "schedule",
            "unit_rate",
            "total",
        } <= set(r)
    assert json.loads(json.dumps(rows)) == rows


def test_empty_and_zero_counts():
    assert billing_summary([], "office") == []
    assert billing_summary({"calc": 0}, "office") == []


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"services": ["calc"], "setting": "inpatient"}, "known settings"),
        ({"services": ["calc"], "setting": "office", "rate": "mips"}, "known rates"),
        ({"services": ["bmd"], "setting": "office"}, "known services"),
        ({"services": {"calc": -1}, "setting": "office"}, "non-negative"),
        ({"services": {"calc": 1.5}, "setting": "office"}, "non-negative"),
        ({"services": {"calc": True}, "setting": "office"}, "non-negative"),
    ],
)
def test_summary_bad_input_raises(kwargs, match):
    with pytest.raises(BillingError, match=match):
        billing_summary(**kwargs)


def test_format_table():
    rows = billing_summary(
        {"score": 2, "calc": 1, "interpret": 1, "export": 1}, "hospital_outpatient"
    )
    text = format_table(rows)
    lines = text.splitlines()
    header = lines[0]
    assert header.split()[:3] == ["Code", "Component", "Schedule"]
    total_end = header.index("Total") + len("Total")
    data_lines = [ln for ln in lines if ln[:5] in {"77090", "77091", "77092", "TOTAL"}]
    assert len(data_lines) == 4
    for ln in data_lines:  # right-aligned money column
        assert ln[total_end - 1] != " "
        assert len(ln) == total_end or ln[total_end] == " "
    assert "$385.85" in text and "$266.73" in text
    assert "Source: Medimaps" in text and "2026-01-01" in text
    assert "-26" in text
    assert "(no billable TBS services)" in format_table([])
