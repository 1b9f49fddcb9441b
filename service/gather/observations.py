"""Fetch mode's Observation searches: the missing groups in at most two searches, not one per group.

The prefetch templates keep one search per group (``observations-<group>``), so an EHR
that prefetches can send each on its own.  When the service must fetch them itself it
asks once for the codes of every missing group whose results the criteria read only
within a look-back (``date=ge`` the longest of those look-backs before the evaluation
time), and once, without a date, for the groups some rule reads whatever their age or
undated (a ``no_result`` rule, a negative test, the stage group; see
``service.engine.reach``).  A group is never split between the two, so a lost search
makes exactly its groups unavailable, as a lost group search did.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from service.criteria import CriteriaSet
from service.engine.reach import observation_lookbacks
from service.facts.registry import OBSERVATIONS
from service.gather.fhir_client import Search
from service.mappings import Mappings
from service.terminology import LOINC

__all__ = ["ObservationGroup", "CombinedSearch", "ObservationSearches", "observation_searches"]

_MARGIN = timedelta(days=1)
"""Subtracted from the date bound: a server may read a bare date in its own time zone."""


@dataclass(frozen=True)
class ObservationGroup:
    """One prefetch key's Observation codes, and how far back the criteria read them (None: any age)."""

    key: str
    codes: tuple[str, ...]
    lookback_days: int | None


@dataclass(frozen=True)
class CombinedSearch:
    """One search fetch mode issues, and the prefetch keys it stands for."""

    search: Search
    keys: tuple[str, ...]


@dataclass(frozen=True)
class ObservationSearches:
    """The Observation groups of the prefetch templates, ready to be combined into searches."""

    groups: tuple[ObservationGroup, ...]
    page_size: int

    @property
    def keys(self) -> frozenset[str]:
        return frozenset(group.key for group in self.groups)

    def for_keys(self, keys: Iterable[str], patient_id: str, at: datetime) -> list[CombinedSearch]:
        """The searches that fetch ``keys``' groups for the patient, evaluated at ``at``."""
        wanted = set(keys)
        chosen = [group for group in self.groups if group.key in wanted]
        bounded = [group for group in chosen if group.lookback_days is not None]
        unbounded = [group for group in chosen if group.lookback_days is None]
        searches = []
        for part in (bounded, unbounded):
            if not part:
                continue
            codes = list(dict.fromkeys(code for group in part for code in group.codes))
            search = Search("Observation").where(patient=patient_id, code=[f"{LOINC}|{c}" for c in codes])
            if part is bounded:
                longest = max(group.lookback_days or 0 for group in part)
                search = search.where(date=f"ge{(at - timedelta(days=longest) - _MARGIN).date().isoformat()}")
            searches.append(
                CombinedSearch(search.sort("-date").count(self.page_size), tuple(g.key for g in part))
            )
        return searches


def observation_searches(mappings: Mappings, criteria: CriteriaSet, page_size: int) -> ObservationSearches:
    """Each Observation group with its codes (as in the prefetch templates) and its longest look-back."""
    lookbacks = observation_lookbacks(criteria, mappings)
    groups = []
    for group, codes in mappings.observation_codes_by_group.items():
        reads = [lookbacks[name] for name in mappings.definitions_by_group.get(group, [])]
        bounded = [days for days in reads if days is not None]
        lookback = max(bounded) if reads and len(bounded) == len(reads) else None
        groups.append(ObservationGroup(f"{OBSERVATIONS.key_prefix}{group}", tuple(codes), lookback))
    return ObservationSearches(tuple(groups), page_size)
