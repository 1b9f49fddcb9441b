"""What every rule evaluator sees: facts, mappings and the evaluation time (never the clock)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from service.engine.sources import read_when_matching
from service.facts import (
    DrugExposure,
    Exposure,
    PatientFacts,
    RecordedCondition,
)
from service.mappings import Mappings

__all__ = ["EvaluationContext"]


@dataclass
class EvaluationContext:
    facts: PatientFacts
    mappings: Mappings
    at: datetime
    _value_set_cache: dict[str, list[RecordedCondition]] = field(default_factory=dict)
    _tentative_cache: dict[str, list[RecordedCondition]] = field(default_factory=dict)
    _class_cache: dict[str, list[Exposure]] = field(default_factory=dict)
    _value_sets_by_entry: dict[tuple[tuple[tuple[str, str], ...], str], set[str]] = field(
        default_factory=dict
    )

    def diagnoses_in(self, value_set: str) -> list[RecordedCondition]:
        """Established diagnoses (any clinical status) coded in the value set, memoised per call;
        with ``includes_procedures``, the patient's Procedures in it too.

        A diagnosis recorded as unconfirmed, provisional or differential is a question, not a
        diagnosis: it is left out here (so it neither establishes a trial's disease nor meets a
        histology) and only the rules that turn it into "confirm" ask :meth:`tentative_in`.

        The first call sorts every diagnosis into all its value sets at once (a few code
        lookups per diagnosis), rather than testing each diagnosis against each value set.
        """
        if not self._value_set_cache:
            value_sets = self.mappings.value_sets
            self._value_set_cache.update((name, []) for name in value_sets)
            self._tentative_cache.update((name, []) for name in value_sets)
            containing = self._value_sets_of
            for diagnosis in self.facts.diagnoses:
                cache = self._tentative_cache if diagnosis.unconfirmed else self._value_set_cache
                for name in containing(diagnosis.codings, diagnosis.text):
                    cache[name].append(diagnosis)
            for procedure in self.facts.procedures:
                for name in containing(procedure.codings, procedure.text):
                    if value_sets[name].includes_procedures:
                        self._value_set_cache[name].append(procedure)
        return self._value_set_cache[value_set]

    def _value_sets_of(self, codings: tuple[tuple[str, str], ...], text: str) -> set[str]:
        """``Mappings.value_sets_containing``, once per distinct coding and text: a long chart
        records the same few conditions again and again."""
        key = (codings, text)
        found = self._value_sets_by_entry.get(key)
        if found is None:
            found = self._value_sets_by_entry[key] = self.mappings.value_sets_containing(list(codings), text)
        return found

    def tentative_in(self, value_set: str) -> list[RecordedCondition]:
        """Diagnoses in the value set recorded as unconfirmed, provisional or differential."""
        self.diagnoses_in(value_set)
        return self._tentative_cache[value_set]

    def unreadable(
        self, source: str, *, value_sets: Sequence[str] = (), classes: Sequence[str] = ()
    ) -> str | None:
        """Why ``source`` (PROCEDURES, IMMUNIZATIONS or ADMINISTRATIONS) could not be read, if the value sets or
        drug classes given would have been matched against it; else None."""
        reason = self.facts.unavailable.get(source)
        if not reason:
            return None
        read = read_when_matching(source, self.mappings, value_sets=value_sets, classes=classes)
        return reason if read else None

    def has_active_condition(self, value_set: str) -> bool:
        return any(d.is_active for d in self.diagnoses_in(value_set))

    def drugs_in(self, class_name: str) -> list[Exposure]:
        """Medication statements matching a drug class, memoised per call."""
        if class_name not in self._class_cache:
            exposures: list[Exposure] = list(self.facts.drugs)
            if self.mappings.drug_classes[class_name].includes_immunizations:
                exposures += self.facts.immunizations
            matches: dict[tuple[tuple[tuple[str, str], ...], str], bool] = {}
            members = []
            for drug in exposures:
                key = (drug.codings, drug.text)  # the same drug recorded again matches alike
                matched = matches.get(key)
                if matched is None:
                    matched = matches[key] = (
                        self.mappings.match_drug(class_name, list(drug.codings), drug.text) is not None
                    )
                if matched:
                    members.append(drug)
            self._class_cache[class_name] = members
        return self._class_cache[class_name]

    def is_current(self, drug: Exposure) -> bool:
        """Taken now: active (or of unknown status) with no end before the evaluation time,
        and not a stale order."""
        if drug.status not in ("active", "unknown"):
            return False
        if drug.start is not None and drug.start > self.at:
            return False
        if self.stale_note(drug) is not None:
            return False
        return drug.end is None or drug.end >= self.at

    def stale_note(self, drug: Exposure) -> str | None:
        """Why an "active" order without an end looks stale (its newest evidence is older than
        the mappings' horizon), or None.  Such an order is not current therapy."""
        if (
            drug.source.resource_type != "MedicationRequest"
            or drug.status != "active"
            or drug.end is not None
        ):
            return None
        horizon = self.mappings.active_order_horizon_days
        if drug.last_evidence is None or horizon is None:
            return None
        newest, what = drug.last_evidence
        if self.at - newest <= timedelta(days=horizon):
            return None
        return (
            f"{drug.text or 'an order'} ({drug.source}) is still 'active' but was last {what} on "
            f"{newest.date().isoformat()}, more than {horizon} days ago: the order looks stale; "
            "confirm it has stopped"
        )

    def unidentified_drugs(self, within_days: int | None = None) -> list[DrugExposure]:
        """Medications that name no drug, current or (with ``within_days``) recorded that recently:
        any criterion about drugs is unknown while they are on record."""
        found = []
        for drug in self.facts.drugs:
            if drug.unidentified is None:
                continue
            last = drug.end or drug.start
            recent = (
                within_days is not None and last is not None and self.at - last <= timedelta(days=within_days)
            )
            if self.is_current(drug) or recent or (within_days is not None and last is None):
                found.append(drug)
        return found
