"""Export to GGUF with llama.cpp's own converter and quantiser, on the real tiny student.

The model is random-initialised: these tests check the mechanics (files, hashes, atomic writes,
validation). Agreement between engines on a trained student is measured by ``lrl parity``.
The converter comes from the llama-cpp-python sdist in the user cache (pip downloads it on first use,
or ``$LRL_HARNESS_LLAMACPP_SDIST`` points at one).
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
from pathlib import Path

import pytest
from lrl_harness.api.errors import LrlError
from lrl_harness.api.gguf import read_gguf_header, sha256_file
from lrl_harness.cli.app import main
from lrl_harness.pipeline.converter import ConversionError, _extract, get_converter
from lrl_harness.pipeline.export import MANIFEST, GGUFError, export_model, validate_gguf

pytest.importorskip("llama_cpp", reason="the llamacpp extra is not installed")


def test_export_writes_three_quantisations_with_hashes(exported):
    _, out = exported
    record = json.loads((out / MANIFEST).read_text())
    assert set(record["files"]) == {"model-f32.gguf", "model-q8_0.gguf", "model-q4_k_m.gguf"}
    assert record["converter_version"] == get_converter().version
    for name, entry in record["files"].items():
        path = out / entry["path"]
        assert entry["path"] == name  # relative to the output folder
        assert entry["sha256"] == sha256_file(path)
        assert entry["bytes"] == path.stat().st_size
        assert entry["kind"] == "model"
        assert validate_gguf(path)["metadata"]["general.file_type"] == {"f32": 0, "q8_0": 7, "q4_k_m": 15}[
            entry["quant"]]
    sizes = {e["quant"]: e["bytes"] for e in record["files"].values()}
    assert sizes["f32"] > sizes["q8_0"] > sizes["q4_k_m"]
    leftovers = [p.name for p in out.iterdir() if p.name.startswith(".")]
    assert leftovers == []


def test_gguf_header_carries_the_tokenizer_and_bos_flag(exported):
    _, out = exported
    header = read_gguf_header(out / "model-f32.gguf")
    meta = header["metadata"]
    assert meta["general.architecture"] == "llama"
    assert meta["tokenizer.ggml.model"] == "llama"
    assert meta["tokenizer.ggml.add_bos_token"] is True
    assert meta["tokenizer.ggml.bos_token_id"] == 1
    assert header["bytes_needed"] == header["bytes"]


@pytest.mark.parametrize("cut,message", [
    (0.5, "truncated GGUF ("),
    (0.001, "truncated GGUF (the file ends inside its header)"),
])
def test_truncated_gguf_is_one_clear_line(exported, tmp_path, cut, message):
    data = (exported[1] / "model-q8_0.gguf").read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[: int(len(data) * cut)])
    with pytest.raises(GGUFError) as err:
        validate_gguf(bad)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_llama_cpp_itself_refuses_a_truncated_file(exported, tmp_path):
    """The header check aside, llama.cpp's own loader must fail cleanly (no crash) on the same file."""
    from lrl_harness.pipeline.export import _load_with_llama_cpp

    data = (exported[1] / "model-f32.gguf").read_bytes()
    bad = tmp_path / "cut.gguf"
    bad.write_bytes(data[:-4096])
    with pytest.raises(GGUFError, match="llama.cpp cannot load this GGUF"):
        _load_with_llama_cpp(bad)


def test_not_a_gguf_and_missing_file(tmp_path):
    text = tmp_path / "model.gguf"
    text.write_text("hello world")
    with pytest.raises(GGUFError, match="not a GGUF file"):
        validate_gguf(text)
    with pytest.raises(GGUFError, match="no such GGUF file"):
        validate_gguf(tmp_path / "absent.gguf")


def test_bad_requests_fail_before_any_work(exported, tmp_path):
    model, _ = exported
    with pytest.raises(LrlError, match="unknown quantisation 'q3'"):
        export_model(model, tmp_path / "a", quants=("f32", "q3"))
    with pytest.raises(LrlError, match="not a Hugging Face model directory"):
        export_model(tmp_path, tmp_path / "b")
    with pytest.raises(LrlError, match="not a LoRA adapter directory"):
        export_model(model, tmp_path / "c", adapter=tmp_path)
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_export_command_prints_the_files(exported, tmp_path, capsys):
    model, _ = exported
    out = tmp_path / "gguf"
    code = main(["export", str(model), "--out", str(out), "--quant", "q8_0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "model-q8_0.gguf" in captured.out
    record = json.loads((out / MANIFEST).read_text())
    assert list(record["files"]) == ["model-q8_0.gguf"]
    assert not (out / "model-f32.gguf").exists()  # the f32 intermediate is not kept unless asked for


def test_export_command_bad_source_is_one_line(tmp_path, capsys):
    code = main(["export", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2
    assert "neither an lrl-harness run directory" in err and len(err.strip().splitlines()) == 1


# --- converter ------------------------------------------------------------------------------------


def _fake_sdist(path: Path, with_converter: bool = True) -> Path:
    """A tar.gz laid out like the llama-cpp-python sdist, to test extraction without 76 MB."""
    files = {"pkg-1.0/README.md": "x", "pkg-1.0/vendor/llama.cpp/src/llama.cpp": "int main;",
             "pkg-1.0/vendor/llama.cpp/gguf-py/gguf/__init__.py": "",
             "pkg-1.0/vendor/llama.cpp/gguf-py/tests/test_x.py": "",
             "pkg-1.0/vendor/llama.cpp/conversion/__init__.py": "",
             "pkg-1.0/vendor/llama.cpp/convert_lora_to_gguf.py": ""}
    if with_converter:
        files["pkg-1.0/vendor/llama.cpp/convert_hf_to_gguf.py"] = "print('hi')"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(text.encode())
            tar.addfile(info, io.BytesIO(text.encode()))
    return path


def test_extraction_keeps_only_the_converter(tmp_path):
    dest = tmp_path / "conv"
    _extract(_fake_sdist(tmp_path / "s.tar.gz"), dest, "1.0")
    kept = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert kept == ["VERSION", "conversion/__init__.py", "convert_hf_to_gguf.py", "convert_lora_to_gguf.py",
                    "gguf-py/gguf/__init__.py"]


def test_converter_from_an_sdist_override_and_reuse(tmp_path, monkeypatch):
    monkeypatch.setenv("LRL_HARNESS_LLAMACPP_SDIST", str(_fake_sdist(tmp_path / "s.tar.gz")))
    first = get_converter("1.0", root=tmp_path / "cache")
    assert first.root == tmp_path / "cache" / "1.0" and (first.root / "convert_hf_to_gguf.py").is_file()
    monkeypatch.setenv("LRL_HARNESS_LLAMACPP_SDIST", str(tmp_path / "gone.tar.gz"))
    assert get_converter("1.0", root=tmp_path / "cache") == first  # reused, the sdist is not read again
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["1.0"]  # no temporary folders left


def test_converter_errors_are_one_line(tmp_path):
    with pytest.raises(ConversionError, match="not a llama-cpp-python sdist"):
        sdist = _fake_sdist(tmp_path / "s.tar.gz", with_converter=False)
        get_converter("1.0", sdist=sdist, root=tmp_path / "c")
    with pytest.raises(ConversionError) as err:  # pip refuses the version before any download
        get_converter("not-a-version", root=tmp_path / "c")
    message = str(err.value)
    assert message.startswith("could not download the llama.cpp converter") and "\n" not in message
    assert "LRL_HARNESS_LLAMACPP_SDIST" in message
    assert list((tmp_path / "c").iterdir()) == []


def test_a_config_without_architectures_still_converts(exported, tmp_path):
    """A config saved on its own (config.save_pretrained) names no model class; the converter needs
    one, so the export names the causal-LM class transformers maps the model_type to."""
    model = tmp_path / "model"
    shutil.copytree(exported[0], model)
    config = json.loads((model / "config.json").read_text())
    config.pop("architectures", None)
    (model / "config.json").write_text(json.dumps(config))
    export_model(model, tmp_path / "out", quants=("f32",))
    ours = read_gguf_header(tmp_path / "out" / "model-f32.gguf")
    assert ours["tensors"] == read_gguf_header(exported[1] / "model-f32.gguf")["tensors"]
    assert ours["metadata"]["general.architecture"] == "llama"
    config["model_type"] = "no-such-model"
    (model / "config.json").write_text(json.dumps(config))
    with pytest.raises(LrlError, match="names no 'architectures' and its model_type 'no-such-model'"):
        export_model(model, tmp_path / "out2")


def test_a_run_directory_names_its_student_and_adapter(exported, tmp_path):
    from lrl_harness.pipeline.export import resolve_source
    from lrl_harness.results.files import write_json
    from lrl_harness.results.io import new_results

    model, _ = exported
    run = tmp_path / "run"
    results = new_results(task="meeting-rooms")
    from lrl_harness.evaluation.statistics import score_stage

    results["stages"]["lora"] = {**score_stage([]), "who": {"student": "tiny", "path": str(model)}, "results": []}
    write_json(run / "results.json", results)
    assert resolve_source(run) == (model, None, run / "export")
    (run / "adapter").mkdir()
    (run / "adapter" / "adapter_config.json").write_text("{}")
    assert resolve_source(run) == (model, run / "adapter", run / "export")
    assert resolve_source(model) == (model, None, model.with_name(f"{model.name}-gguf"))
