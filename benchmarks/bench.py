"""Benchmark the default bake of the template: serving, start-up, footprint, pipeline, demo.

Bakes the template into a scratch folder, installs and trains it, then measures (one run, side
by side, on this machine) and prints one table; the results go to results/latest.json and
results/latest.md. See README.md beside this file for what each number means.

    python benchmarks/bench.py            # full run (~6-10 min on 2 idle cores)
    python benchmarks/bench.py --quick    # smoke test: tiny sizes, 1 s loads (~1 min)
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import platform
import shutil
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import project as proj
import report
import serving
from procs import StepError

log = logging.getLogger("bench")
HERE = Path(__file__).resolve().parent
SECTIONS = (
    "serving", "mlflow", "litserve", "threads", "startup", "footprint", "busy", "scaling", "demo",
)  # fmt: skip
FULL_SIZES = (10_000, 100_000, 1_000_000)
QUICK_SIZES = (300, 1_000)
# Quick mode trains with a 1-candidate, 2-fold search so the smoke test stays short.
QUICK_TRAIN_ENV = {"ML_MODEL__N_ITER": "1", "ML_MODEL__CV": "2"}
ONE_THREAD = {"OMP_NUM_THREADS": "1"}
# Thread settings a user's shell may carry; removed so "default" means the libraries' default.
THREAD_VARIABLES = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@dataclass(frozen=True)
class Options:
    template: Path
    work: Path
    out: Path
    quick: bool
    plan: serving.LoadPlan
    sizes: tuple[int, ...]
    skip: frozenset[str]
    startup_runs: int
    venv: Path | None
    keep: bool

    @property
    def train_env(self) -> dict[str, str]:
        return dict(QUICK_TRAIN_ENV) if self.quick else {}


def parse_args(argv: list[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add = parser.add_argument
    add("--quick", action="store_true", help="smoke test: tiny sizes, short loads, no mlflow/demo")
    add("--duration", type=int, help="seconds per throughput run (default 10, quick 1)")
    add("--connections", type=int, default=16, help="concurrent connections (default 16)")
    add("--batch-rows", type=int, default=100, help="rows per batch request (default 100)")
    add("--sizes", help="pipeline row counts, comma-separated (default 10000,100000,1000000)")
    add("--skip", default="", help=f"comma-separated sections to skip: {','.join(SECTIONS)}")
    add("--startup-runs", type=int, help="start-up samples per server (default 3, quick 1)")
    add("--template", type=Path, default=HERE.parent, help="template to bake (default: this repo)")
    add("--out", type=Path, help="results folder (default results/, quick: results/quick/)")
    add("--work", type=Path, help="scratch folder (default: a new temporary one)")
    add("--venv", type=Path, help="use this virtualenv (all extras) instead of `make install`")
    add("--keep", action="store_true", help="keep the scratch folder")
    args = parser.parse_args(argv)
    quick = args.quick
    duration = args.duration or (1 if quick else 10)
    plan = serving.LoadPlan(
        connections=args.connections,
        duration=duration,
        latency_duration=max(1, duration // 2),
        warmup=1 if quick else 3,
        batch_rows=args.batch_rows,
    )
    sizes = tuple(int(s) for s in args.sizes.split(",")) if args.sizes else None
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    if unknown := skip - set(SECTIONS):
        parser.error(f"unknown --skip section(s) {sorted(unknown)}: choose from {SECTIONS}")
    if quick:
        skip |= {"mlflow", "threads", "demo"}
    work = args.work or Path(tempfile.mkdtemp(prefix="mle-bench-"))
    return Options(
        template=args.template.resolve(),
        work=work.resolve(),
        out=(args.out or HERE / "results" / ("quick" if quick else "")).resolve(),
        quick=quick,
        plan=plan,
        sizes=sizes or (QUICK_SIZES if quick else FULL_SIZES),
        skip=frozenset(skip),
        startup_runs=args.startup_runs or (1 if quick else 3),
        venv=args.venv,
        keep=args.keep or args.work is not None,
    )


def base_env() -> dict[str, str]:
    """This process's environment without settings that would change what is measured."""
    dropped = {"CONFIG_FILE", "MLFLOW_TRACKING_URI", "VIRTUAL_ENV", *THREAD_VARIABLES}
    env = {k: v for k, v in os.environ.items() if k not in dropped and not k.startswith("ML_")}
    return {**env, "MLFLOW_DISABLE_TELEMETRY": "true", "PYTHONUNBUFFERED": "1"}


def setup(options: Options, results: dict[str, Any]) -> proj.Project:
    """Bake, install (or reuse --venv) and train the default project."""
    log.info("baking %s into %s", options.template, options.work)
    project = proj.bake(options.template, options.work, base_env())
    if options.venv:
        project = proj.use_venv(project, options.venv)
    else:
        results["setup"]["install_s"] = project.make("install").seconds
    train = project.make("train", env=options.train_env)
    results["setup"].update(
        package=project.package,
        train_s=train.seconds,
        train_peak_mb=train.peak_rss_bytes / proj.MIB,
    )
    return project


def servers(project: proj.Project, peer_venv: Path | None = None) -> dict[str, serving.Server]:
    """The servers, one worker each, from the project folder and its venv (LitServe from
    `peer_venv`, a venv of its own)."""
    bin_dir = project.python.parent
    env = {**project.env, "PATH": f"{bin_dir}{os.pathsep}{project.env.get('PATH', '')}"}
    floor_env = {
        **env,
        "BENCH_PACKAGE": project.package,
        "BENCH_BUNDLE_DIR": str(project.root / "models"),
    }
    name = project.metadata()["name"]
    mlflow_env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{project.root / 'mlflow.db'}"}
    python = str(project.python)
    floor_command = [
        python, "-m", "uvicorn", "floor_app:create_app", "--factory", "--app-dir", str(HERE),
        "--workers", "1", "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    peers = {}
    if peer_venv is not None:
        peers["litserve"] = serving.Server(
            "litserve", [str(peer_venv / "bin" / "python"), str(HERE / "litserve_app.py")],
            floor_env, "/health", "/predict", serving.instances, project.root,
        )  # fmt: skip
    return {
        "generated": serving.Server(
            "generated", [python, "-m", project.package, "serve", "--workers", "1"],
            env, "/ready", "/predict", serving.instances, project.root,
        ),
        "floor": serving.Server(
            "floor", floor_command, {**floor_env, "BENCH_RUNTIME": "onnx"},
            "/ready", "/predict", serving.instances, project.root,
        ),
        "floor_sklearn": serving.Server(
            "floor sklearn", floor_command, {**floor_env, "BENCH_RUNTIME": "sklearn"},
            "/ready", "/predict", serving.instances, project.root,
        ),
        "mlflow": serving.Server(
            "mlflow serve",
            [str(bin_dir / "mlflow"), "models", "serve", "-m", f"models:/{name}@champion",
             "--env-manager", "local", "--workers", "1", "--host", "127.0.0.1"],
            mlflow_env, "/ping", "/invocations", serving.dataframe_records, project.root,
        ),
        **peers,
    }  # fmt: skip


def server_runs(
    project: proj.Project, skip: frozenset[str], peer_venv: Path | None
) -> dict[str, serving.Server]:
    """Which servers to load. The generated service limits OpenMP to one thread itself; the
    floors get the same limit so they differ only by what the service adds."""
    chosen = servers(project, peer_venv)
    generated, floor, mlflow = chosen["generated"], chosen["floor"], chosen["mlflow"]
    floor_sklearn = chosen["floor_sklearn"]
    runs = {
        "generated": generated,
        "floor": with_env(floor, ONE_THREAD),
        "floor_sklearn": with_env(floor_sklearn, ONE_THREAD),
    }
    if "litserve" in chosen:
        runs["litserve"] = with_env(chosen["litserve"], ONE_THREAD)
    if "mlflow" not in skip:
        runs["mlflow"] = mlflow
    if "threads" not in skip:
        runs["floor_omp_default"] = replace(floor_sklearn, name="floor sklearn OpenMP default")
        if "mlflow" not in skip:
            runs["mlflow_omp1"] = replace(with_env(mlflow, ONE_THREAD), name="mlflow serve OMP=1")
    return runs


def with_env(server: serving.Server, extra: dict[str, str]) -> serving.Server:
    return replace(server, env={**server.env, **extra})


def run_serving(project: proj.Project, options: Options, results: dict[str, Any]) -> None:
    loader = serving.LoadGenerator(project.logs)
    results["meta"]["load_generator"] = loader.name
    rows = project.sample_rows()
    peer_venv = None
    if "litserve" not in options.skip:
        try:
            peer_venv = proj.litserve_venv(project, options.work)
        except StepError as exc:
            log.error("litserve unavailable: %s", exc)
            results["unavailable"]["litserve"] = f"{exc.__class__.__name__}: {exc}"
    for key, server in server_runs(project, options.skip, peer_venv).items():
        result = serving.benchmark(server, rows, options.plan, loader, project.logs)
        results["serving"][key] = result.to_dict()
    answers = [v["predictions"] for v in results["serving"].values()]
    results["meta"]["predictions_agree"] = all(same_answers(a, answers[0]) for a in answers)


def same_answers(a: list[Any], b: list[Any]) -> bool:
    """Labels equal; values equal up to float32 (ONNX) precision."""
    if len(a) != len(b):
        return False
    return all(
        math.isclose(x, y, rel_tol=1e-4, abs_tol=1e-6)
        if isinstance(x, float) and isinstance(y, float)
        else x == y
        for x, y in zip(a, b, strict=True)
    )


def run_busy(project: proj.Project, options: Options, results: dict[str, Any]) -> None:
    """`make train` again while every CPU is kept busy by another process: how training copes
    with a shared machine (OpenMP threads that spin-wait are what suffers)."""
    with proj.CpuBurners(os.cpu_count() or 1):
        busy = project.make("train", env=options.train_env, tag="train-busy")
    results["busy"] = {"train_s": busy.seconds, "burners": os.cpu_count() or 1}


def run_startup(project: proj.Project, options: Options, results: dict[str, Any]) -> None:
    chosen = servers(project)
    keys = ["generated"] + ([] if "mlflow" in options.skip else ["mlflow"])
    for key in keys:
        samples = [
            serving.measure_start(chosen[key], project.logs / f"startup-{key}-{i}.log")
            for i in range(options.startup_runs)
        ]
        log.info("%s: ready in %s s", key, ", ".join(f"{s:.2f}" for s in samples))
        results["startup"][key] = samples


def run_section(name: str, results: dict[str, Any], step: Callable[[], None]) -> None:
    """Run one section; a failure is recorded as `unavailable` and the run goes on."""
    log.info("== %s", name)
    started, load = time.perf_counter(), LoadWatch()
    with load:
        try:
            step()
        except (StepError, OSError, ValueError, KeyError) as exc:
            log.error("%s unavailable: %s", name, exc)
            results["unavailable"][name] = f"{exc.__class__.__name__}: {exc}"
    seconds = time.perf_counter() - started
    results["meta"]["sections"][name] = {"seconds": seconds, "max_loadavg": load.peak}
    log.info("== %s took %.0f s (max load average %.1f)", name, seconds, load.peak)


class LoadWatch:
    """The highest 1-minute load average seen while in the block (sampled every 5 s)."""

    def __init__(self) -> None:
        self.peak = os.getloadavg()[0]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(5.0):
            self.peak = max(self.peak, os.getloadavg()[0])

    def __enter__(self) -> LoadWatch:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def measure(options: Options) -> dict[str, Any]:
    results: dict[str, Any] = {
        "meta": meta(options),
        "setup": {},
        "serving": {},
        "startup": {},
        "unavailable": {},
    }
    project = setup(options, results)
    skip = options.skip
    sections: dict[str, Callable[[], None]] = {
        "serving": lambda: run_serving(project, options, results),
        "startup": lambda: run_startup(project, options, results),
        "footprint": lambda: results.update(footprint=proj.footprint(project, options.work)),
        "busy": lambda: run_busy(project, options, results),
        "scaling": lambda: results.update(
            scaling=proj.scaling(project, options.sizes, options.work, options.train_env)
        ),
        "demo": lambda: results.update(demo=proj.demo(project)),
    }
    for name, step in sections.items():
        if name not in skip:
            run_section(name, results, step)
    results["meta"]["loadavg_end"] = os.getloadavg()
    results["meta"]["finished"] = datetime.now(UTC).isoformat(timespec="seconds")
    return results


def meta(options: Options) -> dict[str, Any]:
    return {
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "quick": options.quick,
        "cpus": os.cpu_count(),
        "machine": platform.platform(),
        "python": platform.python_version(),
        "loadavg_start": os.getloadavg(),
        "plan": options.plan.__dict__,
        "sizes": list(options.sizes),
        "skipped": sorted(options.skip),
        "sections": {},
    }


def write(results: dict[str, Any], out: Path) -> str:
    table = report.rows(results)
    results["table"] = [row.__dict__ for row in table]
    text = report.markdown(table)
    out.mkdir(parents=True, exist_ok=True)
    (out / "latest.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    (out / "latest.md").write_text(text)
    return text


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s bench: %(message)s", stream=sys.stderr
    )
    options = parse_args(argv)
    options.work.mkdir(parents=True, exist_ok=True)
    try:
        results = measure(options)
    except StepError as exc:
        log.error("%s", exc)
        return 1
    finally:
        if not options.keep:
            shutil.rmtree(options.work, ignore_errors=True)
    sys.stdout.write(write(results, options.out))
    log.info("results: %s", options.out / "latest.json")
    failed = set(results["unavailable"]) - {"demo"}
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
