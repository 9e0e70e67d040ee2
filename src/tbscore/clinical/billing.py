"""CPT codes and Medicare 2026 rates for TBS services (US billing aid).

The four dedicated TBS CPT codes (77089-77092), their component, the 2026 Physician
Fee Schedule (PFS) RVUs and national rates (QP and non-QP conversion factors) and the
2026 OPPS assignment, loaded from versioned package data
(``tbscore/data/medicare_2026.json``; source: Medimaps TBS reimbursement guide 2026,
current as of 2025-12-01, quoting the CMS CY2026 PFS and OPPS final rules).

Rates are unadjusted national averages; actual payment depends on locality, payer and
coverage. This module is an aid, not coding advice: the provider chooses the codes.

Billing rules applied by :func:`billing_summary`
------------------------------------------------
* No -26 / -TC modifiers on TBS codes (:func:`modifier_rule`).
* ``hospital_outpatient``: split billing. The technical calculation (77091) is billed
  by the facility under OPPS (APC 5521), the interpretation (77092) by the professional
  under the PFS. 77089 is not payable under OPPS, so a complete ``"score"`` service is
  billed as 77091 (OPPS) + 77092 (PFS). 77090 (data sent elsewhere) goes under OPPS.
* ``office`` (imaging centre / physician office, POS 11): everything under the PFS. A
  complete ``"score"`` service is the global code 77089, or 77091 + 77092 with
  ``split=True``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import cache
from importlib import resources
from typing import Any

from tbscore.errors import BillingError

__all__ = [
    "BillingError",
    "CptCode",
    "SERVICES",
    "SETTINGS",
    "RATES",
    "DEFAULT_SCHEDULE",
    "cpt_code",
    "cpt_codes",
    "service_code",
    "modifier_rule",
    "schedule_info",
    "billing_summary",
    "format_table",
]

#: Fee schedule data file used by default (``tbscore/data/<name>.json``).
DEFAULT_SCHEDULE = "medicare_2026"

#: Service names and the CPT code each one maps to.
SERVICES: dict[str, str] = {
    "calc": "77091",
    "interpret": "77092",
    "score": "77089",
    "export": "77090",
}

#: Billing settings (aliases map to these).
SETTINGS: tuple[str, ...] = ("hospital_outpatient", "office")
_SETTING_ALIASES = {
    "hospital_outpatient": "hospital_outpatient",
    "hospital": "hospital_outpatient",
    "hopd": "hospital_outpatient",
    "office": "office",
    "imaging_center": "office",
    "imaging_centre": "office",
}

#: PFS rate variants: Qualified APM Participant (QP) or not.
RATES: tuple[str, ...] = ("qp", "non_qp")

_CENT = Decimal("0.01")


@dataclass(frozen=True)
class CptCode:
    """One TBS CPT code with its 2026 Medicare data.

    Attributes
    ----------
    code : str
        CPT code, e.g. ``"77091"``.
    descriptor : str
        Short descriptor (paraphrase; the official CPT wording is AMA copyright).
    component : {"global", "technical", "professional"}
        Component the code covers.
    total_rvu : Decimal
        2026 PFS total relative value units.
    pfs_qp_rate, pfs_non_qp_rate : Decimal
        2026 PFS national payment (USD) for QP / non-QP conversion factors.
    opps_payable : bool
        Whether the code is paid under the hospital OPPS.
    opps_apc : str or None
        APC under OPPS (``"5521"``), None if not payable.
    opps_relative_weight : Decimal or None
        APC relative weight.
    opps_payment_rate : Decimal or None
        OPPS national payment (USD).
    opps_status_indicator : str or None
        OPPS status indicator (``"S"``: not subject to multiple procedure discounting).
    opps_note : str or None
        Why the code is not payable under OPPS, where it is not.
    effective_date : str
        ISO date the rates take effect.
    source : str
        Dated source of the figures.
    """

    code: str
    descriptor: str
    component: str
    total_rvu: Decimal
    pfs_qp_rate: Decimal
    pfs_non_qp_rate: Decimal
    opps_payable: bool
    opps_apc: str | None
    opps_relative_weight: Decimal | None
    opps_payment_rate: Decimal | None
    opps_status_indicator: str | None
    opps_note: str | None
    effective_date: str
    source: str

    def pfs_rate(self, rate: str = "qp") -> Decimal:
        """Return the PFS national rate (USD) for ``rate`` = ``"qp"`` or ``"non_qp"``."""
        rate = _check_rate(rate)
        return self.pfs_qp_rate if rate == "qp" else self.pfs_non_qp_rate

    @property
    def opps_description(self) -> str:
        """OPPS assignment as text, e.g. ``"APC 5521, weight 0.9726, $88.91 (SI S)"``."""
        if not self.opps_payable:
            return "not payable under OPPS"
        return (
            f"APC {self.opps_apc}, weight {self.opps_relative_weight}, "
            f"${self.opps_payment_rate} (SI {self.opps_status_indicator})"
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-safe dict (money and RVUs as floats)."""
        return {
            "code": self.code,
            "descriptor": self.descriptor,
            "component": self.component,
            "pfs": {
                "total_rvu": float(self.total_rvu),
                "qp_rate": float(self.pfs_qp_rate),
                "non_qp_rate": float(self.pfs_non_qp_rate),
            },
            "opps": {
                "payable": self.opps_payable,
                "apc": self.opps_apc,
                "relative_weight": _float_or_none(self.opps_relative_weight),
                "payment_rate": _float_or_none(self.opps_payment_rate),
                "status_indicator": self.opps_status_indicator,
                "note": self.opps_note,
            },
            "modifiers": modifier_rule(),
            "effective_date": self.effective_date,
            "source": self.source,
        }


def _float_or_none(d: Decimal | None) -> float | None:
    return None if d is None else float(d)


# --------------------------------------------------------------------------------------
# data loading
# --------------------------------------------------------------------------------------


@cache
def _load(schedule: str) -> dict[str, Any]:
    name = f"{schedule}.json"
    try:
        data = resources.files("tbscore.clinical").joinpath("data", name)
        text = data.read_text(encoding="utf-8")
    except (FileNotFoundError, OSError):
        raise BillingError(f"no fee schedule data file {name!r} in tbscore/data") from None
    return json.loads(text, parse_float=Decimal)


@cache
def _codes(schedule: str) -> dict[str, CptCode]:
    data = _load(schedule)
    source = f"{data['source']['short']}; effective {data['effective_date']}"
    out: dict[str, CptCode] = {}
    for code, d in data["codes"].items():
        pfs, opps = d["pfs"], d["opps"]
        out[code] = CptCode(
            code=code,
            descriptor=d["descriptor"],
            component=d["component"],
            total_rvu=Decimal(pfs["total_rvu"]),
            pfs_qp_rate=Decimal(pfs["qp_rate"]),
            pfs_non_qp_rate=Decimal(pfs["non_qp_rate"]),
            opps_payable=bool(opps["payable"]),
            opps_apc=opps["apc"],
            opps_relative_weight=opps["relative_weight"],
            opps_payment_rate=opps["payment_rate"],
            opps_status_indicator=opps["status_indicator"],
            opps_note=opps["note"],
            effective_date=data["effective_date"],
            source=source,
        )
    return out


def schedule_info(schedule: str = DEFAULT_SCHEDULE) -> dict[str, Any]:
    """Return the metadata of a fee schedule (payer, dates, source), JSON-safe.

    Parameters
    ----------
    schedule : str
        Data file name without ``.json``.

    Returns
    -------
    dict
        ``payer``, ``currency``, ``calendar_year``, ``effective_date``,
        ``current_as_of``, ``rates_are``, ``source`` (dict) and ``modifier_rule``.
    """
    data = _load(schedule)
    keys = (
        "payer",
        "currency",
        "calendar_year",
        "effective_date",
        "current_as_of",
        "rates_are",
        "modifier_rule",
    )
    info = {k: data[k] for k in keys}
    info["source"] = dict(data["source"])
    info["schedule"] = schedule
    return info


def cpt_code(code: str | int, *, schedule: str = DEFAULT_SCHEDULE) -> CptCode:
    """Return one TBS CPT code with its rates.

    Parameters
    ----------
    code : str or int
        CPT code, ``77089`` to ``77092``.
    schedule : str
        Fee schedule data file name.

    Returns
    -------
    CptCode

    Raises
    ------
    BillingError
        If the code is not a TBS code in that schedule.
    """
    codes = _codes(schedule)
    key = str(code).strip()
    if key not in codes:
        raise BillingError(
            f"unknown TBS CPT code {code!r}; known codes: {', '.join(sorted(codes))}"
        )
    return codes[key]


def cpt_codes(*, schedule: str = DEFAULT_SCHEDULE) -> tuple[CptCode, ...]:
    """Return all TBS CPT codes of a schedule, in code order."""
    codes = _codes(schedule)
    return tuple(codes[k] for k in sorted(codes))


def service_code(service: str, *, schedule: str = DEFAULT_SCHEDULE) -> CptCode:
    """Return the CPT code of a tbscore service.

    Parameters
    ----------
    service : {"calc", "interpret", "score", "export"}
        ``calc`` -> 77091 (technical calculation only), ``interpret`` -> 77092
        (interpretation and report only), ``score`` -> 77089 (calculation with
        interpretation and report, global), ``export`` -> 77090 (technical preparation
        and transmission of data for analysis elsewhere).
    schedule : str
        Fee schedule data file name.

    Returns
    -------
    CptCode

    Raises
    ------
    BillingError
        If the service name is unknown.
    """
    return cpt_code(SERVICES[_check_service(service)], schedule=schedule)


def modifier_rule(*, schedule: str = DEFAULT_SCHEDULE) -> str:
    """Return the modifier rule for TBS codes (no -26 / -TC modifiers)."""
    return str(_load(schedule)["modifier_rule"])


# --------------------------------------------------------------------------------------
# summary
# --------------------------------------------------------------------------------------


def _check_service(service: str) -> str:
    key = str(service).strip().lower()
    if key not in SERVICES:
        raise BillingError(f"unknown service {service!r}; known services: {', '.join(SERVICES)}")
    return key


def _check_setting(setting: str) -> str:
    key = str(setting).strip().lower().replace("-", "_").replace(" ", "_")
    if key not in _SETTING_ALIASES:
        raise BillingError(f"unknown setting {setting!r}; known settings: {', '.join(SETTINGS)}")
    return _SETTING_ALIASES[key]


def _check_rate(rate: str) -> str:
    key = str(rate).strip().lower().replace("-", "_")
    if key not in RATES:
        raise BillingError(f"unknown rate {rate!r}; known rates: {', '.join(RATES)}")
    return key


def _counts(services: Iterable[str] | Mapping[str, int]) -> dict[str, int]:
    if isinstance(services, str):
        services = [services]
    counts: dict[str, int] = {}
    if isinstance(services, Mapping):
        for name, n in services.items():
            if isinstance(n, bool) or not isinstance(n, int) or n < 0:
                raise BillingError(
                    f"count for service {name!r} must be a non-negative integer, got {n!r}"
                )
            key = _check_service(name)
            counts[key] = counts.get(key, 0) + n
    else:
        for name in services:
            key = _check_service(name)
            counts[key] = counts.get(key, 0) + 1
    return {k: n for k, n in counts.items() if n > 0}


def billing_summary(
    services: Iterable[str] | Mapping[str, int],
    setting: str,
    *,
    rate: str = "qp",
    split: bool = False,
    schedule: str = DEFAULT_SCHEDULE,
) -> list[dict[str, Any]]:
    """Return billing lines for a set of TBS services.

    Parameters
    ----------
    services : list of str or dict of str to int
        Services performed: names from :data:`SERVICES` (``calc``, ``interpret``,
        ``score``, ``export``), either as a list (each occurrence counts once) or as a
        ``{name: count}`` mapping.
    setting : {"hospital_outpatient", "office"}
        ``hospital_outpatient``: split billing, technical codes (77091, 77090) under
        OPPS billed by the facility, 77092 under the PFS billed by the professional;
        a ``score`` (complete service) becomes 77091 (OPPS) + 77092 (PFS), since 77089
        is not payable under OPPS. ``office`` (also ``imaging_center``): all codes
        under the PFS; a ``score`` is the global 77089, or 77091 + 77092 if *split*.
    rate : {"qp", "non_qp"}
        PFS conversion factor: Qualified APM Participant (default) or not. OPPS
        lines are not affected.
    split : bool
        Office only: bill a ``score`` as 77091 + 77092 instead of global 77089.
    schedule : str
        Fee schedule data file name.

    Returns
    -------
    list of dict
        One row per (code, schedule), in code order, with keys ``code``,
        ``descriptor``, ``component``, ``services``, ``count``, ``setting``,
        ``payer``, ``schedule`` (``"OPPS"`` or ``"PFS"``), ``rate_basis``,
        ``billed_by``, ``unit_rate`` and ``total`` (USD, floats rounded to cents),
        ``currency``, ``modifiers``, ``effective_date``, ``source`` and ``note``.
        Empty when no service has a positive count.

    Raises
    ------
    BillingError
        Unknown service, setting or rate, or an invalid count.
    """
    setting_v = _check_setting(setting)
    rate_v = _check_rate(rate)
    counts = _counts(services)
    info = schedule_info(schedule)

    # (code, schedule) -> [count, set of services, note]
    lines: dict[tuple[str, str], list[Any]] = {}

    def add(code: str, sched: str, service: str, n: int, note: str | None = None) -> None:
        entry = lines.setdefault((code, sched), [0, [], []])
        entry[0] += n
        if service not in entry[1]:
            entry[1].append(service)
        if note and note not in entry[2]:
            entry[2].append(note)

    for service, n in counts.items():
        if setting_v == "hospital_outpatient":
            if service == "score":
                note = "complete service split-billed: 77089 is not payable under OPPS"
                add("77091", "OPPS", service, n, note)
                add("77092", "PFS", service, n, note)
            elif service == "interpret":
                add("77092", "PFS", service, n)
            else:  # calc, export: technical, facility, OPPS
                add(SERVICES[service], "OPPS", service, n)
        else:  # office
            if service == "score" and split:
                note = "complete service split-billed (77091 + 77092) at the office"
                add("77091", "PFS", service, n, note)
                add("77092", "PFS", service, n, note)
            else:
                add(SERVICES[service], "PFS", service, n)

    rows: list[dict[str, Any]] = []
    for (code, sched), (n, svc, notes) in sorted(lines.items()):
        c = cpt_code(code, schedule=schedule)
        if sched == "OPPS":
            assert c.opps_payment_rate is not None
            unit = c.opps_payment_rate
            basis = (
                f"OPPS APC {c.opps_apc} (weight {c.opps_relative_weight}, "
                f"SI {c.opps_status_indicator})"
            )
            billed_by = "facility"
        else:
            unit = c.pfs_rate(rate_v)
            basis = "PFS QP" if rate_v == "qp" else "PFS non-QP"
            if setting_v == "hospital_outpatient":
                billed_by = "professional"
            else:
                billed_by = "practice"
        total = (unit * n).quantize(_CENT)
        rows.append(
            {
                "code": code,
                "descriptor": c.descriptor,
                "component": c.component,
                "services": list(svc),
                "count": n,
                "setting": setting_v,
                "payer": info["payer"],
                "schedule": sched,
                "rate_basis": basis,
                "billed_by": billed_by,
                "unit_rate": float(unit.quantize(_CENT)),
                "total": float(total),
                "currency": info["currency"],
                "modifiers": "none (no -26/-TC on TBS codes)",
                "effective_date": c.effective_date,
                "source": c.source,
                "note": "; ".join(notes) if notes else None,
            }
        )
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """Format :func:`billing_summary` rows as a plain-text aligned table.

    Parameters
    ----------
    rows : list of dict
        Rows from :func:`billing_summary`.

    Returns
    -------
    str
        Header, one line per row, a total line (USD), then the dated source(s), the
        modifier rule and any notes. No trailing newline.
    """
    headers = (
        "Code",
        "Component",
        "Schedule",
        "Billed by",
        "Count",
        "Unit rate",
        "Total",
        "Descriptor",
    )
    body = [
        (
            str(r["code"]),
            str(r["component"]),
            str(r["rate_basis"]).split(" (")[0],
            str(r["billed_by"]),
            str(r["count"]),
            f"${Decimal(str(r['unit_rate'])):,.2f}",
            f"${Decimal(str(r['total'])):,.2f}",
            str(r["descriptor"]),
        )
        for r in rows
    ]
    grand = sum((Decimal(str(r["total"])) for r in rows), Decimal("0"))
    total_row = (
        "TOTAL",
        "",
        "",
        "",
        str(sum(int(r["count"]) for r in rows)),
        "",
        f"${grand:,.2f}",
        "",
    )
    table = [headers, *body, total_row]
    widths = [max(len(line[i]) for line in table) for i in range(len(headers))]
    right = {4, 5, 6}

    def fmt(line: tuple[str, ...]) -> str:
        cells = [
            cell.rjust(widths[i]) if i in right else cell.ljust(widths[i])
            for i, cell in enumerate(line)
        ]
        return "  ".join(cells).rstrip()

    rule = "  ".join("-" * w for w in widths)
    out = [fmt(headers), rule]
    if body:
        out.extend(fmt(line) for line in body)
    else:
        out.append("(no billable TBS services)")
    out.extend([rule, fmt(total_row), ""])
    for src in dict.fromkeys(str(r["source"]) for r in rows):
        out.append(f"Source: {src}. Unadjusted national Medicare averages.")
    out.append("Modifiers: do not append -26 or -TC to TBS codes.")
    for note in dict.fromkeys(str(r["note"]) for r in rows if r.get("note")):
        out.append(f"Note: {note}.")
    return "\n".join(out)
