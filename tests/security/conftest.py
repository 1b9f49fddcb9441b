"""Keys, signed client JWTs, a configured (non-dev) app, and real loopback HTTP servers that count.

The servers are plain ``http.server`` instances in a thread, so "no request was made"
is shown by a real socket that was never connected to, not by a mock.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from joserfc import jwt
from joserfc.jwk import ECKey, RSAKey

from service.api.main import create_app
from service.mappings import Mappings
from service.sandbox.synthetic import SyntheticPatient, generate_patients, hook_request
from service.settings import Settings

BASE_URL = "https://cds.hospital.example"
HOOK_PATH = "/cds-services/til-trials"
DISCOVERY_PATH = "/cds-services"
FEEDBACK_PATH = "/cds-services/til-trials/feedback"
ISSUER = "https://ehr.hospital.example"
ALLOWED_FHIR = "https://fhir.hospital.example/r4"
REVIEW_KEY = "review-key-for-tests-0f3a"
FHIR_TOKEN = "fhirTok3n-Zq9xW-unique-7Hk2pL"  # distinctive, so a search for it cannot match by chance

Answer = tuple[int, dict[str, str], bytes]


# --- keys and tokens -------------------------------------------------------------------


@dataclass(frozen=True)
class SigningKey:
    key: ECKey | RSAKey
    alg: str

    @property
    def kid(self) -> str:
        return str(self.key.kid)

    def public_jwk(self) -> dict[str, Any]:
        return dict(self.key.as_dict(private=False))


def ec_key(kid: str) -> SigningKey:
    return SigningKey(ECKey.generate_key("P-384", parameters={"kid": kid}, private=True), "ES384")


def rsa_key(kid: str) -> SigningKey:
    return SigningKey(RSAKey.generate_key(2048, parameters={"kid": kid}, private=True), "RS384")


@pytest.fixture(scope="session")
def es384() -> SigningKey:
    return ec_key("ec-1")


@pytest.fixture(scope="session")
def rs384() -> SigningKey:
    return rsa_key("rsa-1")


def claims_for(path: str, **overrides: Any) -> dict[str, Any]:
    """CDS Hooks 2.0 client claims for one endpoint; ``None`` in overrides drops a claim."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": BASE_URL + path,
        "exp": now + 300,
        "iat": now,
        "jti": str(uuid.uuid4()),
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def sign(signing: SigningKey, path: str, header: dict[str, Any] | None = None, **claims: Any) -> str:
    """A compact JWS signed with joserfc, header ``alg``/``kid``/``typ`` set as a client would."""
    full_header = {"alg": signing.alg, "kid": signing.kid, "typ": "JWT", **(header or {})}
    return jwt.encode(full_header, claims_for(path, **claims), signing.key, algorithms=[signing.alg])


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unsigned(header: dict[str, Any], claims: dict[str, Any], signature: bytes = b"") -> str:
    """A token assembled by hand, for what joserfc rightly refuses to produce (``none``, forged HMAC)."""
    head = b64url(json.dumps(header).encode()) + "." + b64url(json.dumps(claims).encode())
    return head + "." + b64url(signature)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- settings and apps -----------------------------------------------------------------


def client_config(**overrides: Any) -> dict[str, Any]:
    client: dict[str, Any] = {"issuer": ISSUER, "fhir_servers": [ALLOWED_FHIR]}
    client.update(overrides)
    return client


@pytest.fixture
def audit_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'audit.sqlite3'}"


@pytest.fixture
def secure_settings(audit_url: str, es384: SigningKey, rs384: SigningKey) -> Settings:
    """A production-like configuration: not dev, one client with a static JWKS."""
    return Settings(
        dev=False,
        public_base_url=BASE_URL,
        audit_database_url=audit_url,
        review_signing_key=REVIEW_KEY,
        clients=[client_config(jwks={"keys": [es384.public_jwk(), rs384.public_jwk()]})],
    )


@pytest.fixture
def make_app(secure_settings: Settings) -> Callable[..., FastAPI]:
    def make(**overrides: Any) -> FastAPI:
        return create_app(Settings.model_validate({**secure_settings.model_dump(), **overrides}))

    return make


# --- synthetic patients ----------------------------------------------------------------


@pytest.fixture(scope="session")
def patients() -> dict[str, SyntheticPatient]:
    return {p.id: p for p in generate_patients(datetime.now(UTC).date())}


@pytest.fixture
def request_for(patients: dict[str, SyntheticPatient], mappings: Mappings) -> Callable[..., dict[str, Any]]:
    def make(patient_id: str = "til-lung-eligible", **kwargs: Any) -> dict[str, Any]:
        return hook_request(patients[patient_id], mappings, **kwargs)

    return make


def with_fhir_server(body: dict[str, Any], server: str, token: str = FHIR_TOKEN) -> dict[str, Any]:
    body["fhirServer"] = server
    body["fhirAuthorization"] = {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": 300,
        "scope": "patient/*.read",
        "subject": "til-cds",
        "patient": body["context"]["patientId"],
    }
    return body


# --- real loopback servers -------------------------------------------------------------


@dataclass
class SeenRequest:
    method: str
    path: str
    headers: dict[str, str]


@dataclass
class CountingServer:
    """A real HTTP server on 127.0.0.1 that counts connections and requests."""

    respond: Callable[[SeenRequest], Answer]
    connections: int = 0
    requests: list[SeenRequest] = field(default_factory=list)
    _server: ThreadingHTTPServer | None = None

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("server not started")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> None:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _answer(self) -> None:
                seen = SeenRequest(self.command, self.path, {k.lower(): v for k, v in self.headers.items()})
                outer.requests.append(seen)
                status, headers, body = outer.respond(seen)
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = _answer
            do_POST = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        class Server(ThreadingHTTPServer):
            daemon_threads = True

            def verify_request(self, request: Any, client_address: Any) -> bool:
                outer.connections += 1
                return True

        self._server = Server(("127.0.0.1", 0), Handler)
        threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


@pytest.fixture
def serve() -> Iterator[Callable[[Callable[[SeenRequest], Answer]], CountingServer]]:
    """Start counting servers; each is shut down after the test."""
    servers: list[CountingServer] = []

    def start(respond: Callable[[SeenRequest], Answer]) -> CountingServer:
        server = CountingServer(respond)
        server.start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def json_answer(body: Any, status: int = 200, content_type: str = "application/json") -> Answer:
    return status, {"Content-Type": content_type}, json.dumps(body).encode()


def fhir_responder(patient: SyntheticPatient) -> Callable[[SeenRequest], Answer]:
    """A minimal FHIR server over one synthetic patient: read Patient, search by type and code."""
    from urllib.parse import parse_qs, urlsplit

    def respond(request: SeenRequest) -> Answer:
        url = urlsplit(request.path)
        resource_type = url.path.rstrip("/").rsplit("/", 2)
        if resource_type[-2] == "Patient":
            return json_answer(patient.resources[0], content_type="application/fhir+json")
        codes = parse_qs(url.query).get("code", [""])[0]
        matching = [
            r
            for r in patient.resources
            if r["resourceType"] == resource_type[-1]
            and (not codes or any(f"|{c['code']}" in codes for c in r["code"]["coding"]))
        ]
        bundle = {"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": r} for r in matching]}
        return json_answer(bundle, content_type="application/fhir+json")

    return respond
