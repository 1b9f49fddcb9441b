"""Population pre-screen: every patient of a Bulk FHIR export against every trial, on Spark.

Stages, a module each: ``read`` (NDJSON lines -> resources keyed by patient), ``bulk``
(the Bulk Data kick-off, poll and download), ``job`` (the Spark job), ``evaluate`` (the one
call into the engine), ``worklist`` (Parquet and CSV), ``summary`` (HTML), ``record`` (the
audit run record) and ``samples`` (NDJSON test populations); ``run`` strings them together.
"""

from service.prescreen.evaluate import WORKLIST_COLUMNS, evaluate_patient
from service.prescreen.job import JobOptions
from service.prescreen.run import PrescreenResult, run_prescreen

__all__ = ["WORKLIST_COLUMNS", "JobOptions", "PrescreenResult", "evaluate_patient", "run_prescreen"]
