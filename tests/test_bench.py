"""The benchmark script (`make bench`) runs end to end in --quick mode and writes its table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import TEMPLATE

BENCH = TEMPLATE / "benchmarks" / "bench.py"


@pytest.mark.e2e
def test_bench_quick_measures_every_section(generated_python: Path, tmp_path: Path) -> None:
    out = tmp_path / "results"
    command = [
        sys.executable, str(BENCH), "--quick", "--venv", str(generated_python.parent.parent),
        "--work", str(tmp_path / "work"), "--out", str(out),
    ]  # fmt: skip
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    assert done.returncode == 0, done.stderr[-4000:]

    results = json.loads((out / "latest.json").read_text())
    assert results["unavailable"] == {}
    assert {"generated", "floor", "floor_sklearn", "litserve"} <= set(results["serving"])
    assert results["meta"]["predictions_agree"]
    for name, server in results["serving"].items():
        for kind, load in server["loads"].items():
            assert load["requests"] > 0, (name, kind)
            assert load["http_errors"] + load["socket_errors"] == 0, (name, kind, load)
        assert server["rss_mb"] > 0, name
    assert results["startup"]["generated"]
    assert 0 < results["footprint"]["ratio"] < 1
    assert results["footprint"]["serve_heavy_modules"] == ""  # no sklearn, scipy, pandas, skops
    assert results["busy"]["train_s"] > 0
    assert [run["rows"] for run in results["scaling"]["runs"]] == [300, 1000]
    assert all(run["train_peak_mb"] > 0 for run in results["scaling"]["runs"])

    table = (out / "latest.md").read_text()
    assert done.stdout == table
    assert "generated / floor (onnxruntime) throughput" in table
    assert "generated / floor (sklearn) throughput" in table
