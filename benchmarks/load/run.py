"""Load test: concurrent clients searching the running web app through gradio_client.

Starts ``lookalike serve BUNDLE`` on a free local port, waits until it answers, then runs ``--clients``
threads, each with its own ``gradio_client.Client``, making ``--requests`` searches in total with images of
the bundle's own dataset; reports errors and the latency percentiles (queueing included), then stops the app.

    python benchmarks/load/run.py [--bundle ~/.cache/lookalike/demo] [--clients 50] [--requests 500]
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import requests

from lookalike.app.cli import default_demo_bundle
from lookalike.bundle import Bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--bundle", type=Path, default=default_demo_bundle(), help="default: the demo bundle (make demo)"
    )
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=500)
    args = parser.parse_args()
    images = [str(r.path) for r in Bundle.load(args.bundle).index.records]
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/"
    server = subprocess.Popen(
        [sys.executable, "-m", "lookalike.app.cli", "serve", str(args.bundle), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"GRADIO_ANALYTICS_ENABLED": "False"},
    )
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                if requests.get(url, timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            if time.monotonic() > deadline or server.poll() is not None:
                raise SystemExit("the app did not start")
            time.sleep(0.5)
        from gradio_client import Client, handle_file

        rng = np.random.default_rng(0)
        share = np.full(args.clients, args.requests // args.clients)
        share[: args.requests % args.clients] += 1

        def client_run(n: int) -> tuple[list[float], list[str]]:
            client, latencies, errors = Client(url, verbose=False), [], []
            for path in rng.choice(images, size=n):
                started = time.perf_counter()
                try:
                    client.predict(handle_file(path), 5, api_name="/search")
                    latencies.append(time.perf_counter() - started)
                except Exception as error:  # noqa: BLE001 - counted and shown, the run goes on
                    errors.append(f"{type(error).__name__}: {error}"[:200])
            return latencies, errors

        started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=args.clients) as pool:
            results = list(pool.map(client_run, share))
        wall = time.perf_counter() - started
    finally:
        server.terminate()
        server.wait(timeout=30)
    latencies = np.array([t for lat, _ in results for t in lat]) * 1000
    errors = [e for _, errs in results for e in errs]
    print(f"{args.clients} clients, {len(latencies) + len(errors)} searches, {len(errors)} errors, {wall:.1f} s")
    for message in sorted(set(errors))[:5]:
        print(f"  error: {message}")
    print(
        f"latency ms: p50 {np.percentile(latencies, 50):.0f}, p90 {np.percentile(latencies, 90):.0f}, "
        f"p99 {np.percentile(latencies, 99):.0f}, max {latencies.max():.0f}; throughput {len(latencies) / wall:.1f} searches/s"
    )


if __name__ == "__main__":
    main()
