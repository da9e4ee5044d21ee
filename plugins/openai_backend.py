"""The ``openai`` backend: any OpenAI-compatible server (vLLM, llama.cpp's server, llama-cpp-python's
server, a cluster gateway in front of several of them) through the official ``openai`` SDK's async
client, with the prompt already rendered.

Requests are greedy (temperature 0) and streamed, so the time to the first token and the gaps
between tokens are measured (option ``stream=false``: one answer per request, no ttft). ``api`` picks
the endpoint: ``completions`` (default; the prompt is sent as rendered) or ``chat`` (the prompt is
sent as one user message and the server applies its chat template). The usage block is asked for in
the stream (``stream_options.include_usage``); servers that do not send it (llama-cpp-python) get
their output counted by stream chunks and their prompt by the server's tokenize endpoint, and the
source is recorded in ``meta["usage_source"]``.

Retries are the harness's own (the SDK's are turned off so they can be counted): 429, 5xx, dropped
connections and streams that break off are retried ``max_retries`` times with exponential backoff;
each completion records its retries in ``meta["retries"]``. The repetition penalty is sent under the
names servers read (``repetition_penalty`` for vLLM, ``repeat_penalty`` for llama.cpp servers, whose
default is 1.1, not 1.0); set ``penalty_fields`` to ``[]`` for the official OpenAI API.

Options: ``base_url`` (http://127.0.0.1:8000/v1), ``api_key`` (else ``$OPENAI_API_KEY``; never written
to results or logs), ``model`` (ModelSpec.path), ``api`` (completions | chat), ``timeout_s`` (120),
``max_retries`` (2), ``stream`` (true), ``concurrency`` (requests in flight in ``generate``; 1),
``penalty_fields``, ``extra_body`` (merged into every request).
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from lrl_harness import (
    BackendUnavailableError,
    Completion,
    ConfigError,
    GenerationSettings,
    ModelSpec,
    Option,
    ServerError,
    check_options,
    hookimpl,
)

DEFAULT_BASE_URL = "http://127.0.0.1:8000/v1"
API_KEY_ENV = "OPENAI_API_KEY"
PENALTY_FIELDS = ("repetition_penalty", "repeat_penalty")
APIS = ("completions", "chat")
OPTIONS = {
    "base_url": Option(str, DEFAULT_BASE_URL, "the server's OpenAI API root",
                       check=lambda v: v.startswith(("http://", "https://")),
                       requirement="a URL (it must start with http:// or https://)"),
    "api_key": Option(str, None, f"bearer token (default: ${API_KEY_ENV})", nullable=True),
    "model": Option(str, None, "the served model's name (default: the target's model)", nullable=True),
    "api": Option(str, "completions", "completions (the harness renders the prompt) or chat", choices=APIS),
    "timeout_s": Option(float, 120.0, "seconds to wait for an answer", min=0, check=lambda v: v > 0,
                        requirement="a positive number"),
    "max_retries": Option(int, 2, "retries of a failed request (429, 5xx, connection)", min=0),
    "penalty_fields": Option(list, list(PENALTY_FIELDS), "request fields that set the repetition penalty",
                             check=lambda v: all(isinstance(f, str) for f in v), requirement="a list of field names"),
    "extra_body": Option(dict, None, "more request fields", nullable=True),
    "stream": Option(bool, True, "stream tokens (TTFT and ITL are measured only when streaming)"),
    "concurrency": Option(int, 1, "requests in flight when the backend is asked several prompts", min=1),
}
_RETRY_STATUS = {429, 500, 502, 503, 504}
_SDK_FIELDS = {"model", "prompt", "messages", "max_tokens", "temperature", "top_p", "n", "stream",
               "stream_options", "stop", "seed"}






class OpenAIBackend:
    name = "openai"

    def __init__(self, model: ModelSpec, options: dict | None = None):
        options = check_options("backend openai", OPTIONS, options, unknown_label="openai")
        self.base_url = options["base_url"].rstrip("/")
        self.model_name = str(options["model"] or model.path or model.name)
        if not self.model_name:
            raise ConfigError("the openai backend needs a model name (ModelSpec.path or the model option)")
        self.api = options["api"]
        self.api_key = options["api_key"] or os.environ.get(API_KEY_ENV) or None
        self.timeout = options["timeout_s"]
        self.max_retries = options["max_retries"]
        self.concurrency = options["concurrency"]
        self.penalty_fields = tuple(options["penalty_fields"])
        self.extra_body = dict(options["extra_body"] or {})
        self.stream = options["stream"]
        self.model = model
        self.retries = 0
        self._tokenize_route: str | None = None
        try:
            import openai
        except ImportError:
            raise BackendUnavailableError("the openai backend needs the openai package: pip install openai") from None
        self._openai = openai
        self._loop = asyncio.new_event_loop()
        # The SDK's own retries are off: the harness retries, so that it can count them.
        self.client = openai.AsyncOpenAI(base_url=self.base_url, api_key=self.api_key or "not-needed",
                                         timeout=self.timeout, max_retries=0)
        try:
            self.server_models = self.run(self._models())
        except BaseException:
            self.close()
            raise

    # --- the event loop this backend's client lives on --------------------------------------------

    def run(self, coroutine):
        """Run a coroutine on this backend's own event loop (the async client is bound to it)."""
        return self._loop.run_until_complete(coroutine)

    # --- requests -------------------------------------------------------------------------------

    async def _with_retries(self, url: str, call, counter: list[int] | None = None):
        """``await call()``, retried on overload, server errors and dropped connections."""
        attempt = 0
        while True:
            try:
                return await call()
            except ServerError as exc:
                if not exc.retryable or attempt >= self.max_retries:
                    raise
            except Exception as exc:  # noqa: BLE001 - every SDK and transport error becomes one line
                error = self._translate(url, exc)
                if not error.retryable or attempt >= self.max_retries:
                    raise error from None
            attempt += 1
            self.retries += 1
            if counter is not None:
                counter[0] += 1
            await asyncio.sleep(min(8.0, 0.25 * 2 ** (attempt - 1)))

    def _translate(self, url: str, exc: Exception) -> ServerError:
        openai = self._openai
        if isinstance(exc, openai.APITimeoutError) or isinstance(exc, TimeoutError):
            return ServerError(f"{url}: no answer within {self.timeout:g} s")
        if isinstance(exc, openai.APIStatusError):
            status = exc.status_code
            return ServerError(f"{url}: HTTP {status} {_message_of(exc.body or exc.message)}", status,
                               retryable=status in _RETRY_STATUS)
        if isinstance(exc, openai.APIConnectionError):
            cause = exc.__cause__ or exc
            return _Unreachable(f"cannot reach the OpenAI-compatible server at {self.base_url}: "
                                f"{_message_of(str(cause) or type(cause).__name__)}")
        if _is_transport_error(exc):
            return ServerError(f"{url}: the stream broke off ({type(exc).__name__})", retryable=True)
        if isinstance(exc, openai.OpenAIError):
            return ServerError(f"{url}: {_message_of(str(exc))}")
        raise exc

    async def _models(self) -> list[str] | None:
        """The server's model list; also proves the server is there (an unreachable one fails here)."""
        url = f"{self.base_url}/models"
        try:
            page = await self._with_retries(url, lambda: self.client.models.list())
        except _Unreachable as exc:
            raise BackendUnavailableError(str(exc)) from None
        except ServerError as exc:
            if exc.status in (404, 405):
                return None
            raise
        return [m.id for m in page.data]

    # --- tokens ---------------------------------------------------------------------------------

    def tokenize(self, text: str) -> list[int]:
        """The server's own token ids for ``text`` (llama-cpp-python: /extras/tokenize; vLLM and
        llama.cpp's server: /tokenize)."""
        return self.run(self.atokenize(text))

    async def atokenize(self, text: str) -> list[int]:
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
                data = await self._with_retries(url, lambda u=url, b=body: self.client.post(u, body=b, cast_to=object))
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
        """The JSON body of one request (the SDK sends the fields it knows, the rest as extra body)."""
        body: dict[str, Any] = {"model": self.model_name, "max_tokens": int(settings.max_new_tokens),
                                "temperature": float(settings.temperature), "top_p": 1.0, "n": 1,
                                "stream": self.stream}
        if self.api == "chat":
            body["messages"] = [{"role": "user", "content": prompt}]
        else:
            body["prompt"] = prompt
        if self.stream:
            body["stream_options"] = {"include_usage": True}
        if settings.stop:
            body["stop"] = list(settings.stop)
        for field in self.penalty_fields:
            body[field] = float(settings.repetition_penalty)
        return {**body, **self.extra_body}

    def generate(self, prompts: list[str], settings: GenerationSettings, progress=None) -> list[Completion]:
        """Complete the prompts, ``concurrency`` at a time, in order; ``progress(done)`` after each."""
        return self.run(self._generate_all(prompts, settings, progress))

    async def _generate_all(self, prompts, settings, progress) -> list[Completion]:
        gate = asyncio.Semaphore(self.concurrency)
        done = 0

        async def one(prompt: str) -> Completion:
            nonlocal done
            async with gate:
                completion = await self.agenerate(prompt, settings)
            done += 1
            if progress is not None:
                progress(done)
            return completion

        tasks = [asyncio.ensure_future(one(p)) for p in prompts]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def agenerate(self, prompt: str, settings: GenerationSettings) -> Completion:
        """One request, retried as the options say. Times are from the first attempt's start:
        ``ttft_s`` to the first piece of text, ``latency_s`` to the end of the stream;
        ``meta["token_times_s"]`` holds the arrival time of every streamed piece of text."""
        url = f"{self.base_url}/{'chat/completions' if self.api == 'chat' else 'completions'}"
        body = self.request_body(prompt, settings)
        known = {k: v for k, v in body.items() if k in _SDK_FIELDS}
        extra = {k: v for k, v in body.items() if k not in _SDK_FIELDS}
        create = self.client.chat.completions.create if self.api == "chat" else self.client.completions.create
        retries = [0]
        started = time.perf_counter()

        async def attempt():
            response = await create(**known, extra_body=extra or None)
            if not self.stream:
                return [response], []
            chunks, times = [], []
            try:
                async for chunk in response:
                    chunks.append(chunk)
                    if any(_text_of(choice) for choice in chunk.choices or []):
                        times.append(time.perf_counter() - started)
            except Exception as exc:  # noqa: BLE001 - the answer had started: the stream broke off
                if isinstance(exc, self._openai.APIStatusError):
                    raise
                cause = exc.__cause__ or exc
                raise ServerError(f"{url}: the stream broke off after {len(chunks)} events "
                                  f"({_message_of(str(cause) or type(cause).__name__)})", retryable=True) from None
            return chunks, times

        chunks, times = await self._with_retries(url, attempt, retries)
        latency = time.perf_counter() - started
        pieces, usage, finish = [], None, None
        for chunk in chunks:
            if getattr(chunk, "usage", None):
                usage = chunk.usage
            for choice in chunk.choices or []:
                text = _text_of(choice)
                if text:
                    pieces.append(text)
                finish = getattr(choice, "finish_reason", None) or finish
        if self.stream and finish is None:
            raise ServerError(f"{url}: the stream ended before the answer finished (no finish_reason)")
        meta: dict[str, Any] = {"finish_reason": finish, "retries": retries[0]}
        if self.stream:
            meta["token_times_s"] = [round(t, 6) for t in times]
        if usage:
            prompt_tokens, completion_tokens = usage.prompt_tokens or 0, usage.completion_tokens or 0
            meta["usage_source"] = "server"
        else:  # llama-cpp-python streams no usage: about one chunk per token; the server counts the prompt
            completion_tokens, meta["usage_source"] = len(times), "counted"
            prompt_tokens = 0
            if self.api == "chat":
                meta["usage_source"] = "counted (chat: the templated prompt is not counted)"
            else:
                try:
                    prompt_tokens = len(await self.atokenize(prompt))
                except ServerError:
                    meta["usage_source"] = "counted (no tokenize endpoint: prompt unknown)"
        ttft = times[0] if times else None
        return Completion(text="".join(pieces), prompt_tokens=int(prompt_tokens),
                          completion_tokens=int(completion_tokens), latency_s=latency, ttft_s=ttft, meta=meta)

    def info(self) -> dict:
        return {"backend": self.name, "base_url": self.base_url, "model": self.model_name, "api": self.api,
                "server_models": self.server_models, "timeout_s": self.timeout, "max_retries": self.max_retries,
                "stream": self.stream, "penalty_fields": list(self.penalty_fields), "extra_body": self.extra_body,
                "client": f"openai {self._openai.__version__}", "retries": self.retries,
                "api_key": "set" if self.api_key else None}

    def close(self) -> None:
        loop = getattr(self, "_loop", None)
        if loop is None or loop.is_closed():
            return
        try:
            loop.run_until_complete(self.client.close())
        finally:
            loop.close()


class _Unreachable(ServerError):
    def __init__(self, message: str):
        super().__init__(message, None, retryable=True)


def _text_of(choice) -> str:
    """The text of one choice of a completions or chat-completions chunk (or whole answer)."""
    text = getattr(choice, "text", None)
    if text is None:
        part = getattr(choice, "delta", None) or getattr(choice, "message", None)
        text = getattr(part, "content", None)
    return text or ""


def _is_transport_error(exc: Exception) -> bool:
    """An HTTP transport failure (a connection closed mid-stream...) from the SDK's HTTP library."""
    return any(cls.__module__.split(".")[0] in ("httpx", "httpx2", "httpcore", "h11", "anyio")
               for cls in type(exc).__mro__) or isinstance(exc, ConnectionError)


def _message_of(error: Any) -> str:
    """One line of at most 300 characters from whatever error object a server sent."""
    if isinstance(error, dict):
        error = error.get("error") or error.get("detail") or error.get("message") or error
        if isinstance(error, dict):
            error = error.get("message") or error
    return " ".join(str(error).split())[:300]


def factory(model: ModelSpec, options: dict | None = None) -> OpenAIBackend:
    return OpenAIBackend(model, options)


@hookimpl
def register_backends(register):
    register("openai", factory, runs=("server",), concurrent=True, options=OPTIONS,
             description="any OpenAI-compatible server (official openai client, async, streamed)")
