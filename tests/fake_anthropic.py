"""A stand-in for the Anthropic Messages API on 127.0.0.1, for tests.

The real API needs a key and the network, and neither exists where the tests run. This server
speaks just enough of ``POST /v1/messages`` for the real ``anthropic`` SDK to talk to it through
``base_url``, so the SDK's own retries, timeouts and error classes are what the tests exercise.

A test scripts the next replies with :meth:`FakeAnthropic.script` (rate limits, overloads, slow
answers, broken bodies...); once the script runs out, every request is answered by ``responder``,
which maps the request's prompt text to an answer. Token counts are words, which is enough for the
bookkeeping to be checked exactly.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SAMPLING_PARAMETERS = ("temperature", "top_p", "top_k")
"""Rejected under API version 2026-10-21, and by some models under any version, as the real API does."""


@dataclass
class Reply:
    """One scripted reply. ``text`` set: a normal answer; otherwise ``status``/``error``/``raw``."""

    status: int = 200
    text: str | None = None
    error_type: str = ""
    message: str = ""
    raw: bytes | None = None
    headers: dict = field(default_factory=dict)
    delay_s: float = 0.0


def answer(text: str) -> Reply:
    return Reply(text=text)


def rate_limited(retry_after_ms: int = 10) -> Reply:
    return Reply(429, error_type="rate_limit_error", message="Number of request tokens has exceeded your "
                 "per-minute rate limit", headers={"retry-after-ms": str(retry_after_ms), "retry-after": "1"})


def overloaded(retry_after_ms: int = 10) -> Reply:
    return Reply(529, error_type="overloaded_error", message="Overloaded",
                 headers={"retry-after-ms": str(retry_after_ms)})


def server_error(retry_after_ms: int = 10) -> Reply:
    return Reply(500, error_type="api_error", message="Internal server error",
                 headers={"retry-after-ms": str(retry_after_ms)})


def slow(delay_s: float, text: str = "late") -> Reply:
    """Answers only after ``delay_s``: longer than the client's timeout, it is a timeout."""
    return Reply(text=text, delay_s=delay_s)


def malformed() -> Reply:
    """A 200 whose body is not JSON (a proxy page cut in half, say)."""
    return Reply(200, raw=b'{"id": "msg_broken", "content": [{"type": "te')


def unauthorized() -> Reply:
    return Reply(401, error_type="authentication_error", message="invalid x-api-key")


class FakeAnthropic:
    """A threaded HTTP server on a free port of 127.0.0.1. Use as a context manager."""

    def __init__(self, responder: Callable[[str], str] | None = None, api_key: str = "test-key"):
        self.responder = responder or (lambda prompt: "Answer: YES")
        self.api_key = api_key
        self.models_without_sampling: set[str] = set()
        self.requests: list[dict] = []
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> FakeAnthropic:
        handler = type("Handler", (_Handler,), {"fake": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._server.daemon_threads = True
        self._server.block_on_close = False
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeAnthropic:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    # --- scripting ---------------------------------------------------------------------------

    def script(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        with self._lock:
            self._script.extend(replies)

    def _next(self, prompt: str) -> Reply:
        with self._lock:
            if self._script:
                return self._script.popleft()
        return answer(self.responder(prompt))

    def _record(self, entry: dict) -> None:
        with self._lock:
            self.requests.append(entry)

    @property
    def retry_counts(self) -> list[int]:
        """The SDK's ``x-stainless-retry-count`` header of every request received, in order."""
        return [int(r["headers"].get("x-stainless-retry-count", "0")) for r in self.requests]


class _Handler(BaseHTTPRequestHandler):
    fake: FakeAnthropic
    protocol_version = "HTTP/1.1"

    def log_message(self, format, *args):  # keep test output clean
        pass

    def do_POST(self):
        length = int(self.headers.get("content-length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        headers = {k.lower(): v for k, v in self.headers.items()}
        self.fake._record({"path": self.path, "headers": headers, "body": body})
        if self.path.split("?")[0] != "/v1/messages":
            return self._error(404, "not_found_error", f"no route {self.path}")
        if self.fake.api_key not in (headers.get("x-api-key"), _bearer(headers.get("authorization"))):
            return self._error(401, "authentication_error", "invalid x-api-key")
        sampling = [k for k in SAMPLING_PARAMETERS if k in body]
        if sampling and headers.get("anthropic-version", "") >= "2026-10-21":
            return self._error(400, "invalid_request_error", f"{sampling[0]}: Extra inputs are not permitted")
        if sampling and body.get("model") in self.fake.models_without_sampling:
            return self._error(400, "invalid_request_error", f"`{sampling[0]}` is deprecated for this model.")
        prompt = "".join(_text_of(m.get("content")) for m in body.get("messages", []))
        reply = self.fake._next(prompt)
        if reply.delay_s and self.fake._stopping.wait(reply.delay_s):
            return
        if reply.raw is not None:
            return self._send(reply.status, reply.raw, reply.headers)
        if reply.text is None:
            return self._error(reply.status, reply.error_type, reply.message, reply.headers)
        words = reply.text.split()
        max_tokens = int(body.get("max_tokens", 1 << 30))
        stop_reason = "end_turn"
        text = reply.text
        if len(words) > max_tokens:
            text, stop_reason = " ".join(words[:max_tokens]), "max_tokens"
        message = {
            "id": f"msg_{uuid.uuid4().hex[:20]}",
            "type": "message",
            "role": "assistant",
            "model": body.get("model"),
            "content": [{"type": "text", "text": text}],
            "stop_reason": stop_reason,
            "stop_sequence": None,
            "usage": {"input_tokens": len(prompt.split()), "output_tokens": min(len(words), max_tokens)},
        }
        self._send(200, json.dumps(message).encode(), reply.headers)

    def _error(self, status: int, error_type: str, message: str, headers: dict | None = None):
        body = {"type": "error", "error": {"type": error_type, "message": message}}
        self._send(status, json.dumps(body).encode(), headers or {})

    def _send(self, status: int, payload: bytes, headers: dict):
        try:
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(payload)))
            self.send_header("request-id", f"req_{uuid.uuid4().hex[:20]}")
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(payload)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test): nothing to answer


def _bearer(value: str | None) -> str | None:
    """Recent SDKs send the key as ``Authorization: Bearer``, older ones as ``x-api-key``."""
    if value and value.lower().startswith("bearer "):
        return value[7:].strip()
    return None


def _text_of(content) -> str:
    if isinstance(content, str):
        return content
    return "".join(block.get("text", "") for block in content or [] if isinstance(block, dict))
