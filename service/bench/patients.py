"""Synthetic patients of a chosen size, for the benchmarks.

Built from the sandbox's data: the ``eligible_nsclc`` block of ``deploy/sandbox/blocks.yaml``
(an eligible NSCLC patient, so every
trial is evaluated in full and cards are written) whose chart also holds a long
history — ``n`` Observations spread over the lab codes the service reads (some in
other units), about one Condition per 10 Observations and one MedicationStatement
per 20, as in a real oncology chart.
"""

from __future__ import annotations

from datetime import date

from service.sandbox.patient_files import (
    BlockUse,
    Condition,
    Entry,
    Medication,
    Observation,
    build_resources,
    load_blocks,
)
from service.sandbox.synthetic import SyntheticPatient

__all__ = ["sized_patient"]

# (LOINC, value, unit): a history that stays plausible in any order.
_HISTORY_LABS: tuple[tuple[str, float, str], ...] = (
    ("6690-2", 6.0, "10*3/uL"),
    ("751-8", 3600, "/uL"),
    ("731-0", 1.3, "10*9/L"),
    ("777-3", 230, "10*3/uL"),
    ("718-7", 12.5, "g/dL"),
    ("718-7", 7.7, "mmol/L"),
    ("2160-0", 0.9, "mg/dL"),
    ("14682-9", 80, "umol/L"),
    ("1742-6", 28, "U/L"),
    ("1920-8", 26, "IU/L"),
    ("1975-2", 0.6, "mg/dL"),
    ("6301-6", 1.0, "{INR}"),
    ("14979-9", 30, "s"),
    ("29463-7", 74, "kg"),
)
_COMORBIDITIES: tuple[tuple[str, str], ...] = (
    ("I10", "Essential (primary) hypertension"),
    ("E78.5", "Hyperlipidemia, unspecified"),
    ("K21.9", "Gastro-esophageal reflux disease without esophagitis"),
    ("M19.90", "Unspecified osteoarthritis, unspecified site"),
    ("E11.9", "Type 2 diabetes mellitus without complications"),
    ("J44.9", "Chronic obstructive pulmonary disease, unspecified"),
    ("F41.9", "Anxiety disorder, unspecified"),
    ("G47.00", "Insomnia, unspecified"),
)
_COMEDICATIONS: tuple[tuple[str, str], ...] = (
    ("amlodipine 5 mg tablet", "17767"),
    ("atorvastatin 20 mg tablet", "83367"),
    ("metformin 500 mg tablet", "6809"),
    ("omeprazole 20 mg capsule", "7646"),
    ("ondansetron 8 mg tablet", "26225"),
    ("paracetamol 500 mg tablet", "161"),
)


def sized_patient(today: date, observations: int, patient_id: str | None = None) -> SyntheticPatient:
    """An eligible NSCLC patient with ``observations`` Observations (and proportional history)."""
    patient_id = patient_id or f"bench-{observations}"
    blocks = load_blocks()
    eligible = [BlockUse(block="eligible_nsclc")]
    base = build_resources(patient_id, today, eligible, blocks, age=61, gender="male")
    base_observations = sum(r["resourceType"] == "Observation" for r in base)
    history: list[Entry] = []
    for index in range(max(0, observations - base_observations)):
        code, value, unit = _HISTORY_LABS[index % len(_HISTORY_LABS)]
        history.append(
            Entry(
                observation=Observation(
                    loinc=code, value=value * (1 + (index % 5 - 2) / 50), unit=unit, days_ago=35 + index * 0.5
                )
            )
        )
    for index in range(max(0, observations // 10 - 2)):
        code, display = _COMORBIDITIES[index % len(_COMORBIDITIES)]
        history.append(
            Entry(
                condition=Condition(
                    system="icd10", code=code, display=display, onset_days_ago=400 + index * 7
                )
            )
        )
    for index in range(max(0, observations // 20 - 2)):
        name, rxnorm = _COMEDICATIONS[index % len(_COMEDICATIONS)]
        history.append(
            Entry(
                medication=Medication(
                    name=name, rxnorm=rxnorm, start_days_ago=800 + index * 10, end_days_ago=400 + index * 5
                )
            )
        )
    resources = build_resources(patient_id, today, [*eligible, *history], blocks, age=61, gender="male")
    # Fewer Observations than the block holds: its last ones are left out (their ids stay unused).
    kept = [r for r in base if r["resourceType"] == "Observation"][:observations]
    left_out = {r["id"] for r in base if r["resourceType"] == "Observation"} - {r["id"] for r in kept}
    return SyntheticPatient(
        patient_id,
        f"eligible NSCLC with {observations} Observations",
        set(),
        [r for r in resources if r["id"] not in left_out],
    )
