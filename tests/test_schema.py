"""The declared results schema: `lrl schema` prints it, what the writers produce validates against it,
version-1 files read as version 2, and a wrong field is refused in one line that names it."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from lrl_harness.api.errors import ResultsFileError
from lrl_harness.cli.app import main
from lrl_harness.evaluation.statistics import score_stage
from lrl_harness.reporting.report import all_tables
from lrl_harness.results.files import write_json
from lrl_harness.results.format import SCHEMA_VERSION
from lrl_harness.results.io import as_results, load_results, new_results, read_results, write_results
from lrl_harness.results.schema import BenchEntry, Results, StageBlock

REFERENCE = Path(__file__).resolve().parent.parent / "results" / "tiny-offline-reference.json"


@pytest.fixture(scope="module")
def written(small_run) -> dict:
    """The results file a small `lrl run` wrote, as JSON data."""
    return json.loads((small_run / "results.json").read_text())


def _required(schema: dict, name: str) -> list[str]:
    return schema["$defs"][name]["required"]


def test_lrl_schema_prints_the_json_schema_of_the_results_file(capsys):
    assert main(["schema"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed == Results.model_json_schema(by_alias=True)
    assert printed["required"] == ["schema", "schema_version", "stages"]
    assert printed["properties"]["schema_version"]["const"] == SCHEMA_VERSION == 2
    assert {"total", "correct", "unparsed", "truncated", "accuracy", "balanced_accuracy",
            "majority_baseline"} <= set(_required(printed, "StageBlock"))
    assert printed["$defs"]["StageBlock"]["additionalProperties"] is True


def test_a_fresh_run_writes_version_2_and_validates_against_the_schema(small_run, written, capsys):
    assert written["schema_version"] == SCHEMA_VERSION
    typed = Results.model_validate_json((small_run / "results.json").read_text())
    assert typed == read_results(small_run / "results.json")
    assert set(typed.stages) == {"student_baseline", "teacher_baseline", "bootstrap", "lrl", "lora"}
    main(["schema"])
    schema = json.loads(capsys.readouterr().out)
    assert set(schema["required"]) <= set(written)
    for name, block in written["stages"].items():
        assert set(_required(schema, "StageBlock")) <= set(block), name
        assert isinstance(block["truncated"], int), name
        for record in block["results"]:
            assert set(_required(schema, "Record")) <= set(record)
    lora = typed.stages["lora"]
    assert isinstance(lora, StageBlock) and lora.truncated == sum(r.truncated for r in lora.results)
    assert typed.parity is not None and typed.export is not None and typed.training.loss_curve


def test_a_bench_entry_built_by_the_metrics_validates():
    problems = [{"problem_id": f"p{i}", "expected": "YES", "answer": "YES", "correct": True} for i in range(4)]
    data = new_results(task="meeting-rooms", preset="balanced", split="test")
    data["benchmarks"] = {"backends": {"x": {**score_stage(problems), "latency": {"mean_s": 0.1, "p50_s": 0.1},
                                             "memory": {"peak_rss_mib": 12.5, "note": "a note"},
                                             "results": problems}}}
    entry = as_results(data).backends["x"]
    assert isinstance(entry, BenchEntry) and entry.latency.mean_s == 0.1 and entry.truncated == 0


def test_written_and_read_again_the_results_are_the_same(small_run, tmp_path):
    typed = read_results(small_run / "results.json")
    write_results(tmp_path / "again.json", typed)
    assert read_results(tmp_path / "again.json") == typed
    assert json.loads((tmp_path / "again.json").read_text())["schema"] == "lrl-harness/results"


def test_a_version_1_file_reads_as_version_2(written, tmp_path):
    v1 = copy.deepcopy(written)
    v1["schema_version"] = 1
    for block in v1["stages"].values():
        del block["truncated"]
        for sub in block["by_difficulty"].values():
            del sub["truncated"]
    path = tmp_path / "v1.json"
    write_json(path, v1)
    data = load_results(path)
    assert data["schema_version"] == 2
    for name, block in written["stages"].items():  # counted again from the records
        assert data["stages"][name]["truncated"] == block["truncated"]
        assert {d: b["truncated"] for d, b in data["stages"][name]["by_difficulty"].items()} == \
            {d: b["truncated"] for d, b in block["by_difficulty"].items()}
    assert read_results(path).stages["lora"].truncated == written["stages"]["lora"]["truncated"]


def test_a_version_1_file_whose_records_do_not_say_reads_truncated_as_unknown():
    """The committed reference predates the truncated count: null, shown as '-'."""
    typed = read_results(REFERENCE)
    assert json.loads(REFERENCE.read_text())["schema_version"] == 1
    assert all(block.truncated is None for block in typed.stages.values())
    stage_table = all_tables(typed)[0]
    assert {row[stage_table.columns.index("truncated")] for row in stage_table.rows} == {"-"}


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["stages"]["lora"].update(accuracy="0.9"),
     "stages.lora.accuracy must be a number from 0 to 1, not a string"),
    (lambda d: d["stages"]["lora"].update(total=-1), "stages.lora.total must be a non-negative integer, not -1"),
    (lambda d: d["stages"]["lora"].update(ci95=[0.1]), "stages.lora.ci95 must be a list of two numbers, not a list"),
    (lambda d: d["stages"]["lora"]["results"][0].update(correct=1),
     "stages.lora.results[0].correct must be true or false, not 1"),
    (lambda d: [d["stages"]["lora"].pop(k) for k in ("total", "truncated")], "stages.lora lacks total, truncated"),
    (lambda d: d["stages"]["lora"]["results"][2].pop("answer"), "stages.lora.results[2] lacks answer"),
    (lambda d: d.update(benchmarks={"ratios": {"a/b": {"latency_mean": True}}}),
     "benchmarks.ratios.a/b.latency_mean must be a number, not a boolean"),
    (lambda d: d.update(benchmarks={"backends": {"x": {**d["stages"]["lora"], "memory": {"free_mib": "lots"}}}}),
     "benchmarks.backends.x.memory.free_mib must be a number, not a string"),
    (lambda d: d.update(benchmarks={"backends": {"x": {**d["stages"]["lora"], "levels": {"c=1": {"load": {
        "e2e": {}, "ttft": {}, "itl": {}, "tpot": {}, "requests_per_s": 1.0, "output_tokens_per_s": None,
        "errors": 0, "retries": 0, "peak_in_flight": 1}}}}}}),
     "benchmarks.backends.x.levels.c=1 lacks total, correct, unparsed, accuracy, balanced_accuracy, "
     "majority_baseline"),
    (lambda d: d["training"].update(loss_curve=[[1, 0.5], [2]]),
     "training.loss_curve must be a list of [step, loss] pairs, not a list"),
])
def test_a_wrong_field_is_named_in_one_line(written, tmp_path, edit, message):
    data = copy.deepcopy(written)
    edit(data)
    path = tmp_path / "bad.json"
    write_json(path, data)
    with pytest.raises(ResultsFileError) as caught:
        read_results(path)
    assert str(caught.value) == f"{path}: {message}"


def test_results_in_memory_are_checked_like_a_file(written):
    data = copy.deepcopy(written)
    del data["stages"]["lora"]["accuracy"]
    with pytest.raises(ResultsFileError, match=r"^baseline: stages\.lora lacks accuracy$"):
        as_results(data, "baseline")
    assert "accuracy" not in data["stages"]["lora"]  # the caller's data is left as it was
    with pytest.raises(ResultsFileError, match="schema version 3 is not supported"):
        as_results({**written, "schema_version": 3})
