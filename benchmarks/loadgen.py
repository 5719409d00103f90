"""Fallback load generator when `wrk` is not installed: asyncio, HTTP/1.1 keep-alive, stdlib only.

Run in its own process by bench.py; prints the same BENCH_RESULT line as post.lua. A Python
client saturates near a few hundred requests per second on a small machine, so its numbers
measure the client as much as the server: install wrk for real figures.

    python loadgen.py http://127.0.0.1:8000/predict body.json --connections 16 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit


@dataclass
class Tally:
    latencies: list[float] = field(default_factory=list)
    http_errors: int = 0
    socket_errors: int = 0


def request_bytes(url: str, body: bytes) -> bytes:
    parts = urlsplit(url)
    head = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def read_response(reader: asyncio.StreamReader) -> int:
    """Read one response with a Content-Length body; return its status code."""
    status = int((await reader.readline()).split()[1])
    length = 0
    while (line := await reader.readline()) not in (b"\r\n", b""):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return status


async def connection(url: str, payload: bytes, deadline: float, tally: Tally) -> None:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    while time.perf_counter() < deadline:
        try:
            reader, writer = await asyncio.open_connection(host, port)
        except OSError:
            tally.socket_errors += 1
            await asyncio.sleep(0.01)
            continue
        try:
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                writer.write(payload)
                status = await read_response(reader)
                tally.latencies.append(time.perf_counter() - start)
                tally.http_errors += not 200 <= status < 300
        except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
            tally.socket_errors += 1
        finally:
            writer.close()


async def run(url: str, body: bytes, connections: int, duration: float) -> dict[str, float]:
    tally, payload = Tally(), request_bytes(url, body)
    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(*(connection(url, payload, deadline, tally) for _ in range(connections)))
    elapsed = time.perf_counter() - start
    cuts = statistics.quantiles(tally.latencies, n=100) if len(tally.latencies) > 1 else [0.0] * 99
    return {
        "requests": len(tally.latencies),
        "duration_s": elapsed,
        "http_errors": tally.http_errors,
        "socket_errors": tally.socket_errors,
        "p50_ms": cuts[49] * 1e3,
        "p99_ms": cuts[98] * 1e3,
        "mean_ms": statistics.fmean(tally.latencies) * 1e3 if tally.latencies else 0.0,
        "max_ms": max(tally.latencies, default=0.0) * 1e3,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("body", type=Path, help="file holding the JSON request body")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds")
    args = parser.parse_args()
    result = asyncio.run(run(args.url, args.body.read_bytes(), args.connections, args.duration))
    print("BENCH_RESULT", json.dumps(result))


if __name__ == "__main__":
    main()
