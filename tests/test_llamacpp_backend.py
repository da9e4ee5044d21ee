"""The llamacpp backend on the real tiny student's GGUF, against the transformers backend on the
same weights: identical prompt token ids and identical greedy text (f32), BOS handling, the prefix
KV cache, and a GGUF LoRA adapter equal to the merged model.

The model is random-initialised, so agreement here is about the engines, not about accuracy.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from lrl_harness import GenerationSettings, ModelSpec
from lrl_harness.api.errors import ConfigError, LrlError
from lrl_harness.pipeline.export import GGUFError, export_model
from lrl_harness_plugins.llamacpp_backend import LlamaCppBackend
from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask

pytest.importorskip("llama_cpp", reason="the llamacpp extra is not installed")

TASK = MeetingRoomsTask()
SETTINGS = GenerationSettings(max_new_tokens=24)


def prompts(n: int, strategy: str | None = TASK.reference_strategy) -> list[str]:
    return [TASK.student_prompt(p, strategy) for p in TASK.problems("balanced", "test", n=n)]


@pytest.fixture(scope="module")
def llama(exported):
    backend = LlamaCppBackend(ModelSpec(path=str(exported[1] / "model-f32.gguf")), {"n_threads": 1})
    yield backend
    backend.close()


@pytest.fixture(scope="module")
def hf(exported):
    from lrl_harness_plugins.transformers_backend import TransformersBackend

    backend = TransformersBackend(ModelSpec(path=str(exported[0])), {"device": "cpu"})
    yield backend
    backend.close()


def test_greedy_output_equals_transformers(llama, hf):
    batch = prompts(8)
    for prompt in batch:
        assert llama.tokenize(prompt) == hf.tokenize(prompt)
    ours, theirs = llama.generate(batch, SETTINGS), hf.generate(batch, SETTINGS)
    assert [c.text for c in ours] == [c.text for c in theirs]
    for a, b, prompt in zip(ours, theirs, batch, strict=True):
        assert a.prompt_tokens == b.prompt_tokens == len(llama.tokenize(prompt))
        assert a.completion_tokens == b.completion_tokens
        assert 0 < a.ttft_s <= a.latency_s


def test_prompts_decoded_together_equal_one_at_a_time(exported, llama, hf):
    """``batch_size``: several sequences in one context, one decode per step for all of them; the same
    greedy tokens as one at a time and as transformers, in the order given, with a finish reason each."""
    batch = prompts(7)
    together = LlamaCppBackend(ModelSpec(path=str(exported[1] / "model-f32.gguf")), {"n_threads": 1, "batch_size": 3})
    try:
        done: list[int] = []
        ours = together.generate(batch, SETTINGS, progress=done.append)
        assert together.info()["batch_size"] == 3
    finally:
        together.close()
    alone = llama.generate(batch, SETTINGS)
    assert [c.meta["token_ids"] for c in ours] == [c.meta["token_ids"] for c in alone]
    assert [c.text for c in ours] == [c.text for c in hf.generate(batch, SETTINGS)]
    assert done == [3, 6, 7] and {c.meta["batch"] for c in ours} == {3, 1}
    for a, b in zip(ours, alone, strict=True):
        assert (a.prompt_tokens, a.completion_tokens, a.meta["finish_reason"]) == (
            b.prompt_tokens, b.completion_tokens, b.meta["finish_reason"])


def test_bos_comes_from_the_model_and_is_never_doubled(llama):
    assert llama.add_bos is True
    ids = llama.tokenize("Problem:")
    assert ids[0] == llama.bos and ids.count(llama.bos) == 1
    assert llama.tokenize("<s>Problem:") == ids  # a rendered prompt that already carries BOS


def test_info_records_threads_and_context(llama):
    info = llama.info()
    assert info["n_threads"] == 1 and info["n_ctx"] == 1024  # the tiny student's training context
    assert info["file_type"] == 0 and info["device"] == "cpu" and info["prefix_cache"] is True


def test_one_llama_object_reuses_the_shared_prefix(llama, exported):
    batch = prompts(3)
    completions = llama.generate(batch, SETTINGS)
    strategy_tokens = len(llama.tokenize(batch[0].split("Problem:")[0]))
    assert completions[1].meta["prompt_tokens_reused"] >= strategy_tokens - 2
    fresh = LlamaCppBackend(ModelSpec(path=str(exported[1] / "model-f32.gguf")),
                            {"n_threads": 1, "prefix_cache": False})
    try:
        again = fresh.generate(batch, SETTINGS)
    finally:
        fresh.close()
    assert [c.text for c in again] == [c.text for c in completions]
    assert all(c.meta["prompt_tokens_reused"] == 0 for c in again)


def test_stop_strings_and_length_limit(llama):
    [full] = llama.generate(prompts(1), SETTINGS)
    assert full.completion_tokens == SETTINGS.max_new_tokens and full.meta["finish_reason"] == "length"
    stop = full.text[5:8]
    [cut] = llama.generate(prompts(1), GenerationSettings(max_new_tokens=24, stop=(stop,)))
    assert cut.text == full.text[: full.text.find(stop)] and cut.meta["finish_reason"] == "stop"


def test_a_hugging_face_directory_is_exported_once_and_cached(exported, llama):
    batch = prompts(2)
    first = LlamaCppBackend(ModelSpec(path=str(exported[0])), {"n_threads": 1})
    try:
        info = first.info()
        assert info["converted_from"] == str(exported[0]) and info["quant"] == "f32"
        assert [c.text for c in first.generate(batch, SETTINGS)] == [c.text for c in llama.generate(batch, SETTINGS)]
    finally:
        first.close()
    written = Path(info["model"]).stat().st_mtime_ns
    again = LlamaCppBackend(ModelSpec(path=str(exported[0])), {"n_threads": 1})
    again.close()
    assert again.info()["model"] == info["model"] and Path(info["model"]).stat().st_mtime_ns == written


def test_bad_models_and_options_are_one_line(exported, tmp_path):
    with pytest.raises(ConfigError, match="is an adapter directory; with a GGUF model give a GGUF adapter"):
        LlamaCppBackend(ModelSpec(path=str(exported[1] / "model-f32.gguf"), adapter=str(tmp_path)))
    with pytest.raises(ConfigError, match="unknown quant 'q2'"):
        LlamaCppBackend(ModelSpec(path=str(exported[0])), {"quant": "q2"})
    with pytest.raises(ConfigError, match="unknown llamacpp option 'threads'"):
        LlamaCppBackend(ModelSpec(path=str(exported[1] / "model-f32.gguf")), {"threads": 2})
    cut = tmp_path / "cut.gguf"
    cut.write_bytes((exported[1] / "model-q8_0.gguf").read_bytes()[:50_000])
    with pytest.raises(GGUFError, match="truncated GGUF"):
        LlamaCppBackend(ModelSpec(path=str(cut)))


def test_prompt_longer_than_the_context_is_refused(llama):
    with pytest.raises(LrlError, match="does not fit the llamacpp context of 1024"):
        llama.generate(prompts(1), GenerationSettings(max_new_tokens=1000))


@pytest.mark.slow
def test_gguf_lora_adapter_equals_the_merged_model(exported, tmp_path, hf):
    """A small q/v-projection adapter (a few training steps, enough to change the output), used
    three ways: as a GGUF adapter beside the base GGUF, merged into the weights (the backend exports
    the Hugging Face directory plus peft adapter itself), and on transformers through peft."""
    from lrl_harness.pipeline.training import train_lora
    from lrl_harness_plugins.transformers_backend import TransformersBackend

    model_dir, _ = exported
    examples = [{"prompt": e["prompt"], "target": e["target"]}
                for e in TASK.transfer_examples(None, "trace", 16, 5, "balanced")]
    adapter = tmp_path / "adapter"
    train_lora(str(model_dir), examples, adapter, {"r": 4, "alpha": 8, "dropout": 0.0, "max_steps": 4,
                                                   "lr": 3e-3, "batch_size": 4, "grad_accum": 1})
    record = export_model(model_dir, tmp_path / "lora", quants=("f32",), adapter=adapter, adapter_mode="gguf")
    assert record["files"]["model-lora-f32.gguf"]["kind"] == "lora"

    batch = prompts(4, strategy=None)
    runs = {}
    for name, spec in {
        "gguf adapter": ModelSpec(path=str(tmp_path / "lora" / "model-f32.gguf"),
                                  adapter=str(tmp_path / "lora" / "model-lora-f32.gguf")),
        "merged": ModelSpec(path=str(model_dir), adapter=str(adapter)),
    }.items():
        backend = LlamaCppBackend(spec, {"n_threads": 1})
        try:
            runs[name] = [c.text for c in backend.generate(batch, SETTINGS)]
        finally:
            backend.close()
    peft_backend = TransformersBackend(ModelSpec(path=str(model_dir), adapter=str(adapter)),
                                       {"device": "cpu"})
    try:
        runs["transformers+adapter"] = [c.text for c in peft_backend.generate(batch, SETTINGS)]
    finally:
        peft_backend.close()
    base = [c.text for c in hf.generate(batch, SETTINGS)]
    assert runs["gguf adapter"] == runs["merged"] == runs["transformers+adapter"]
    assert runs["merged"] != base  # the adapter does change the model


def test_an_adapter_with_whole_modules_cannot_be_a_gguf_adapter(exported, tmp_path):
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    (adapter / "adapter_config.json").write_text('{"modules_to_save": ["embed_tokens", "lm_head"]}')
    with pytest.raises(LrlError, match=r"trains whole modules \(embed_tokens, lm_head\).*--adapter-mode merge"):
        export_model(exported[0], tmp_path / "out", adapter=adapter, adapter_mode="gguf")


@pytest.mark.slow
def test_measure_prefix_cache_speedup(exported, capsys):
    """How much one Llama object saves when prompts share the strategy: 100 one-token completions
    with the prefix cache, then with the context reset before each prompt. Prints; asserts no timing."""
    batch = prompts(100)
    settings = GenerationSettings(max_new_tokens=1)
    timings = {}
    for cache in (True, False):
        backend = LlamaCppBackend(ModelSpec(path=str(exported[1] / "model-f32.gguf")),
                                  {"n_threads": 1, "prefix_cache": cache})
        try:
            backend.generate(batch[:2], settings)  # warm-up
            started = time.perf_counter()
            backend.generate(batch, settings)
            timings[cache] = time.perf_counter() - started
        finally:
            backend.close()
    with capsys.disabled():
        print(f"\nprefix cache: 100 prompts sharing the strategy, one new token each: "
              f"{timings[True]:.3f} s with, {timings[False]:.3f} s without "
              f"({timings[False] / timings[True]:.1f}x)")
