"""Tests of tbscore.clinical.risk: threshold sets, TBS-adjusted FRAX, interpretation."""

from __future__ import annotations

import dataclasses
import json
import math
from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tbscore.clinical.risk import (
    CITATIONS,
    DEFAULT_THRESHOLD_SET,
    FRAX_HIP_COEFFICIENTS,
    FRAX_MOF_COEFFICIENTS,
    GRADIENT_OF_RISK,
    HARVEY_2015,
    SHEVROJA_2023,
    THRESHOLD_SETS,
    RiskInputError,
    adjust_frax,
    frax_tbs_slope,
    get_threshold_set,
    interpret,
    round_tbs,
)
from tbscore.errors import TBSError

# ------------------------------------------------------------------ worked FRAX values

WORKED = [
    # (MOF %, hip %, TBS, age) -> (adjusted MOF %, adjusted hip %), REFERENCE.md
    ((20.0, 3.0, 1.20, 65), (21.75, 3.58)),
    ((20.0, 3.0, 1.30, 65), (19.06, 2.83)),
    ((10.0, 1.0, 1.35, 55), (9.40, 0.76)),
]


@pytest.mark.parametrize(("inputs", "expected"), WORKED)
def test_worked_frax_values(inputs, expected):
    mof, hip, tbs, age = inputs
    a = adjust_frax(age=age, tbs=tbs, frax_mof=mof, frax_hip=hip)
    assert round(a.adjusted_mof, 2) == expected[0]
    assert round(a.adjusted_hip, 2) == expected[1]
    assert abs(a.adjusted_mof - expected[0]) < 0.01
    assert abs(a.adjusted_hip - expected[1]) < 0.01
    assert a.warnings == ()
    assert a.citation == CITATIONS["mccloskey_2015"]
    assert "Calcif Tissue Int. 2015;96" in a.citation


def test_frax_equation_by_hand():
    # independent transcription of the published equations
    age, tbs, p_mof, p_hip = 72.0, 1.25, 15.0, 4.0
    lm = math.log(p_mof / (100 - p_mof))
    lh = math.log(p_hip / (100 - p_hip))
    wm = 5.340 - 4.213 * tbs - 0.0521 * age + 0.0393 * tbs * age + 0.897 * lm
    wh = 15.420 - 12.627 * tbs - 0.194 * age + 0.157 * tbs * age + 0.920 * lh
    a = adjust_frax(age=age, tbs=tbs, frax_mof=p_mof, frax_hip=p_hip)
    assert a.adjusted_mof == pytest.approx(100 / (1 + math.exp(-wm)), rel=1e-12)
    assert a.adjusted_hip == pytest.approx(100 / (1 + math.exp(-wh)), rel=1e-12)


def test_frax_only_one_probability():
    a = adjust_frax(age=60, tbs=1.3, frax_mof=12)
    assert a.adjusted_hip is None and a.frax_hip is None
    assert a.adjusted_mof is not None
    b = adjust_frax(age=60, tbs=1.3, frax_hip=2)
    assert b.adjusted_mof is None and b.adjusted_hip is not None
    with pytest.raises(RiskInputError, match="at least one"):
        adjust_frax(age=60, tbs=1.3)


@pytest.mark.parametrize("age", [39.9, 90.01, 20, 100, -5, float("nan"), float("inf")])
def test_frax_age_outside_domain_raises(age):
    with pytest.raises(RiskInputError, match="age"):
        adjust_frax(age=age, tbs=1.3, frax_mof=10)


@pytest.mark.parametrize("age", [40, 40.0, 90, 90.0, 65.5])
def test_frax_age_edges_accepted(age):
    assert adjust_frax(age=age, tbs=1.3, frax_mof=10).adjusted_mof is not None


@pytest.mark.parametrize("p", [0, 100, -1, 100.5, float("nan"), float("inf"), "10", True])
def test_frax_probability_outside_open_interval_raises(p):
    with pytest.raises(RiskInputError):
        adjust_frax(age=60, tbs=1.3, frax_mof=p)
    with pytest.raises(RiskInputError):
        adjust_frax(age=60, tbs=1.3, frax_hip=p)


@pytest.mark.parametrize("tbs", [0, -1.2, float("nan"), float("inf"), None, "1.3", False])
def test_frax_bad_tbs_raises(tbs):
    with pytest.raises(RiskInputError):
        adjust_frax(age=60, tbs=tbs, frax_mof=10)


@pytest.mark.parametrize("bmi", [0, -20, float("nan")])
def test_frax_bad_bmi_raises(bmi):
    with pytest.raises(RiskInputError):
        adjust_frax(age=60, tbs=1.3, frax_mof=10, bmi=bmi)


@pytest.mark.parametrize(
    ("bmi", "warned"),
    [(14.9, True), (15, False), (25, False), (37, False), (37.1, True), (45, True)],
)
def test_frax_bmi_range_warning(bmi, warned):
    a = adjust_frax(age=60, tbs=1.3, frax_mof=10, bmi=bmi)
    assert any("BMI" in w for w in a.warnings) is warned
    assert a.adjusted_mof is not None


@pytest.mark.parametrize(
    ("tbs", "warned"), [(0.69, True), (0.7, False), (1.7, False), (1.71, True), (2.5, True)]
)
def test_frax_tbs_clinical_range_warning(tbs, warned):
    a = adjust_frax(age=60, tbs=tbs, frax_mof=10)
    assert any("clinical range" in w for w in a.warnings) is warned


def test_risk_input_error_is_tbs_and_value_error():
    assert issubclass(RiskInputError, TBSError)
    assert issubclass(RiskInputError, ValueError)
    with pytest.raises(ValueError):
        adjust_frax(age=30, tbs=1.3, frax_mof=10)


# ------------------------------------------------------------- monotonicity properties


def test_frax_tbs_slope_signs():
    # MOF: dw/dTBS = -4.213 + 0.0393*age < 0 on all of 40-90
    for age in range(40, 91):
        assert frax_tbs_slope(age, "mof") < 0
    # hip: dw/dTBS = -12.627 + 0.157*age changes sign at 80.43 years
    crossover = 12.627 / 0.157
    assert crossover == pytest.approx(80.4268, abs=1e-4)
    assert frax_tbs_slope(80.4, "hip") < 0 < frax_tbs_slope(80.5, "hip")
    assert frax_tbs_slope(90, "hip") > 0
    with pytest.raises(RiskInputError):
        frax_tbs_slope(60, "wrist")


ages = st.floats(min_value=40, max_value=90, allow_nan=False)
probs = st.floats(min_value=0.01, max_value=99.0, allow_nan=False)
tbs_values = st.floats(min_value=0.5, max_value=2.0, allow_nan=False)


@settings(max_examples=300, deadline=None)
@given(age=ages, tbs=tbs_values, mof=probs, hip=probs)
def test_adjusted_probabilities_stay_in_open_interval(age, tbs, mof, hip):
    a = adjust_frax(age=age, tbs=tbs, frax_mof=mof, frax_hip=hip)
    assert 0 < a.adjusted_mof < 100
    assert 0 < a.adjusted_hip < 100


@settings(max_examples=300, deadline=None)
@given(age=ages, t1=tbs_values, t2=tbs_values, p=probs)
def test_adjusted_mof_non_increasing_in_tbs_at_all_ages(age, t1, t2, p):
    lo, hi = sorted((t1, t2))
    a_lo = adjust_frax(age=age, tbs=lo, frax_mof=p).adjusted_mof
    a_hi = adjust_frax(age=age, tbs=hi, frax_mof=p).adjusted_mof
    assert a_hi <= a_lo + 1e-9


@settings(max_examples=300, deadline=None)
@given(age=st.floats(min_value=40, max_value=80.4), t1=tbs_values, t2=tbs_values, p=probs)
def test_adjusted_hip_non_increasing_in_tbs_below_80_4_years(age, t1, t2, p):
    lo, hi = sorted((t1, t2))
    a_lo = adjust_frax(age=age, tbs=lo, frax_hip=p).adjusted_hip
    a_hi = adjust_frax(age=age, tbs=hi, frax_hip=p).adjusted_hip
    assert a_hi <= a_lo + 1e-9


@settings(max_examples=300, deadline=None)
@given(age=st.floats(min_value=80.5, max_value=90), t1=tbs_values, t2=tbs_values, p=probs)
def test_adjusted_hip_non_decreasing_in_tbs_above_80_5_years(age, t1, t2, p):
    """Property of the published equation: its TBS x age term reverses the hip slope
    above 12.627/0.157 = 80.43 years. Documented in frax_tbs_slope, not corrected."""
    lo, hi = sorted((t1, t2))
    a_lo = adjust_frax(age=age, tbs=lo, frax_hip=p).adjusted_hip
    a_hi = adjust_frax(age=age, tbs=hi, frax_hip=p).adjusted_hip
    assert a_hi >= a_lo - 1e-9


def test_hip_reversal_example():
    young = [adjust_frax(age=60, tbs=t, frax_hip=5).adjusted_hip for t in (1.1, 1.4)]
    old = [adjust_frax(age=90, tbs=t, frax_hip=5).adjusted_hip for t in (1.1, 1.4)]
    assert young[1] < young[0]
    assert old[1] > old[0]


def test_coefficients_are_published_values():
    assert (
        FRAX_MOF_COEFFICIENTS.intercept,
        FRAX_MOF_COEFFICIENTS.tbs_coef,
        FRAX_MOF_COEFFICIENTS.age_coef,
        FRAX_MOF_COEFFICIENTS.tbs_age_coef,
        FRAX_MOF_COEFFICIENTS.logit_coef,
    ) == (5.340, -4.213, -0.0521, 0.0393, 0.897)
    assert (
        FRAX_HIP_COEFFICIENTS.intercept,
        FRAX_HIP_COEFFICIENTS.tbs_coef,
        FRAX_HIP_COEFFICIENTS.age_coef,
        FRAX_HIP_COEFFICIENTS.tbs_age_coef,
        FRAX_HIP_COEFFICIENTS.logit_coef,
    ) == (15.420, -12.627, -0.194, 0.157, 0.920)


# ------------------------------------------------------------------ threshold sets


@pytest.mark.parametrize(
    ("tbs", "code"),
    [
        (1.350, "normal"),  # published edge, inclusive in normal
        (Decimal("1.350"), "normal"),
        (1.3495, "normal"),  # reported as 1.350
        (1.3494999, "partially_degraded"),  # reported as 1.349
        (1.349, "partially_degraded"),
        (1.351, "normal"),
        (1.5, "normal"),
        (1.201, "partially_degraded"),
        (1.2005, "partially_degraded"),  # half-up on the decimal value: 1.201
        (1.2004999, "degraded"),  # reported as 1.200
        (1.2001, "degraded"),  # reported as 1.200, edge inclusive in degraded
        (1.200, "degraded"),  # published edge, inclusive in degraded
        (Decimal("1.2"), "degraded"),
        (1.199, "degraded"),
        (0.9, "degraded"),
    ],
)
def test_harvey_2015_boundaries(tbs, code):
    cat = HARVEY_2015.categorize(tbs)
    assert cat.code == code
    assert cat.threshold_set == "harvey_2015"
    assert cat.citation == HARVEY_2015.citation


@pytest.mark.parametrize(
    ("tbs", "code"),
    [
        (1.311, "normal"),
        (1.3105, "normal"),  # reported as 1.311
        (1.3104999, "intermediate"),  # reported as 1.310
        (1.310, "intermediate"),  # published edge, inclusive in intermediate
        (1.27, "intermediate"),
        (1.230, "intermediate"),  # published edge, inclusive in intermediate
        (1.2295, "intermediate"),  # reported as 1.230
        (1.2294999, "degraded"),  # reported as 1.229
        (1.229, "degraded"),
        (1.0, "degraded"),
        (1.45, "normal"),
    ],
)
def test_shevroja_2023_boundaries(tbs, code):
    cat = SHEVROJA_2023.categorize(tbs)
    assert cat.code == code
    assert cat.threshold_set == "shevroja_2023"


def test_round_tbs_is_decimal_half_up():
    assert round_tbs(1.2005) == Decimal("1.201")  # binary double is 1.20049999...
    assert round_tbs(1.2015) == Decimal("1.202")
    assert round_tbs(1.2001) == Decimal("1.200")
    assert round_tbs(Decimal("1.3495")) == Decimal("1.350")
    assert HARVEY_2015.categorize(1.2001).tbs_compared == "1.200"


@pytest.mark.parametrize("tbs", [0, -1, float("nan"), float("inf"), "1.3", None])
def test_categorize_bad_input_raises(tbs):
    with pytest.raises(RiskInputError):
        SHEVROJA_2023.categorize(tbs)


def test_threshold_set_metadata_and_rules():
    assert HARVEY_2015.year == 2015 and HARVEY_2015.version == "2015"
    assert SHEVROJA_2023.year == 2023
    assert "postmenopausal" in HARVEY_2015.population
    assert "Bone. 2015" in HARVEY_2015.citation
    assert "Osteoporos Int. 2023;34" in SHEVROJA_2023.citation
    assert HARVEY_2015.to_dict()["bands"] == {
        "normal": "TBS >= 1.350",
        "partially_degraded": "1.200 < TBS < 1.350",
        "degraded": "TBS <= 1.200",
    }
    assert SHEVROJA_2023.to_dict()["bands"] == {
        "normal": "TBS > 1.310",
        "intermediate": "1.230 <= TBS <= 1.310",
        "degraded": "TBS < 1.230",
    }
    assert HARVEY_2015.categorize(1.2).rule == "TBS <= 1.200"
    with pytest.raises(dataclasses.FrozenInstanceError):
        HARVEY_2015.upper = Decimal("1.4")  # type: ignore[misc]


def test_registry_lookup():
    assert set(THRESHOLD_SETS) == {"harvey_2015", "shevroja_2023", "shevroja_2023_vendor_edge"}
    assert get_threshold_set("harvey_2015") is HARVEY_2015
    assert get_threshold_set("SHEVROJA-2023") is SHEVROJA_2023
    assert get_threshold_set(HARVEY_2015) is HARVEY_2015
    with pytest.raises(ValueError, match="harvey_2015, shevroja_2023"):
        get_threshold_set("who_1994")


# ------------------------------------------------------------------ interpretation


def test_interpret_defaults():
    i = interpret(1.25)
    assert DEFAULT_THRESHOLD_SET == "shevroja_2023"
    assert i.threshold_set is SHEVROJA_2023
    assert i.category.code == "intermediate"
    assert i.tbs_reported == "1.250"
    assert i.frax is None
    assert i.warnings == ()
    assert i.gradient_of_risk is GRADIENT_OF_RISK
    assert "1.44" in i.gradient_of_risk.statement
    assert "1.35-1.53" in i.gradient_of_risk.statement
    assert SHEVROJA_2023.citation in i.citations
    assert CITATIONS["mccloskey_2016"] in i.citations


def test_interpret_with_frax_and_harvey():
    i = interpret(
        1.20, threshold_set="harvey_2015", age=65, sex="F", frax_mof=20, frax_hip=3, bmi=25
    )
    assert i.category.code == "degraded"
    assert i.sex == "female"
    assert round(i.frax.adjusted_mof, 2) == 21.75
    assert round(i.frax.adjusted_hip, 2) == 3.58
    assert i.warnings == ()
    assert CITATIONS["mccloskey_2015"] in i.citations


def test_interpret_warnings():
    i = interpret(1.40, sex="male", bmi=40, age=70, frax_mof=10)
    text = " ".join(i.warnings)
    assert "men" in text and "postmenopausal women" in text
    assert "BMI 40" in text
    assert len(i.warnings) == len(set(i.warnings)) == 2  # BMI warning not duplicated
    assert CITATIONS["looker_2016"] in i.citations
    j = interpret(0.6)
    assert any("clinical range" in w for w in j.warnings)
    assert j.category.code == "degraded"


def test_interpret_errors():
    with pytest.raises(RiskInputError, match="age"):
        interpret(1.3, frax_mof=10)  # FRAX needs an age
    with pytest.raises(RiskInputError, match="age"):
        interpret(1.3, age=35, frax_mof=10)  # outside 40-90
    with pytest.raises(RiskInputError, match="sex"):
        interpret(1.3, sex="x")
    with pytest.raises(RiskInputError, match="known threshold sets"):
        interpret(1.3, threshold_set="nope")
    with pytest.raises(RiskInputError):
        interpret(float("nan"))
    # an age outside 40-90 without FRAX: a category, with an explicit warning
    for age in (35, 95):
        i = interpret(1.3, age=age)
        assert i.category.code == "intermediate"
        assert any(f"age {age} years is outside 40-90" in w for w in i.warnings)
    assert not any("outside 40-90" in w for w in interpret(1.3, age=40).warnings)
    assert not any("outside 40-90" in w for w in interpret(1.3, age=90).warnings)
    for age in (-1, 121, 200):  # not a plausible age: an error, never a number
        with pytest.raises(RiskInputError, match="age"):
            interpret(1.3, age=age)


def test_interpret_to_dict_is_json_safe():
    i = interpret(1.3, age=65, sex="M", frax_mof=20, frax_hip=3, bmi=12)
    d = i.to_dict()
    back = json.loads(json.dumps(d))
    assert back == d
    assert back["category"]["code"] == "intermediate"
    assert back["threshold_set"]["name"] == "shevroja_2023"
    assert back["frax"]["adjusted_mof_percent"] == pytest.approx(19.06, abs=0.005)
    assert back["gradient_of_risk"]["hazard_ratio_per_sd_decrease"] == 1.44
    assert all(isinstance(c, str) for c in back["citations"])
