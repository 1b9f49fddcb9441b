"""The facts of the charts opened last, by the address of what they were read from.

A chart is opened again and again in a day (the oncologist, then the nurse, then the
oncologist after the visit), and each open sends the same resources.  Reading them into
facts is the costliest stage of a call (about 4 ms of a 7–9 ms pipeline at 1,000 Observations), and facts are
a function of the resources alone: the same resources give the same facts, whenever they
are read.  So the facts are remembered by the SHA-256 of the resources' canonical JSON, the
address under which the audit trail stores them anyway, and the patient id.

What a call adds to the resources (order-select's draft orders, the sources that could
not be read, what gathering noticed) is not remembered: :func:`with_call_extras` puts it
on the remembered facts for each call.  The memo belongs to one ``Runtime``; a reload of
the mappings builds a new runtime and with it an empty memo, so no fact outlives the
mappings it was read with.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import replace

from service.facts.model import DrugExposure, PatientFacts

__all__ = ["FactsMemo", "with_call_extras"]


class FactsMemo:
    """A least-recently-used memo of ``PatientFacts``, bounded by the resources they hold.

    The bound counts input resources, not charts: one chart of 20,000 resources must not
    be able to hold what 200 ordinary ones would; a chart of none counts as one, so that
    the bound also limits charts whose prefetch was all null.  Remembered facts keep their
    strings alive after the request is freed: measured with tracemalloc, about 0.45 kB per
    resource at 1,000 Observations and 0.55 kB at 5,000, so the default of 50,000
    resources is some 25 MB per process.  A bound of 0 remembers nothing.  A lock,
    because the benchmarks may call from threads.
    """

    def __init__(self, max_resources: int) -> None:
        self.max_resources = max_resources
        self._held: OrderedDict[tuple[bytes, str], PatientFacts] = OrderedDict()
        self._resources = 0
        self._lock = threading.Lock()

    def get(self, address: bytes, patient_id: str) -> PatientFacts | None:
        """The facts read from the resources at ``address`` for this patient, if remembered."""
        with self._lock:
            facts = self._held.get((address, patient_id))
            if facts is not None:
                self._held.move_to_end((address, patient_id))
            return facts

    def put(self, address: bytes, patient_id: str, facts: PatientFacts) -> None:
        """Remember ``facts`` (built without a call's extras), dropping the least recent."""
        size = _size(facts)
        if size > self.max_resources:
            return
        with self._lock:
            key = (address, patient_id)
            previous = self._held.pop(key, None)
            if previous is not None:
                self._resources -= _size(previous)
            self._held[key] = facts
            self._resources += size
            while self._resources > self.max_resources:
                _, dropped = self._held.popitem(last=False)
                self._resources -= _size(dropped)

    def __len__(self) -> int:
        return len(self._held)


def _size(facts: PatientFacts) -> int:
    """What facts count against the bound: their input resources, and a chart of none as one."""
    return max(1, len(facts.inputs))


def with_call_extras(
    facts: PatientFacts,
    *,
    draft_orders: Iterable[DrugExposure] = (),
    unavailable: Mapping[str, str] | None = None,
    problems: Iterable[str] = (),
) -> PatientFacts:
    """``facts`` with what this call adds to its resources, as ``build_facts`` would put it."""
    draft_orders, problems = tuple(draft_orders), tuple(problems)
    if not draft_orders and not unavailable and not problems:
        return facts
    return replace(
        facts,
        draft_orders=draft_orders,
        unavailable=dict(unavailable or {}),
        data_problems=(*facts.data_problems, *problems),
    )
