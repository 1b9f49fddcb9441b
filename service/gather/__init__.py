"""Gather the patient's FHIR data: the prefetch first, then what is missing from the FHIR server.

``prefetch`` holds the CDS Hooks prefetch contract, ``fhir_client`` a small FHIR client
(searches as values, an async page iterator, errors translated once), ``observations``
fetch mode's combined Observation searches and ``collect`` the one function that runs
them for a hook call.
"""

from service.gather.collect import gather
from service.gather.contract_tables import REQUIRED_KEYS, prefetch_templates
from service.gather.fhir_client import FetchLimits
from service.gather.observations import ObservationSearches, observation_searches
from service.gather.prefetch import GatheredData

__all__ = [
    "REQUIRED_KEYS",
    "FetchLimits",
    "GatheredData",
    "ObservationSearches",
    "gather",
    "observation_searches",
    "prefetch_templates",
]
