"""UCUM unit conversion, with ucumvert parsing UCUM and pint doing the arithmetic.

Why a library: UCUM has prefixes, powers of ten (``10*9/L``), annotations and
special units; a hand-written table of strings silently misses the one a lab
sends.  Two rules are ours, on top of UCUM semantics:

* Annotations (``{INR}``, ``{1.73_m2}``) carry meaning UCUM treats as unity, so a
  unit with an annotation converts only to a unit with the same annotations.  That
  is what keeps eGFR (``mL/min/{1.73_m2}``) from passing as clearance (``mL/min``).
* Substance <-> mass concentration needs the analyte's molar mass, which the caller
  passes from ``mappings/analytes.yaml``; without one the conversion is refused.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

from lark.exceptions import LarkError
from pint.errors import PintError

__all__ = ["UnitConversionError", "convert", "normalise_unit"]


class UnitConversionError(ValueError):
    """A value cannot be expressed in the requested unit (unknown or incompatible unit)."""


_ANNOTATION = re.compile(r"\{[^}]*\}")


@lru_cache(maxsize=1)
def _registry() -> Any:
    from ucumvert import PintUcumRegistry

    return PintUcumRegistry()


@lru_cache(maxsize=1024)
def _parse(ucum: str) -> Any:
    """Parse a UCUM unit (annotations stripped) into a pint quantity of magnitude 1."""
    stripped = _ANNOTATION.sub("", ucum)
    if stripped in ("", "1"):
        stripped = "1"
    if stripped.startswith("/"):
        stripped = "1" + stripped
    try:
        parsed = _registry().from_ucum(stripped)
    except (LarkError, PintError) as exc:  # ucumvert's grammar, or a unit pint does not define
        raise UnitConversionError(f"'{ucum}' is not a valid UCUM unit") from exc
    if isinstance(parsed, str):
        raise UnitConversionError(f"'{ucum}' is not a valid UCUM unit")
    return parsed


def normalise_unit(unit: str | None, aliases: dict[str, str]) -> str | None:
    """Map a lab's unit string to UCUM via the explicit alias table; None if absent."""
    if unit is None:
        return None
    unit = unit.strip()
    if unit == "":
        return None
    return aliases.get(unit, aliases.get(unit.lower(), unit))


@lru_cache(maxsize=4096)
def _factor(source: str, target: str, molar_mass_g_per_mol: float | None) -> float:
    if source == target:
        return 1.0
    if sorted(_ANNOTATION.findall(source)) != sorted(_ANNOTATION.findall(target)):
        raise UnitConversionError(f"'{source}' and '{target}' have different annotations and do not convert")
    source_quantity = _parse(source)
    target_quantity = _parse(target)
    ratio = source_quantity / target_quantity
    if ratio.dimensionless:
        return float(ratio.to("dimensionless").magnitude)
    if molar_mass_g_per_mol is None:
        raise UnitConversionError(f"'{source}' does not convert to '{target}'")
    molar_mass = _parse("g/mol") * molar_mass_g_per_mol
    # Substance <-> mass concentration: multiply or divide by the molar mass, whichever
    # leaves no dimension (checked, never tried and caught).
    for candidate in (ratio * molar_mass, ratio / molar_mass):
        if candidate.dimensionless:
            return float(candidate.to("dimensionless").magnitude)
    raise UnitConversionError(f"'{source}' does not convert to '{target}'")


def convert(value: float, source: str, target: str, molar_mass_g_per_mol: float | None = None) -> float:
    """Express ``value`` given in UCUM unit ``source`` in UCUM unit ``target``.

    >>> round(convert(1.5, "mg/dL", "umol/L", molar_mass_g_per_mol=113.12), 1)
    132.6
    >>> convert(1500, "/uL", "10*9/L")
    1.5
    """
    return value * _factor(source, target, molar_mass_g_per_mol)


def number_text(value: float) -> str:
    """A measured value as a lab report prints it: three significant figures, thousands grouped."""
    return f"{value:.3g}" if abs(value) < 1000 else f"{value:,.0f}"
