"""Populations as Bulk Data NDJSON: the synthetic patients, transaction Bundles, and N generated patients.

A FHIR server's ``$export`` writes one file per resource type with server-assigned
references; these writers give the same shape, so the pre-screen reads test data and a
real export alike.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any

import orjson

from service.sandbox.synthetic import SyntheticPatient, generate_patients
from service.terminology import LOINC

__all__ = [
    "POPULATION_MIX",
    "bundle_resources",
    "population_resources",
    "write_ndjson",
    "write_population",
    "write_synthetic",
]

POPULATION_MIX = {"lung": 0.05, "gastro": 0.02}
"""Shares of generated patients with lung and gastro-esophageal cancer; the rest have neither."""
_GASTRO_TEMPLATES = ("til-gastric", "til-esophageal")
_OBSERVATIONS = (50, 2000)
# Routine results, some read by the criteria (blood counts, creatinine) and some not (vital signs).
_ROUTINE = (
    ("8867-4", "Heart rate", "/min", 60.0, 100.0),
    ("8480-6", "Systolic blood pressure", "mm[Hg]", 100.0, 160.0),
    ("29463-7", "Body weight", "kg", 50.0, 110.0),
    ("2345-7", "Glucose", "mg/dL", 70.0, 160.0),
    ("718-7", "Hemoglobin", "g/dL", 10.0, 16.0),
    ("777-3", "Platelets", "10*3/uL", 120.0, 400.0),
    ("2160-0", "Creatinine", "mg/dL", 0.6, 1.4),
)


def write_ndjson(resources: Iterable[dict[str, Any]], directory: Path) -> list[Path]:
    """Write resources as ``<resourceType>.ndjson`` files, one resource a line, in the order given."""
    directory.mkdir(parents=True, exist_ok=True)
    with ExitStack() as stack:
        handles: dict[str, IO[bytes]] = {}
        for resource in resources:
            kind = str(resource["resourceType"])
            if kind not in handles:
                handles[kind] = stack.enter_context((directory / f"{kind}.ndjson").open("wb"))
            handles[kind].write(orjson.dumps(resource) + b"\n")
        return sorted(directory / f"{kind}.ndjson" for kind in handles)


def write_synthetic(directory: Path, today: date) -> list[Path]:
    """The sandbox's synthetic patients, dated relative to ``today``, as an export would hold them."""
    return write_ndjson((r for p in generate_patients(today) for r in p.resources), directory)


def _resolve_references(value: Any, full_urls: dict[str, str]) -> Any:
    if isinstance(value, dict):
        return {
            key: full_urls.get(item, item)
            if key == "reference" and isinstance(item, str)
            else _resolve_references(item, full_urls)
            for key, item in value.items()
        }
    if isinstance(value, list):
        return [_resolve_references(item, full_urls) for item in value]
    return value


def bundle_resources(bundle: dict[str, Any]) -> list[dict[str, Any]]:
    """A transaction Bundle's resources with ``urn:uuid:`` references made ``Type/id``, as a server stores them."""
    entries = [
        e for e in bundle.get("entry") or [] if isinstance(e, dict) and isinstance(e.get("resource"), dict)
    ]
    full_urls = {
        str(e["fullUrl"]): f"{e['resource']['resourceType']}/{e['resource']['id']}"
        for e in entries
        if isinstance(e.get("fullUrl"), str) and isinstance(e["resource"].get("id"), str)
    }
    return [_resolve_references(e["resource"], full_urls) for e in entries]


def _clone(template: SyntheticPatient, patient_id: str) -> list[dict[str, Any]]:
    text = orjson.dumps(template.resources).decode().replace(template.id, patient_id)
    return list(orjson.loads(text))


def _background(patient_id: str, today: date, rng: random.Random) -> list[dict[str, Any]]:
    """A patient without cancer: hypertension treated with a statin."""
    birth = today - timedelta(days=rng.randint(20 * 365, 90 * 365))
    reference = {"reference": f"Patient/{patient_id}"}
    return [
        {
            "resourceType": "Patient",
            "id": patient_id,
            "gender": rng.choice(("female", "male")),
            "birthDate": birth.isoformat(),
        },
        {
            "resourceType": "Condition",
            "id": f"{patient_id}-cond-1",
            "clinicalStatus": {"coding": [{"code": "active"}]},
            "code": {
                "coding": [
                    {"system": "http://snomed.info/sct", "code": "38341003", "display": "Hypertension"}
                ]
            },
            "subject": reference,
            "onsetDateTime": (today - timedelta(days=rng.randint(100, 3000))).isoformat(),
        },
        {
            "resourceType": "MedicationStatement",
            "id": f"{patient_id}-med-1",
            "status": "active",
            "medicationCodeableConcept": {"text": "atorvastatin 20 MG Oral Tablet"},
            "subject": reference,
            "effectiveDateTime": (today - timedelta(days=rng.randint(100, 3000))).isoformat(),
        },
    ]


def _routine_observations(patient_id: str, today: date, rng: random.Random) -> Iterator[dict[str, Any]]:
    count = rng.randint(*_OBSERVATIONS)
    noon = datetime.combine(today, time(12, 0), tzinfo=UTC)
    for index in range(count):
        code, display, unit, low, high = _ROUTINE[index % len(_ROUTINE)]
        moment = noon - timedelta(days=400 + rng.randint(0, 1500), minutes=index)
        yield {
            "resourceType": "Observation",
            "id": f"{patient_id}-routine-{index}",
            "status": "final",
            "code": {"coding": [{"system": LOINC, "code": code, "display": display}]},
            "subject": {"reference": f"Patient/{patient_id}"},
            "effectiveDateTime": moment.isoformat().replace("+00:00", "Z"),
            "valueQuantity": {
                "value": round(rng.uniform(low, high), 1),
                "unit": unit,
                "system": "http://unitsofmeasure.org",
                "code": unit,
            },
        }


def population_resources(count: int, today: date, seed: int = 18) -> Iterator[dict[str, Any]]:
    """``count`` patients: 5% lung and 2% gastro-esophageal cancer (cloned from the synthetic
    cases), the rest without cancer; each with 50-2,000 routine Observations older than a year."""
    templates = generate_patients(today)
    gastro = [p for p in templates if p.id in _GASTRO_TEMPLATES]
    lung = [p for p in templates if p.id not in _GASTRO_TEMPLATES and p.id != "til-no-data"]
    rng = random.Random(seed)
    for number in range(count):
        patient_id = f"pop-{number:07d}"
        draw = rng.random()
        if draw < POPULATION_MIX["lung"]:
            resources = _clone(rng.choice(lung), patient_id)
        elif draw < POPULATION_MIX["lung"] + POPULATION_MIX["gastro"]:
            resources = _clone(rng.choice(gastro), patient_id)
        else:
            resources = _background(patient_id, today, rng)
        yield from resources
        yield from _routine_observations(patient_id, today, rng)


def write_population(directory: Path, count: int, today: date, seed: int = 18) -> list[Path]:
    """Write ``count`` generated patients as NDJSON files (same count, day and seed: same bytes)."""
    return write_ndjson(population_resources(count, today, seed), directory)
