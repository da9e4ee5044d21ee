"""The openai backend against a real OpenAI-compatible server: llama-cpp-python's own server,
started on 127.0.0.1 with the tiny student's GGUF, compared with the in-process llamacpp backend.

Needs the server extra: pip install 'llama-cpp-python[server]' (uvicorn, fastapi, sse-starlette,
starlette-context, pydantic-settings).
"""

from __future__ import annotations

import json
import socket
import sys
import threading

import pytest
from local_server import free_port, openai_server
from lrl_harness import GenerationSettings, ModelSpec
from lrl_harness.api.errors import BackendUnavailableError, ConfigError
from lrl_harness_plugins.llamacpp_backend import LlamaCppBackend
from lrl_harness_plugins.openai_backend import OpenAIBackend, ServerError
from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask

pytest.importorskip("llama_cpp", reason="the llamacpp extra is not installed")
for _module in ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
    pytest.importorskip(_module, reason="llama-cpp-python's server extra is not installed")

TASK = MeetingRoomsTask()
SETTINGS = GenerationSettings(max_new_tokens=20)


@pytest.fixture(scope="module")
def gguf(exported):
    return exported[1] / "model-f32.gguf"


@pytest.fixture(scope="module")
def server(gguf, tmp_path_factory):
    """``python -m llama_cpp.server`` on a free port; waits until /v1/models answers, then stops it."""
    command = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf), "--n_ctx", "1024", "--n_threads", "1",
               "--n_threads_batch", "1", "--logits_all", "false", "--model_alias", "tiny",
               # Its default (true) aborts the streaming answer whenever another request arrives: under
               # concurrent load 11 of 12 answers broke off. False queues requests instead.
               "--interrupt_requests", "false"]
    with openai_server(command, tmp_path_factory.mktemp("server") / "server.log", "llama_cpp.server",
                       ready_s=90, poll_s=0.3, stop_s=15) as base_url:
        yield base_url


@pytest.fixture(scope="module")
def remote(server):
    backend = OpenAIBackend(ModelSpec(path="tiny"), {"base_url": server, "timeout_s": 60})
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def local(gguf):
    backend = LlamaCppBackend(ModelSpec(path=str(gguf)), {"n_threads": 1})
    yield backend
    backend.close()


def prompts(n: int) -> list[str]:
    return [TASK.student_prompt(p, TASK.reference_strategy) for p in TASK.problems("balanced", "test", n=n)]


def test_server_output_equals_in_process_llama_cpp(remote, local, server):
    """Same greedy tokens through the server as in-process, seen through two quirks of a random
    model's output: it emits byte tokens that are not valid UTF-8, which llama-cpp-python's server
    drops from the text (the in-process backend shows U+FFFD, as transformers does), and while a
    character is incomplete the server does not count tokens against max_tokens, so it may go on
    past the limit. Its text therefore starts with the in-process tokens decoded the server's way."""
    batch = prompts(4)
    whole = OpenAIBackend(ModelSpec(path="tiny"), {"base_url": server, "stream": False})
    served, streamed = whole.generate(batch, SETTINGS), remote.generate(batch, SETTINGS)
    here = local.generate(batch, SETTINGS)
    for a, s, b, prompt in zip(served, streamed, here, batch, strict=True):
        expected = local.llm.detokenize(b.meta["token_ids"]).decode("utf-8", errors="ignore")
        assert len(expected) >= 8 and a.text.startswith(expected)
        assert a.prompt_tokens == b.prompt_tokens == len(local.tokenize(prompt))
        assert a.completion_tokens >= b.completion_tokens and a.meta["usage_source"] == "server"
        assert a.ttft_s is None
        # Streaming, an unfinished character is held back and not flushed at the end.
        assert s.text and a.text.startswith(s.text)
        assert 0 < s.ttft_s <= s.latency_s and s.meta["usage_source"] == "counted"


def test_server_tokenizes_like_llama_cpp(remote, local):
    prompt = prompts(1)[0]
    assert remote.tokenize(prompt) == local.tokenize(prompt)


def test_info_names_the_server_and_model(remote, server):
    info = remote.info()
    assert info["base_url"] == server and info["model"] == "tiny" and info["server_models"] == ["tiny"]
    assert info["api_key"] is None


def test_request_is_greedy_and_sets_the_penalty_explicitly(remote):
    body = remote.request_body("hi", GenerationSettings(max_new_tokens=7, stop=("\n\n",)))
    assert body["temperature"] == 0.0 and body["max_tokens"] == 7 and body["stream"] is True
    assert body["repeat_penalty"] == 1.0 == body["repetition_penalty"]  # llama.cpp servers default to 1.1
    assert body["stop"] == ["\n\n"]


def test_server_rejection_is_one_line(remote):
    with pytest.raises(ServerError) as err:
        remote.generate(["hi"], GenerationSettings(max_new_tokens=20, repetition_penalty=-1.0))
    message = str(err.value)  # llama-cpp-python's server answers a validation error with HTTP 500
    assert "/completions: HTTP 500" in message and "validation error" in message and "\n" not in message


def test_unreachable_server_is_one_line():
    with pytest.raises(BackendUnavailableError) as err:
        OpenAIBackend(ModelSpec(path="m"), {"base_url": f"http://127.0.0.1:{free_port()}/v1", "max_retries": 0})
    assert "cannot reach the OpenAI-compatible server" in str(err.value) and "\n" not in str(err.value)


def test_silent_server_times_out():
    """A real socket on 127.0.0.1 that accepts connections and never answers."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    accepted = []
    stop = threading.Event()

    def accept():
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        with pytest.raises(ServerError, match=r"no answer within 0.5 s"):
            OpenAIBackend(ModelSpec(path="m"), {"base_url": f"http://127.0.0.1:{listener.getsockname()[1]}/v1",
                                                "timeout_s": 0.5, "max_retries": 0})
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        listener.close()


def test_bad_options_are_refused():
    with pytest.raises(ConfigError, match="unknown openai option 'url'"):
        OpenAIBackend(ModelSpec(path="m"), {"url": "x"})
    with pytest.raises(ConfigError, match="must start with http"):
        OpenAIBackend(ModelSpec(path="m"), {"base_url": "127.0.0.1:8000"})


def test_api_key_is_sent_as_bearer_and_never_shown(remote, monkeypatch):
    """The key from the environment reaches the server as a bearer token and is never in info()."""
    from slow_server import SlowServer

    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    with SlowServer(delay_s=0.0) as fake:
        backend = OpenAIBackend(ModelSpec(path="tiny"), {"base_url": fake.base_url})
        try:
            backend.generate(["x"], SETTINGS)
        finally:
            backend.close()
        assert fake.authorization == ["Bearer sk-test", "Bearer sk-test"]  # /models, then /completions
    assert backend.info()["api_key"] == "set" and "sk-test" not in json.dumps(backend.info())


def test_bench_sweep_on_llama_cpp_server_matches_in_process(server, gguf, tmp_path):
    """``lrl bench`` at concurrency 1,2,4 against the real server, beside the in-process llamacpp
    backend on the same GGUF (measured at concurrency 1 only: it answers one request at a time), each
    target in its own process: every level answers every problem, with the in-process answers."""
    from lrl_harness.cli.app import main
    from lrl_harness.results.io import load_results

    out = tmp_path / "bench.json"
    code = main(["bench", "--n", "12", "--max-new-tokens", "20", "--warmup", "1", "--concurrency", "1,2,4",
                 "--target", f"server:openai=tiny,base_url={server},timeout_s=60",
                 "--target", f"llamacpp={gguf}", "--threads", "1", "--out", str(out), "-q"])
    assert code == 0
    bench = load_results(out)["benchmarks"]
    assert bench["isolated"] and sorted(bench["order"]) == ["llamacpp", "server"]
    local = bench["backends"]["llamacpp"]
    assert set(local["levels"]["c=2"]) == {"level", "skipped"} and local["reference_level"] == "c=1"
    here = [r["answer"] for r in local["results"]]
    remote = bench["backends"]["server"]
    for key in ("c=1", "c=2", "c=4"):
        block = remote["levels"][key]
        load = block["load"]
        assert block["total"] == 12 and load["errors"] == 0
        assert [r["answer"] for r in block["results"]] == here, key
        for name in ("e2e", "ttft", "itl", "tpot"):
            assert load[name]["p50_s"] <= load[name]["p90_s"] <= load[name]["p99_s"], (key, name)
        assert load["ttft"]["p50_s"] <= load["e2e"]["p50_s"] and load["ttft"]["max_s"] <= load["e2e"]["max_s"]
        assert 1 <= load["peak_in_flight"] <= int(key[2:])
        assert load["token_source"] == ["counted"]
    assert remote["levels"]["c=4"]["paired_vs_reference"]["mcnemar_p"] == 1.0
    assert remote["levels"]["c=4"]["load"]["peak_in_flight"] == 4
