"""Public Synthea sample records (``<repo>/../shared/synthea``) for the real-data suite.

The records are read where they lie (the shared folder beside the checkout, in CI too) and
never copied into the repository. A lung-cancer record can also be cut a few days after its
last chemotherapy and shifted in time so that the cut falls on a given moment: the record as
it stood then, evaluated "today".
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

from service.facts import concept_text, parse_fhir_datetime
from service.mappings import Mappings
from service.settings import REPO_ROOT

SYNTHEA_DIR = REPO_ROOT.parent / "shared" / "synthea"
MANIFEST = SYNTHEA_DIR / "manifest.json"
CUT_DAYS_AFTER_LAST_CHEMOTHERAPY = 3

_URN = re.compile(r"urn:uuid:[0-9a-fA-F-]{36}")
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_DATE_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}:\d{2})$")
# Where each resource type keeps the date that says when it happened (the first one found counts).
_WHEN = (
    "effectiveDateTime",
    "authoredOn",
    "onsetDateTime",
    "performedDateTime",
    "occurrenceDateTime",
    "recordedDate",
    "issued",
    "created",
    "date",
)
_PERIODS = ("effectivePeriod", "performedPeriod", "period", "billablePeriod")


@dataclass(frozen=True)
class SyntheaRecord:
    """One bundle of the manifest: its file, the manifest's group and the transaction Bundle."""

    file: str
    group: str
    bundle: dict[str, Any]

    @property
    def resources(self) -> list[dict[str, Any]]:
        return [e["resource"] for e in self.bundle["entry"]]


def records() -> list[SyntheaRecord]:
    """Every bundle the manifest lists, in its order."""
    manifest = json.loads(MANIFEST.read_text(encoding="utf-8"))
    found = []
    for item in manifest:
        with gzip.open(SYNTHEA_DIR / "data" / item["file"], "rt", encoding="utf-8") as handle:
            found.append(SyntheaRecord(item["file"], item["group"], json.load(handle)))
    return found


def when(resource: dict[str, Any]) -> datetime | None:
    """When a resource happened, by the first date field it has."""
    for key in _WHEN:
        if key in resource:
            return parse_fhir_datetime(resource[key])
    for key in _PERIODS:
        period = resource.get(key)
        if isinstance(period, dict) and (period.get("start") or period.get("end")):
            return parse_fhir_datetime(period.get("start") or period.get("end"))
    return None


def chemotherapy_evidence(resources: list[dict[str, Any]], mappings: Mappings) -> list[datetime]:
    """Dates of every order and administration of a systemic anticancer drug, and the end of
    every procedure in the washout's procedure value set ("Combined chemotherapy and radiation
    therapy")."""
    dates = []
    for resource in resources:
        kind = resource["resourceType"]
        if kind == "Procedure":
            codings = [(c.get("system", ""), c.get("code", "")) for c in resource["code"].get("coding", [])]
            period = resource.get("performedPeriod") or {}
            ended = parse_fhir_datetime(period.get("end") or resource.get("performedDateTime"))
            named = concept_text(resource["code"]).lower()
            if ended is not None and "radiotherapy" in mappings.value_sets_containing(codings, named):
                dates.append(ended)
            continue
        if kind not in ("MedicationRequest", "MedicationAdministration"):
            continue
        concept = resource.get("medicationCodeableConcept") or {}
        codings = [(c.get("system", ""), c.get("code", "")) for c in concept.get("coding", [])]
        text = " ".join([concept.get("text", "")] + [c.get("display", "") for c in concept.get("coding", [])])
        moment = when(resource)
        if moment is not None and mappings.match_drug("systemic_anticancer_therapy", codings, text):
            dates.append(moment)
    return dates


def _shift(value: Any, days: int) -> Any:
    if isinstance(value, dict):
        return {k: _shift(v, days) for k, v in value.items()}
    if isinstance(value, list):
        return [_shift(v, days) for v in value]
    if isinstance(value, str) and _DATE.match(value):
        return (date.fromisoformat(value) + timedelta(days=days)).isoformat()
    if isinstance(value, str) and _DATE_TIME.match(value):
        return (datetime.fromisoformat(value.replace("Z", "+00:00")) + timedelta(days=days)).isoformat()
    return value


def cut_and_shift(record: SyntheaRecord, cut: datetime, to: date) -> tuple[dict[str, Any], int]:
    """The record as it stood at ``cut``, every date moved by whole days so that ``cut`` falls on ``to``.

    What happened after the cut is dropped (and whatever refers to it); a death or an
    abatement after it had not happened yet. Returns the transaction Bundle and the shift in days.
    """
    kept = []
    dropped: set[str] = set()
    for entry in record.bundle["entry"]:
        resource = json.loads(json.dumps(entry["resource"]))
        moment = when(resource)
        if moment is not None and moment > cut:
            dropped.add(entry["fullUrl"])
            continue
        if resource["resourceType"] == "Patient":
            resource.pop("deceasedDateTime", None)
        abated = parse_fhir_datetime(resource.get("abatementDateTime"))
        if resource["resourceType"] == "Condition" and abated is not None and abated > cut:
            del resource["abatementDateTime"]
            resource["clinicalStatus"] = {
                "coding": [
                    {"system": "http://terminology.hl7.org/CodeSystem/condition-clinical", "code": "active"}
                ]
            }
        kept.append({**entry, "resource": resource})
    refers_to = {e["fullUrl"]: set(_URN.findall(json.dumps(e["resource"]))) for e in kept}
    while True:  # a kept resource that refers to a dropped one goes too (a transaction would fail)
        referring = {e["fullUrl"] for e in kept if refers_to[e["fullUrl"]] & dropped}
        if not referring:
            break
        dropped |= referring
        kept = [e for e in kept if e["fullUrl"] not in referring]
    days = (to - cut.date()).days
    return {**record.bundle, "entry": _shift(kept, days)}, days
