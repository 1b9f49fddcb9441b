"""Hypothesis strategies for FHIR resources and CDS Hooks bodies, real-looking and broken.

Codes come from our own mappings (so resources reach the lab, condition and drug code
paths), mixed with garbage: units that are not UCUM, values that are strings, huge,
negative or NaN, dates that are partial or impossible, and shapes FHIR does not allow.
"""

from __future__ import annotations

from typing import Any

from hypothesis import strategies as st

from service.mappings import Mappings

PATIENT_ID = "fuzz-patient"
JSON = dict[str, Any]

junk: st.SearchStrategy[Any] = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)

numbers = st.one_of(
    st.integers(min_value=-(10**30), max_value=10**30),
    st.floats(allow_nan=False, allow_infinity=False),
    # NaN and Infinity: Python's JSON reader accepts them, JSON does not (they must be a 400, not a 500).
    st.sampled_from(
        [0, -0.0, 1e308, -1e308, 5e-324, 10**400, 0.1, 1.5, 1000000, -1, 2**63, float("nan"), float("inf")]
    ),
)
values = st.one_of(
    numbers,
    st.sampled_from(["NaN", "Infinity", "-1e999", "12,5", ">5", "<0.1", "", "1e3", "  7 "]),
    st.text(max_size=10),
    junk,
)
dates = st.one_of(
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # no time zone
    st.dates().map(lambda d: d.isoformat()),
    st.integers(min_value=1, max_value=9999).map(lambda y: f"{y:04d}"),
    st.tuples(st.integers(1900, 2100), st.integers(1, 12)).map(lambda ym: f"{ym[0]}-{ym[1]:02d}"),
    st.sampled_from(
        [
            "2026-13-45",
            "0000-00-00",
            "99999-01-01",
            "2026-02-30",
            "2026-01-01T25:00:00Z",
            "2026-01-01T00:00:00+25:00",
            "",
            "yesterday",
            "2026-1-1",
            "--",
        ]
    ),
    st.text(max_size=12),
    junk,
)
statuses = st.one_of(
    st.sampled_from(
        [
            "final",
            "amended",
            "corrected",
            "preliminary",
            "cancelled",
            "entered-in-error",
            "active",
            "completed",
            "stopped",
            "on-hold",
            "unknown",
        ]
    ),
    st.text(max_size=8),
    junk,
)
ids = st.one_of(st.from_regex(r"[A-Za-z0-9\-.]{1,20}", fullmatch=True), junk)
subjects = st.one_of(
    st.just({"reference": f"Patient/{PATIENT_ID}"}),
    st.just({"reference": f"https://fhir.example/r4/Patient/{PATIENT_ID}/_history/2"}),
    st.just({"reference": "Patient/someone-else"}),
    st.builds(lambda r: {"reference": r}, st.text(max_size=12)),
    junk,
)


def codeable(codes: list[str], systems: list[str]) -> st.SearchStrategy[Any]:
    coding = st.fixed_dictionaries(
        {},
        optional={
            "system": st.sampled_from(systems) | st.text(max_size=10) | junk,
            "code": st.sampled_from(codes) | st.text(max_size=8) | junk,
            "display": st.text(max_size=20) | st.sampled_from(codes),
        },
    )
    return st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "coding": st.lists(coding, max_size=3) | junk,
                "text": st.text(max_size=20) | st.sampled_from(codes),
            },
        ),
        junk,
    )


def quantities(units: list[str]) -> st.SearchStrategy[Any]:
    unit = st.sampled_from(units) | st.text(max_size=8) | st.none()
    return st.one_of(
        st.fixed_dictionaries(
            {"value": values},
            optional={
                "unit": unit,
                "code": unit,
                "system": st.sampled_from(["http://unitsofmeasure.org", "urn:garbage"]) | junk,
                "comparator": st.sampled_from(["<", "<=", ">=", ">", "ad"]) | junk,
            },
        ),
        junk,
    )


def _mapped_codes(mappings: Mappings) -> dict[str, list[str]]:
    loinc = sorted({code for codes in mappings.observation_codes_by_group.values() for code in codes})
    conditions = sorted(
        {c for vs in mappings.value_sets.values() for c in vs.snomed}
        | {f"{p}.9" for vs in mappings.value_sets.values() for p in vs.icd10_prefixes}
        | {p for vs in mappings.value_sets.values() for p in vs.icd10_prefixes}
    )
    drugs: set[str] = set()
    for drug_class in mappings.drug_classes.values():
        for member in drug_class.members.values():
            drugs.update(member.rxnorm + member.atc + member.names)
    answers = list(mappings.qualitative_answers.positive.codes + mappings.qualitative_answers.negative.codes)
    units = sorted({a.unit for a in mappings.analytes.values()} | set(mappings.unit_aliases))
    units += [
        "mg/dL",
        "g/dL",
        "umol/L",
        "µmol/L",
        "10^9/L",
        "/uL",
        "%",
        "{score}",
        "garbage!!",
        "1",
        "[iU]/L",
    ]
    return {
        "loinc": loinc,
        "conditions": conditions,
        "drugs": sorted(drugs),
        "answers": answers,
        "units": units,
    }


LOINC = ["http://loinc.org"]
CONDITION_SYSTEMS = [
    "http://snomed.info/sct",
    "http://hl7.org/fhir/sid/icd-10-cm",
    "http://hl7.org/fhir/sid/icd-10",
]
DRUG_SYSTEMS = ["http://www.nlm.nih.gov/research/umls/rxnorm", "http://www.whocc.no/atc"]


def observations(mappings: Mappings) -> st.SearchStrategy[JSON]:
    codes = _mapped_codes(mappings)
    quantity = quantities(codes["units"])
    component = st.fixed_dictionaries(
        {"code": codeable(codes["loinc"], LOINC)},
        optional={"valueQuantity": quantity, "valueCodeableConcept": codeable(codes["answers"], ["urn:x"])},
    )
    return st.fixed_dictionaries(
        {"resourceType": st.just("Observation"), "id": ids, "code": codeable(codes["loinc"], LOINC)},
        optional={
            "status": statuses,
            "subject": subjects,
            "effectiveDateTime": dates,
            "effectivePeriod": st.fixed_dictionaries({}, optional={"start": dates, "end": dates}) | junk,
            "issued": dates,
            "valueQuantity": quantity,
            "valueCodeableConcept": codeable(
                codes["answers"], ["http://snomed.info/sct", "http://loinc.org"]
            ),
            "valueString": st.text(max_size=20) | junk,
            "valueInteger": values,
            "referenceRange": st.lists(
                st.fixed_dictionaries(
                    {}, optional={"low": quantity, "high": quantity, "text": st.text(max_size=6)}
                ),
                max_size=2,
            )
            | junk,
            "component": st.lists(component, max_size=3) | junk,
            "meta": st.fixed_dictionaries({}, optional={"versionId": values, "lastUpdated": dates}) | junk,
        },
    )


def conditions(mappings: Mappings) -> st.SearchStrategy[JSON]:
    codes = _mapped_codes(mappings)
    status = codeable(["active", "recurrence", "relapse", "inactive", "remission", "resolved"], ["urn:x"])
    return st.fixed_dictionaries(
        {"resourceType": st.just("Condition"), "id": ids},
        optional={
            "code": codeable(codes["conditions"], CONDITION_SYSTEMS),
            "clinicalStatus": status,
            "verificationStatus": codeable(["confirmed", "refuted", "entered-in-error"], ["urn:x"]),
            "subject": subjects,
            "onsetDateTime": dates,
            "onsetPeriod": st.fixed_dictionaries({}, optional={"start": dates, "end": dates}) | junk,
            "onsetAge": quantities(["a", "mo"]),
            "onsetString": st.text(max_size=10),
            "abatementDateTime": dates,
            "abatementBoolean": junk,
            "recordedDate": dates,
            "stage": st.lists(
                st.fixed_dictionaries({}, optional={"summary": codeable(["IV", "4"], ["urn:x"])}), max_size=2
            )
            | junk,
            "category": st.lists(
                codeable(["problem-list-item", "encounter-diagnosis"], ["urn:x"]), max_size=2
            )
            | junk,
        },
    )


def medications(mappings: Mappings) -> st.SearchStrategy[JSON]:
    codes = _mapped_codes(mappings)
    timing = st.fixed_dictionaries(
        {},
        optional={
            "repeat": st.fixed_dictionaries(
                {},
                optional={
                    "frequency": values,
                    "period": values,
                    "periodUnit": st.sampled_from(["d", "h", "wk", "mo", "a", "s", "garbage"]) | junk,
                    "boundsPeriod": st.fixed_dictionaries({}, optional={"start": dates, "end": dates}),
                },
            )
            | junk
        },
    )
    dosage = st.fixed_dictionaries(
        {},
        optional={
            "timing": timing | junk,
            "doseAndRate": st.lists(
                st.fixed_dictionaries(
                    {}, optional={"doseQuantity": quantities(["mg", "g", "mg/kg", "ug", "x"])}
                ),
                max_size=2,
            )
            | junk,
            "route": codeable(["oral", "topical", "inhaled", "intravenous"], ["urn:x"]),
            "text": st.text(max_size=20),
        },
    )
    return st.fixed_dictionaries(
        {
            "resourceType": st.sampled_from(["MedicationStatement", "MedicationRequest"]),
            "id": ids,
        },
        optional={
            "status": statuses,
            "intent": st.sampled_from(["order", "plan", "proposal"]) | junk,
            "medicationCodeableConcept": codeable(codes["drugs"], DRUG_SYSTEMS),
            "medicationReference": junk,
            "subject": subjects,
            "effectiveDateTime": dates,
            "effectivePeriod": st.fixed_dictionaries({}, optional={"start": dates, "end": dates}) | junk,
            "dateAsserted": dates,
            "authoredOn": dates,
            "dosage": st.lists(dosage, max_size=2) | junk,
            "dosageInstruction": st.lists(dosage, max_size=2) | junk,
        },
    )


def patients() -> st.SearchStrategy[Any]:
    return st.one_of(
        st.fixed_dictionaries(
            {"resourceType": st.just("Patient"), "id": st.just(PATIENT_ID)},
            optional={
                "birthDate": dates,
                "gender": st.sampled_from(["male", "female", "other", "unknown"]) | junk,
                "deceasedBoolean": junk,
            },
        ),
        junk,
    )


def searchset(resources: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """A Bundle of the resources, or the other things a prefetch key may hold."""
    entries = st.lists(st.fixed_dictionaries({"resource": resources}) | junk, max_size=5)
    outcome = {"resourceType": "OperationOutcome", "issue": [{"severity": "error", "code": "exception"}]}
    return st.one_of(
        st.builds(lambda e: {"resourceType": "Bundle", "type": "searchset", "entry": e}, entries),
        st.builds(lambda e: {"resourceType": "Bundle", "entry": e}, junk),
        st.just(outcome),
        st.just({"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": outcome}]}),
        st.none(),
        junk,
    )
