"""A Spark standalone cluster on loopback: one master and two one-core workers from the PySpark installation."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import pyspark

from service.sandbox.hapi import free_port

SPARK_HOME = Path(pyspark.__file__).parent
REPO = Path(__file__).resolve().parents[2]


def _start(log: Path, *args: str) -> subprocess.Popen[bytes]:
    env = {
        **os.environ,
        "SPARK_HOME": str(SPARK_HOME),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "PYSPARK_PYTHON": sys.executable,
        "PYTHONPATH": str(REPO),
        "SPARK_NO_DAEMONIZE": "1",
    }
    with log.open("wb") as handle:
        return subprocess.Popen(
            [str(SPARK_HOME / "bin" / "spark-class"), *args],
            stdout=handle,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )


def _stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)


def _alive_workers(ui_port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{ui_port}/json/", timeout=2) as response:
            return int(json.load(response).get("aliveworkers", 0))
    except OSError:
        return 0


@contextmanager
def standalone_cluster(directory: Path, workers: int = 2, timeout: float = 120) -> Iterator[str]:
    """Yield the master URL once ``workers`` workers have registered; stop every process after."""
    port, ui_port = free_port(), free_port()
    master_url = f"spark://127.0.0.1:{port}"
    with ExitStack() as stack:
        master = _start(
            directory / "master.log",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui_port),
        )
        stack.callback(_stop, master)
        for number in range(workers):
            work_dir = directory / f"worker-{number}"
            work_dir.mkdir()
            worker = _start(
                directory / f"worker-{number}.log",
                "org.apache.spark.deploy.worker.Worker",
                master_url,
                "--host",
                "127.0.0.1",
                "--cores",
                "1",
                "--memory",
                "1g",
                "--webui-port",
                str(free_port()),
                "--work-dir",
                str(work_dir),
            )
            stack.callback(_stop, worker)
        deadline = time.monotonic() + timeout
        while _alive_workers(ui_port) < workers:
            if time.monotonic() > deadline or master.poll() is not None:
                logs = "\n".join(
                    p.read_text(errors="replace")[-2000:] for p in sorted(directory.glob("*.log"))
                )
                raise RuntimeError(f"the Spark cluster did not come up within {timeout:g} s:\n{logs}")
            time.sleep(1)
        yield master_url
