"""Check the answers before anything is generated.

A bad answer stops the bake with one line that says what is wrong and what would work.
"""

import json
import keyword
import re
import sys

# Every answer, with its real type (booleans stay booleans). Single quotes: the JSON has double.
ANSWERS = json.loads(r'{{ cookiecutter | tojson }}')  # fmt: skip
# The same lists as cookiecutter.json (tests/test_hooks.py checks that they agree).
CHOICES = {
    "python_version": ["3.11", "3.12", "3.13"],
    "task": ["classification", "regression"],
    "model_family": ["hist_gradient_boosting", "random_forest", "linear"],
    "ci": ["github", "gitlab", "none"],
    "orchestrator": ["prefect", "none"],
    "deploy": ["render", "cloudrun", "huggingface", "none"],
    "license": ["MIT", "Apache-2.0", "BSD-3-Clause", "Proprietary"],
}
SWITCHES = ["include_docker", "include_monitoring"]

SLUG = re.compile(r"[a-z][a-z0-9-]*")
PACKAGE = re.compile(r"[a-z][a-z0-9_]*")
# A GitHub user or organisation, or a GitLab namespace (which may have subgroups: group/team).
NAME = r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?"
OWNER = re.compile(rf"{NAME}(?:/{NAME})*")
# The top-level import names of every distribution a generated project installs, with all
# extras; a package of the same name would hide one of them. tests/test_hooks.py recomputes them
# from a full install and names any that a new dependency adds.
DEPENDENCIES = {
    "aiohappyeyeballs", "aiohttp", "aiosignal", "aiosqlite", "alembic", "amplitude",
    "annotated_doc", "annotated_types", "anyio", "appdirs", "apprise", "asgi_lifespan",
    "ast_serialize", "asttokens", "async_timeout", "asyncpg", "attr", "attrs", "beartype",
    "bleach", "blinker", "bs4", "burner_redis", "cachetools", "certifi", "cffi", "cfgv",
    "charset_normalizer", "click", "cloudpickle", "colorama", "comm", "contourpy", "coolname",
    "coverage", "cronsim", "cryptography", "cycler", "cyclopts", "databricks", "dateparser",
    "dateparser_cli", "dateparser_data", "dateparser_scripts", "dateutil", "debugpy", "deepmerge",
    "defusedxml", "deprecation", "distlib", "distro", "docker", "docket", "docstring_parser",
    "dotenv", "dynaconf", "evidently", "exceptiongroup", "executing", "faker", "fastapi",
    "fastjsonschema", "filelock", "flask", "flask_cors", "flatbuffers", "formulaic", "frozenlist",
    "fsspec", "git", "gitdb", "google", "graphene", "graphql", "graphql_relay", "graphviz",
    "greenlet", "griffe", "griffecli", "gunicorn", "h11", "h2", "hpack", "httpcore", "httpcore2",
    "httptools", "httpx", "httpx2", "huey", "humanize", "hyperframe", "identify", "idna",
    "importlib_metadata", "iniconfig", "interface_meta", "ipykernel", "ipykernel_launcher",
    "ipython_pygments_lexers", "iterative_telemetry", "itsdangerous", "jedi", "jinja2",
    "jinja2_humanize_extension", "joblib", "jsonpatch", "jsonpatch_cli", "jsonpointer",
    "jsonschema", "jsonschema_specifications", "jupyter", "jupyter_client", "jupyter_core",
    "jupyterlab_plotly", "jupyterlab_pygments", "key_value", "kiwisolver", "librt", "litestar",
    "litestar_htmx", "mako", "markdown", "markdown_it", "markupsafe", "matplotlib",
    "matplotlib_inline", "mdurl", "mistune", "ml_dtypes", "mlflow", "mpl_toolkits", "msgspec",
    "multidict", "multipart", "mypy", "mypy_extensions", "mypyc", "narwhals", "nbclient",
    "nbconvert", "nbformat", "nbstripout", "nest_asyncio2", "nltk", "nodeenv", "numpy", "oauthlib",
    "onnx", "onnxruntime", "opentelemetry", "orjson", "packaging", "pandas", "pandocfilters",
    "parso", "pathspec", "patsy", "pendulum", "pexpect", "platformdirs", "plotly", "pluggy",
    "polyfactory", "pre_commit", "prefect", "prettytable", "prometheus_client", "prompt_toolkit",
    "propcache", "psutil", "psycopg", "psycopg_binary", "ptyprocess", "pure_eval", "py", "pyarrow",
    "pyasn1", "pyasn1_modules", "pycparser", "pydantic", "pydantic_core", "pydantic_extra_types",
    "pydantic_settings", "pygments", "pylab", "pymdownx", "pyparsing", "pytest", "pytest_cov",
    "python_discovery", "pythonjsonlogger", "pytz", "readchar", "redis", "referencing", "regex",
    "requests", "requests_oauthlib", "rfc3339_validator", "rich", "rich_click", "rich_rst", "rpds",
    "ruamel", "ruff", "scipy", "semver", "shellingham", "six", "skl2onnx", "sklearn", "skops",
    "slugify", "smmap", "sniffio", "soupsieve", "sqlalchemy", "sqlparse", "stack_data",
    "starlette", "statsmodels", "swagger_ui_bundle", "tenacity", "text_unidecode", "threadpoolctl",
    "tinycss2", "toml", "tomli", "tornado", "tqdm", "traitlets", "truststore", "typer",
    "typing_extensions", "typing_inspect", "typing_inspection", "tzdata", "tzlocal", "ujson",
    "uncalled_for", "urllib3", "uuid6", "uvicorn", "uvloop", "vendor_licenses", "virtualenv",
    "watchdog", "watchfiles", "wcwidth", "webencodings", "websockets", "werkzeug", "whenever",
    "wrapt", "yaml", "yarl", "zensical", "zipp", "zmq",
}  # fmt: skip
# pytest and the tools expect the project's test folder under these names.
TEST_FOLDERS = {"test", "tests"}


def find_problem() -> str | None:
    """Return what is wrong with the answers, or None when they are all fine."""
    slug, package = ANSWERS["project_slug"], ANSWERS["package_name"]
    if not str(ANSWERS["project_name"]).strip():
        return "project_name is empty: give the project a name, e.g. 'Churn Predictor'."
    if not SLUG.fullmatch(slug):
        return (
            f"project_slug {slug!r} is not valid: use lowercase letters, digits and dashes, "
            "starting with a letter, e.g. 'churn-predictor'."
        )
    if not PACKAGE.fullmatch(package):
        return (
            f"package_name {package!r} is not valid: use lowercase letters, digits and "
            "underscores, starting with a letter, e.g. 'churn_predictor'."
        )
    if keyword.iskeyword(package):
        return (
            f"package_name {package!r} is a Python keyword and cannot be imported: "
            f"pick another name, e.g. '{package}_model'."
        )
    if package in sys.stdlib_module_names or package in DEPENDENCIES | TEST_FOLDERS:
        return (
            f"package_name {package!r} would hide the module of the same name that Python or "
            f"the project needs: pick another name, e.g. '{package}_model'."
        )
    if "@" not in str(ANSWERS["author_email"]):
        return f"author_email {ANSWERS['author_email']!r} has no '@': use e.g. 'you@example.com'."
    owner = str(ANSWERS["repository_owner"])
    if not OWNER.fullmatch(owner):
        return (
            f"repository_owner {owner!r} is not a GitHub/GitLab user or organisation name: use "
            "letters, digits and dashes, e.g. 'ada-lovelace'."
        )
    return option_problem()


def option_problem() -> str | None:
    """What is wrong with the choices and yes/no answers, alone or together."""
    for name, allowed in CHOICES.items():
        if ANSWERS[name] not in allowed:
            choices = ", ".join(allowed)
            return f"{name} {ANSWERS[name]!r} is not one of the choices: use one of {choices}."
    for name in SWITCHES:
        if not isinstance(ANSWERS[name], bool):
            return f"{name} {ANSWERS[name]!r} is not a yes/no answer: use true or false."
    if ANSWERS["deploy"] != "none" and not ANSWERS["include_docker"]:
        return (
            f"deploy {ANSWERS['deploy']!r} ships the container image, and include_docker is no: "
            "answer include_docker=yes, or deploy=none."
        )
    if ANSWERS["orchestrator"] != "none" and not ANSWERS["include_monitoring"]:
        return (
            f"orchestrator {ANSWERS['orchestrator']!r} runs the monitoring loop, and "
            "include_monitoring is no: answer include_monitoring=yes, or orchestrator=none."
        )
    return None


if __name__ == "__main__":
    problem = find_problem()
    if problem:
        print(f"ERROR: {problem}", file=sys.stderr)
        sys.exit(1)
