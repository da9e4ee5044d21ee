"""The tiny student (built here from random initialisation) and the hf student factory."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lrl_harness.api.errors import ConfigError
from lrl_harness.api.registry import Registry, make_plugin_manager
from lrl_harness_plugins import hf_student, tiny_student
from lrl_harness_plugins.tiny_student import (
    BYTE_TOKENS,
    REQUIRED_FILES,
    build_tiny_student,
    leftmost_pieces,
)

SMALL = {"hidden_size": 32, "num_layers": 1, "num_heads": 2, "intermediate_size": 64}


@pytest.fixture(scope="module")
def built(tmp_path_factory, task) -> Path:
    return build_tiny_student(tmp_path_factory.mktemp("cache"), task, seed=0, **SMALL)


@pytest.fixture(scope="module")
def hf_tokenizer(built):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(built, local_files_only=True)


def _task_texts(task) -> list[str]:
    problems = task.problems("balanced", "test")[:60] + task.problems("seed", "test")[:30]
    return [task.student_prompt(p, None) + task.worked_solution(p) for p in problems]


def test_directory_is_a_complete_offline_hf_model(built):
    from transformers import AutoModelForCausalLM

    assert all((built / name).is_file() for name in REQUIRED_FILES)
    config = json.loads((built / "tokenizer_config.json").read_text())
    assert (config["bos_token"], config["eos_token"], config["unk_token"], config["pad_token"]) == (
        "<s>", "</s>", "<unk>", "<unk>")
    model = AutoModelForCausalLM.from_pretrained(built, local_files_only=True)
    assert model.config.model_type == "llama"
    assert model.config.vocab_size == len(json.loads((built / "tokenizer.json").read_text())["model"]["vocab"])


def test_tokenizer_has_llama_layout_and_byte_tokens(hf_tokenizer):
    vocab = hf_tokenizer.get_vocab()
    assert [vocab["<unk>"], vocab["<s>"], vocab["</s>"]] == [0, 1, 2]
    assert [vocab[b] for b in BYTE_TOKENS] == list(range(3, 259))
    assert hf_tokenizer("Meetings")["input_ids"][0] == vocab["<s>"]
    assert "▁rooms" in vocab


def test_tokenizer_round_trips_text(hf_tokenizer, task):
    texts = _task_texts(task) + ["héllo wörld — ✓ 日本", "tab\there", "x\n\ny  z", "[99-100] | 12 rooms"]
    for text in texts:
        ids = hf_tokenizer(text)["input_ids"]
        assert hf_tokenizer.decode(ids, skip_special_tokens=True) == text
    unseen = hf_tokenizer("日")["input_ids"][1:]
    assert hf_tokenizer.convert_ids_to_tokens(unseen)[-3:] == ["<0xE6>", "<0x97>", "<0xA5>"]


def test_leftmost_merging_gives_the_same_tokens(hf_tokenizer, task):
    """llama.cpp reads this vocabulary with equal scores and merges the leftmost pair first
    (simulated here: llama.cpp itself is exercised by the GGUF tests); on the task's text that
    must give exactly the HF tokens."""
    vocab = hf_tokenizer.get_vocab()
    texts = _task_texts(task) + [task.describe(p) for p in task.problems("balanced", "test")[:20]]
    texts += task.corpus(n=60)
    for text in texts:
        ids = []
        for piece in leftmost_pieces("▁" + text.replace(" ", "▁"), vocab):
            ids += [vocab[piece]] if piece in vocab else [vocab[f"<0x{b:02X}>"] for b in piece.encode()]
        assert ids == hf_tokenizer(text, add_special_tokens=False)["input_ids"], text


def test_build_is_deterministic_and_cached(tmp_path, task, built, monkeypatch):
    again = build_tiny_student(tmp_path, task, seed=0, **SMALL)
    assert again.name == built.name
    for name in REQUIRED_FILES:
        assert (again / name).read_bytes() == (built / name).read_bytes(), name

    monkeypatch.setattr(tiny_student, "_write_student", lambda *a, **k: pytest.fail("rebuilt"))
    assert build_tiny_student(tmp_path, task, seed=0, **SMALL) == again


def test_seed_changes_weights_not_tokenizer(tmp_path, task, built):
    other = build_tiny_student(tmp_path, task, seed=1, **SMALL)
    assert other.name != built.name
    assert (other / "model.safetensors").read_bytes() != (built / "model.safetensors").read_bytes()
    assert (other / "tokenizer.json").read_bytes() == (built / "tokenizer.json").read_bytes()


def test_interrupted_build_leaves_nothing_usable(tmp_path, task, monkeypatch):
    def killed(out, *args):
        (out / "config.json").write_text("{}")
        raise KeyboardInterrupt

    monkeypatch.setattr(tiny_student, "_write_model", killed)
    with pytest.raises(KeyboardInterrupt):
        build_tiny_student(tmp_path, task, seed=0, **SMALL)
    assert list((tmp_path / "tiny-student").iterdir()) == []


def test_partial_directory_is_rebuilt(tmp_path, task, built):
    final = tmp_path / "tiny-student" / built.name
    final.mkdir(parents=True)
    (final / "config.json").write_text("{}")  # e.g. copied by hand, or an older layout
    leftover = tmp_path / "tiny-student" / f".{built.name}.abc.tmp"
    leftover.mkdir()
    (leftover / "config.json").write_text("{}")
    path = build_tiny_student(tmp_path, task, seed=0, **SMALL)
    assert path == final
    assert (path / "model.safetensors").read_bytes() == (built / "model.safetensors").read_bytes()


def test_bad_sizes_are_config_errors(tmp_path, task):
    with pytest.raises(ConfigError, match="unknown tiny-student size 'width'"):
        build_tiny_student(tmp_path, task, width=3)
    with pytest.raises(ConfigError, match="multiple of num_heads"):
        build_tiny_student(tmp_path, task, hidden_size=30, num_heads=4)


def test_registered_factory_gives_the_measured_recipe(tmp_path, task):
    registry = Registry(make_plugin_manager(load_entry_points=False, plugins=[tiny_student, hf_student]))
    student = registry.get("student", "tiny").factory(task, dict(SMALL), tmp_path)
    assert Path(student.path).parent == tmp_path / "tiny-student"
    assert (student.strategy_in_prompt, student.transfer_format, student.transfer_examples) == (
        False, "trace", 6000)
    assert student.lora["r"] == 16 and student.lora["target_modules"] == "all-linear"
    assert student.lora["modules_to_save"] == ["embed_tokens", "lm_head"]
    assert student.info["parameters"] > 0 and "random initialisation" in student.info["description"]

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(student.path)
    hard = [p for p in task.problems("balanced", "test") if p.difficulty == "HARD"]
    longest = max(len(tokenizer(task.worked_solution(p), add_special_tokens=False)["input_ids"]) for p in hard)
    assert student.max_new_tokens > longest


def test_default_tiny_student_has_about_a_million_parameters(tmp_path, task):
    student = tiny_student.tiny_student(task, {}, tmp_path)
    assert 0.5e6 < student.info["parameters"] < 1.5e6


# --- the hf student: a local directory stands in for a hub id (no network here) ---------------


def test_hf_student_reads_chat_template_from_tokenizer(tmp_path, built, task):
    student = hf_student.hf_student(task, {"model": str(built)}, tmp_path)
    assert (student.chat_template, student.strategy_in_prompt, student.transfer_format) == (False, True, "label")
    assert student.transfer_examples == 100
    assert student.lora == {**hf_student.ORIGINAL_LORA}
    assert (student.lora["r"], student.lora["alpha"], student.lora["target_modules"]) == (8, 16, ["q_proj", "v_proj"])

    from transformers import AutoTokenizer

    chatty = tmp_path / "chatty"
    tokenizer = AutoTokenizer.from_pretrained(built)
    tokenizer.chat_template = "{% for m in messages %}[U]{{ m['content'] }}{% endfor %}[A]"
    tokenizer.save_pretrained(chatty)
    assert hf_student.hf_student(task, {"model": str(chatty)}, tmp_path).chat_template is True
    assert hf_student.hf_student(task, {"model": str(chatty), "chat_template": False}, tmp_path).chat_template is False


def test_hf_student_errors_are_one_line(tmp_path, task):
    with pytest.raises(ConfigError, match="needs the option model"):
        hf_student.hf_student(task, {}, tmp_path)
    with pytest.raises(ConfigError, match="unknown option 'modle'"):
        hf_student.hf_student(task, {"modle": "x"}, tmp_path)
    with pytest.raises(ConfigError, match="cannot load the tokenizer"):
        hf_student.hf_student(task, {"model": str(tmp_path / "missing")}, tmp_path)
