"""The baked project: bake it, run its make targets, measure its install size and its pipeline."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from procs import StepError, Timed, run_timed

log = logging.getLogger("bench")
HERE = Path(__file__).resolve().parent
MIB = 1024 * 1024


@dataclass(frozen=True)
class Project:
    root: Path
    package: str
    logs: Path
    env: dict[str, str]

    @property
    def venv(self) -> Path:
        return self.root / ".venv"

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    def make(self, *targets: str, env: Mapping[str, str] | None = None, tag: str = "") -> Timed:
        """`make <targets>` in the project, timed, with the peak memory of its process tree."""
        name = tag or "-".join(t for t in targets if not t.startswith("-"))
        return run_timed(
            ["make", "--no-print-directory", *targets],
            cwd=self.root,
            env={**self.env, **(env or {})},
            log_file=self.logs / f"make-{name}.log",
        )

    def run(self, command: Sequence[str], tag: str) -> Timed:
        return run_timed(command, cwd=self.root, env=self.env, log_file=self.logs / f"{tag}.log")

    def sample_rows(self) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = json.loads(
            (self.root / "models" / "sample_request.json").read_text()
        )["instances"]
        return rows

    def metadata(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads((self.root / "models" / "metadata.json").read_text())
        return data


def tool_command(name: str) -> list[str]:
    """How to run a command-line tool of tests/requirements.txt: the one installed beside this
    Python (`make venv` puts cookiecutter and uv in .venv/bin), then PATH, then `python -m`."""
    beside = Path(sys.executable).with_name(name)
    if beside.exists():
        return [str(beside)]
    if found := shutil.which(name):
        return [found]
    if importlib.util.find_spec(name):
        return [sys.executable, "-m", name]
    raise StepError(f"{name} is not installed: `pip install {name}` (or `make venv`).")


def bake(template: Path, work: Path, env: dict[str, str]) -> Project:
    """`cookiecutter --no-input` into work/bake, with a config that keeps replays in `work`."""
    config = work / "cookiecutter.yaml"
    config.write_text(
        f'replay_dir: "{work / "replay"}"\ncookiecutters_dir: "{work / "cookiecutters"}"\n'
    )
    out, logs = work / "bake", work / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    command = [*tool_command("cookiecutter"), "--no-input", "--config-file", str(config)]
    run_timed(
        [*command, "-o", str(out), str(template)], cwd=work, env=env, log_file=logs / "bake.log"
    )
    (root,) = [p for p in out.iterdir() if p.is_dir()]
    (package,) = [p.name for p in (root / "src").iterdir() if (p / "__init__.py").is_file()]
    return Project(root=root, package=package, logs=logs, env=env)


def use_venv(project: Project, venv: Path) -> Project:
    """Run the project from an existing virtualenv (every extra installed) instead of installing."""
    if not (venv / "bin" / "python").exists():
        raise StepError(f"{venv} is not a virtualenv: it has no bin/python.")
    project.venv.symlink_to(venv.resolve(), target_is_directory=True)
    pythonpath = os.pathsep.join(
        filter(None, [str(project.root / "src"), os.environ.get("PYTHONPATH")])
    )
    return Project(
        project.root, project.package, project.logs, {**project.env, "PYTHONPATH": pythonpath}
    )


# ---------------------------------------------------------------- footprint


def tree_size(root: Path) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of the files under `root`, each inode counted once."""
    seen: set[int] = set()
    apparent = allocated = 0
    for directory, _, files in os.walk(root):
        for name in files:
            stat = (Path(directory) / name).lstat()
            if stat.st_ino in seen:
                continue
            seen.add(stat.st_ino)
            apparent += stat.st_size
            allocated += stat.st_blocks * 512
    return apparent, allocated


def site(venv: Path) -> Path:
    """The site-packages folder of `venv`."""
    return next((venv / "lib").glob("python3*/site-packages"))


def footprint(project: Project, work: Path) -> dict[str, Any]:
    """A fresh venv with only `<project>[serve]`, made as the Dockerfile makes the image's (the
    bytecode of what the server imports only), vs the full .venv."""
    uv = tool_command("uv")
    venv = work / "serve-venv"
    python = str(project.python.resolve())
    project.run([*uv, "venv", "--quiet", "--python", python, str(venv)], tag="serve-venv")
    install = project.run(
        [*uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
         f"{project.root}[serve]"],
        tag="serve-install",
    )  # fmt: skip
    env = {k: v for k, v in project.env.items() if k != "PYTHONDONTWRITEBYTECODE"}
    run_timed(
        [str(venv / "bin" / "python"), "-c", image_imports(project.root / "Dockerfile")],
        cwd=work,
        env=env,
        log_file=project.logs / "serve-bytecode.log",
    )
    serve, full = tree_size(venv), tree_size(project.venv.resolve())
    heavy = [m for m in ("sklearn", "scipy", "pandas", "skops") if (site(venv) / m).is_dir()]
    return {
        "serve_heavy_modules": ", ".join(heavy),
        "serve_apparent_mb": serve[0] / MIB,
        "serve_disk_mb": serve[1] / MIB,
        "full_apparent_mb": full[0] / MIB,
        "full_disk_mb": full[1] / MIB,
        "ratio": serve[0] / full[0],
        "ratio_disk": serve[1] / full[1],
        "serve_install_s": install.seconds,
        "serve_venv": str(venv),
    }


def image_imports(dockerfile: Path) -> str:
    """The `import ...` the Dockerfile runs to write the bytecode of what the server imports."""
    text = dockerfile.read_text(encoding="utf-8").replace("\\\n", " ")
    match = re.search(r'python -c "(import [^"]+)"', text)
    if match is None:
        raise StepError(f'{dockerfile} has no `python -c "import ..."`')
    return match[1]


def litserve_venv(project: Project, work: Path) -> Path:
    """A venv of its own for the LitServe peer: litserve and the project's serve extra."""
    uv = tool_command("uv")
    venv = work / "litserve-venv"
    python = str(project.python.resolve())
    project.run([*uv, "venv", "--quiet", "--python", python, str(venv)], tag="litserve-venv")
    project.run(
        [*uv, "pip", "install", "--quiet", "--python", str(venv / "bin" / "python"),
         "--compile-bytecode", "litserve", f"{project.root}[serve]"],
        tag="litserve-install",
    )  # fmt: skip
    return venv


class CpuBurners:
    """`count` processes that keep a CPU busy each while in the block: a shared, busy machine."""

    def __init__(self, count: int) -> None:
        self.count = count
        self.processes: list[subprocess.Popen[bytes]] = []

    def __enter__(self) -> CpuBurners:
        burn = "while True: pass"
        self.processes = [subprocess.Popen([sys.executable, "-c", burn]) for _ in range(self.count)]
        return self

    def __exit__(self, *exc: object) -> None:
        for process in self.processes:
            process.kill()
            process.wait()


# ---------------------------------------------------------------- pipeline scaling


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of log(y) on log(x): the growth exponent."""
    lx, ly = [math.log(x) for x in xs], [math.log(y) for y in ys]
    mx, my = sum(lx) / len(lx), sum(ly) / len(ly)
    sxx = sum((x - mx) ** 2 for x in lx)
    return sum((x - mx) * (y - my) for x, y in zip(lx, ly, strict=True)) / sxx


def scale_run(
    project: Project, rows: int, work: Path, extra_env: Mapping[str, str]
) -> dict[str, Any]:
    """make data + make train on `rows` synthetic rows, in folders of their own."""
    here = work / f"scale-{rows}"
    source = work / "data" / f"synthetic-{rows}.parquet"
    project.run(
        [str(project.python), str(HERE / "synth.py"), str(rows), str(source)], f"synth-{rows}"
    )
    env = {
        "ML_DATA__SOURCE": str(source),
        "ML_DATA__PROCESSED_DIR": str(here / "processed"),
        "ML_MODEL__MODELS_DIR": str(here / "models"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{here / 'mlflow.db'}",
        **extra_env,
    }
    here.mkdir(parents=True, exist_ok=True)
    log.info("pipeline on %s rows", f"{rows:,}")
    data = project.make("data", env=env, tag=f"data-{rows}")
    train = project.make("train", "-o", "data", env=env, tag=f"train-{rows}")
    return {
        "rows": rows,
        "data_s": data.seconds,
        "data_peak_mb": data.peak_rss_bytes / MIB,
        "train_s": train.seconds,
        "train_peak_mb": train.peak_rss_bytes / MIB,
    }


def scaling(
    project: Project, sizes: Sequence[int], work: Path, extra_env: Mapping[str, str]
) -> dict[str, Any]:
    runs = [scale_run(project, rows, work, extra_env) for rows in sizes]
    result: dict[str, Any] = {"runs": runs}
    if len(runs) >= 2:
        rows = [r["rows"] for r in runs]
        for key in ("data_s", "train_s", "train_peak_mb"):
            values = [r[key] for r in runs]
            result[f"{key}_exponent"] = slope(rows, values)
            result[f"{key}_exponent_last"] = slope(rows[-2:], values[-2:])
    return result


# ---------------------------------------------------------------- demo


def demo(project: Project) -> dict[str, Any]:
    """`make clean` then `make demo` (the venv and package cache stay warm)."""
    project.make("clean")
    if subprocess.run(
        ["make", "-n", "demo"], cwd=project.root, capture_output=True, check=False
    ).returncode:
        raise StepError("the generated Makefile has no demo target")
    timed = project.make("demo")
    return {"demo_s": timed.seconds, "demo_peak_mb": timed.peak_rss_bytes / MIB}
