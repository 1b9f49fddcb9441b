"""Results computed from others, in the facts stage: absolute counts from a WBC differential."""

from __future__ import annotations

from service.facts.collector import Collector
from service.facts.model import LabResult
from service.units import UnitConversionError, convert

__all__ = ["derive_absolute_counts"]


def derive_absolute_counts(into: Collector) -> None:
    """ANC/ALC from WBC x differential %, where no absolute count shares the specimen time."""
    white_cells = {
        r.when: r
        for r in into.labs.get(into.mappings.roles.analytes.white_blood_cell_count, [])
        if r.when is not None
    }
    for analyte, percents in into.percents.items():
        measured = {r.when for r in into.labs.get(analyte, [])}
        for percent in percents:
            total = white_cells.get(percent.when) if percent.when is not None else None
            if total is None or percent.when in measured or total.value is None or total.unit is None:
                continue
            try:
                per_litre = convert(total.value, total.unit, "10*9/L")
            except UnitConversionError:
                continue
            into.labs[analyte].append(
                LabResult(
                    analyte=analyte,
                    value=round(per_litre * (percent.value or 0) / 100, 3),
                    unit="10*9/L",
                    when=percent.when,
                    source=percent.source,
                    code=percent.code,
                    display=into.mappings.analytes[analyte].display,
                    derivation=f"computed from WBC {total.value:g} {total.unit} × {percent.value:g} %, {total.source}",
                )
            )
