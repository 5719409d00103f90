"""The docs site's promises: code links that resolve, a code tour that lists every module as it
describes itself, notebooks that run on a learner's messy data, an API reference that shows the
features, and a build that always finishes."""

from __future__ import annotations

import ast
import importlib.util
import re
from pathlib import Path
from types import ModuleType

import nbformat
import pytest
from nbclient import NotebookClient

from {{ cookiecutter.package_name }}.config import Settings
from {{ cookiecutter.package_name }}.pipeline.data import prepare

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "{{ cookiecutter.package_name }}"
# The pages written by hand: docs/ without what `make docs` generates, and the README.
PAGES = [
    page
    for page in [*(ROOT / "docs").rglob("*.md"), ROOT / "README.md"]
    if "generated" not in page.parts and page != ROOT / "docs" / "index.md"
]
# A link into this repository, as GitHub or GitLab writes it: .../blob/<branch>/<path>
CODE_LINK = re.compile(r"https://[^\s)]+?/(?:-/)?(?:blob|tree)/[^/\s)]+/([^\s)#]+)")
# A relative link between pages: [text](path.md) or [text](path.md#anchor)
PAGE_LINK = re.compile(r"\]\((?!https?:|#|mailto:)([^)\s#]+)")


def docs_build() -> ModuleType:
    """docs/build.py is a script beside the pages, not part of the package: load it by path."""
    spec = importlib.util.spec_from_file_location("docs_build", ROOT / "docs" / "build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def code_links(page: Path) -> list[str]:
    return CODE_LINK.findall(page.read_text())


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_points_at_a_file_of_the_project(page: Path) -> None:
    missing = [path for path in code_links(page) if not (ROOT / path).exists()]
    missing += [
        link
        for link in PAGE_LINK.findall(page.read_text())
        if not (page.parent / link).exists() and not link.startswith("generated/")
    ]
    assert not missing, f"{page.name} links to files that do not exist: {missing}"


def test_there_are_at_least_eight_decision_records_and_each_links_its_code() -> None:
    records = sorted((ROOT / "docs" / "decisions").glob("0*.md"))
    assert len(records) >= 8
    for record in records:
        text = record.read_text()
        for heading in (
            "## Context",
            "## Decision",
            "## Alternatives",
            "## Consequences",
            "## How to explain it in two minutes",
            "## Code",
        ):
            assert heading in text, f"{record.name} has no {heading!r}"
        assert code_links(record), f"{record.name} links no code"


def test_the_code_tour_lists_every_module_once_as_it_describes_itself() -> None:
    tour = (ROOT / "docs" / "code-tour.md").read_text()
    listed = [p for p in code_links(ROOT / "docs" / "code-tour.md") if p.endswith(".py")]
    modules = sorted(str(p.relative_to(ROOT)) for p in PACKAGE.rglob("*.py"))
    assert sorted(listed) == modules
    for module in PACKAGE.rglob("*.py"):
        docstring = ast.get_docstring(ast.parse(module.read_text())) or ""
        first = " ".join(docstring.split("\n\n")[0].split()).split(". ")[0].rstrip(".:")
        assert first and first in " ".join(tour.split()), f"the tour misquotes {module.name}"


def test_the_api_reference_lists_every_feature(settings: Settings, bundle_dir: Path) -> None:
    build = docs_build()
    page = build.api_markdown(build.openapi(settings))
    for feature in ("age", "visits", "plan", "score"):
        assert f"| `{feature}` |" in page
    assert "## POST /predict" in page


@pytest.mark.parametrize(
    "notebook", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name
)
def test_the_notebook_runs_on_messy_data(
    notebook: Path, settings: Settings, bundle_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Missing numbers, a category with gaps: the fixture's data, as `make data` and a trained
    bundle leave it; the kernel starts in the settings' folder and imports this source tree."""
    prepare(settings)
    monkeypatch.setenv("PYTHONPATH", str(ROOT / "src"))
    nb = nbformat.read(notebook, as_version=4)
    assert all(not cell.get("outputs") for cell in nb.cells), "stored with outputs: nbstripout"
    NotebookClient(nb, timeout=300, resources={"metadata": {"path": str(Path.cwd())}}).execute()


def test_build_fills_docs_generated_from_what_the_stages_left(
    settings: Settings,
    bundle_dir: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)  # no Chromium: no screenshots
    Path("README.md").write_text(
        "# P\n[why](docs/decisions/x.md)\n<!-- results:start -->\n"
        "![roc](models/roc.png) [own data](#use-your-own-data)\n<!-- results:end -->\n"
    )
    docs_build().build(settings, tmp_path / "docs")

    out = tmp_path / "docs" / "generated"
    assert "[why](decisions/x.md)" in (tmp_path / "docs" / "index.md").read_text()
    results = (out / "results.md").read_text()
    assert "![roc](roc.png)" in results
    assert "[own data](../index.md#use-your-own-data)" in results
    assert "run `make train`" in (out / "model_card.md").read_text()
{%- if cookiecutter.include_monitoring %}
    assert "No report yet" in (out / "monitoring.md").read_text()
{%- endif %}
    assert "| `age` |" in (out / "api.md").read_text()
    assert not (out / "api-docs.png").exists()
