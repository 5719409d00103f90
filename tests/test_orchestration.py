"""The scale-out files of the default bake are valid, checked offline (no cluster, no server):
prefect.yaml as Prefect reads it, its flows, its job variables and schedules, and the Helm values
of the prefect-worker chart. The chart's schema is vendored in tests/schemas/ (see its README)."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import yaml

from helpers import TEMPLATE, tool
from test_generated_suite import generated_env

# Run in the bake's environment, which has Prefect (the template's own has not).
CHECK_PREFECT_YAML = """
import json, jsonschema, yaml
from prefect.cli.deploy._models import PrefectYamlModel  # private: Prefect is pinned >=3.9.1,<4
from prefect.flows import load_flow_from_entrypoint

spec = yaml.safe_load(open("prefect.yaml"))
model = PrefectYamlModel.model_validate(spec)
assert [d.name for d in model.deployments] == ["training", "monitoring"], model.deployments
for deployment in model.deployments:
    assert load_flow_from_entrypoint(deployment.entrypoint).name == deployment.name
variables = json.load(open("deploy/prefect/base-job-template.json"))["variables"]
for deployment in spec["deployments"]:
    job = deployment["work_pool"]["job_variables"]
    assert set(job) <= set(variables["properties"]), set(job) - set(variables["properties"])
    jsonschema.validate(job, variables)
"""


def test_prefect_yaml_loads_its_flows_and_the_job_template_knows_its_variables(
    default_project: Path, generated_python: Path
) -> None:
    done = subprocess.run(
        [str(generated_python), "-c", CHECK_PREFECT_YAML],
        cwd=default_project,
        env={**generated_env(), "PYTHONPATH": str(default_project / "src")},
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_the_deployments_run_on_the_crons_of_config_yaml(default_project: Path) -> None:
    config = yaml.safe_load((default_project / "config.yaml").read_text())["orchestration"]
    spec = yaml.safe_load((default_project / "prefect.yaml").read_text())
    crons = {d["name"]: d["schedules"][0]["cron"] for d in spec["deployments"]}
    assert crons == {"training": config["training_cron"], "monitoring": config["monitoring_cron"]}


def test_the_worker_values_match_the_prefect_worker_chart(
    default_project: Path, tmp_path: Path
) -> None:
    prefect = default_project / "deploy" / "prefect"
    values = yaml.safe_load((prefect / "worker-values.yaml").read_text())
    # What `--set-file worker.config.baseJobTemplate.configuration=...` adds at install.
    template = (prefect / "base-job-template.json").read_text()
    values["worker"]["config"]["baseJobTemplate"] = {"configuration": template}
    merged = tmp_path / "values.json"
    merged.write_text(json.dumps(values))
    schema = TEMPLATE / "tests" / "schemas" / "prefect-worker.values.schema.json"
    done = subprocess.run(
        [tool("check-jsonschema"), "--schemafile", str(schema), str(merged)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
