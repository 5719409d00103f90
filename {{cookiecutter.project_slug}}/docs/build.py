"""`make docs`: what the site shows besides the pages written by hand, gathered into
docs/generated/ (git-ignored) before `zensical build`. Run from the project folder:
`python docs/build.py`.

Nothing generated is committed twice: the model card and its plots stay in models/, the Results
in README.md{% if cookiecutter.include_monitoring %}, the reports in reports/{% endif %}; this copies them in at build time, writes the API
reference from the service's OpenAPI document (asked in-process: no server, no port) and, where a
headless Chromium is installed, takes screenshots of /docs{% if cookiecutter.include_monitoring %} and of the drift report{% endif %}. A missing
input gets a page that says which command makes it, so the site always builds.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from {{ cookiecutter.package_name }}.config import Settings, get_settings
from {{ cookiecutter.package_name }}.logging_config import setup_logging
from {{ cookiecutter.package_name }}.pipeline.report import END, START

log = logging.getLogger("docs")
DOCS = Path(__file__).resolve().parent
# The README links into the repository; on the site the same files sit elsewhere.
HOME_LINKS = {
    r"\]\(docs/": "](",
    r"\]\(models/": "](generated/",
    r"\]\(notebooks/([\w-]+)\.ipynb\)": r"](generated/notebooks/\1.md)",
}
RESULTS_LINKS = {r"\]\(models/": "](", r"\]\(#": "](../index.md#"}
BROWSERS = ("chromium", "chromium-browser", "google-chrome")
API_SHOT = "api-docs.png"
{%- if cookiecutter.include_monitoring %}
DRIFT_SHOT = "drift-report.png"
REPORTS = {"drift_report.html": "Drift report", "quality_report.html": "Live quality report"}
{%- endif %}


def build(settings: Settings, docs: Path = DOCS, readme: Path = Path("README.md")) -> None:
    """Fill docs/generated/ and write docs/index.md, the README as the site's home page."""
    out = docs / "generated"
    out.mkdir(parents=True, exist_ok=True)
    text = readme.read_text(encoding="utf-8")
    (docs / "index.md").write_text(relink(text, HOME_LINKS))
    (out / "results.md").write_text("# Results\n" + relink(results(text), RESULTS_LINKS))
    model_card(settings.bundle_dir, out)
    with tempfile.TemporaryDirectory() as tmp:  # the app opens a prediction log: not the real one
        scratch = settings.prediction_log.model_copy(update={"url": f"sqlite:///{tmp}/log.db"})
        app_settings = settings.model_copy(update={"prediction_log": scratch})
        spec = openapi(app_settings)
        (out / "openapi.json").write_text(json.dumps(spec, indent=2))
        screenshots(app_settings, out)
    (out / "api.md").write_text(api_markdown(spec, screenshot=(out / API_SHOT).is_file()))
{%- if cookiecutter.include_monitoring %}
    reports(settings.monitoring.reports_dir, out)
{%- endif %}
    log.info("Wrote %s/ and %s.", out, docs / "index.md")


def results(readme: str) -> str:
    """The README's Results section: the text `make train` writes between its markers."""
    start, end = readme.find(START), readme.find(END)
    if start < 0 or end < start:
        return f"\nNo {START} ... {END} markers in README.md: `make train` writes them.\n"
    return readme[start + len(START) : end]


def model_card(models: Path, out: Path) -> None:
    """The model card and its plots."""
    card = models / "model_card.md"
    if not card.is_file():
        (out / card.name).write_text("# Model card\n\nNo model yet: run `make train`.\n")
        return
    for plot in models.glob("*.png"):
        shutil.copy2(plot, out / plot.name)
    shutil.copy2(card, out / card.name)
{%- if cookiecutter.include_monitoring %}


def reports(directory: Path, out: Path) -> None:
    """The latest reports of `make monitor`, whole, and the drift summary as a table."""
    lines = ["# Monitoring reports", ""]
    for name, title in REPORTS.items():
        report = directory / name
        (out / name).unlink(missing_ok=True)  # an old copy must not pass for the latest
        if report.is_file():
            shutil.copy2(report, out / name)
            lines.append(f"- [{title}]({name}) (made {_modified(report)})")
    summary = directory / "drift_summary.json"
    if summary.is_file():
        drift = json.loads(summary.read_text())
        lines += ["", "| drift summary | |", "|---|---|"]
        for key, value in drift.items():
            if isinstance(value, list):
                lines.append(f"| {key} | {', '.join(map(str, value)) or 'none'} |")
            elif not isinstance(value, dict):
                lines.append(f"| {key} | {value} |")
    if len(lines) == 2:
        lines.append("No report yet: `make serve`, then `make simulate` and `make monitor`.")
    if (out / DRIFT_SHOT).is_file():
        lines += ["", f"![The drift report]({DRIFT_SHOT})"]
    (out / "monitoring.md").write_text("\n".join(lines) + "\n")
{%- endif %}


def openapi(settings: Settings) -> dict[str, Any]:
    """The OpenAPI document of the app with the model loaded (the request model comes from the
    bundle's schema, in the lifespan), asked in-process: no server."""
    from fastapi.testclient import TestClient

    from {{ cookiecutter.package_name }}.serving.app import create_app

    with TestClient(create_app(settings)) as client:
        spec: dict[str, Any] = client.get("/openapi.json").json()
    return spec


def api_markdown(spec: dict[str, Any], screenshot: bool = False) -> str:
    """Each route with its body and answers, then each schema as a table of its fields."""
    info = spec["info"]
    lines = [
        "# API reference",
        "",
        f"`{info['title']}` {info['version']}. Written by `make docs` from the service's "
        "[OpenAPI document](openapi.json); a running service shows it at `/docs`.",
    ]
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            lines += ["", f"## {method.upper()} {path}", "", op.get("description", op["summary"])]
            body = op.get("requestBody", {}).get("content", {}).get("application/json")
            if body:
                lines += ["", f"**Body**: {_type(body['schema'])}"]
            lines += ["", "| answer | meaning | body |", "|---|---|---|"]
            for status, answer in op["responses"].items():
                schema = answer.get("content", {}).get("application/json", {}).get("schema")
                lines.append(f"| {status} | {answer['description']} | {_type(schema or {})} |")
    lines += ["", "## Schemas"]
    for name, schema in spec["components"]["schemas"].items():
        required = set(schema.get("required", []))
        lines += ["", f"### {name}", "", schema.get("description", ""), ""]
        lines += ["| field | type | required | description |", "|---|---|---|---|"]
        for field, prop in schema.get("properties", {}).items():
            text = prop.get("description", "").replace("|", "\\|")
            needed = "yes" if field in required else ""
            lines.append(f"| `{field}` | {_type(prop)} | {needed} | {text} |")
    if screenshot:
        lines += ["", "## /docs of the running service", "", f"![/docs]({API_SHOT})"]
    return "\n".join(lines) + "\n"


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        return f"[{name}](#{name.lower()})"  # the heading's anchor
    if "anyOf" in schema:
        return " or ".join(_type(option) for option in schema["anyOf"])
    if schema.get("type") == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if "enum" in schema:
        return " or ".join(f"`{value}`" for value in schema["enum"])
    return str(schema.get("type", ""))


def screenshots(settings: Settings, out: Path) -> None:
    """/docs of the service (started on a free port, then stopped){% if cookiecutter.include_monitoring %} and the drift report{% endif %}."""
{%- if cookiecutter.include_monitoring %}
    for shot in (API_SHOT, DRIFT_SHOT):
        (out / shot).unlink(missing_ok=True)
{%- else %}
    (out / API_SHOT).unlink(missing_ok=True)
{%- endif %}
    browser = next(filter(None, map(shutil.which, BROWSERS)), None)
    if browser is None:
        log.info("No headless Chromium (%s): the site has no screenshots.", ", ".join(BROWSERS))
        return
    import uvicorn

    from {{ cookiecutter.package_name }}.serving.app import create_app
    from {{ cookiecutter.package_name }}.serving.process import free_port

    port = free_port("127.0.0.1")
    server = uvicorn.Server(uvicorn.Config(create_app(settings), port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        while not server.started and thread.is_alive():
            time.sleep(0.1)
        shoot(browser, f"http://127.0.0.1:{port}/docs", out / API_SHOT)
    finally:
        server.should_exit = True
        thread.join()
{%- if cookiecutter.include_monitoring %}
    report = settings.monitoring.reports_dir / "drift_report.html"
    if report.is_file():
        shoot(browser, report.resolve().as_uri(), out / DRIFT_SHOT)
{%- endif %}


def shoot(browser: str, url: str, png: Path) -> None:
    """A screenshot is a nice-to-have: a browser that fails is logged, not a failed build. Whole
    pages only: headless shots of a #fragment come out blank or scrolled."""
    with tempfile.TemporaryDirectory() as profile:
        command = [
            browser,
            *("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"),
            *("--disable-background-networking", "--disable-component-update"),
            *("--disable-sync", "--no-first-run", f"--user-data-dir={profile}"),
            *("--window-size=1280,900", "--virtual-time-budget=15000"),
            f"--screenshot={png.resolve()}",
            url,
        ]
        try:
            done = subprocess.run(command, check=False, capture_output=True, timeout=120)
            error = done.stderr.decode(errors="replace")[-300:].strip()
        except (OSError, subprocess.TimeoutExpired) as exc:
            error = str(exc)
    if png.is_file():
        log.info("Screenshot of %s -> %s", url, png)
    else:
        log.warning("No screenshot of %s: %s", url, error)


def relink(text: str, links: dict[str, str]) -> str:
    for pattern, replacement in links.items():
        text = re.sub(pattern, replacement, text)
    return text
{%- if cookiecutter.include_monitoring %}


def _modified(path: Path) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(path.stat().st_mtime))
{%- endif %}


if __name__ == "__main__":
    setup_logging()
    build(get_settings())
