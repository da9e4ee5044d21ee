"""A real server process for tests, on 127.0.0.1 and a free port: started, waited for until its OpenAI
API answers ``/v1/models``, and stopped however the test ends (llama-cpp-python's and vLLM's servers)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def openai_server(command: list[str], log_path: Path, name: str, ready_s: float, poll_s: float,
                  stop_s: float, log_tail: int = 2000) -> Iterator[str]:
    """``command`` (its ``--host`` and ``--port`` added here) running until the block ends; yields its
    API root. A server that exits or is not ready within ``ready_s`` fails the test with its log's end."""
    port = free_port()
    with open(log_path, "w+") as log:
        proc = subprocess.Popen([*command, "--host", "127.0.0.1", "--port", str(port)], stdout=log,
                                stderr=subprocess.STDOUT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        base_url = f"http://127.0.0.1:{port}/v1"
        deadline = time.monotonic() + ready_s
        try:
            while True:
                try:
                    with urllib.request.urlopen(f"{base_url}/models", timeout=2):
                        break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        log.seek(0)
                        pytest.fail(f"{name} did not start: {log.read()[-log_tail:]}")
                    time.sleep(poll_s)
            yield base_url
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=stop_s)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
