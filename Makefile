# mle-starter: tasks of the template itself. `make help` lists them.
.DEFAULT_GOAL := help
SHELL := /bin/bash

VENV := .venv
UV := $(shell command -v uv 2>/dev/null || echo $(VENV)/bin/uv)
K ?=
ARGS ?=
ANSWERS ?=

.PHONY: help venv test lint bake demo bench faults lock clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | \
		awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-8s\033[0m %s\n", $$1, $$2}'

$(VENV)/.installed: tests/requirements.txt
	@if command -v uv >/dev/null 2>&1; then \
		uv venv --allow-existing --python python3 $(VENV); \
	else \
		python3 -m venv $(VENV) && $(VENV)/bin/pip install --quiet uv; \
	fi
	$(UV) pip install --python $(VENV)/bin/python --compile-bytecode -r tests/requirements.txt
	touch $@

venv: $(VENV)/.installed ## Create .venv with the template's test tools

test: venv ## Run the template's test suite (K="bake or hooks" selects, ARGS="-m e2e" passes on)
	$(VENV)/bin/pytest tests --durations=15 $(if $(K),-k "$(K)") $(ARGS)

lint: venv ## Ruff on the hooks and the tests
	$(VENV)/bin/ruff check hooks tests
	$(VENV)/bin/ruff format --check hooks tests

bake: venv ## Bake the default project into build/bake/ (ANSWERS="task=regression ci=gitlab")
	rm -rf build/bake
	$(VENV)/bin/cookiecutter --no-input -o build/bake . $(ANSWERS)
	@echo "Baked: $$(ls -d build/bake/*/)"

demo: venv ## Bake the default project into build/demo/ and run its whole loop
	rm -rf build/demo
	$(VENV)/bin/cookiecutter --no-input -o build/demo . $(ANSWERS)
	cd build/demo/*/ && $(MAKE) install && $(MAKE) demo

bench: venv ## Benchmark the default bake: serving vs a bare floor vs mlflow serve, start-up, footprint, scaling (BENCH_ARGS=--quick)
	$(VENV)/bin/python benchmarks/bench.py $(BENCH_ARGS)

faults: venv ## The prediction log under faults (database down, full, deleted; a worker killed): answered vs logged (FAULTS_ARGS=--quick)
	$(VENV)/bin/python benchmarks/faults.py $(FAULTS_ARGS)

lock: venv ## Re-lock the generated image's packages (requirements/serve.txt) from a default bake
	rm -rf build/lock
	$(VENV)/bin/cookiecutter --no-input -o build/lock .
	$(MAKE) -C build/lock/*/ lock UV=$(abspath $(UV))
	sed 's/--python-version [0-9.]*/--python-version {{ cookiecutter.python_version }}/' \
		build/lock/*/requirements/serve.txt > '{{cookiecutter.project_slug}}/requirements/serve.txt'

clean: ## Remove build/ and caches (keeps .venv)
	rm -rf build .pytest_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
