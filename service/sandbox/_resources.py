"""FHIR R4 resources from the entries of a patient file (:mod:`service.sandbox.patient_files`).

The FHIR boilerplate (categories, verification status, UCUM and code system URIs) is
written here once, the same way for every patient.  Ids are ``<patient>-<kind>-<n>`` in
entry order and dates are 09:00 UTC on the day ``days_ago`` before ``today``, so the same
file and day give the same resources, byte for byte.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import TYPE_CHECKING, Any

from service.terminology import CPT, CVX, ICD10_CM, LOINC, RXNORM, SNOMED, UCUM

if TYPE_CHECKING:
    from service.sandbox.patient_files import Condition, Immunization, Medication, Observation, Procedure

SYSTEMS = {
    "loinc": LOINC,
    "snomed": SNOMED,
    "icd10": ICD10_CM,
    "cpt": CPT,
    "cvx": CVX,
    "rxnorm": RXNORM,
}
_TERMINOLOGY = "http://terminology.hl7.org/CodeSystem/"
_ANSWERS = {"positive": ("LA6576-8", "Positive"), "negative": ("LA6577-6", "Negative")}


def birth_date(today: date, age: int) -> date:
    """``age`` years and 40 days before ``today`` (the 28th at most, so every month has the day)."""
    return date(today.year - age, today.month, min(today.day, 28)) - timedelta(days=40)


class ResourceWriter:
    """Writes one patient's resources, numbering them in the order they are written."""

    def __init__(self, patient_id: str, today: date) -> None:
        self.id = patient_id
        self.today = today
        self.counter = 0

    def _next_id(self, kind: str) -> str:
        self.counter += 1
        return f"{self.id}-{kind}-{self.counter}"

    def _subject(self) -> dict[str, str]:
        return {"reference": f"Patient/{self.id}"}

    def when(self, days_ago: float) -> str:
        moment = datetime.combine(self.today, time(9, 0), tzinfo=UTC) - timedelta(days=days_ago)
        return moment.isoformat().replace("+00:00", "Z")

    def patient(self, gender: str, age: int, deceased_days_ago: float | None) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Patient",
            "id": self.id,
            "gender": gender,
            "birthDate": birth_date(self.today, age).isoformat(),
            "name": [{"family": "Synthetic", "given": [self.id]}],
        }
        if deceased_days_ago is not None:
            resource["deceasedDateTime"] = self.when(deceased_days_ago)
        return resource

    def observation(self, spec: Observation) -> dict[str, Any]:
        coding = {"system": SYSTEMS["loinc"], "code": spec.loinc}
        if spec.display:
            coding["display"] = spec.display
        category = {"system": _TERMINOLOGY + "observation-category", "code": spec.category}
        resource: dict[str, Any] = {
            "resourceType": "Observation",
            "id": self._next_id("obs"),
            "status": spec.status,
            "category": [{"coding": [category]}],
            "code": {"coding": [coding]},
            "subject": self._subject(),
            "effectiveDateTime": self.when(spec.days_ago),
        }
        if spec.value is not None:
            resource["valueQuantity"] = _quantity(spec.value, spec.unit)
        if spec.value_integer is not None:
            resource["valueInteger"] = spec.value_integer
        if spec.result is not None:
            code, display = _ANSWERS[spec.result]
            answer = {"system": SYSTEMS["loinc"], "code": code, "display": display}
            resource["valueCodeableConcept"] = {"coding": [answer]}
        if spec.value_coding is not None:
            coded = {"system": SYSTEMS[spec.value_coding.system], "code": spec.value_coding.code}
            resource["valueCodeableConcept"] = {"coding": [coded]}
        if spec.value_text is not None:
            resource["valueCodeableConcept"] = {"text": spec.value_text}
        if spec.ref_high is not None:
            resource["referenceRange"] = [{"high": _quantity(spec.ref_high, spec.unit)}]
        return resource

    def condition(self, spec: Condition) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Condition",
            "id": self._next_id("cond"),
            "clinicalStatus": _coded(_TERMINOLOGY + "condition-clinical", spec.status),
            "verificationStatus": _coded(_TERMINOLOGY + "condition-ver-status", "confirmed"),
            "category": [_coded(_TERMINOLOGY + "condition-category", "problem-list-item")],
            "code": _concept(spec.system, spec.code, spec.display),
            "subject": self._subject(),
            "onsetDateTime": self.when(spec.onset_days_ago),
        }
        if spec.abatement_days_ago is not None:
            resource["abatementDateTime"] = self.when(spec.abatement_days_ago)
        return resource

    def medication(self, spec: Medication) -> dict[str, Any]:
        medication: dict[str, Any] = {"text": spec.name}
        if spec.rxnorm:
            coding = {"system": SYSTEMS["rxnorm"], "code": spec.rxnorm, "display": spec.name}
            medication = {"coding": [coding], "text": spec.name}
        period = {"start": self.when(spec.start_days_ago)}
        if spec.end_days_ago is not None:
            period["end"] = self.when(spec.end_days_ago)
        resource: dict[str, Any] = {
            "resourceType": "MedicationStatement",
            "id": self._next_id("med"),
            "status": spec.status,
            "medicationCodeableConcept": medication,
            "subject": self._subject(),
            "effectivePeriod": period,
        }
        if spec.dose_mg is not None:
            dosage: dict[str, Any] = {
                "timing": {"repeat": {"frequency": spec.per_day, "period": 1, "periodUnit": "d"}},
                "doseAndRate": [{"doseQuantity": _quantity(spec.dose_mg, "mg")}],
            }
            if spec.route:
                dosage["route"] = {"text": spec.route}
            resource["dosage"] = [dosage]
        return resource

    def procedure(self, spec: Procedure) -> dict[str, Any]:
        resource: dict[str, Any] = {
            "resourceType": "Procedure",
            "id": self._next_id("proc"),
            "status": spec.status,
            "code": _concept(spec.system, spec.code, spec.display),
            "subject": self._subject(),
        }
        if spec.until_days_ago is None:
            resource["performedDateTime"] = self.when(spec.days_ago)
        else:
            resource["performedPeriod"] = {
                "start": self.when(spec.days_ago),
                "end": self.when(spec.until_days_ago),
            }
        return resource

    def immunization(self, spec: Immunization) -> dict[str, Any]:
        vaccine = {"system": SYSTEMS["cvx"], "code": spec.cvx, "display": spec.display}
        return {
            "resourceType": "Immunization",
            "id": self._next_id("imm"),
            "status": "completed",
            "vaccineCode": {"coding": [vaccine]},
            "patient": self._subject(),
            "occurrenceDateTime": self.when(spec.days_ago),
        }


def _quantity(value: float, unit: str | None) -> dict[str, Any]:
    return {"value": value, "unit": unit, "system": UCUM, "code": unit}


def _coded(system: str, code: str) -> dict[str, Any]:
    return {"coding": [{"system": system, "code": code}]}


def _concept(system: str, code: str, display: str) -> dict[str, Any]:
    return {"coding": [{"system": SYSTEMS[system], "code": code, "display": display}], "text": display}
