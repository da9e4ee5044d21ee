"""The ``anthropic`` teacher: a Claude model over the Anthropic Messages API.

Options (``--teacher-option key=value``):

- ``model``: default ``claude-haiku-4-5``. The original experiment used
  ``claude-3-5-haiku-20241022``; pass that id to reproduce it where it is still served.
- ``temperature`` (0), ``max_tokens`` (1024): the original's sampling settings. API version
  2026-10-21 (what SDK 2.x sends) rejects every sampling parameter and SDK 1.x dropped the keyword,
  so a temperature is sent in the request body under ``anthropic-version: 2023-06-01``, the version
  that still takes it. Models that choose their own sampling (Opus 4.8 and later) reject it even
  there: set ``temperature=null`` to send none, under the SDK's own API version.
- ``system``: an optional system prompt (the original sent none).
- ``base_url``: another endpoint speaking the Messages API; ``ANTHROPIC_BASE_URL`` is honoured too.
- ``timeout`` (120 s per attempt) and ``max_retries`` (4): handed to the SDK, which retries 408,
  409, 429, 5xx and 529 (overloaded) with exponential backoff, honouring ``retry-after``.
- ``concurrency`` (1): requests in flight at once.
- ``prices``: a JSON or TOML price file (see ``lrl_harness.pipeline.cost``), checked before any request.

The key comes from ``ANTHROPIC_API_KEY``. A failure that survives the SDK's retries raises
``TeacherError`` with one line (status, error type, message, request id); every answer received
before it is kept by the response cache, so the stage resumes where it stopped.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from typing import Any

from lrl_harness import (
    BackendUnavailableError,
    Completion,
    ConfigError,
    Option,
    TeacherError,
    TeacherRequest,
    check_options,
    hookimpl,
    load_prices,
)

DEFAULT_MODEL = "claude-haiku-4-5"
ORIGINAL_MODEL = "claude-3-5-haiku-20241022"
KEY_ENV = "ANTHROPIC_API_KEY"
SAMPLING_API_VERSION = "2023-06-01"
"""The last API version that accepts ``temperature``."""

OPTIONS = {
    "model": Option(str, DEFAULT_MODEL, "the model id", check=lambda v: bool(v.strip()), requirement="a model id"),
    "temperature": Option(float, 0.0, "sampling temperature; null sends none", min=0, max=1, nullable=True),
    "max_tokens": Option(int, 1024, "new tokens per answer", min=1),
    "system": Option(str, None, "a system prompt", nullable=True),
    "base_url": Option(str, None, "another endpoint speaking the Messages API", nullable=True,
                       check=lambda v: v.startswith(("http://", "https://")), requirement="an http(s) URL"),
    "timeout": Option(float, 120.0, "seconds per attempt", check=lambda v: v > 0,
                      requirement="a positive number of seconds"),
    "max_retries": Option(int, 4, "retries the SDK makes", min=0),
    "concurrency": Option(int, 1, "requests in flight at once", min=1),
    "prices": Option(str, None, "the path of a JSON or TOML price file", nullable=True),
}


def read_options(options: dict | None) -> dict:
    """Defaults plus the user's options, checked; ``_``-prefixed keys are the pipeline's own."""
    values = check_options("teacher anthropic", OPTIONS, options)
    return {k: v for k, v in values.items() if not k.startswith("_")}


class AnthropicTeacher:
    name = "anthropic"
    is_language_model = True

    def __init__(self, *, api_key: str | None, model: str = DEFAULT_MODEL, temperature: float | None = 0.0,
                 max_tokens: int = 1024, system: str | None = None, base_url: str | None = None,
                 timeout: float = 120.0, max_retries: int = 4, concurrency: int = 1,
                 prices: str | None = None):
        try:
            import anthropic
        except ImportError:
            raise BackendUnavailableError("the anthropic teacher needs the anthropic SDK: "
                                          "pip install anthropic") from None
        self._sdk = anthropic
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.system = system
        self.base_url = base_url or os.environ.get("ANTHROPIC_BASE_URL") or None
        self.timeout = timeout
        self.max_retries = max_retries
        self.concurrency = concurrency
        self.prices = prices
        self._api_key = api_key
        self._client = None

    @property
    def client(self):
        """The SDK client, made on first use (a cache-only replay never needs a key)."""
        if self._client is None:
            if not self._api_key:
                raise TeacherError(f"teacher anthropic: no API key; set {KEY_ENV}")
            self._client = self._sdk.Anthropic(api_key=self._api_key, base_url=self.base_url,
                                               timeout=self.timeout, max_retries=self.max_retries)
        return self._client

    def cache_identity(self) -> dict:
        return {"teacher": self.name, "model": self.model, "temperature": self.temperature,
                "max_tokens": self.max_tokens, "system": self.system}

    @property
    def endpoint(self) -> str | None:
        """Where requests go when it is not Anthropic's own API; part of every cache key."""
        return self.base_url.rstrip("/") if self.base_url else None

    def info(self) -> dict[str, Any]:
        return {
            "teacher": self.name,
            "model": self.model,
            "is_language_model": True,
            "temperature": self.temperature,
            "api_version": SAMPLING_API_VERSION if self.temperature is not None else "the SDK's default",
            "max_tokens": self.max_tokens,
            "system": self.system,
            "base_url": self.base_url or "https://api.anthropic.com",
            "timeout_s": self.timeout,
            "max_retries": self.max_retries,
            "concurrency": self.concurrency,
            "prices": self.prices,
            "sdk_version": self._sdk.__version__,
            "original_model": ORIGINAL_MODEL,
        }

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    # --- answering ---------------------------------------------------------------------------

    def complete(self, requests: list[TeacherRequest]) -> list[Completion]:
        client = self.client
        if self.concurrency == 1 or len(requests) <= 1:
            done: dict[int, Completion] = {}
            for i, request in enumerate(requests):
                try:
                    done[i] = self._one(client, request)
                except TeacherError as exc:
                    exc.completed = done
                    raise
            return [done[i] for i in range(len(requests))]
        return self._complete_concurrently(client, requests)

    def _complete_concurrently(self, client, requests: list[TeacherRequest]) -> list[Completion]:
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="anthropic") as pool:
            futures = {pool.submit(self._one, client, r): i for i, r in enumerate(requests)}
            finished, pending = wait(futures, return_when=FIRST_EXCEPTION)
            failure = next((f.exception() for f in finished if f.exception() is not None), None)
            if failure is not None:
                for future in pending:
                    future.cancel()
                wait(pending)
        done = {futures[f]: f.result() for f in futures
                if f.done() and not f.cancelled() and f.exception() is None}
        if failure is not None:
            if isinstance(failure, TeacherError):
                failure.completed = done
            raise failure
        return [done[i] for i in range(len(requests))]

    def _one(self, client, request: TeacherRequest) -> Completion:
        params: dict[str, Any] = {
            "model": self.model,
            "max_tokens": self.max_tokens,
            "messages": [{"role": "user", "content": request.prompt}],
        }
        if self.system:
            params["system"] = self.system
        if self.temperature is not None:
            params["extra_body"] = {"temperature": self.temperature}
            params["extra_headers"] = {"anthropic-version": SAMPLING_API_VERSION}
        start = time.perf_counter()
        try:
            raw = client.messages.with_raw_response.create(**params)
        except self._sdk.APIError as exc:
            raise TeacherError(self._describe(exc)) from exc
        try:
            message = raw.parse()
            text = "".join(block.text for block in message.content if getattr(block, "type", None) == "text")
            usage = message.usage
            meta = {
                "api": "anthropic",
                "model": message.model,
                "requested_model": self.model,
                "input_tokens": int(usage.input_tokens),
                "output_tokens": int(usage.output_tokens),
                "retries": int(raw.retries_taken),
                "request_id": raw.request_id,
                "stop_reason": message.stop_reason,
            }
        except (self._sdk.APIError, ValueError, TypeError, AttributeError) as exc:
            raise TeacherError(f"teacher anthropic: the API sent a body that is not a Messages API response "
                               f"(HTTP {raw.status_code}, request {raw.request_id or 'without id'}: "
                               f"{type(exc).__name__}: {_first_line(exc)})") from exc
        latency = time.perf_counter() - start
        meta["latency_s"] = round(latency, 4)
        return Completion(text=text, prompt_tokens=meta["input_tokens"],
                          completion_tokens=meta["output_tokens"], latency_s=latency, meta=meta)

    def _describe(self, exc: Exception) -> str:
        """One line for a failure the SDK gave up on."""
        sdk = self._sdk
        where = f"model {self.model}"
        if isinstance(exc, sdk.APIStatusError):
            kind = getattr(exc, "type", None) or _error_field(exc.body, "type") or "error"
            message = (getattr(exc, "api_message", None) or _error_field(exc.body, "message")
                       or _first_line(exc))
            retried = (f", gave up after {_retries(self.max_retries)}"
                       if _retryable(exc.status_code) and self.max_retries else "")
            request_id = f", request {exc.request_id}" if getattr(exc, "request_id", None) else ""
            hint = ""
            if exc.status_code in (401, 403):
                hint = f"; check {KEY_ENV}"
            elif exc.status_code == 400 and "temperature" in message and self.temperature is not None:
                hint = "; this model takes no temperature: set the teacher option temperature=null"
            return (f"teacher anthropic: HTTP {exc.status_code} {kind}: {message} "
                    f"({where}{request_id}{retried}){hint}")
        if isinstance(exc, sdk.APITimeoutError):
            return (f"teacher anthropic: no answer within {self.timeout:g} s "
                    f"({where}, gave up after {_retries(self.max_retries)})")
        if isinstance(exc, sdk.APIConnectionError):
            cause = exc.__cause__ or exc
            return (f"teacher anthropic: cannot reach {self.base_url or 'api.anthropic.com'} "
                    f"({type(cause).__name__}: {_first_line(cause)}; {where}, "
                    f"gave up after {_retries(self.max_retries)})")
        return f"teacher anthropic: {type(exc).__name__}: {_first_line(exc)} ({where})"


def _retries(n: int) -> str:
    return f"{n} retry" if n == 1 else f"{n} retries"


def _retryable(status: int) -> bool:
    """The statuses the SDK retries unless the server says ``x-should-retry: false``."""
    return status in (408, 409, 429) or status >= 500


def _error_field(body, name: str) -> str | None:
    if isinstance(body, dict):
        error = body.get("error")
        if isinstance(error, dict) and isinstance(error.get(name), str):
            return error[name]
    return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def make_teacher(task=None, options: dict | None = None, context=None) -> AnthropicTeacher:
    """Checks the options and the key before any work starts (no key is needed when ``context`` says
    only cached answers are used)."""
    options = options or {}
    values = read_options(options)
    load_prices(values["prices"])  # a bad price file fails now, not after the stage
    api_key = os.environ.get(KEY_ENV, "").strip() or None
    if api_key is None and not getattr(context, "cache_only", False):
        raise ConfigError(f"teacher anthropic needs an API key: set {KEY_ENV} "
                          "(or replay cached answers with --cache-only)")
    return AnthropicTeacher(api_key=api_key, **values)


@hookimpl
def register_teachers(register):
    register("anthropic", make_teacher, options=OPTIONS,
             description=f"Claude over the Anthropic Messages API (default {DEFAULT_MODEL}; "
                         f"needs {KEY_ENV})")
