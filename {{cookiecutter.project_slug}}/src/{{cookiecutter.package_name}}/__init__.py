"""{{ cookiecutter.project_name }}: the package behind `make data`, `make train` and `make serve`."""

__version__ = "0.1.0"
