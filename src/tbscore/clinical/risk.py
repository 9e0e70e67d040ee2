"""Fracture-risk interpretation of a lumbar-spine TBS value.

Pure computation, no I/O. Three pieces:

* **Threshold sets** (:data:`THRESHOLD_SETS`): named, versioned, frozen cut-off sets
  that map a TBS value to a category (``normal`` / ``partially_degraded`` /
  ``intermediate`` / ``degraded``). Each carries its population and full citation.
* **TBS-adjusted FRAX** (:func:`adjust_frax`): the published McCloskey 2015 equations
  that adjust the FRAX 10-year probabilities of major osteoporotic fracture (MOF) and
  hip fracture for lumbar-spine TBS.
* **Interpretation** (:func:`interpret`): the two above plus the gradient of risk,
  warnings and citations, as one JSON-serialisable object.

Rounding rule for categories
----------------------------
Clinical TBS is reported to 3 decimals, and the published cut-offs are 3-decimal
numbers. A category must agree with the number printed next to it in a report, so
:meth:`ThresholdSet.categorize` compares the value **rounded to 3 decimals** with the
cut-offs, using exact decimal arithmetic (no binary floating-point comparisons):

* the input is converted through its shortest decimal representation
  (``repr(float(x))``: ``1.2005`` is taken as the decimal 1.2005, not as the binary
  double 1.20049999...), then
* rounded half-up to 3 decimals (``1.2005 -> 1.201``, ``1.2004999 -> 1.200``).

Consequence: ``1.2001`` is *reported* as 1.200 and is therefore **degraded** under
Harvey 2015 (edge 1.200 inclusive in "degraded"), and ``1.3495`` is reported as 1.350
and is **normal**. Use :func:`round_tbs` to get the value that was compared.

Edge convention at exactly 1.230 (Shevroja 2023)
------------------------------------------------
Two readings of the 2023 cut-offs exist. The project's reference notes
(``/work/shared/REFERENCE.md``, from Shevroja et al., Osteoporos Int 2023;34:1501) give
``> 1.310`` normal, ``1.230-1.310`` intermediate, ``< 1.230`` degraded, so a value of
exactly 1.230 is **intermediate**; the vendor's report guide (Medimaps) counts
``TBS <= 1.23`` as **degraded**. The primary article could not be consulted where this
code was written (no copy of its text in the reference material), so the conflict is
not settled here; both conventions are selectable and named:

* ``shevroja_2023`` (default): 1.230 is intermediate (``lower_inclusive=False``);
* ``shevroja_2023_vendor_edge``: 1.230 is degraded (``lower_inclusive=True``), as in
  the vendor's report guide.

Both agree everywhere except on values that round to exactly 1.230.

The FRAX equations, by contrast, take the TBS value as given (unrounded); the
difference (at most 0.0005 TBS units) is far below the measurement precision
(CV about 1.5 %).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from numbers import Real
from typing import Any

from tbscore.errors import RiskInputError

__all__ = [
    "RiskInputError",
    "Category",
    "ThresholdSet",
    "HARVEY_2015",
    "SHEVROJA_2023",
    "SHEVROJA_2023_VENDOR_EDGE",
    "THRESHOLD_SETS",
    "DEFAULT_THRESHOLD_SET",
    "get_threshold_set",
    "round_tbs",
    "FraxCoefficients",
    "FRAX_MOF_COEFFICIENTS",
    "FRAX_HIP_COEFFICIENTS",
    "FraxAdjustment",
    "adjust_frax",
    "frax_tbs_slope",
    "GradientOfRisk",
    "GRADIENT_OF_RISK",
    "Interpretation",
    "interpret",
    "FRAX_AGE_RANGE",
    "BMI_RELIABLE_RANGE",
    "bmi_warning",
    "CLINICAL_TBS_RANGE",
    "CITATIONS",
]


# --------------------------------------------------------------------------------------
# citations and ranges
# --------------------------------------------------------------------------------------

#: Full citations used by this module, by key.
CITATIONS: dict[str, str] = {
    "harvey_2015": (
        "Harvey NC, Glüer CC, Binkley N, McCloskey EV, Brandi ML, Cooper C, et al. "
        "Trabecular bone score (TBS) as a new complementary approach for osteoporosis "
        "evaluation in clinical practice. Bone. 2015;78:216-224."
    ),
    "shevroja_2023": (
        "Shevroja E, Reginster JY, Lamy O, Al-Daghri N, Chandran M, Demoux-Baiada AL, "
        "et al. Update on the clinical use of trabecular bone score (TBS) in the "
        "management of osteoporosis: results of an expert group meeting organized by "
        "ESCEO and IOF. Osteoporos Int. 2023;34(9):1501-1529."
    ),
    "mccloskey_2015": (
        "McCloskey EV, Odén A, Harvey NC, Leslie WD, Hans D, Johansson H, Kanis JA. "
        "Adjusting fracture probability by trabecular bone score. "
        "Calcif Tissue Int. 2015;96(6):500-509."
    ),
    "mccloskey_2016": (
        "McCloskey EV, Odén A, Harvey NC, Leslie WD, Hans D, Johansson H, et al. "
        "A meta-analysis of trabecular bone score in fracture risk prediction and its "
        "relationship to FRAX. J Bone Miner Res. 2016;31(5):940-948."
    ),
    "looker_2016": (
        "Looker AC, Sarafrazi Isfahani N, Fan B, Shepherd JA. Trabecular bone scores "
        "and lumbar spine bone mineral density of US adults: comparison of relationship "
        "with demographic and body size variables. Osteoporos Int. 2016;27(8):2467-2475."
    ),
}

#: Ages (years, inclusive) over which the TBS-adjusted FRAX equations are defined.
FRAX_AGE_RANGE: tuple[float, float] = (40.0, 90.0)
#: BMI range (kg/m², inclusive) in which TBS is considered reliable (Looker 2016).
BMI_RELIABLE_RANGE: tuple[float, float] = (15.0, 37.0)
#: Range of TBS values seen clinically (NHANES 2007-08 total TBS 0.719-1.692), rounded
#: out to 0.7-1.7. Values outside are computed but flagged.
CLINICAL_TBS_RANGE: tuple[float, float] = (0.7, 1.7)

_QUANTUM = Decimal("0.001")


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------


def _real(name: str, value: Any) -> float:
    """Return *value* as a finite float or raise :class:`RiskInputError`."""
    if isinstance(value, bool) or not isinstance(value, Real | Decimal):
        raise RiskInputError(f"{name} must be a real number, got {value!r}")
    v = float(value)
    if not math.isfinite(v):
        raise RiskInputError(f"{name} must be finite, got {value!r}")
    return v


def _check_tbs(tbs: Any) -> float:
    v = _real("tbs", tbs)
    if v <= 0:
        raise RiskInputError(f"tbs must be positive (a TBS value is about 0.7-1.7), got {tbs!r}")
    return v


def round_tbs(tbs: float | Decimal) -> Decimal:
    """Round a TBS value to 3 decimals as it is reported clinically.

    Parameters
    ----------
    tbs : float or Decimal
        TBS value (dimensionless, > 0).

    Returns
    -------
    Decimal
        The value rounded half-up to 3 decimals, computed from the shortest decimal
        representation of the input (``round_tbs(1.2005) == Decimal("1.201")``).

    Raises
    ------
    RiskInputError
        If *tbs* is not a finite positive number.
    """
    _check_tbs(tbs)
    d = tbs if isinstance(tbs, Decimal) else Decimal(repr(float(tbs)))
    return d.quantize(_QUANTUM, rounding=ROUND_HALF_UP)


# --------------------------------------------------------------------------------------
# threshold sets
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Category:
    """A TBS category under one threshold set.

    Attributes
    ----------
    code : str
        Machine code: ``"normal"``, ``"partially_degraded"``, ``"intermediate"`` or
        ``"degraded"``.
    label : str
        Human-readable label.
    threshold_set : str
        Registry name of the threshold set that produced it.
    citation : str
        Full citation of that threshold set.
    tbs_compared : str
        The 3-decimal TBS value that was compared with the cut-offs (e.g. ``"1.200"``).
    rule : str
        The band that matched, e.g. ``"TBS <= 1.200"``.
    """

    code: str
    label: str
    threshold_set: str
    citation: str
    tbs_compared: str
    rule: str

    def to_dict(self) -> dict[str, str]:
        """Return a JSON-safe dict."""
        return {
            "code": self.code,
            "label": self.label,
            "threshold_set": self.threshold_set,
            "citation": self.citation,
            "tbs_compared": self.tbs_compared,
            "rule": self.rule,
        }


@dataclass(frozen=True)
class ThresholdSet:
    """A named, versioned set of TBS cut-offs with three bands.

    The bands are ``normal`` (at or above / above ``upper``), a middle band, and
    ``degraded`` (at or below / below ``lower``). Which edges are inclusive is explicit
    in ``upper_inclusive`` and ``lower_inclusive``.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"harvey_2015"``.
    title : str
        Short human-readable title.
    version : str
        Version string (the publication year, plus a suffix if a set is ever revised).
    year : int
        Publication year.
    population : str
        Population the cut-offs were defined for.
    citation : str
        Full citation.
    upper : Decimal
        Lower edge of the ``normal`` band (TBS units, 3 decimals).
    upper_inclusive : bool
        True if ``tbs == upper`` is ``normal`` (``>=``), False if it falls in the
        middle band (``>``).
    lower : Decimal
        Upper edge of the ``degraded`` band (TBS units, 3 decimals).
    lower_inclusive : bool
        True if ``tbs == lower`` is ``degraded`` (``<=``), False if it falls in the
        middle band (``<``).
    middle_code, middle_label : str
        Code and label of the middle band.
    """

    name: str
    title: str
    version: str
    year: int
    population: str
    citation: str
    upper: Decimal
    upper_inclusive: bool
    lower: Decimal
    lower_inclusive: bool
    middle_code: str
    middle_label: str

    def __post_init__(self) -> None:
        if not self.lower < self.upper:
            raise ValueError(f"{self.name}: lower cut-off must be below upper cut-off")

    # band rules as text -----------------------------------------------------------
    def _rules(self) -> dict[str, str]:
        up = f"{self.upper:.3f}"
        lo = f"{self.lower:.3f}"
        mid_lo = "<" if self.lower_inclusive else "<="
        mid_hi = "<" if self.upper_inclusive else "<="
        return {
            "normal": f"TBS {'>=' if self.upper_inclusive else '>'} {up}",
            self.middle_code: f"{lo} {mid_lo} TBS {mid_hi} {up}",
            "degraded": f"TBS {'<=' if self.lower_inclusive else '<'} {lo}",
        }

    def describe(self) -> str:
        """Return the band definitions as one line of text."""
        labels = {"normal": "normal", self.middle_code: self.middle_label, "degraded": "degraded"}
        return "; ".join(f"{labels[c]}: {r}" for c, r in self._rules().items())

    def categorize(self, tbs: float | Decimal) -> Category:
        """Map a TBS value to this set's category.

        Parameters
        ----------
        tbs : float or Decimal
            TBS value (dimensionless). It is rounded half-up to 3 decimals (see the
            module docstring) before comparison with the cut-offs.

        Returns
        -------
        Category

        Raises
        ------
        RiskInputError
            If *tbs* is not a finite positive number.
        """
        r = round_tbs(tbs)
        if r > self.upper or (self.upper_inclusive and r == self.upper):
            code, label = "normal", "normal"
        elif r < self.lower or (self.lower_inclusive and r == self.lower):
            code, label = "degraded", "degraded"
        else:
            code, label = self.middle_code, self.middle_label
        return Category(
            code=code,
            label=label,
            threshold_set=self.name,
            citation=self.citation,
            tbs_compared=f"{r:.3f}",
            rule=self._rules()[code],
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (cut-offs as 3-decimal strings)."""
        return {
            "name": self.name,
            "title": self.title,
            "version": self.version,
            "year": self.year,
            "population": self.population,
            "citation": self.citation,
            "bands": self._rules(),
        }


#: Harvey et al. 2015 consensus, postmenopausal women: ``>= 1.350`` normal,
#: ``1.200 < TBS < 1.350`` partially degraded, ``<= 1.200`` degraded. The published text
#: gives both edges as inclusive in the outer bands, so the middle band is open.
HARVEY_2015 = ThresholdSet(
    name="harvey_2015",
    title="Harvey 2015 consensus",
    version="2015",
    year=2015,
    population="postmenopausal women",
    citation=CITATIONS["harvey_2015"],
    upper=Decimal("1.350"),
    upper_inclusive=True,
    lower=Decimal("1.200"),
    lower_inclusive=True,
    middle_code="partially_degraded",
    middle_label="partially degraded",
)

#: Shevroja et al. 2023 update (used in the Manitoba registry): ``> 1.310`` normal,
#: ``1.230 <= TBS <= 1.310`` intermediate (both edges inclusive), ``< 1.230`` degraded.
SHEVROJA_2023 = ThresholdSet(
    name="shevroja_2023",
    title="Shevroja 2023 ESCEO/IOF update",
    version="2023",
    year=2023,
    population="postmenopausal women",
    citation=CITATIONS["shevroja_2023"],
    upper=Decimal("1.310"),
    upper_inclusive=False,
    lower=Decimal("1.230"),
    lower_inclusive=False,
    middle_code="intermediate",
    middle_label="intermediate",
)

#: The same 2023 cut-offs with the vendor report guide's edge: ``TBS <= 1.230`` is
#: degraded (the module docstring explains why both conventions are offered).
SHEVROJA_2023_VENDOR_EDGE = ThresholdSet(
    name="shevroja_2023_vendor_edge",
    title="Shevroja 2023 cut-offs, vendor report-guide edge (1.230 degraded)",
    version="2023",
    year=2023,
    population="postmenopausal women",
    citation=CITATIONS["shevroja_2023"],
    upper=Decimal("1.310"),
    upper_inclusive=False,
    lower=Decimal("1.230"),
    lower_inclusive=True,
    middle_code="intermediate",
    middle_label="intermediate",
)

#: Registry of threshold sets by name.
THRESHOLD_SETS: dict[str, ThresholdSet] = {
    HARVEY_2015.name: HARVEY_2015,
    SHEVROJA_2023.name: SHEVROJA_2023,
    SHEVROJA_2023_VENDOR_EDGE.name: SHEVROJA_2023_VENDOR_EDGE,
}

#: Default threshold set for :func:`interpret`: the 2023 update, because it is the most
#: recent published expert revision of the cut-offs (and the one in Manitoba use).
#: Harvey 2015 stays available by name for continuity with older reports.
DEFAULT_THRESHOLD_SET = SHEVROJA_2023.name


def get_threshold_set(name: str | ThresholdSet) -> ThresholdSet:
    """Look up a threshold set by registry name.

    Parameters
    ----------
    name : str or ThresholdSet
        Registry name (case-insensitive, ``-`` accepted for ``_``), or a
        :class:`ThresholdSet`, which is returned as is.

    Returns
    -------
    ThresholdSet

    Raises
    ------
    ValueError
        (:class:`RiskInputError`) if the name is unknown; the message lists the known
        names.
    """
    if isinstance(name, ThresholdSet):
        return name
    key = str(name).strip().lower().replace("-", "_")
    try:
        return THRESHOLD_SETS[key]
    except KeyError:
        known = ", ".join(sorted(THRESHOLD_SETS))
        raise RiskInputError(
            f"unknown threshold set {name!r}; known threshold sets: {known}"
        ) from None


# --------------------------------------------------------------------------------------
# TBS-adjusted FRAX
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FraxCoefficients:
    """Coefficients of one TBS-adjusted FRAX equation (McCloskey 2015).

    ``w = intercept + tbs_coef*TBS + age_coef*age + tbs_age_coef*TBS*age + logit_coef*L``
    with ``L = ln(p / (100 - p))`` (*p*: FRAX probability, percent, age in years), and
    adjusted probability ``100 / (1 + exp(-w))`` percent.
    """

    outcome: str
    intercept: float
    tbs_coef: float
    age_coef: float
    tbs_age_coef: float
    logit_coef: float

    def w(self, *, age: float, tbs: float, p: float) -> float:
        """Return the linear predictor *w* (log-odds) for FRAX probability *p* (%)."""
        logit = math.log(p / (100.0 - p))
        return (
            self.intercept
            + self.tbs_coef * tbs
            + self.age_coef * age
            + self.tbs_age_coef * tbs * age
            + self.logit_coef * logit
        )

    def adjust(self, *, age: float, tbs: float, p: float) -> float:
        """Return the TBS-adjusted probability (percent) without input checks."""
        w = self.w(age=age, tbs=tbs, p=p)
        # numerically stable logistic
        if w >= 0:
            return 100.0 / (1.0 + math.exp(-w))
        e = math.exp(w)
        return 100.0 * e / (1.0 + e)


#: Major osteoporotic fracture equation (McCloskey 2015).
FRAX_MOF_COEFFICIENTS = FraxCoefficients("mof", 5.340, -4.213, -0.0521, 0.0393, 0.897)
#: Hip fracture equation (McCloskey 2015).
FRAX_HIP_COEFFICIENTS = FraxCoefficients("hip", 15.420, -12.627, -0.194, 0.157, 0.920)


def frax_tbs_slope(age: float, outcome: str = "mof") -> float:
    """Return ``dw/dTBS``, the change in adjusted log-odds per unit TBS, at *age*.

    ``dw/dTBS = tbs_coef + tbs_age_coef * age``: for MOF ``-4.213 + 0.0393*age`` and
    for hip ``-12.627 + 0.157*age``.

    Notes
    -----
    With the published coefficients the MOF slope is negative at every age up to
    107.2 years, so the adjusted MOF probability **decreases** with TBS over the whole
    40-90 range. The hip slope changes sign at ``12.627 / 0.157 = 80.43`` years: above
    that age a *higher* TBS gives a slightly *higher* adjusted hip probability. This is
    a property of the published equation (its TBS-by-age interaction term), not of this
    implementation; it is reported as is.

    Parameters
    ----------
    age : float
        Age (years).
    outcome : {"mof", "hip"}
        Which equation.

    Returns
    -------
    float
        Log-odds per TBS unit.
    """
    c = _coefficients(outcome)
    return c.tbs_coef + c.tbs_age_coef * float(age)


def _coefficients(outcome: str) -> FraxCoefficients:
    if outcome == "mof":
        return FRAX_MOF_COEFFICIENTS
    if outcome == "hip":
        return FRAX_HIP_COEFFICIENTS
    raise RiskInputError(f"outcome must be 'mof' or 'hip', got {outcome!r}")


@dataclass(frozen=True)
class FraxAdjustment:
    """TBS-adjusted FRAX probabilities.

    Attributes
    ----------
    age : float
        Age (years).
    tbs : float
        TBS value used in the equations (as given, unrounded).
    frax_mof, frax_hip : float or None
        Input FRAX 10-year probabilities (percent).
    bmi : float or None
        Body-mass index (kg/m²), if given (used only for warnings).
    adjusted_mof, adjusted_hip : float or None
        TBS-adjusted 10-year probabilities (percent, full precision; report to 2
        decimals or fewer); None where the matching input was not given.
    warnings : tuple of str
        Reasons to read the result with caution.
    citation : str
        Full citation of the equations.
    """

    age: float
    tbs: float
    frax_mof: float | None
    frax_hip: float | None
    bmi: float | None
    adjusted_mof: float | None
    adjusted_hip: float | None
    warnings: tuple[str, ...] = ()
    citation: str = CITATIONS["mccloskey_2015"]

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return {
            "inputs": {
                "age_years": self.age,
                "tbs": self.tbs,
                "frax_mof_percent": self.frax_mof,
                "frax_hip_percent": self.frax_hip,
                "bmi_kg_m2": self.bmi,
            },
            "adjusted_mof_percent": self.adjusted_mof,
            "adjusted_hip_percent": self.adjusted_hip,
            "warnings": list(self.warnings),
            "citation": self.citation,
        }


def _check_probability(name: str, p: Any) -> float:
    v = _real(name, p)
    if not 0.0 < v < 100.0:
        raise RiskInputError(
            f"{name} must be a FRAX 10-year probability in percent, strictly between 0 "
            f"and 100, got {p!r}"
        )
    return v


def _check_age(age: Any) -> float:
    v = _real("age", age)
    lo, hi = FRAX_AGE_RANGE
    if not lo <= v <= hi:
        raise RiskInputError(
            f"age must be between {lo:g} and {hi:g} years for the TBS-adjusted FRAX "
            f"equations (McCloskey 2015); they are not defined at age {age!r}"
        )
    return v


def bmi_warning(bmi: float | None) -> str | None:
    """The one BMI rule: the warning for a BMI outside :data:`BMI_RELIABLE_RANGE`.

    Used by ``tbscore.calc`` (BMI from the DICOM header), by :func:`interpret` and
    :func:`adjust_frax` (the BMI used), and by :func:`tbscore.clinical.interpret.
    report_warnings` to tell the two apart; the report only displays the result.

    Parameters
    ----------
    bmi : float or None
        Body-mass index (kg/m²); ``None`` (unknown) gives no warning.

    Returns
    -------
    str or None
        The warning text, or ``None`` inside the range (15-37 kg/m², inclusive).
    """
    if bmi is None:
        return None
    lo, hi = BMI_RELIABLE_RANGE
    if lo <= bmi <= hi:
        return None
    return (
        f"BMI {bmi:g} kg/m² is outside {lo:g}-{hi:g} kg/m², the range in which TBS is "
        "considered reliable (Looker 2016); soft tissue thickness biases TBS"
    )


def _bmi_warnings(bmi: float | None) -> list[str]:
    text = bmi_warning(bmi)
    return [] if text is None else [text]


def _tbs_warnings(tbs: float) -> list[str]:
    lo, hi = CLINICAL_TBS_RANGE
    if lo <= tbs <= hi:
        return []
    return [
        f"TBS {tbs:g} is outside the clinical range {lo:g}-{hi:g}; check the ROI, the "
        "pixel spacing and the lag settings"
    ]


def _check_bmi(bmi: Any) -> float | None:
    if bmi is None:
        return None
    v = _real("bmi", bmi)
    if v <= 0:
        raise RiskInputError(f"bmi must be positive (kg/m²), got {bmi!r}")
    return v


def adjust_frax(
    *,
    age: float,
    tbs: float,
    frax_mof: float | None = None,
    frax_hip: float | None = None,
    bmi: float | None = None,
) -> FraxAdjustment:
    """Adjust FRAX 10-year probabilities for lumbar-spine TBS (McCloskey 2015).

    With *p* the FRAX probability (percent) and ``L = ln(p / (100 - p))``:

    * hip: ``w = 15.420 - 12.627*TBS - 0.194*age + 0.157*TBS*age + 0.920*L``
    * MOF: ``w = 5.340 - 4.213*TBS - 0.0521*age + 0.0393*TBS*age + 0.897*L``

    and the adjusted probability is ``100 / (1 + exp(-w))`` percent.

    Parameters
    ----------
    age : float
        Age (years), 40 to 90 inclusive.
    tbs : float
        Lumbar-spine TBS (dimensionless), finite and positive.
    frax_mof : float, optional
        FRAX 10-year probability of major osteoporotic fracture (percent, 0 < p < 100).
    frax_hip : float, optional
        FRAX 10-year probability of hip fracture (percent, 0 < p < 100).
    bmi : float, optional
        Body-mass index (kg/m²); only used to warn outside 15-37 kg/m².

    Returns
    -------
    FraxAdjustment

    Raises
    ------
    RiskInputError
        Age outside 40-90 years, a probability outside (0, 100), a non-finite or
        non-positive TBS or BMI, or neither probability given.

    Notes
    -----
    Out-of-range but computable inputs are never returned silently: a BMI outside
    15-37 kg/m² or a TBS outside 0.7-1.7 adds a warning to the result. The adjusted
    MOF probability decreases with TBS at every age in 40-90; the adjusted hip
    probability does so only below 80.43 years (see :func:`frax_tbs_slope`).

    Examples
    --------
    >>> a = adjust_frax(age=65, tbs=1.20, frax_mof=20, frax_hip=3)
    >>> round(a.adjusted_mof, 2), round(a.adjusted_hip, 2)
    (21.75, 3.58)
    """
    age_v = _check_age(age)
    tbs_v = _check_tbs(tbs)
    mof_v = None if frax_mof is None else _check_probability("frax_mof", frax_mof)
    hip_v = None if frax_hip is None else _check_probability("frax_hip", frax_hip)
    bmi_v = _check_bmi(bmi)
    if mof_v is None and hip_v is None:
        raise RiskInputError("give at least one of frax_mof and frax_hip (percent)")

    adj_mof = None if mof_v is None else FRAX_MOF_COEFFICIENTS.adjust(age=age_v, tbs=tbs_v, p=mof_v)
    adj_hip = None if hip_v is None else FRAX_HIP_COEFFICIENTS.adjust(age=age_v, tbs=tbs_v, p=hip_v)
    warnings = _tbs_warnings(tbs_v) + _bmi_warnings(bmi_v)
    return FraxAdjustment(
        age=age_v,
        tbs=tbs_v,
        frax_mof=mof_v,
        frax_hip=hip_v,
        bmi=bmi_v,
        adjusted_mof=adj_mof,
        adjusted_hip=adj_hip,
        warnings=tuple(warnings),
    )


# --------------------------------------------------------------------------------------
# interpretation
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GradientOfRisk:
    """Gradient of fracture risk per SD decrease in TBS.

    Attributes
    ----------
    outcome : str
        Fracture outcome.
    hazard_ratio : float
        Hazard ratio per 1 SD decrease in TBS.
    ci95 : tuple of float
        95 % confidence interval of the hazard ratio.
    citation : str
        Full citation.
    """

    outcome: str
    hazard_ratio: float
    ci95: tuple[float, float]
    citation: str

    @property
    def statement(self) -> str:
        """One-sentence statement of the gradient of risk."""
        lo, hi = self.ci95
        return (
            f"Each SD decrease in TBS is associated with a hazard ratio of about "
            f"{self.hazard_ratio:.2f} (95% CI {lo:.2f}-{hi:.2f}) for {self.outcome} "
            "(meta-analysis, McCloskey 2016)."
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict."""
        return {
            "outcome": self.outcome,
            "hazard_ratio_per_sd_decrease": self.hazard_ratio,
            "ci95": list(self.ci95),
            "statement": self.statement,
            "citation": self.citation,
        }


#: HR about 1.44 (1.35-1.53) per SD decrease in TBS for major osteoporotic fracture.
GRADIENT_OF_RISK = GradientOfRisk(
    outcome="major osteoporotic fracture",
    hazard_ratio=1.44,
    ci95=(1.35, 1.53),
    citation=CITATIONS["mccloskey_2016"],
)

_SEX_ALIASES = {
    "f": "female",
    "female": "female",
    "woman": "female",
    "w": "female",
    "m": "male",
    "male": "male",
    "man": "male",
}


def _normalise_sex(sex: str | None) -> str | None:
    if sex is None:
        return None
    key = str(sex).strip().lower()
    if key in _SEX_ALIASES:
        return _SEX_ALIASES[key]
    raise RiskInputError(
        f"sex must be female or male (F or M), got {sex!r}; leave it out when it is "
        "unknown or other (the threshold sets and FRAX adjustment are defined for women "
        "and men only)"
    )


@dataclass(frozen=True)
class Interpretation:
    """Fracture-risk interpretation of one TBS value.

    Attributes
    ----------
    tbs : float
        TBS value as given (dimensionless).
    tbs_reported : str
        TBS rounded half-up to 3 decimals, as it should be printed.
    category : Category
        Category under :attr:`threshold_set`.
    threshold_set : ThresholdSet
        The threshold set used.
    age : float or None
        Age (years).
    sex : {"female", "male"} or None
        Sex.
    bmi : float or None
        Body-mass index (kg/m²).
    frax : FraxAdjustment or None
        TBS-adjusted FRAX, when FRAX probabilities were given.
    gradient_of_risk : GradientOfRisk
        Gradient of risk per SD decrease in TBS.
    warnings : tuple of str
        Reasons to read the result with caution.
    citations : tuple of str
        Full citations of everything used.
    input_sources : dict of str to str
        Where ``age``, ``sex`` and ``bmi`` came from (``"entered"`` or
        ``"DICOM header"``), when known (set by :func:`tbscore.report.interpret_result`).
    """

    tbs: float
    tbs_reported: str
    category: Category
    threshold_set: ThresholdSet
    age: float | None
    sex: str | None
    bmi: float | None
    frax: FraxAdjustment | None
    gradient_of_risk: GradientOfRisk = GRADIENT_OF_RISK
    warnings: tuple[str, ...] = ()
    citations: tuple[str, ...] = field(default_factory=tuple)
    input_sources: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (only str, float, int, bool, None, list, dict)."""
        return {
            "tbs": self.tbs,
            "tbs_reported": self.tbs_reported,
            "age_years": self.age,
            "sex": self.sex,
            "bmi_kg_m2": self.bmi,
            "threshold_set": self.threshold_set.to_dict(),
            "category": self.category.to_dict(),
            "frax": None if self.frax is None else self.frax.to_dict(),
            "gradient_of_risk": self.gradient_of_risk.to_dict(),
            "warnings": list(self.warnings),
            "citations": list(self.citations),
            "input_sources": dict(self.input_sources),
        }

    def _repr_html_(self) -> str:
        """Notebook display: value, category, inputs, FRAX, warnings (HTML-escaped)."""
        import html

        e = html.escape
        c = self.category
        inputs = ", ".join(
            f"{name} {e(str(v))}"
            for name, v in (("age", self.age), ("sex", self.sex), ("BMI", self.bmi))
            if v is not None
        )
        rows = [
            f"<tr><th>TBS</th><td>{e(self.tbs_reported)}</td></tr>",
            f"<tr><th>category</th><td><b>{e(c.label)}</b> ({e(c.rule)})</td></tr>",
            f"<tr><th>threshold set</th><td>{e(c.threshold_set)}</td></tr>",
            f"<tr><th>inputs</th><td>{inputs or '–'}</td></tr>",
        ]
        if self.frax is not None:
            for name, given, adj in (
                ("major osteoporotic", self.frax.frax_mof, self.frax.adjusted_mof),
                ("hip", self.frax.frax_hip, self.frax.adjusted_hip),
            ):
                if given is not None and adj is not None:
                    rows.append(
                        f"<tr><th>FRAX {name}</th><td>{given:g}% → {adj:.2f}% "
                        "(TBS-adjusted)</td></tr>"
                    )
        warn = "".join(f"<li>{e(w)}</li>" for w in self.warnings)
        return (
            "<div><b>TBS fracture-risk interpretation</b><table>"
            + "".join(rows)
            + "</table>"
            + (f"<ul>{warn}</ul>" if warn else "")
            + "<small>Threshold sets were derived from TBS iNsight values; raw tbscore "
            "values are not interchangeable with them unless calibrated.</small></div>"
        )


#: Ages (years) accepted by :func:`interpret`; outside it the age is an input error.
PLAUSIBLE_AGE = (0.0, 120.0)


def interpret(
    tbs: float,
    *,
    threshold_set: str | ThresholdSet = DEFAULT_THRESHOLD_SET,
    age: float | None = None,
    sex: str | None = None,
    frax_mof: float | None = None,
    frax_hip: float | None = None,
    bmi: float | None = None,
) -> Interpretation:
    """Interpret a lumbar-spine TBS value for fracture risk.

    Parameters
    ----------
    tbs : float
        L1-L4 TBS (dimensionless), finite and positive.
    threshold_set : str or ThresholdSet, default "shevroja_2023"
        Cut-offs to categorise with (see :data:`THRESHOLD_SETS`). The default is the
        most recent published revision (Shevroja 2023); pass ``"harvey_2015"`` for the
        2015 consensus bands.
    age : float, optional
        Age (years). Required when FRAX probabilities are given (40-90).
    sex : {"female", "male"}, optional
        Sex (``"F"``/``"M"`` accepted). A warning is added for men: both threshold sets
        were defined for postmenopausal women.
    frax_mof, frax_hip : float, optional
        FRAX 10-year probabilities (percent) to adjust with :func:`adjust_frax`.
    bmi : float, optional
        Body-mass index (kg/m²); outside 15-37 kg/m² a warning is added.

    Returns
    -------
    Interpretation

    Raises
    ------
    RiskInputError
        Unknown threshold set, invalid TBS/age/sex/BMI/probabilities, or FRAX
        probabilities without an age (or with an age outside 40-90).
    """
    ts = get_threshold_set(threshold_set)
    tbs_v = _check_tbs(tbs)
    sex_v = _normalise_sex(sex)
    age_v = None if age is None else _real("age", age)
    if age_v is not None and not PLAUSIBLE_AGE[0] <= age_v <= PLAUSIBLE_AGE[1]:
        raise RiskInputError(
            f"age must be between {PLAUSIBLE_AGE[0]:g} and {PLAUSIBLE_AGE[1]:g} years, got {age!r}"
        )
    bmi_v = _check_bmi(bmi)

    category = ts.categorize(tbs_v)
    warnings: list[str] = []
    citations: list[str] = [ts.citation, GRADIENT_OF_RISK.citation]

    frax = None
    if frax_mof is not None or frax_hip is not None:
        if age_v is None:
            raise RiskInputError("age (years) is required to adjust FRAX probabilities")
        frax = adjust_frax(age=age_v, tbs=tbs_v, frax_mof=frax_mof, frax_hip=frax_hip, bmi=bmi_v)
        warnings.extend(frax.warnings)
        citations.append(frax.citation)
    else:
        warnings.extend(_tbs_warnings(tbs_v) + _bmi_warnings(bmi_v))

    lo, hi = FRAX_AGE_RANGE
    if age_v is not None and not lo <= age_v <= hi:
        warnings.append(
            f"age {age_v:g} years is outside {lo:g}-{hi:g} years (the range of the "
            f"TBS-adjusted FRAX); the {ts.title} threshold set was defined for "
            f"{ts.population}, so the category is not established at this age"
        )
    if sex_v == "male":
        warnings.append(
            f"the {ts.title} threshold set was defined for {ts.population}; its "
            "categories are not established for men"
        )
    if bmi_v is not None and _bmi_warnings(bmi_v):
        citations.append(CITATIONS["looker_2016"])

    return Interpretation(
        tbs=tbs_v,
        tbs_reported=category.tbs_compared,
        category=category,
        threshold_set=ts,
        age=age_v,
        sex=sex_v,
        bmi=bmi_v,
        frax=frax,
        gradient_of_risk=GRADIENT_OF_RISK,
        warnings=tuple(dict.fromkeys(warnings)),
        citations=tuple(dict.fromkeys(citations)),
    )
