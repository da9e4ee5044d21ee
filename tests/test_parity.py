"""Parity between engines on the real tiny student: transformers against its GGUF exports on llama.cpp.

The model is random-initialised, so these tests check the mechanics and that f32 is exact; the
agreement targets (>= 99% of answers for f32, >= 97% for q8_0) are for a trained student and are
measured with ``lrl parity`` on a run's export, not here.
"""

from __future__ import annotations

import json

import pytest
from lrl_harness import GenerationSettings, ModelSpec
from lrl_harness.api.errors import LrlError
from lrl_harness.cli.app import main
from lrl_harness.evaluation.parity import TokenMismatchError, check_parity, first_difference
from lrl_harness.evaluation.statistics import mcnemar_exact
from lrl_harness_plugins.llamacpp_backend import LlamaCppBackend
from lrl_harness_plugins.transformers_backend import TransformersBackend
from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask

pytest.importorskip("llama_cpp", reason="the llamacpp extra is not installed")

TASK = MeetingRoomsTask()
SETTINGS = GenerationSettings(max_new_tokens=24)


@pytest.fixture(scope="module")
def backends(exported):
    model_dir, out = exported
    engines = {"transformers": TransformersBackend(ModelSpec(path=str(model_dir)), {"device": "cpu"})}
    for quant in ("f32", "q8_0"):
        engines[quant] = LlamaCppBackend(ModelSpec(path=str(out / f"model-{quant}.gguf")), {"n_threads": 1})
    yield engines
    for engine in engines.values():
        engine.close()


def problems_and_prompts(n: int):
    problems = TASK.problems("balanced", "test", n=n)
    return problems, [TASK.student_prompt(p, TASK.reference_strategy) for p in problems]


def test_first_difference():
    assert first_difference([1, 2, 3], [1, 2, 3]) is None
    assert first_difference([1, 2, 3], [1, 5, 3]) == 1
    assert first_difference([1, 2], [1, 2, 3]) == 2
    assert first_difference([], []) is None


def test_parity_report_f32_is_exact(backends):
    problems, prompts = problems_and_prompts(10)
    report = check_parity(backends, prompts, problems, TASK, SETTINGS)
    assert report["reference"] == "transformers" and report["problems"] == 10
    assert set(report["backends"]) == {"transformers", "f32", "q8_0"}
    assert set(report["comparisons"]) == {"f32", "q8_0"}
    f32 = report["comparisons"]["f32"]
    assert f32["answer_agreement"] == 1.0 and f32["texts_identical"] == 10 and f32["examples"] == []
    assert f32["only_transformers_correct"] == f32["only_f32_correct"] == 0 and f32["mcnemar_p"] == 1.0
    q8 = report["comparisons"]["q8_0"]
    assert 0.0 <= q8["answer_agreement"] <= 1.0
    assert q8["mcnemar_p"] == mcnemar_exact(q8["only_transformers_correct"], q8["only_q8_0_correct"])
    assert len(q8["examples"]) == min(3, 10 - q8["texts_identical"])
    for name, block in report["backends"].items():
        assert block["total"] == 10 and block["prompt_tokens_checked"] is True
        assert 0.0 <= block["accuracy"] <= 1.0 and len(block["ci95"]) == 2 and "majority_baseline" in block
        assert block["info"]["backend"] == ("transformers" if name == "transformers" else "llamacpp")
    json.dumps(report)  # goes into the results file as is


def test_different_tokenizers_fail_fast_naming_the_position(exported, backends, tmp_path):
    """A real mismatch: transformers with a tokenizer built the tiny student's way from far less
    text (so with other merges), against the GGUF of the tiny student."""
    from lrl_harness_plugins.tiny_student import train_tokenizer
    from transformers import PreTrainedTokenizerFast

    other = PreTrainedTokenizerFast(tokenizer_object=train_tokenizer(TASK.corpus(n=30), 300),
                                    bos_token="<s>", eos_token="</s>", unk_token="<unk>")
    other.save_pretrained(tmp_path / "tokenizer")
    wrong = TransformersBackend(ModelSpec(path=str(exported[0]), tokenizer=str(tmp_path / "tokenizer")),
                                {"device": "cpu"})
    try:
        problems, prompts = problems_and_prompts(3)
        with pytest.raises(TokenMismatchError) as err:
            check_parity({"transformers": wrong, "f32": backends["f32"]}, prompts, problems, TASK, SETTINGS)
    finally:
        wrong.close()
    message = str(err.value)
    assert message.startswith(f"prompt token ids differ for problem {problems[0].id}: transformers and f32 "
                              "first differ at position ")
    assert "\n" not in message


def test_bad_arguments(backends):
    problems, prompts = problems_and_prompts(2)
    with pytest.raises(LrlError, match="one prompt per problem"):
        check_parity(backends, prompts[:1], problems, TASK, SETTINGS)
    with pytest.raises(LrlError, match="unknown reference backend 'vllm'"):
        check_parity(backends, prompts, problems, TASK, SETTINGS, reference="vllm")


def test_parity_command_writes_a_report(exported, tmp_path, capsys):
    model_dir, out = exported
    report_file = tmp_path / "parity.json"
    code = main(["parity", str(model_dir), "--gguf", str(out / "model-f32.gguf"), "-n", "4",
                 "--max-new-tokens", "8", "--threads", "1", "--out", str(report_file)])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "Parity on 4 balanced/test problems" in captured.out
    report = json.loads(report_file.read_text())
    assert report["comparisons"]["model-f32"]["texts_identical"] == 4


def test_parity_command_without_gguf_is_one_line(exported, tmp_path, capsys):
    code = main(["parity", str(exported[0])])
    err = capsys.readouterr().err
    assert code == 2 and "run `lrl export` first or pass --gguf FILE" in err
    assert len(err.strip().splitlines()) == 1


def test_a_run_checks_the_parity_of_the_files_it_names(small_run_args, tmp_path, capsys):
    """``--parity`` picks the exported files parity runs on; the others are written and listed as
    not checked (the small recipe checks f16 and q8_0 and leaves q4_k_m to ``lrl bench``)."""
    out = tmp_path / "run"
    args = [a if a != "f32" else "f32,q8_0" for a in small_run_args(out, "--stages", "lora", steps=2)]
    assert main([*args, "--parity", "q8_0"]) == 0, capsys.readouterr().err
    results = json.loads((out / "results.json").read_text())
    assert sorted(f["quant"] for f in results["export"]["files"].values()) == ["f32", "q8_0"]
    assert [name.split(":")[-1] for name in results["parity"]["comparisons"]] == ["q8_0"]
    assert results["parity"]["not_checked"] == ["f32"]
    assert results["config"]["parity"] == ["q8_0"]
