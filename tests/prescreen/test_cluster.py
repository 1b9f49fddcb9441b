"""Issue 18: the same job on a real Spark standalone cluster (a master and two workers on loopback)."""

from __future__ import annotations

from pathlib import Path

from .cluster import standalone_cluster
from .conftest import prescreen


def test_a_standalone_cluster_writes_the_same_worklist_as_local_spark(
    export_dir: Path, prescreen_out: Path, tmp_path: Path
) -> None:
    """Byte-identical outputs also show that a rerun with the same inputs and time changes nothing."""
    logs = tmp_path / "cluster"
    logs.mkdir()
    with standalone_cluster(logs) as master:
        out = tmp_path / "out"
        prescreen(export_dir, out, "--master", master)
    assert "app-" in "".join(p.name for p in (logs / "worker-0").iterdir()), "worker 0 ran no executor"
    assert "app-" in "".join(p.name for p in (logs / "worker-1").iterdir()), "worker 1 ran no executor"
    for name in ("worklist.parquet", "worklist.csv", "summary.html"):
        assert (out / name).read_bytes() == (prescreen_out / name).read_bytes(), name
