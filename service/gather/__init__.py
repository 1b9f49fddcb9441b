"""Gather the patient's FHIR data: the prefetch first, then what is missing from the FHIR server.

The tables of the prefetch contract (which keys exist, what each holds, which are
required) derive from ``service.facts.registry``; ``prefetch`` reads a hook call's prefetch
against them, ``fhir_client`` is a small FHIR client (searches as values, an async page
iterator, errors translated once), ``observations`` builds fetch mode's combined Observation
searches and ``collect`` is the one function that runs them for a hook call.
"""

from service.facts.registry import REQUIRED_KEYS, prefetch_templates
from service.gather.collect import gather
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
