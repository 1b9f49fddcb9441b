"""UCUM conversion: exact identities, annotations, molar masses, and round trips (hypothesis)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from service.units import UnitConversionError, convert, normalise_unit


@pytest.mark.parametrize(
    ("value", "source", "target", "molar_mass", "expected"),
    [
        (1500, "/uL", "10*9/L", None, 1.5),
        (100, "10*3/uL", "10*9/L", None, 100),
        (1, "10*3/mm3", "10*9/L", None, 1),
        (9, "g/dL", "g/L", None, 90),
        (1.5, "mg/dL", "umol/L", 113.12, 132.68),
        (1.2, "mg/dL", "umol/L", 584.66, 20.52),
        (5.59, "mmol/L", "g/dL", 16114, 9.0),
        (60, "U/L", "ukat/L", None, 1.0),
        (2000, "mL", "L", None, 2),
    ],
)
def test_known_conversions(
    value: float, source: str, target: str, molar_mass: float | None, expected: float
) -> None:
    assert convert(value, source, target, molar_mass) == pytest.approx(expected, rel=2e-3)


@pytest.mark.parametrize(
    ("source", "target"),
    [
        ("mL/min/{1.73_m2}", "mL/min"),  # eGFR is not clearance
        ("10*9", "10*9/L"),  # a count without a volume
        ("umol/L", "mg/dL"),  # substance to mass needs a molar mass
        ("{score}", "%"),
        ("not-a-unit", "g/L"),
    ],
)
def test_refused_conversions(source: str, target: str) -> None:
    with pytest.raises(UnitConversionError):
        convert(1.0, source, target)


def test_aliases_are_explicit_and_unknown_strings_pass_through_unchanged() -> None:
    aliases = {"K/uL": "10*3/uL"}
    assert normalise_unit("K/uL", aliases) == "10*3/uL"
    assert normalise_unit(" ", aliases) is None
    assert normalise_unit("bogus", aliases) == "bogus"


UNIT_PAIRS = [
    ("10*9/L", "/uL"),
    ("10*3/uL", "10*9/L"),
    ("g/dL", "g/L"),
    ("mg/dL", "mg/L"),
    ("L", "mL"),
    ("s", "min"),
]


@given(value=st.floats(min_value=1e-6, max_value=1e6, allow_nan=False), pair=st.sampled_from(UNIT_PAIRS))
def test_round_trip(value: float, pair: tuple[str, str]) -> None:
    source, target = pair
    assert convert(convert(value, source, target), target, source) == pytest.approx(value, rel=1e-9)


@given(
    value=st.floats(min_value=1e-3, max_value=1e4, allow_nan=False),
    molar_mass=st.sampled_from([113.12, 584.66, 16114.0]),
)
def test_molar_round_trip(value: float, molar_mass: float) -> None:
    there = convert(value, "mg/dL", "umol/L", molar_mass)
    assert convert(there, "umol/L", "mg/dL", molar_mass) == pytest.approx(value, rel=1e-9)
