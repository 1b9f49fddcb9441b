"""Local sandboxes the service is tested against (a real HAPI FHIR R4 server).

They exist because mocks of a FHIR server drift from real search, paging and transaction
semantics; see :mod:`service.sandbox.hapi`.
"""
