"""The demo loop with a real server process on a free port and real HTTP traffic."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import pytest

import {{ cookiecutter.package_name }}
from {{ cookiecutter.package_name }} import demo as demo_module
from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.prediction_log.reader import Reader
{%- if not cookiecutter.include_monitoring %}
from {{ cookiecutter.package_name }}.processed import read_split
{%- endif %}

{%- if not cookiecutter.include_monitoring %}


def skip_training(settings: Settings) -> None:
    """Training has its own tests; here the `bundle_dir` fixture's model (same data) serves."""
    split, schema = read_split(settings.data.processed_dir)
    rows = json.loads(split.test[schema.names].head(5).to_json(orient="records"))
    (settings.bundle_dir / "sample_request.json").write_text(json.dumps({"instances": rows}))
{%- endif %}


def test_demo_runs_the_whole_loop(
    settings: Settings,
    bundle_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
{%- if not cookiecutter.include_monitoring %}
    monkeypatch.setattr(demo_module, "train", skip_training)
{%- endif %}
    # The server is `python -m <package>` in a new process: it must find the package.
    monkeypatch.setenv("PYTHONPATH", str(Path({{ cookiecutter.package_name }}.__file__).parents[1]))
    caplog.set_level(logging.INFO)

    demo_module.demo(settings)

    assert "Demo done" in caplog.text
    assert "Service stopped" in caplog.text
    logged = Reader(settings.prediction_log.url).latest(10_000)
    assert len(logged) > 0  # the server logged the traffic and flushed it on SIGTERM
{%- if cookiecutter.include_monitoring %}
    assert "No drift" in caplog.text  # the report on normal traffic
    summary = json.loads((settings.monitoring.reports_dir / "drift_summary.json").read_text())
    assert summary["drift_detected"]  # the report on drifted traffic
    assert "Expected" not in caplog.text
    # the lifecycle: a challenger in the shadow, compared, promoted, rolled back, each reloaded
    assert "The service shadows challenger v2." in caplog.text
    compared = json.loads((settings.monitoring.reports_dir / "compare_summary.json").read_text())
    assert compared["challenger"]["rows"] == compared["paired_rows"] > 0
    assert "Promoted: the service answers with v2." in caplog.text
    assert "Rolled back: the service answers with v1 again." in caplog.text
{%- else %}
    assert "POST /predict" in caplog.text
{%- endif %}


def test_a_server_that_dies_is_reported() -> None:
    server = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])

    with pytest.raises(demo_module.DemoError, match="exited with code 3"):
        demo_module._wait_until_ready("http://127.0.0.1:9", server)
