"""A local sandbox to test the service against: a real HAPI FHIR R4 server and data for it.

It exists because mocks of a FHIR server drift from real search, paging and transaction
semantics. :mod:`service.sandbox.hapi` builds and runs the server; the synthetic patients
loaded into it are data files in ``deploy/sandbox/patients/``, read by
:mod:`service.sandbox.patient_files`.
"""
