"""Load test: concurrent clients searching the running server, through the web app and through the JSON API.

Starts ``lookalike serve BUNDLE`` on a free local port, waits until it answers, then, against that one server:

- ``app``: ``--clients`` threads, each with its own ``gradio_client.Client``, searching the app's ``/search``
  endpoint (Gradio's queue, as the browser does);
- ``api``: ``--clients`` concurrent clients (asyncio + ``httpx``) posting multipart uploads to ``/api/search``.

Each mode is a closed loop: every client sends its next search when the previous answer arrived, ``--requests``
searches in all, with images of the bundle's own dataset (read into memory before the clock starts). Reports
errors, latency percentiles (queueing included) and throughput per mode, then stops the server.

    python benchmarks/load/run.py [--bundle ~/.cache/lookalike/demo] [--clients 50] [--requests 500] [--mode both]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
from lookalike.app.cli import default_demo_bundle
from lookalike.index.search import EmbeddingIndex

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from server import start_server  # benchmarks/server.py

#: Targets of issue 15 for the JSON API under 50 concurrent clients.
API_TARGETS = {"searches/s": 20.0, "p99 ms": 3000.0}


def _shares(clients: int, requests: int) -> list[int]:
    """Searches per client: ``requests`` spread over ``clients`` as evenly as possible."""
    share = np.full(clients, requests // clients)
    share[: requests % clients] += 1
    return [int(n) for n in share]


def _cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` so far (Linux ``/proc``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_app(url: str, images: list[Path], clients: int, requests: int, k: int) -> tuple[list[float], list[str]]:
    """Latencies (s) and errors of ``requests`` searches through the web app's Gradio endpoint."""
    from gradio_client import Client, handle_file

    rng = np.random.default_rng(0)
    plans = [rng.choice(len(images), size=n) for n in _shares(clients, requests)]

    def client_run(plan: np.ndarray) -> tuple[list[float], list[str]]:
        latencies, errors = [], []
        try:
            client = Client(url + "/", verbose=False)
        except Exception as error:  # noqa: BLE001 - a client that cannot connect fails all its searches
            return [], [f"{type(error).__name__}: {error}"[:200]] * len(plan)
        for i in plan:
            started = time.perf_counter()
            try:
                client.predict(handle_file(str(images[i])), k, api_name="/search")
                latencies.append(time.perf_counter() - started)
            except Exception as error:  # noqa: BLE001 - counted and shown, the run goes on
                errors.append(f"{type(error).__name__}: {error}"[:200])
        return latencies, errors

    with ThreadPoolExecutor(max_workers=clients) as pool:
        results = list(pool.map(client_run, plans))
    return [t for lat, _ in results for t in lat], [e for _, errs in results for e in errs]


async def run_api(url: str, images: list[Path], clients: int, requests: int, k: int) -> tuple[list[float], list[str]]:
    """Latencies (s) and errors of ``requests`` searches posted to ``/api/search``."""
    rng = np.random.default_rng(0)
    payloads = [(path.name, path.read_bytes()) for path in images]
    latencies: list[float] = []
    errors: list[str] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=120) as session:

        async def client_run(plan: np.ndarray) -> None:
            for i in plan:
                started = time.perf_counter()
                try:
                    response = await session.post("/api/search", files={"image": payloads[i]}, data={"k": str(k)})
                    response.raise_for_status()
                    latencies.append(time.perf_counter() - started)
                except httpx.HTTPError as error:
                    errors.append(f"{type(error).__name__}: {error}"[:200])

        await asyncio.gather(*(client_run(rng.choice(len(images), size=n)) for n in _shares(clients, requests)))
    return latencies, errors


def report(
    mode: str, clients: int, latencies: list[float], errors: list[str], wall: float, cpu: float
) -> dict[str, float]:
    """Print one mode's figures (``cpu``: the server's CPU seconds during the run); returns them."""
    ms = np.array(latencies) * 1000 if latencies else np.array([np.nan])
    figures = {
        "searches/s": len(latencies) / wall,
        "p50 ms": float(np.percentile(ms, 50)),
        "p90 ms": float(np.percentile(ms, 90)),
        "p99 ms": float(np.percentile(ms, 99)),
        "max ms": float(ms.max()),
        "errors": len(errors),
        "server cpu ms/search": 1000 * cpu / max(len(latencies), 1),
    }
    print(
        f"{mode}: {clients} clients, {len(latencies) + len(errors)} searches, {len(errors)} errors, {wall:.1f} s; "
        f"latency ms p50 {figures['p50 ms']:.0f}, p90 {figures['p90 ms']:.0f}, p99 {figures['p99 ms']:.0f}, "
        f"max {figures['max ms']:.0f}; throughput {figures['searches/s']:.1f} searches/s; server CPU "
        f"{figures['server cpu ms/search']:.0f} ms per search"
    )
    for message in sorted(set(errors))[:5]:
        print(f"  error: {message}")
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bundle", type=Path, default=default_demo_bundle(), help="default: the demo bundle (make demo)"
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=500, help="searches per mode (default %(default)s)")
    parser.add_argument("-k", type=int, default=5, help="look-alikes per search (default %(default)s)")
    parser.add_argument(
        "--mode", choices=("app", "api", "both"), default="both", help="what to load (default %(default)s)"
    )
    parser.add_argument(
        "--start-timeout", type=float, default=600, help="seconds to wait for the server (default %(default)s)"
    )
    args = parser.parse_args()
    images = [record.path for record in EmbeddingIndex.load(args.bundle).records]
    server, url = start_server(args.bundle, args.start_timeout)
    figures = {}
    try:
        for mode in ("app", "api") if args.mode == "both" else (args.mode,):
            started, cpu = time.perf_counter(), _cpu_seconds(server.pid)
            if mode == "app":
                latencies, errors = run_app(url, images, args.clients, args.requests, args.k)
            else:
                latencies, errors = asyncio.run(run_api(url, images, args.clients, args.requests, args.k))
            wall, cpu = time.perf_counter() - started, _cpu_seconds(server.pid) - cpu
            figures[mode] = report(mode, args.clients, latencies, errors, wall, cpu)
    finally:
        server.terminate()
        server.wait(timeout=30)
    if "api" in figures:
        api = figures["api"]
        met = api["errors"] == 0 and all(
            api[name] >= target if name == "searches/s" else api[name] <= target for name, target in API_TARGETS.items()
        )
        print(
            f"API targets (>= {API_TARGETS['searches/s']:.0f} searches/s, p99 <= {API_TARGETS['p99 ms']:.0f} ms, "
            f"0 errors): {'met' if met else 'MISSED'}"
        )
        if "app" in figures:
            print(f"API / app throughput: {api['searches/s'] / figures['app']['searches/s']:.1f}x")


if __name__ == "__main__":
    main()
