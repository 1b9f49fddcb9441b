"""Synthetic patients for the sandbox, the tests and the benchmarks, and their request bodies.

The patients are data: one YAML file each in ``deploy/sandbox/patients/``, read by
:mod:`service.sandbox.patient_files`, with what the service is expected to decide.  Dates
are relative to the ``today`` given, so the data never goes stale.  The same patients
become HAPI transaction Bundles and CDS Hooks request bodies (full, partial or no
prefetch), so the prefetch and fetch paths can be compared.
"""

from __future__ import annotations

import copy
import json
import uuid
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

from service.facts import registry
from service.mappings import Mappings
from service.sandbox.patient_files import (
    PATIENTS_DIR,
    Block,
    PatientFile,
    TrialExpectation,
    load_blocks,
    patient_paths,
    patient_resources,
    read_patient_file,
)
from service.terminology import ATC, RXNORM

__all__ = [
    "PARTIAL_PREFETCH_KEYS",
    "SyntheticPatient",
    "find_patient",
    "generate_patients",
    "hook_request",
    "transaction_bundle",
    "write_samples",
]


@dataclass
class SyntheticPatient:
    """A patient's resources, with the trials expected to get a card and, from its file, each
    trial's expected status (empty for patients built in code, such as the benchmarks')."""

    id: str
    description: str
    expected_cards: set[str]
    resources: list[dict[str, Any]] = field(default_factory=list)
    expected_trials: dict[str, TrialExpectation] = field(default_factory=dict)


def _patient(spec: PatientFile, today: date, blocks: dict[str, Block], where: Path) -> SyntheticPatient:
    return SyntheticPatient(
        spec.id,
        spec.description,
        set(spec.expected.cards),
        patient_resources(spec, today, blocks, where=str(where)),
        dict(spec.expected.trials),
    )


def generate_patients(today: date, directory: Path = PATIENTS_DIR) -> list[SyntheticPatient]:
    """Every patient file of ``directory``, its dates relative to ``today``, in file-name order."""
    blocks = load_blocks()
    return [
        _patient(read_patient_file(path), today, blocks, path) for path in patient_paths(directory).values()
    ]


def find_patient(patient_id: str, today: date, directory: Path = PATIENTS_DIR) -> SyntheticPatient:
    """The patient of one file, its dates relative to ``today``.

    Raises :class:`LookupError` naming the known ids when there is no such file.
    """
    paths = patient_paths(directory)
    if patient_id not in paths:
        raise LookupError(f"unknown patient '{patient_id}'; one of: {', '.join(paths)}")
    return _patient(read_patient_file(paths[patient_id]), today, load_blocks(), paths[patient_id])


def transaction_bundle(patient: SyntheticPatient) -> dict[str, Any]:
    """A FHIR transaction that PUTs every resource (client-assigned ids keep reloads idempotent)."""
    return {
        "resourceType": "Bundle",
        "type": "transaction",
        "entry": [
            {
                "fullUrl": f"{r['resourceType']}/{r['id']}",
                "resource": r,
                "request": {"method": "PUT", "url": f"{r['resourceType']}/{r['id']}"},
            }
            for r in patient.resources
        ],
    }


def _searchset(resources: list[dict[str, Any]]) -> dict[str, Any] | None:
    if not resources:
        return None
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(resources),
        "entry": [
            {"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r, "search": {"mode": "match"}}
            for r in resources
        ],
    }


def prefetch_for(patient: SyntheticPatient, mappings: Mappings) -> dict[str, Any]:
    """What a CDS client would prefetch for our templates (null where a search finds nothing)."""
    by_type: dict[str, list[dict[str, Any]]] = {}
    for resource in copy.deepcopy(patient.resources):
        by_type.setdefault(resource["resourceType"], []).append(resource)
    prefetch: dict[str, Any] = {"patient": by_type["Patient"][0]}
    for source in registry.SOURCES:
        if source.key != "patient":  # a search returns the type it asks for; _include'd ones are not sent
            prefetch[source.key] = _searchset(by_type.get(source.resource_types[0], []))
    for group, codes in mappings.observation_codes_by_group.items():
        matching = [
            o
            for o in by_type.get("Observation", [])
            if any(c.get("code") in codes for c in o["code"]["coding"])
        ]
        matching.sort(key=lambda o: o.get("effectiveDateTime", ""), reverse=True)
        prefetch[f"{registry.OBSERVATIONS.key_prefix}{group}"] = _searchset(matching)
    return prefetch


PARTIAL_PREFETCH_KEYS = ("patient", "conditions")
"""What a 'partial' prefetch holds: the rest is left for the service to fetch."""


def draft_order_context(patient: SyntheticPatient, mappings: Mappings, drug: str) -> dict[str, Any]:
    """``selections`` and ``draftOrders`` of an order-select call: one draft order for ``drug``.

    ``drug`` is a member of the drug class ``roles.yaml`` names current anticancer therapy; the
    order is coded as an EHR would code it (RxNorm, else ATC), with the name as text.
    """
    members = dict(mappings.class_members(mappings.roles.drug_classes.current_anticancer_therapy))
    if drug not in members:
        raise ValueError(f"unknown drug '{drug}'; one of: {', '.join(sorted(members))}")
    member = members[drug]
    codings = [{"system": RXNORM, "code": code} for code in member.rxnorm] or [
        {"system": ATC, "code": code} for code in member.atc
    ]
    order_id = f"draft-{drug.replace('_', '-')}"
    order = {
        "resourceType": "MedicationRequest",
        "id": order_id,
        "status": "draft",
        "intent": "order",
        "medicationCodeableConcept": {"coding": codings, "text": drug.replace("_", " ")},
        "subject": {"reference": f"Patient/{patient.id}"},
    }
    return {
        "selections": [f"MedicationRequest/{order_id}"],
        "draftOrders": {"resourceType": "Bundle", "type": "collection", "entry": [{"resource": order}]},
    }


def hook_request(
    patient: SyntheticPatient,
    mappings: Mappings,
    *,
    prefetch: str = "full",
    fhir_server: str | None = None,
    hook: str = "patient-view",
    hook_instance: str | None = None,
    draft_drug: str = "docetaxel",
) -> dict[str, Any]:
    """A CDS Hooks request body: ``prefetch`` is 'full', 'partial' (patient and conditions only) or 'none'.

    Each body gets a fresh ``hookInstance`` unless one is given: a client replaying bodies
    must not make its calls collide in the audit trail.  An order-select body carries a
    draft order for ``draft_drug``.
    """
    body: dict[str, Any] = {
        "hook": hook,
        "hookInstance": hook_instance or str(uuid.uuid4()),
        "context": {"userId": "Practitioner/oncologist-1", "patientId": patient.id},
    }
    if hook == "order-select":
        body["context"].update(draft_order_context(patient, mappings, draft_drug))
    if fhir_server:
        body["fhirServer"] = fhir_server
    if prefetch != "none":
        full = prefetch_for(patient, mappings)
        body["prefetch"] = full if prefetch == "full" else {k: full[k] for k in PARTIAL_PREFETCH_KEYS}
    return body


def write_samples(directory: Path, today: date, mappings: Mappings) -> list[Path]:
    """Write one transaction Bundle and one full-prefetch request per patient."""
    directory.mkdir(parents=True, exist_ok=True)
    written = []
    for patient in generate_patients(today):
        for suffix, content in (
            ("bundle", transaction_bundle(patient)),
            ("request", hook_request(patient, mappings)),
        ):
            path = directory / f"{patient.id}.{suffix}.json"
            path.write_text(json.dumps(content, indent=1), encoding="utf-8")
            written.append(path)
    return written
