"""Issue 13: derived analytes (absolute counts from a differential, Cockcroft-Gault clearance)
are declared in ``mappings/analytes.yaml`` under ``derived`` and checked at load."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from service.criteria import load_criteria
from service.errors import ConfigurationError
from service.facts import build_facts
from service.mappings import Mappings, load_mappings
from tests.conftest import REPO, observation, patient

DERIVED_BLOCK = re.compile(r"(?ms)^derived:\n.*?(?=^\S)")


def _mappings_copy(tmp_path: Path) -> Path:
    target = tmp_path / "mappings"
    shutil.copytree(REPO / "mappings", target)
    return target


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert old in text, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def test_the_shipped_derivations(mappings: Mappings) -> None:
    assert {o: d.method for o, d in mappings.derived.items()} == {
        "absolute_neutrophil_count": "white_cell_differential",
        "absolute_lymphocyte_count": "white_cell_differential",
        "creatinine_clearance": "cockcroft_gault",
    }


def test_an_input_that_is_no_analyte_stops_loading_naming_the_path(tmp_path: Path) -> None:
    folder = _mappings_copy(tmp_path)
    _edit(
        folder / "analytes.yaml",
        "inputs: {creatinine: serum_creatinine, weight: body_weight}",
        "inputs: {creatinine: serum_creatinine, weight: weight}",
    )
    with pytest.raises(ConfigurationError) as caught:
        load_mappings(folder)
    message = str(caught.value)
    assert "analytes.yaml" in message
    assert "derived.creatinine_clearance.inputs.weight: 'weight' is not defined in analytes" in message


def test_a_missing_input_stops_loading(tmp_path: Path) -> None:
    folder = _mappings_copy(tmp_path)
    _edit(
        folder / "analytes.yaml",
        "inputs: {creatinine: serum_creatinine, weight: body_weight}",
        "inputs: {creatinine: serum_creatinine}",
    )
    with pytest.raises(
        ConfigurationError,
        match=r"derived\.creatinine_clearance\.inputs: cockcroft_gault needs creatinine, weight; got creatinine",
    ):
        load_mappings(folder)


def test_an_unknown_method_stops_loading(tmp_path: Path) -> None:
    folder = _mappings_copy(tmp_path)
    _edit(folder / "analytes.yaml", "method: cockcroft_gault", "method: mdrd")
    with pytest.raises(ConfigurationError, match=r"analytes\.yaml: derived\.creatinine_clearance\.method"):
        load_mappings(folder)


def test_differential_codes_without_a_declared_count_stop_loading(tmp_path: Path) -> None:
    folder = _mappings_copy(tmp_path)
    _edit(
        folder / "analytes.yaml",
        "  absolute_lymphocyte_count:\n    method: white_cell_differential\n    inputs: {total: white_blood_cell_count}\n",
        "",
    )
    with pytest.raises(
        ConfigurationError,
        match=r"analytes\.absolute_lymphocyte_count\.percent_of_white_cells_loinc: no white_cell_differential",
    ):
        load_mappings(folder)


def test_the_differential_reads_the_total_the_declaration_names(tmp_path: Path, mappings: Mappings) -> None:
    wbc = observation("6690-2", 5, "10*9/L", id="wbc")
    platelets = observation("777-3", 200, "10*9/L", id="plt")
    percent = observation("770-8", 40, "%", id="pct")
    resources = [patient(), wbc, platelets, percent]
    (shipped,) = build_facts("p1", resources, mappings).labs["absolute_neutrophil_count"]
    assert (shipped.value, "Observation/wbc" in (shipped.derivation or "")) == (2.0, True)
    folder = _mappings_copy(tmp_path)
    _edit(
        folder / "analytes.yaml",
        "  absolute_neutrophil_count:\n    method: white_cell_differential\n    inputs: {total: white_blood_cell_count}",
        "  absolute_neutrophil_count:\n    method: white_cell_differential\n    inputs: {total: platelet_count}",
    )
    (moved,) = build_facts("p1", resources, load_mappings(folder)).labs["absolute_neutrophil_count"]
    assert (moved.value, "Observation/plt" in (moved.derivation or "")) == (80.0, True)


def test_mappings_recorded_before_the_block_existed_get_the_derivations_made_then(
    tmp_path: Path, mappings: Mappings
) -> None:
    """Replay reads criteria snapshots whose analytes.yaml has no ``derived`` and whose roles.yaml
    named the inputs (serum_creatinine, body_weight, white_blood_cell_count)."""
    folder = _mappings_copy(tmp_path)
    analytes = folder / "analytes.yaml"
    analytes.write_text(DERIVED_BLOCK.sub("", analytes.read_text(encoding="utf-8")), encoding="utf-8")
    _edit(
        folder / "roles.yaml",
        "  karnofsky_performance_status: karnofsky_performance_status\n",
        "  karnofsky_performance_status: karnofsky_performance_status\n"
        "  serum_creatinine: serum_creatinine\n  body_weight: body_weight\n"
        "  white_blood_cell_count: white_blood_cell_count\n",
    )
    assert load_mappings(folder).derived == mappings.derived


def test_criteria_check_refuses_cockcroft_gault_on_an_analyte_not_derived_by_it(tmp_path: Path) -> None:
    folder = _mappings_copy(tmp_path)
    analytes = folder / "analytes.yaml"
    _edit(
        analytes,
        "  creatinine_clearance:\n    method: cockcroft_gault\n    inputs: {creatinine: serum_creatinine, weight: body_weight}\n",
        "",
    )
    mappings = load_mappings(folder)
    with pytest.raises(
        ConfigurationError,
        match=r"criterion 'renal-function'.*derive_cockcroft_gault: analyte 'creatinine_clearance' is not derived by cockcroft_gault",
    ):
        load_criteria(REPO / "criteria", mappings)
