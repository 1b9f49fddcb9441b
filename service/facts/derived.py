"""Derived analytes built in the facts stage, as ``derived`` in ``mappings/analytes.yaml`` declares.

The absolute counts from a white-cell differential are built here.  Cockcroft-Gault
clearance, declared there too, is computed by the engine (``service/engine/labs.py``):
which creatinine and weight it may use depends on the criterion's look-back from the
evaluation time, and the age is the age at that time; facts never know the time.
"""

from __future__ import annotations

from service.facts.collector import Collector
from service.facts.model import LabResult
from service.units import UnitConversionError, convert

__all__ = ["derive_absolute_counts"]


def derive_absolute_counts(into: Collector) -> None:
    """Each ``white_cell_differential`` count (ANC, ALC) from the WBC (its ``total`` input) x
    the differential %, where no absolute count shares the specimen time."""
    for analyte, derivation in into.mappings.derivations("white_cell_differential").items():
        _derive_count(into, analyte, derivation.inputs["total"])


def _derive_count(into: Collector, analyte: str, total_analyte: str) -> None:
    """One count from its percentages, each paired with the total of the same specimen time."""
    percents = into.percents.get(analyte)
    if not percents:
        return
    unit = into.mappings.analytes[analyte].unit
    white_cells = {r.when: r for r in into.labs.get(total_analyte, []) if r.when is not None}
    measured = {r.when for r in into.labs.get(analyte, [])}
    for percent in percents:
        total = white_cells.get(percent.when) if percent.when is not None else None
        if total is None or percent.when in measured or total.value is None or total.unit is None:
            continue
        try:
            count = convert(total.value, total.unit, unit)
        except UnitConversionError:
            continue
        into.labs[analyte].append(
            LabResult(
                analyte=analyte,
                value=round(count * (percent.value or 0) / 100, 3),
                unit=unit,
                when=percent.when,
                source=percent.source,
                code=percent.code,
                display=into.mappings.analytes[analyte].display,
                derivation=f"computed from WBC {total.value:g} {total.unit} × {percent.value:g} %, {total.source}",
            )
        )
