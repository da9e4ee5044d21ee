"""LoRA training and merging on a real tiny Llama built here (a few steps: loss, hash, parity)."""

from __future__ import annotations

import json

import pytest
from lrl_harness import GenerationSettings, ModelSpec
from lrl_harness.api.errors import ConfigError
from lrl_harness.pipeline.recipes import cpu_bfloat16, resolve_settings
from lrl_harness.pipeline.training import (
    adapter_sha256,
    encode_example,
    learning_rate_factor,
    merge_adapter,
    train_lora,
)
from lrl_harness_plugins.tiny_student import TINY_LORA, build_tiny_student
from lrl_harness_plugins.transformers_backend import transformers_backend

SMALL = {"hidden_size": 32, "num_layers": 2, "num_heads": 2, "intermediate_size": 64}
FAST = {**TINY_LORA, "r": 4, "alpha": 8, "batch_size": 8, "max_steps": 24, "lr": 1e-2}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory, task):
    return build_tiny_student(tmp_path_factory.mktemp("cache"), task, seed=0, **SMALL)


@pytest.fixture(scope="module")
def examples(task):
    return task.transfer_examples(None, "trace", 96, 999, "balanced")


@pytest.fixture(scope="module")
def trained(model_dir, examples, tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "adapter"
    calls = []
    report = train_lora(str(model_dir), examples, out, FAST, progress=lambda *a: calls.append(a), seed=7)
    return out, report, calls


@pytest.mark.slow
def test_training_lowers_the_loss_and_reports_itself(trained, examples):
    out, report, calls = trained
    curve = report["loss_curve"]
    assert report["steps"] == 24 and curve[-1][0] == 24
    assert curve[-1][1] < curve[0][1] * 0.8
    assert report["examples"] == len(examples) and report["trainable_params"] > 0
    assert report["settings"]["r"] == 4 and report["settings"]["target_modules"] == "all-linear"
    assert [c[0] for c in calls] == list(range(1, 25)) and all(c[1] == 24 for c in calls)
    assert report["final_loss"] == pytest.approx(calls[-1][2], abs=1e-5)


@pytest.mark.slow
def test_mixed_precision_on_the_cpu_trains_and_says_so(model_dir, examples, tmp_path):
    """``dtype=mixed``: bfloat16 products where the CPU has them (weights and optimizer float32),
    float32 elsewhere; training.json says which."""
    import torch

    native = cpu_bfloat16(torch, "cpu", "mixed")
    report = train_lora(str(model_dir), examples, tmp_path / "adapter", {**FAST, "dtype": "mixed"}, seed=7)
    assert report["dtype"] == "float32"
    assert report["autocast"] == ("bfloat16" if native else None)
    assert report["loss_curve"][-1][1] < report["loss_curve"][0][1] * 0.8


def test_first_layer_puts_lora_on_the_upper_layers_only(model_dir, examples, tmp_path):
    """``first_layer=1`` of 2: LoRA on every Linear of layer 1 and none of layer 0 (the backward
    pass then stops at layer 1); a layer past the last is a configuration error."""
    from safetensors import safe_open

    out = tmp_path / "adapter"
    report = train_lora(str(model_dir), examples, out, {**FAST, "max_steps": 2, "first_layer": 1}, seed=7)
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["layers_to_transform"] == [1]
    assert "q_proj" in config["target_modules"] and "down_proj" in config["target_modules"]
    with safe_open(str(out / "adapter_model.safetensors"), "pt") as tensors:
        names = [name for name in tensors.keys() if "lora_" in name]
    assert names and all(".layers.1." in name for name in names)
    assert report["settings"]["first_layer"] == 1
    with pytest.raises(ConfigError, match="first_layer=2: .* has 2 layers"):
        train_lora(str(model_dir), examples, tmp_path / "other", {**FAST, "first_layer": 2}, seed=7)


def test_only_mixed_asks_for_bfloat16_products_on_the_cpu():
    import torch

    assert not cpu_bfloat16(torch, "cpu", "auto") and not cpu_bfloat16(torch, "cpu", "float32")
    assert not cpu_bfloat16(torch, "cuda", "mixed")
    with pytest.raises(ConfigError, match="needs a CUDA device"):
        train_lora("unused", [{"prompt": "p", "target": "t"}], "unused", {"dtype": "bfloat16", "device": "cpu"})


@pytest.mark.slow
def test_adapter_is_saved_with_tokenizer_and_hash(trained):
    out, report, _ = trained
    names = {p.name for p in out.iterdir()}
    assert {"adapter_config.json", "adapter_model.safetensors", "tokenizer.json", "training.json"} <= names
    assert report["adapter_sha256"] == adapter_sha256(out)
    assert json.loads((out / "training.json").read_text())["adapter_sha256"] == report["adapter_sha256"]
    assert not [p for p in out.parent.iterdir() if p.name.endswith(".tmp")]


@pytest.mark.slow
def test_training_is_deterministic_for_a_seed(trained, model_dir, examples, tmp_path):
    out, report, _ = trained
    again = train_lora(str(model_dir), examples, out.parent / "adapter-again", {**FAST, "max_steps": 24}, seed=7)
    assert again["loss_curve"] == report["loss_curve"]
    assert again["adapter_sha256"] == report["adapter_sha256"]


def test_loss_covers_only_the_target(model_dir, task, examples):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    example = examples[0]
    ids, start = encode_example(tokenizer, example["prompt"], example["target"], tokenizer.eos_token_id)
    assert ids[:start] == tokenizer(example["prompt"])["input_ids"]
    assert ids[-1] == tokenizer.eos_token_id
    assert tokenizer.decode(ids[start:-1]) == example["target"]


@pytest.mark.slow
def test_merged_model_generates_like_base_plus_adapter(trained, model_dir, task, tmp_path):
    out, _, _ = trained
    merged = merge_adapter(str(model_dir), out, tmp_path / "merged")
    assert {"model.safetensors", "config.json", "tokenizer.json"} <= {p.name for p in merged.iterdir()}
    prompts = [task.student_prompt(p, None) for p in task.problems("balanced", "test")[:12]]
    settings = GenerationSettings(max_new_tokens=40)
    with_adapter = transformers_backend(ModelSpec(path=str(model_dir), adapter=str(out)), {})
    folded = transformers_backend(ModelSpec(path=str(merged)), {})
    assert [c.text for c in folded.generate(prompts, settings)] == [
        c.text for c in with_adapter.generate(prompts, settings)]


def test_schedule_warms_up_then_decays():
    assert learning_rate_factor(0, 100, 10, "cosine") == pytest.approx(0.1)
    assert learning_rate_factor(9, 100, 10, "cosine") == pytest.approx(1.0)
    assert learning_rate_factor(10, 100, 10, "cosine") == pytest.approx(1.0)
    assert learning_rate_factor(99, 100, 10, "cosine") < 0.01
    assert learning_rate_factor(55, 100, 10, "linear") == pytest.approx(0.5)
    assert learning_rate_factor(70, 100, 0, "constant") == 1.0


def test_bad_settings_are_config_errors():
    with pytest.raises(ConfigError, match="unknown LoRA setting 'rank'"):
        resolve_settings({"rank": 4})
    with pytest.raises(ConfigError, match="unknown LoRA schedule"):
        resolve_settings({"schedule": "step"})
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        resolve_settings({"batch_size": 0})
    with pytest.raises(ConfigError, match="first_layer must be a layer index"):
        resolve_settings({"first_layer": -1})
    assert resolve_settings({})["r"] == 8  # the original experiment's recipe by default
