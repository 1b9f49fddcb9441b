"""Build, start and stop a real HAPI FHIR R4 server for integration tests and local use.

Why a real server: the service's prefetch and search code depends on behaviour that a mock
gets subtly wrong (token search with ``system|code``, ``_sort``, paging through ``next``
links, transaction Bundles). The machines this project runs on have Java and Maven but no
Docker engine, so the default path builds our own small Spring Boot application on HAPI's
JPA server libraries (``deploy/hapi``) and runs it as a local Java process bound to
127.0.0.1. :func:`start_container` is an alternative for developers who do have Docker.

Typical use::

    jar = build_server()                  # mvn package, only if the sources changed
    server = start_server(free_port(), jar=jar)
    try:
        ...  # talk to server.base_url
    finally:
        server.stop()
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_JAVA_OPTS",
    "HAPI_PROJECT_DIR",
    "JAR_NAME",
    "HapiServer",
    "SandboxError",
    "build_server",
    "docker_available",
    "free_port",
    "jar_path",
    "start_container",
    "start_server",
    "stop_from_pidfile",
    "wait_until_ready",
]

REPO_ROOT = Path(__file__).resolve().parents[2]
HAPI_PROJECT_DIR = REPO_ROOT / "deploy" / "hapi"
"""The Maven project of our HAPI FHIR sandbox server."""

JAR_NAME = "til-hapi-sandbox.jar"
"""The runnable jar ``mvn package`` writes to ``deploy/hapi/target`` (pom ``finalName``)."""

DEFAULT_JAVA_OPTS: tuple[str, ...] = ("-Xmx1536m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1")
"""JVM options sized for a 2-core test machine holding the real-data suite.

The in-memory H2 database lives on the heap. Measured with ``-Xlog:gc`` and ``jstat -gc``
while the 79 Synthea records of ``../shared/synthea`` and 9 time-shifted lung copies were
loaded and every patient was called in both modes: after a full collection 642 MB stayed
live with the records' billing resources, 559 MB without them (as the real-data suite loads
them). 768 MiB left collections running back to back; 1536 MiB keeps the live set under
half the heap (5 full collections, 5.3 s, all while the heap grew during loading).
The serial collector avoids parallel GC threads competing with the tests for
two cores; C1-only compilation shortens start-up, which dominates a test session's use of
the server.
"""

DEFAULT_IMAGE = os.environ.get("TIL_CDS_HAPI_IMAGE", "hapiproject/hapi:v8.8.0-1")
"""Image for :func:`start_container`; same HAPI line as ``deploy/hapi`` (8.8.0)."""

_BUILD_TIMEOUT_S = 1800.0  # a first build downloads ~330 MB of jars into ~/.m2
_LOG_TAIL_LINES = 60
_MVN_TAIL_LINES = 40


class SandboxError(Exception):
    """The sandbox server could not be built, started or stopped.

    The message carries the tail of Maven's or the server's output, because that is
    where the actual cause is and CI logs should show it without digging.
    """


def jar_path() -> Path:
    """Where the built server jar is (whether or not it exists yet)."""
    return HAPI_PROJECT_DIR / "target" / JAR_NAME


def _iter_sources() -> Iterator[Path]:
    """Every file whose change should trigger a rebuild: the pom and all of ``src/``."""
    yield HAPI_PROJECT_DIR / "pom.xml"
    src = HAPI_PROJECT_DIR / "src"
    if src.is_dir():
        yield from (p for p in src.rglob("*") if p.is_file())


def _is_stale(jar: Path) -> bool:
    """True if the jar is missing or older than any source, so a rebuild is needed."""
    if not jar.is_file():
        return True
    built = jar.stat().st_mtime
    return any(p.stat().st_mtime > built for p in _iter_sources())


_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def _tail(text: str, lines: int) -> str:
    """The last ``lines`` lines, without the colour codes Maven emits even with ``-B``."""
    return "\n".join(_ANSI.sub("", text).splitlines()[-lines:])


def _read_tail(path: Path | None, lines: int = _LOG_TAIL_LINES) -> str:
    if path is None or not path.is_file():
        return "(no log)"
    try:
        return _tail(path.read_text(encoding="utf-8", errors="replace"), lines)
    except OSError as exc:  # pragma: no cover - best effort for an error message
        return f"(could not read {path}: {exc})"


def build_server(force: bool = False) -> Path:
    """Build ``deploy/hapi`` with Maven if needed and return the runnable jar.

    Skips Maven when the jar is newer than ``pom.xml`` and everything under ``src/``,
    because even a no-op ``mvn package`` costs several seconds. Uses the default local
    repository (``~/.m2``) so repeated builds on one machine reuse downloaded jars.
    """
    jar = jar_path()
    if not force and not _is_stale(jar):
        return jar
    mvn = shutil.which("mvn")
    if mvn is None:
        raise SandboxError("Maven ('mvn') is not on PATH; it is needed to build deploy/hapi")
    cmd = [mvn, "-q", "-B", "-DskipTests", "package"]
    try:
        result = subprocess.run(
            cmd,
            cwd=HAPI_PROJECT_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=_BUILD_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.output if isinstance(exc.output, str) else ""
        raise SandboxError(
            f"{' '.join(cmd)} timed out after {_BUILD_TIMEOUT_S:.0f}s in {HAPI_PROJECT_DIR}\n"
            + _tail(out, _MVN_TAIL_LINES)
        ) from exc
    if result.returncode != 0:
        raise SandboxError(
            f"{' '.join(cmd)} failed with exit code {result.returncode} in {HAPI_PROJECT_DIR}:\n"
            + _tail(result.stdout, _MVN_TAIL_LINES)
        )
    if not jar.is_file():
        raise SandboxError(f"Maven succeeded but {jar} was not produced")
    return jar


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the OS picks it).

    There is a small window before the server binds it; start-up then fails loudly
    (the port check in :func:`start_server` or the server's own bind error).
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _port_in_use(port: int) -> bool:
    """Whether a server could not bind ``port`` now.

    SO_REUSEADDR, as Tomcat sets it, so that the connections of a server just stopped,
    closing in TIME_WAIT for up to a minute, do not count: only a listener does.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return True
        return False


@dataclass
class HapiServer:
    """A running HAPI FHIR server and how to stop it.

    ``process`` is the Java process for a server we started, ``container`` the
    testcontainers object for one started in Docker; both are ``None`` for a server
    someone else runs (``TIL_CDS_HAPI_URL``), whose :meth:`stop` does nothing.
    """

    base_url: str
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    container: Any = field(default=None, repr=False)

    @property
    def pid(self) -> int | None:
        """The server's process id, if it is a local process we started."""
        return self.process.pid if self.process is not None else None

    def is_running(self) -> bool:
        """Whether our process is still alive (always True for external servers)."""
        return self.process is None or self.process.poll() is None

    def log_tail(self, lines: int = _LOG_TAIL_LINES) -> str:
        """The last lines of the server log, for error messages."""
        return _read_tail(self.log_path, lines)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the server: SIGTERM (Spring shuts down cleanly), then SIGKILL after ``timeout``."""
        if self.container is not None:
            self.container.stop()
            self.container = None
        proc = self.process
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def write_pidfile(self, path: Path) -> None:
        """Record this server so that a separate process can stop it (:func:`stop_from_pidfile`).

        Used by command-line tooling where ``start`` and ``stop`` are separate
        invocations. The file is JSON: ``pid``, ``base_url``, ``log_path``.
        """
        if self.pid is None:
            raise SandboxError("only a server started as a local process has a pid to record")
        path.parent.mkdir(parents=True, exist_ok=True)
        data = {
            "pid": self.pid,
            "base_url": self.base_url,
            "log_path": str(self.log_path) if self.log_path is not None else None,
        }
        path.write_text(json.dumps(data) + "\n", encoding="utf-8")

    def __enter__(self) -> HapiServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _pid_alive(pid: int) -> bool:
    try:
        # reap it if it happens to be our own child, so it does not linger as a zombie
        done, _ = os.waitpid(pid, os.WNOHANG)
        if done == pid:
            return False
    except ChildProcessError:
        pass
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _looks_like_our_server(pid: int) -> bool:
    """Guard against a recycled pid: on Linux, check the command line names our jar."""
    cmdline = Path(f"/proc/{pid}/cmdline")
    if not cmdline.exists():
        return True  # not Linux (or no procfs): trust the pid file
    try:
        return JAR_NAME.encode() in cmdline.read_bytes()
    except OSError:
        return False


def stop_from_pidfile(path: Path, timeout: float = 30.0) -> bool:
    """Stop a server recorded by :meth:`HapiServer.write_pidfile`, then remove the file.

    Returns True if a running server was stopped, False if there was nothing to stop
    (no file, process already gone, or the pid now belongs to another program).
    """
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        pid = int(data["pid"])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SandboxError(f"unreadable pid file {path}: {exc}") from exc

    stopped = False
    if _pid_alive(pid) and _looks_like_our_server(pid):
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while _pid_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if _pid_alive(pid):
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while _pid_alive(pid) and time.monotonic() < deadline:
                time.sleep(0.1)
        stopped = True
    path.unlink(missing_ok=True)
    return stopped


def wait_until_ready(server: HapiServer, timeout: float = 240.0, interval: float = 0.5) -> None:
    """Poll ``GET {base_url}/metadata`` until it answers 200.

    Fails fast (with the log tail) if our process exits, rather than waiting out the
    timeout: a server that cannot bind its port or build its Spring context dies early.
    """
    url = f"{server.base_url}/metadata"
    deadline = time.monotonic() + timeout
    last_error = "no response yet"
    with httpx.Client(timeout=10.0) as client:
        while True:
            if not server.is_running():
                code = server.process.poll() if server.process is not None else None
                raise SandboxError(
                    f"HAPI server exited with code {code} before {url} answered;"
                    f" log {server.log_path}:\n{server.log_tail()}"
                )
            try:
                response = client.get(url, headers={"Accept": "application/fhir+json"})
                if response.status_code == 200:
                    return
                last_error = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                last_error = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise SandboxError(
                    f"HAPI server not ready at {url} after {timeout:.0f}s ({last_error});"
                    f" log {server.log_path}:\n{server.log_tail()}"
                )
            time.sleep(interval)


def start_server(
    port: int,
    *,
    jar: Path | None = None,
    log_path: Path | None = None,
    java_opts: list[str] | None = None,
    timeout: float = 240.0,
    extra_args: Sequence[str] = (),
    detach: bool = False,
) -> HapiServer:
    """Start the sandbox jar on ``127.0.0.1:port`` and return once ``/fhir/metadata`` is 200.

    ``jar`` defaults to :func:`build_server` (which builds only if needed). ``java_opts``
    replaces :data:`DEFAULT_JAVA_OPTS`. ``extra_args`` are Spring properties such as
    ``--spring.datasource.url=jdbc:postgresql://...``. ``log_path`` defaults to a file in
    the temporary directory; the server's stdout and stderr go there, never to a pipe
    that could fill up and stall it. ``detach`` starts it in its own session so it
    outlives the calling terminal (for a CLI that stops it later via a pid file).
    """
    java = shutil.which("java")
    if java is None:
        raise SandboxError("Java ('java', 17 or newer) is not on PATH")
    if _port_in_use(port):
        raise SandboxError(f"port {port} on 127.0.0.1 is already in use")
    jar = jar if jar is not None else build_server()
    if not jar.is_file():
        raise SandboxError(f"server jar {jar} does not exist; run build_server() first")
    if log_path is None:
        fd, name = tempfile.mkstemp(prefix=f"hapi-{port}-", suffix=".log")
        os.close(fd)
        log_path = Path(name)
    log_path.parent.mkdir(parents=True, exist_ok=True)

    opts = list(java_opts) if java_opts is not None else list(DEFAULT_JAVA_OPTS)
    cmd = [
        java,
        *opts,
        "-jar",
        str(jar),
        "--server.address=127.0.0.1",
        f"--server.port={port}",
        *extra_args,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=HAPI_PROJECT_DIR,
            start_new_session=detach,
        )
    server = HapiServer(base_url=f"http://127.0.0.1:{port}/fhir", process=process, log_path=log_path)
    try:
        wait_until_ready(server, timeout=timeout)
    except BaseException:
        server.stop(timeout=10)
        raise
    return server


def docker_available() -> bool:
    """Whether a Docker engine answers, so :func:`start_container` can work."""
    try:
        import docker  # lazy: a dependency of testcontainers, unused on Docker-less machines
    except ImportError:
        return False
    try:
        client = docker.from_env(timeout=5)
        try:
            return bool(client.ping())
        finally:
            client.close()
    except Exception:  # noqa: BLE001 - any failure means "no usable engine"
        return False


def start_container(image: str = DEFAULT_IMAGE, *, timeout: float = 240.0, port: int = 8080) -> HapiServer:
    """Start the upstream ``hapiproject/hapi`` image with testcontainers (needs Docker).

    For developers with a Docker engine who do not want to build ``deploy/hapi``. The
    container is configured like our sandbox: R4, any client-assigned ids, and no reuse
    of cached search results. Not used on this project's CI, which has no Docker.
    """
    if not docker_available():
        raise SandboxError("no Docker engine is available; use build_server()/start_server()")
    from testcontainers.core.container import DockerContainer  # lazy: optional path

    container = (
        DockerContainer(image)
        .with_exposed_ports(port)
        .with_env("hapi.fhir.fhir_version", "R4")
        .with_env("hapi.fhir.client_id_strategy", "ANY")
        .with_env("hapi.fhir.server_id_strategy", "UUID")
        .with_env("hapi.fhir.reuse_cached_search_results_millis", "0")
        .with_env("hapi.fhir.allow_multiple_delete", "true")
        .with_env("hapi.fhir.expunge_enabled", "true")
    )
    container.start()
    try:
        host = container.get_container_host_ip()
        mapped = container.get_exposed_port(port)
        server = HapiServer(base_url=f"http://{host}:{mapped}/fhir", container=container)
        wait_until_ready(server, timeout=timeout, interval=1.0)
    except BaseException:
        container.stop()
        raise
    return server
