"""The ``openai`` backend: any OpenAI-compatible server (vLLM, llama.cpp's server, llama-cpp-python's
server, ...) through its completions endpoint, with the prompt already rendered.

Requests are greedy (temperature 0) and streamed, so the time to the first token is measured
(option ``stream=false``: one answer per request, exact token counts from the server, no ttft).
The repetition penalty is sent under the names servers read (``repetition_penalty`` for vLLM,
``repeat_penalty`` for llama.cpp servers, whose default is 1.1, not 1.0); servers ignore names they
do not know. The official OpenAI API rejects unknown fields: set ``penalty_fields`` to ``[]`` there.

Options: ``base_url`` (http://127.0.0.1:8000/v1), ``api_key`` (else ``$OPENAI_API_KEY``; none for a
local server), ``model`` (ModelSpec.path), ``timeout_s`` (120), ``max_retries`` (2, for 429, 502-504 and
dropped connections), ``penalty_fields``, ``extra_body`` (merged into every request).
Plain ``urllib``: no HTTP client dependency.
"""

from __future__ import annotations

import http.client
import json
import os
import time
import urllib.error
import urllib.request
from typing import Any

from lrl_harness import hookimpl
from lrl_harness.config import parse_flag
from lrl_harness.errors import BackendUnavailableError, ConfigError, LrlError
from lrl_harness.types import Completion, GenerationSettings, ModelSpec

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
API_KEY_ENV = "OPENAI_API_KEY"
PENALTY_FIELDS = ("repetition_penalty", "repeat_penalty")
_OPTIONS = {"base_url", "api_key", "model", "timeout_s", "max_retries", "penalty_fields", "extra_body",
            "stream"}
_RETRY_STATUS = {429, 502, 503, 504}


class ServerError(LrlError):
    """The server answered with an error (``status``), or not at all (``status`` None)."""

    def __init__(self, message: str, status: int | None = None):
        super().__init__(message)
        self.status = status


class OpenAIBackend:
    name = "openai"

    def __init__(self, model: ModelSpec, options: dict | None = None):
        options = dict(options or {})
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(f"unknown openai option {unknown[0]!r}; known: {', '.join(sorted(_OPTIONS))}")
        self.base_url = str(options.get("base_url") or DEFAULT_BASE_URL).rstrip("/")
        if not self.base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {self.base_url!r}")
        self.model_name = str(options.get("model") or model.path or model.name)
        if not self.model_name:
            raise ConfigError("the openai backend needs a model name (ModelSpec.path or the model option)")
        self.api_key = options.get("api_key") or os.environ.get(API_KEY_ENV) or None
        self.timeout = float(options.get("timeout_s", 120))
        self.max_retries = int(options.get("max_retries", 2))
        self.penalty_fields = tuple(options.get("penalty_fields", PENALTY_FIELDS))
        self.extra_body = dict(options.get("extra_body") or {})
        self.stream = parse_flag(options.get("stream", True))
        self.model = model
        self._tokenize_route: str | None = None
        self.server_models = self._models()

    # --- HTTP -----------------------------------------------------------------------------------

    def _request(self, url: str, body: dict | None = None) -> urllib.request.Request:
        headers = {"Accept": "application/json, text/event-stream"}
        data = None
        if body is not None:
            data = json.dumps(body).encode("utf-8")
            headers["Content-Type"] = "application/json"
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        return urllib.request.Request(url, data=data, headers=headers, method="POST" if data else "GET")

    def _open(self, url: str, body: dict | None = None):
        """Open ``url`` with retries for overload and dropped connections; errors in one line."""
        for attempt in range(self.max_retries + 1):
            try:
                return urllib.request.urlopen(self._request(url, body), timeout=self.timeout)
            except urllib.error.HTTPError as exc:
                if exc.code in _RETRY_STATUS and attempt < self.max_retries:
                    time.sleep(min(8.0, 0.5 * 2**attempt))
                    continue
                raise ServerError(f"{url}: HTTP {exc.code} {_error_detail(exc)}", exc.code) from None
            except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
                reason = getattr(exc, "reason", exc)
                if isinstance(reason, TimeoutError):
                    raise ServerError(f"{url}: no answer within {self.timeout:g} s") from None
                if attempt < self.max_retries:
                    time.sleep(min(8.0, 0.5 * 2**attempt))
                    continue
                raise BackendUnavailableError(
                    f"cannot reach the OpenAI-compatible server at {self.base_url}: {reason}") from None
        raise AssertionError("unreachable")

    def _json(self, url: str, body: dict | None = None) -> Any:
        with self._open(url, body) as resp:
            raw = resp.read()
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            raise ServerError(f"{url}: the answer is not JSON ({raw[:80]!r})") from None

    def _models(self) -> list[str] | None:
        """The server's model list; also proves the server is there (an unreachable one fails here)."""
        try:
            data = self._json(f"{self.base_url}/models")
        except ServerError as exc:
            if exc.status in (404, 405):
                return None
            raise
        entries = data.get("data") if isinstance(data, dict) else None
        return [m.get("id") for m in entries or [] if isinstance(m, dict)]

    # --- tokens ---------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """The server's own token ids for ``text`` (llama-cpp-python: /extras/tokenize; vLLM and
        llama.cpp's server: /tokenize)."""
        root = self.base_url[: -len("/v1")] if self.base_url.endswith("/v1") else self.base_url
        routes = {
            "extras": (f"{root}/extras/tokenize", {"input": text, "model": self.model_name}),
            "tokenize": (f"{root}/tokenize", {"model": self.model_name, "prompt": text, "content": text,
                                               "add_special": True}),
        }
        order = [self._tokenize_route] if self._tokenize_route else list(routes)
        for route in order:
            url, body = routes[route]
            try:
                data = self._json(url, body)
            except ServerError:
                if self._tokenize_route:
                    raise
                continue
            if isinstance(data, dict) and isinstance(data.get("tokens"), list):
                self._tokenize_route = route
                return [int(t) for t in data["tokens"]]
        raise ServerError(f"the server at {self.base_url} offers no tokenize endpoint")

    # --- generation -----------------------------------------------------------------------------

    def request_body(self, prompt: str, settings: GenerationSettings) -> dict:
        body = {"model": self.model_name, "prompt": prompt, "max_tokens": int(settings.max_new_tokens),
                "temperature": float(settings.temperature), "top_p": 1.0, "n": 1, "stream": self.stream}
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        if settings.stop:
            body["stop"] = list(settings.stop)
        for field in self.penalty_fields:
            body[field] = float(settings.repetition_penalty)
        return {**body, **self.extra_body}

    def generate(self, prompts: list[str], settings: GenerationSettings, progress=None) -> list[Completion]:
        """Complete the prompts one by one; ``progress(done)`` after each."""
        completions = []
        for prompt in prompts:
            completions.append(self._one(prompt, settings))
            if progress is not None:
                progress(len(completions))
        return completions

    def _one(self, prompt: str, settings: GenerationSettings) -> Completion:
        url = f"{self.base_url}/completions"
        started = time.perf_counter()
        ttft, pieces, usage, finish, chunks = None, [], None, None, 0
        with self._open(url, self.request_body(prompt, settings)) as resp:
            for event in _sse_events(resp, url, self.timeout):
                if event.get("error"):
                    raise ServerError(f"{url}: {_message_of(event['error'])}")
                if event.get("usage"):
                    usage = event["usage"]
                for choice in event.get("choices") or []:
                    text = choice.get("text") or ""
                    if text:
                        if ttft is None and self.stream:
                            ttft = time.perf_counter() - started
                        pieces.append(text)
                        chunks += 1
                    finish = choice.get("finish_reason") or finish
        latency = time.perf_counter() - started
        meta = {"finish_reason": finish}
        if usage:
            prompt_tokens = usage.get("prompt_tokens", 0)
            completion_tokens = usage.get("completion_tokens", 0)
            meta["usage_source"] = "server"
        else:  # llama-cpp-python streams no usage: about one chunk per token; the server counts the prompt
            completion_tokens, meta["usage_source"] = chunks, "counted"
            try:
                prompt_tokens = len(self.tokenize(prompt))
            except ServerError:
                prompt_tokens, meta["usage_source"] = 0, "counted (no tokenize endpoint: prompt unknown)"
        return Completion(text="".join(pieces), prompt_tokens=int(prompt_tokens),
                          completion_tokens=int(completion_tokens), latency_s=latency, ttft_s=ttft, meta=meta)

    def info(self) -> dict:
        return {"backend": self.name, "base_url": self.base_url, "model": self.model_name,
                "server_models": self.server_models, "timeout_s": self.timeout,
                "stream": self.stream, "penalty_fields": list(self.penalty_fields), "extra_body": self.extra_body,
                "api_key": "set" if self.api_key else None}

    def close(self) -> None:
        pass


def _sse_events(resp, url: str, timeout: float):
    """Decoded ``data:`` events of a server-sent-events stream, up to ``[DONE]``.

    A server that answers a streaming request with one JSON document is accepted too.
    """
    try:
        yield from _read_events(resp, url)
    except TimeoutError:
        raise ServerError(f"{url}: the stream stalled for {timeout:g} s") from None
    except (ConnectionError, http.client.HTTPException) as exc:
        raise ServerError(f"{url}: the stream broke off ({type(exc).__name__})") from None


def _read_events(resp, url: str):
    content_type = resp.headers.get("Content-Type", "")
    if "text/event-stream" not in content_type:
        raw = resp.read()
        try:
            document = json.loads(raw)
        except json.JSONDecodeError:
            raise ServerError(f"{url}: the answer is neither an event stream nor JSON "
                              f"({raw[:80]!r})") from None
        yield document if isinstance(document, dict) else {}
        return
    for raw_line in resp:
        line = raw_line.decode("utf-8").strip()
        if not line.startswith("data:"):
            continue
        payload = line[len("data:"):].strip()
        if payload == "[DONE]":
            return
        try:
            yield json.loads(payload)
        except json.JSONDecodeError:
            raise ServerError(f"{url}: malformed stream event ({payload[:80]!r})") from None


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        body = exc.read().decode("utf-8", errors="replace")
    except OSError:
        return exc.reason or ""
    try:
        return _message_of(json.loads(body).get("error") or json.loads(body).get("detail") or body)
    except (json.JSONDecodeError, AttributeError):
        return " ".join(body.split())[:200] or str(exc.reason)


def _message_of(error: Any) -> str:
    """One line of at most 300 characters from whatever error object a server sent."""
    if isinstance(error, dict):
        error = error.get("message") or error
    return " ".join(str(error).split())[:300]


def factory(model: ModelSpec, options: dict | None = None) -> OpenAIBackend:
    return OpenAIBackend(model, options)


@hookimpl
def register_backends(register):
    register("openai", factory, description="any OpenAI-compatible server (completions endpoint, streamed)")
