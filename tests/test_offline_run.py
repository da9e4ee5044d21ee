"""The README's `lrl run` on its offline default, end to end (one run shared by the session).

Real components throughout: the project-built tiny student, peft LoRA training, the merge, the GGUF
converter and quantiser, llama.cpp. The run is compared with the reference result committed under
results/, the way a user gates CI on accuracy.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from lrl_harness.cli.app import main
from lrl_harness.reporting.check import check
from lrl_harness.results.format import STAGES
from lrl_harness.results.io import load_results

pytestmark = pytest.mark.slow
REFERENCE = Path(__file__).resolve().parent.parent / "results" / "tiny-offline-reference.json"
HONEST_FIELDS = {"accuracy", "balanced_accuracy", "majority_baseline", "unparsed", "ci95", "total", "correct"}


def test_the_student_learns_the_skill(offline_run):
    _, results = offline_run
    stages = results["stages"]
    assert list(stages) == list(STAGES)
    assert stages["student_baseline"]["balanced_accuracy"] <= 0.60
    assert stages["lora"]["balanced_accuracy"] >= 0.95, stages["lora"]["by_difficulty"]
    assert results["teacher"]["is_language_model"] is False
    assert "not a language model" in results["teacher"]["note"]


def test_every_figure_is_honest(offline_run):
    _, results = offline_run
    for name, block in results["stages"].items():
        assert HONEST_FIELDS <= set(block), name
        lo, hi = block["ci95"]
        assert lo <= block["accuracy"] <= hi
        for diff, sub in block["by_difficulty"].items():
            assert HONEST_FIELDS <= set(sub), (name, diff)
        for record in block["results"]:
            assert record["answer"] in ("YES", "NO", None)
            assert record["correct"] == (record["answer"] == record["expected"])
    assert results["stages"]["lora"]["majority_baseline"] == pytest.approx(0.5)


def test_provenance_and_files(offline_run):
    out, results = offline_run
    prov = results["provenance"]
    for key in ("strategy_sha256", "transfer_sha256", "adapter_sha256", "prompt_version", "machine", "seeds"):
        assert prov.get(key), key
    assert prov["machine"]["packages"]["torch"]
    # the peak memory so far after each step, growing
    peaks = results["peak_rss_mib"]
    assert list(peaks) == ["student_baseline", "teacher_baseline", "bootstrap", "lrl", "lora training", "lora",
                           "export", "parity"]
    assert all(0 < a <= b for a, b in zip(list(peaks.values()), list(peaks.values())[1:]))
    assert results["training"]["loss_curve"][-1][1] < results["training"]["loss_curve"][0][1]
    assert results["transfer"]["format"] == "trace" and results["transfer"]["yes"] == results["transfer"]["no"]
    for name in ("journal.log", "journal.txt", "strategy_evolution.log", "strategy.txt", "transfer.jsonl"):
        assert (out / name).stat().st_size > 0, name


def test_export_and_backend_parity(offline_run):
    out, results = offline_run
    files = results["export"]["files"]
    assert {e["quant"] for e in files.values()} == {"f32", "q8_0", "q4_k_m"}
    for entry in files.values():
        assert (out / entry["path"]).stat().st_size == entry["bytes"]
        assert len(entry["sha256"]) == 64
    comparisons = results["parity"]["comparisons"]
    assert results["parity"]["problems"] == 200
    assert comparisons["llamacpp:f32"]["answer_agreement"] >= 0.99
    assert comparisons["llamacpp:q8_0"]["answer_agreement"] >= 0.97


def test_a_fresh_run_holds_against_the_committed_reference(offline_run):
    _, results = offline_run
    report = check(results, load_results(REFERENCE))
    assert report.passed, report.summary()


def test_check_command_on_the_run(offline_run, tmp_path, capsys):
    out, _ = offline_run
    junit = tmp_path / "junit.xml"
    code = main(["check", str(out / "results.json"), "--baseline", str(REFERENCE), "--junit", str(junit)])
    assert code == 0, capsys.readouterr()
    assert "<testsuite" in junit.read_text()


def test_rescoring_our_own_results_changes_nothing(offline_run, tmp_path, capsys):
    out, results = offline_run
    target = tmp_path / "rescored.json"
    assert main(["rescore", str(out / "results.json"), "--out", str(target)]) == 0
    rescored = json.loads(target.read_text())
    for name, block in results["stages"].items():
        assert rescored["stages"][name]["accuracy"] == block["accuracy"], name
        assert rescored["stages"][name]["unparsed"] == block["unparsed"], name


def test_report_renders(offline_run, tmp_path):
    out, _ = offline_run
    assert main(["report", str(out / "results.json"), "--out", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / "accuracy_by_stage.png").stat().st_size > 1000
