"""The results table: one row per measure, with its target and PASS/FAIL where there is one."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

GIB_MB = 1024.0
FLOOR_RATIO, SKLEARN_FLOOR_RATIO, MLFLOW_RATIO, PEER_RATIO = 0.8, 3.0, 10.0, 1.0
P50_MS, READY_S, SERVE_VENV_MB, WORKER_RSS_MB = 1.0, 1.0, 200.0, 150.0
TRAIN_1M_S, TRAIN_1M_MB = 300.0, 4 * GIB_MB
ONE_MILLION = 1_000_000


@dataclass(frozen=True)
class Row:
    measure: str
    value: str
    target: str = ""
    result: str = ""


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def checked(measure: str, value: str, target: str, ok: bool) -> Row:
    return Row(measure, value, target, verdict(ok))


def _load(results: dict[str, Any], server: str, kind: str) -> dict[str, Any] | None:
    loads: dict[str, Any] = results.get("serving", {}).get(server, {}).get("loads", {})
    return loads.get(kind)


SERVERS = {
    "generated": "generated service (onnx)",
    "floor": "floor: bare Starlette + onnxruntime",
    "floor_sklearn": "floor: bare Starlette + sklearn pipeline",
    "litserve": "LitServe (same ONNX runtime)",
    "mlflow": "mlflow models serve",
    "floor_omp_default": "floor sklearn, OpenMP default threads",
    "mlflow_omp1": "mlflow models serve, OMP_NUM_THREADS=1",
}


def serving_rows(results: dict[str, Any]) -> Iterator[Row]:
    serving = results.get("serving", {})
    plan = results["meta"]["plan"]
    many, batch_rows = f"{plan['connections']} conn", plan["batch_rows"]
    for key in (k for k in SERVERS if k in serving):
        label, loads = SERVERS[key], serving[key]["loads"]
        single, latency, batch = loads["single"], loads["latency"], loads["batch"]
        yield Row(
            f"{label}: 1 row, {many}",
            f"{single['throughput']:,.0f} req/s, {_pct(single)}, {_cpu(single)}",
        )
        if key == "generated":
            p50 = latency["p50_ms"]
            yield checked(f"{label}: 1 row, 1 conn", _pct(latency), "p50 ≤ 1 ms", p50 <= P50_MS)
        else:
            yield Row(f"{label}: 1 row, 1 conn", _pct(latency))
        yield Row(
            f"{label}: {batch_rows} rows, {many}",
            f"{batch['throughput'] * batch_rows:,.0f} rows/s, {_cpu(batch)}",
        )
        rss = serving[key].get("rss_mb", 0.0)
        memory = f"{label}: resident memory after the loads (1 worker, all its processes)"
        if key == "generated":
            yield checked(memory, f"{rss:,.0f} MB", "≤ 150 MB", 0 < rss <= WORKER_RSS_MB)
        else:
            yield Row(memory, f"{rss:,.0f} MB")
    single = {key: server["loads"]["single"] for key, server in serving.items()}
    yield from ratio_rows(single)
    if "mlflow_omp1" in single and "generated" in single:
        r = ratio(single["generated"], single["mlflow_omp1"])
        yield Row("generated / mlflow serve OMP_NUM_THREADS=1 throughput", f"{r:.2f}x")
    if serving:
        errors = sum(
            load["http_errors"] + load["socket_errors"]
            for server in serving.values()
            for load in server["loads"].values()
        )
        yield checked("errors (HTTP ≥ 400 + socket), every load run", f"{errors}", "0", errors == 0)


def _pct(load: dict[str, Any] | None) -> str:
    return "-" if load is None else f"p50 {load['p50_ms']:.2f} / p99 {load['p99_ms']:.2f} ms"


def _cpu(load: dict[str, Any]) -> str:
    return f"{load['cpu_ms_per_request']:.2f} CPU-ms/req"


def ratio(a: dict[str, Any], b: dict[str, Any]) -> float:
    return float(a["throughput"] / b["throughput"]) if b["throughput"] else math.inf


RATIOS = [  # (server, label, target text, minimum): generated throughput / server's, 1 row
    ("floor", "generated / floor (onnxruntime) throughput", "≥ 0.8x", FLOOR_RATIO),
    ("floor_sklearn", "generated / floor (sklearn) throughput", "≥ 3x", SKLEARN_FLOOR_RATIO),
    ("mlflow", "generated / mlflow serve throughput", "≥ 10x", MLFLOW_RATIO),
    ("litserve", "generated / LitServe throughput", "> 1x", PEER_RATIO),
]


def ratio_rows(single: dict[str, dict[str, Any]]) -> Iterator[Row]:
    generated = single.get("generated")
    if not generated:
        return
    for key, label, target, minimum in RATIOS:
        if other := single.get(key):
            r = ratio(generated, other)
            ok = r > minimum if key == "litserve" else r >= minimum
            yield checked(label, f"{r:.2f}x", target, ok)
    if floor := single.get("floor"):
        cpu = generated["cpu_ms_per_request"] / floor["cpu_ms_per_request"]
        yield Row("generated / floor (onnxruntime) server CPU per request (1 row)", f"{cpu:.2f}x")


def startup_rows(results: dict[str, Any]) -> Iterator[Row]:
    startup = results.get("startup", {})
    if runs := startup.get("generated"):
        ready = statistics.median(runs)
        yield checked(
            f"generated: start to /ready 200 (median of {len(runs)})",
            f"{ready:.2f} s",
            "≤ 1 s",
            ready <= READY_S,
        )
    if runs := startup.get("mlflow"):
        yield Row(
            f"mlflow serve: start to /ping 200 (median of {len(runs)})",
            f"{statistics.median(runs):.2f} s",
        )


def footprint_rows(results: dict[str, Any]) -> Iterator[Row]:
    fp = results.get("footprint")
    if not fp:
        return
    yield Row(
        "venv size, serve extra only / full install: file bytes (on disk)",
        f"{fp['serve_apparent_mb']:,.0f} / {fp['full_apparent_mb']:,.0f} MB"
        f" ({fp['serve_disk_mb']:,.0f} / {fp['full_disk_mb']:,.0f} MB)",
    )
    yield checked(
        "serve-only venv (what the image installs): file bytes",
        f"{fp['serve_apparent_mb']:,.0f} MB",
        "≤ 200 MB",
        fp["serve_apparent_mb"] <= SERVE_VENV_MB,
    )
    if "serve_heavy_modules" in fp:
        heavy = fp["serve_heavy_modules"]
        label = "serve-only venv holds sklearn / scipy / pandas / skops"
        yield checked(label, heavy or "none", "none", not heavy)
    yield Row("serve-only / full install: file bytes (on disk)",
              f"{fp['ratio']:.2f} ({fp['ratio_disk']:.2f})")  # fmt: skip


def pipeline_rows(results: dict[str, Any]) -> Iterator[Row]:
    setup = results.get("setup", {})
    if "install_s" in setup:
        yield Row("make install (warm package cache)", f"{setup['install_s']:.1f} s")
    if "train_s" in setup:
        yield Row(
            "make train, builtin data",
            f"{setup['train_s']:.1f} s, {setup['train_peak_mb']:,.0f} MB peak",
        )
    if busy := results.get("busy"):
        yield Row(
            f"make train, builtin data, every CPU busy ({busy['burners']} burner processes)",
            f"{busy['train_s']:.1f} s (quiet: {setup.get('train_s', math.nan):.1f} s)",
        )
    scaling = results.get("scaling", {})
    for run in scaling.get("runs", []):
        peak = max(run["data_peak_mb"], run["train_peak_mb"])
        yield Row(
            f"make data + train, {run['rows']:,} rows",
            f"{run['data_s']:.1f} + {run['train_s']:.1f} s, {peak:,.0f} MB peak",
        )
    if "train_s_exponent" in scaling:
        time_all, time_last = scaling["train_s_exponent"], scaling["train_s_exponent_last"]
        mem_all, mem_last = (
            scaling["train_peak_mb_exponent"],
            scaling["train_peak_mb_exponent_last"],
        )
        yield Row(
            "growth exponent (log-log slope): train time / train memory",
            f"{time_all:.2f} / {mem_all:.2f} (largest step: {time_last:.2f} / {mem_last:.2f})",
        )
    yield from million_rows(scaling)
    if demo := results.get("demo"):
        yield Row("make demo after make clean (warm venv)", f"{demo['demo_s']:.1f} s")


def million_rows(scaling: dict[str, Any]) -> Iterator[Row]:
    big = [r for r in scaling.get("runs", []) if r["rows"] >= ONE_MILLION]
    if not big:
        return
    run = big[0]
    seconds = run["data_s"] + run["train_s"]
    peak = max(run["data_peak_mb"], run["train_peak_mb"])
    yield checked(
        f"{run['rows']:,}-row data + train time",
        f"{seconds / 60:.1f} min",
        "≤ 5 min",
        seconds <= TRAIN_1M_S,
    )
    yield checked(
        f"{run['rows']:,}-row peak memory",
        f"{peak / GIB_MB:.2f} GiB",
        "< 4 GiB",
        peak < TRAIN_1M_MB,
    )


def unavailable_rows(results: dict[str, Any]) -> Iterator[Row]:
    for section, reason in results.get("unavailable", {}).items():
        yield Row(f"{section}", f"unavailable: {reason.splitlines()[0][:120]}", "", "n/a")


def meta_rows(results: dict[str, Any]) -> Iterator[Row]:
    meta = results["meta"]
    start, end = meta["loadavg_start"][0], meta.get("loadavg_end", [math.nan])[0]
    peak = max([start, end, *(s["max_loadavg"] for s in meta.get("sections", {}).values())])
    yield Row(
        "machine: CPUs; 1-min load average at start / highest / end",
        f"{meta['cpus']} CPUs; {start:.1f} / {peak:.1f} / {end:.1f}",
    )
    if "load_generator" in meta:
        yield Row("load generator", meta["load_generator"])
    if "predictions_agree" in meta:
        agree = bool(meta["predictions_agree"])
        yield checked(
            "every server gives the same predictions", "yes" if agree else "no", "", agree
        )


SECTIONS: list[Callable[[dict[str, Any]], Iterator[Row]]] = [
    meta_rows,
    serving_rows, startup_rows, footprint_rows, pipeline_rows, unavailable_rows,
]  # fmt: skip


def rows(results: dict[str, Any]) -> list[Row]:
    return [row for section in SECTIONS for row in section(results)]


def markdown(table: list[Row]) -> str:
    header = Row("Measure", "Value", "Target", "Result")
    cells = [[r.measure, r.value, r.target, r.result] for r in [header, *table]]
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = [
        "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"
        for row in cells
    ]
    lines.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return "\n".join(lines) + "\n"
