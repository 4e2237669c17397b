"""A ``lookalike serve`` subprocess for benchmarks that measure the running server (``load``, ``explain``)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def start_server(bundle: Path, timeout: float = 300.0) -> tuple[subprocess.Popen, str]:
    """Start ``lookalike serve BUNDLE`` on a free local port and wait until ``/api/health`` answers 200.

    Returns the process and its base URL (``http://127.0.0.1:PORT``, no trailing slash); the caller stops it
    (``terminate``). Raises ``SystemExit`` when the server exits or does not answer within ``timeout`` seconds.
    """
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "lookalike.app.cli", "serve", str(bundle), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=os.environ | {"GRADIO_ANALYTICS_ENABLED": "False"},
    )
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(f"{url}/api/health", timeout=2).status_code == 200:
                return server, url
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline or server.poll() is not None:
            server.terminate()
            raise SystemExit(f"lookalike serve {bundle} did not start within {timeout:.0f} s")
        time.sleep(0.5)
