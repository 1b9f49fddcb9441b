"""The code-system URIs the service writes or searches by, written once.

These are FHIR identifiers of terminologies, not clinical knowledge: which codes mean what
stays in ``mappings/``.
"""

from __future__ import annotations

__all__ = ["ATC", "CPT", "CVX", "ICD10_CM", "LOINC", "RXNORM", "SNOMED", "UCUM"]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
CPT = "http://www.ama-assn.org/go/cpt"
CVX = "http://hl7.org/fhir/sid/cvx"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
UCUM = "http://unitsofmeasure.org"
