"""Issue 16: every command the README shows works as written, in order, on a fresh clone.

Which commands run: every line of every ```bash block in README.md (a line ending in ``\\``
continues on the next; blank lines and lines that are only a comment are not commands).
A new command added to a bash block is therefore run without any change here. Markers, as
a trailing shell comment so the line still copies and pastes as is:

* ``# walk-through: skip — REASON``: not run (needs what CI lacks, e.g. Docker; or it is
  this test suite). The reason is required and shown in the test's report.
* ``# walk-through: background``: started in the background and left running until every
  other command has run, then stopped (SIGTERM). A ``til-cds serve`` is waited for until
  it answers ``/healthz``.

How the commands run: each with ``bash -o pipefail -c``, in the clone's root, with no
``TIL_CDS_*`` variable set and ``til-cds`` meaning the clone's code (see ``conftest.py``
for why that is a shim and not a fresh virtualenv). Any non-zero exit fails the test with
the README line, the command and its output. The README's fixed ports are moved to free
ones (``127.0.0.1:8000`` for the service, ``:8080`` for the HAPI sandbox, and ``--port``
added to ``til-cds serve`` and ``til-cds sandbox up``), because other test runs on the
same machine may hold them; nothing else in a command is changed. Whatever happens, the
sandbox is stopped (``til-cds sandbox down``) and background commands are ended.
"""

from __future__ import annotations

import re
import subprocess
import time
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.conftest import Checkout, background, clone_checkout, wait_until_healthy
from tests.conftest import REPO, free_port

pytestmark = pytest.mark.integration

COMMAND_TIMEOUT_SECONDS = 600.0
_MARKER = re.compile(r"#\s*walk-through:\s*(?P<mode>skip|background)\b\s*[—:,-]*\s*(?P<reason>.*)$")


@dataclass(frozen=True)
class ReadmeCommand:
    line: int
    text: str
    mode: str  # "run", "skip" or "background"
    reason: str = ""


def readme_commands(markdown: str) -> list[ReadmeCommand]:
    """The shell commands of the bash blocks, in order, with their walk-through markers."""
    commands: list[ReadmeCommand] = []
    in_bash, pending, start = False, "", 0
    for number, line in enumerate(markdown.splitlines(), start=1):
        fence = line.strip()
        if fence.startswith("```"):
            in_bash = not in_bash and fence[3:].strip() in ("bash", "sh", "shell")
            continue
        if not in_bash:
            continue
        if not pending:
            start = number
            if not line.strip() or line.strip().startswith("#"):
                continue
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        text = pending + line.strip()
        pending = ""
        marker = _MARKER.search(text)
        if marker is None:
            commands.append(ReadmeCommand(start, text, "run"))
            continue
        command = text[: marker.start()].rstrip()
        commands.append(ReadmeCommand(start, command, marker["mode"], marker["reason"].strip()))
    return commands


def _on_free_ports(command: str, service_port: int, hapi_port: int) -> str:
    for host in ("127.0.0.1", "localhost"):
        command = command.replace(f"{host}:8000", f"{host}:{service_port}")
        command = command.replace(f"{host}:8080", f"{host}:{hapi_port}")
    command = re.sub(r"\btil-cds serve\b", f"til-cds serve --port {service_port}", command)
    return re.sub(r"\btil-cds sandbox up\b", f"til-cds sandbox up --port {hapi_port}", command)


def test_the_readme_commands_are_found_with_their_markers() -> None:
    """The extractor on a README-like text, and the markers of the real README."""
    sample = (
        "```bash\ntil-cds a   # a comment\n# only a comment\n\ncurl x \\\n     -d y | jq .\n"
        "til-cds serve --dev  # walk-through: background\n"
        "til-cds sandbox up --docker  # walk-through: skip — needs Docker\n```\n"
        "```yaml\nnot: a command\n```\n```\nnor this\n```\n"
    )
    assert readme_commands(sample) == [
        ReadmeCommand(2, "til-cds a   # a comment", "run"),
        ReadmeCommand(5, "curl x  -d y | jq .", "run"),
        ReadmeCommand(7, "til-cds serve --dev", "background"),
        ReadmeCommand(8, "til-cds sandbox up --docker", "skip", "needs Docker"),
    ]
    commands = readme_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert all(c.reason for c in commands if c.mode == "skip"), "a skipped line must say why"
    runs = " ".join(c.text for c in commands if c.mode == "run")
    for expected in (
        "til-cds sandbox up",
        "til-cds audit verify",
        "til-cds bench --quick",
        "--hook order-select",
    ):
        assert expected in runs


def _run(command: str, checkout: Checkout) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=checkout.root,
        env=checkout.env,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT_SECONDS,
        check=False,
    )


def test_every_readme_command_works_as_written(tmp_path: Path) -> None:
    checkout = clone_checkout(tmp_path / "til-cds")
    commands = readme_commands((checkout.root / "README.md").read_text(encoding="utf-8"))
    service_port, hapi_port = free_port(), free_port()
    transcript: list[str] = []
    with ExitStack() as cleanup:
        cleanup.callback(lambda: _run("til-cds sandbox down", checkout))
        for number, command in enumerate(commands):
            if command.mode == "skip":
                transcript.append(f"README:{command.line} skipped ({command.reason}): {command.text}")
                continue
            text = _on_free_ports(command.text, service_port, hapi_port)
            if command.mode == "background":
                log_path = tmp_path / f"background-{number}.log"
                process = cleanup.enter_context(background(text, checkout, log_path))
                if "til-cds serve" in text:
                    wait_until_healthy(f"http://127.0.0.1:{service_port}", process, log_path)
                transcript.append(f"README:{command.line} started in the background: {text}")
                continue
            started = time.monotonic()
            result = _run(text, checkout)
            transcript.append(
                f"README:{command.line} exit {result.returncode} in {time.monotonic() - started:.1f} s: {text}"
            )
            assert result.returncode == 0, (
                f"README.md line {command.line} failed (exit {result.returncode}):\n  {command.text}\n"
                f"ran as:\n  {text}\n--- stdout\n{result.stdout[-4000:]}\n--- stderr\n{result.stderr[-4000:]}\n"
                "--- so far\n" + "\n".join(transcript)
            )
    print("\n".join(transcript))
