"""The results table: one row per measure, with its target and PASS/FAIL where there is one."""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

GIB_MB = 1024.0
FLOOR_RATIO, MLFLOW_RATIO, P50_MS, READY_S = 0.8, 2.0, 3.0, 2.0
FOOTPRINT_RATIO, TRAIN_1M_S, TRAIN_1M_MB = 1 / 3, 300.0, 4 * GIB_MB
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
    "generated": "generated service",
    "floor": "floor (bare Starlette)",
    "mlflow": "mlflow models serve",
    "floor_omp_default": "floor, OpenMP default threads",
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
            yield checked(f"{label}: 1 row, 1 conn", _pct(latency), "p50 ≤ 3 ms", p50 <= P50_MS)
        else:
            yield Row(f"{label}: 1 row, 1 conn", _pct(latency))
        yield Row(
            f"{label}: {batch_rows} rows, {many}",
            f"{batch['throughput'] * batch_rows:,.0f} rows/s, {_cpu(batch)}",
        )
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


def ratio_rows(single: dict[str, dict[str, Any]]) -> Iterator[Row]:
    generated, floor, mlflow = (single.get(s) for s in ("generated", "floor", "mlflow"))
    if generated and floor:
        r = ratio(generated, floor)
        yield checked("generated / floor throughput", f"{r:.2f}x", "≥ 0.8x", r >= FLOOR_RATIO)
        cpu = generated["cpu_ms_per_request"] / floor["cpu_ms_per_request"]
        yield Row("generated / floor server CPU per request (1 row)", f"{cpu:.2f}x")
    if generated and mlflow:
        r = ratio(generated, mlflow)
        yield checked("generated / mlflow serve throughput", f"{r:.2f}x", "≥ 2x", r >= MLFLOW_RATIO)


def startup_rows(results: dict[str, Any]) -> Iterator[Row]:
    startup = results.get("startup", {})
    if runs := startup.get("generated"):
        ready = statistics.median(runs)
        yield checked(
            f"generated: start to /ready 200 (median of {len(runs)})",
            f"{ready:.2f} s",
            "≤ 2 s",
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
        "serve-only / full install: file bytes (on disk)",
        f"{fp['ratio']:.2f} ({fp['ratio_disk']:.2f})",
        "≤ 0.33",
        fp["ratio"] <= FOOTPRINT_RATIO,
    )


def pipeline_rows(results: dict[str, Any]) -> Iterator[Row]:
    setup = results.get("setup", {})
    if "install_s" in setup:
        yield Row("make install (warm package cache)", f"{setup['install_s']:.1f} s")
    if "train_s" in setup:
        yield Row(
            "make train, builtin data",
            f"{setup['train_s']:.1f} s, {setup['train_peak_mb']:,.0f} MB peak",
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
