"""``lrl compare`` on real files: the committed references under results/ and the original
experiment's published file (trimmed copy in tests/data), re-graded on read and paired by content."""

from __future__ import annotations

import csv
import io
import json
import random
from pathlib import Path

import pytest
from lrl_harness.cli.app import main
from lrl_harness.evaluation.rescore import rescore
from lrl_harness.reporting.compare import compare_files, comparison_csv, pair_records, split_spec
from lrl_harness.results.files import write_json
from lrl_harness.results.schema import Comparison

ROOT = Path(__file__).resolve().parent.parent
ORIGINAL = ROOT / "tests" / "data" / "original_results_trimmed.json"
COUNT = ROOT / "results" / "smollm2-count" / "results.json"
COUNT_BENCH = ROOT / "results" / "smollm2-count" / "bench.json"
TINY = ROOT / "results" / "tiny-offline-reference.json"


@pytest.fixture(scope="module")
def task_of():
    from lrl_harness.api.registry import Registry, make_plugin_manager

    registry = Registry(make_plugin_manager())
    return lambda name: registry.get("task", name).factory()


def test_the_originals_stages_are_re_graded_and_paired_by_content(task_of, task):
    comparison = compare_files([f"{ORIGINAL}:lrl", f"{ORIGINAL}:lora"], task_of, ["claude+lrl", "qwen+lora"])
    rescored = rescore(ORIGINAL, task)["stages"]
    claude, qwen = comparison.blocks
    assert (claude.total, claude.correct) == (rescored["lrl"]["total"], rescored["lrl"]["correct"])
    assert (qwen.total, qwen.truncated) == (11, 11)  # the trimmed copy: 11 lora answers cut at 10 tokens
    assert claude.who == "Claude 3.5 Haiku" and qwen.who == "Qwen/Qwen2.5-3B-Instruct"
    [pair] = comparison.pairs
    # the trimmed copy keeps lrl records 0, 17, ... and lora records 0-6, 30, ...: two problems in both
    assert pair.paired == 2 and (pair.only_in_a, pair.only_in_b) == (8, 9)
    assert pair.both_correct + pair.only_a_correct + pair.only_b_correct + pair.neither_correct == 2
    assert any("only 2 of 10 problems paired" in n for n in comparison.notes)


def test_pairing_is_by_content_not_id_or_position(task_of, tmp_path):
    data = json.loads(COUNT.read_text())
    lora = data["stages"]["lora"]
    shuffled = list(lora["results"])
    random.Random(3).shuffle(shuffled)
    for i, r in enumerate(shuffled):
        r["problem_id"] = f"renamed_{i}"
    lora["results"] = shuffled
    copy = tmp_path / "copy.json"
    write_json(copy, data)
    comparison = compare_files([f"{COUNT}:lora", f"{copy}:lora"], task_of)
    [pair] = comparison.pairs
    assert pair.paired == 200 and pair.only_a_correct == pair.only_b_correct == 0
    assert pair.mcnemar_p == 1.0 and pair.accuracy_difference.estimate == 0.0
    assert pair.accuracy_difference.ci95 == [0.0, 0.0]


def test_a_problem_asked_twice_pairs_occurrence_by_occurrence():
    a = [{"problem": "p", "n": 1}, {"problem": "p", "n": 2}, {"problem": "q", "n": 3}]
    b = [{"problem": "q", "n": 4}, {"problem": "p", "n": 5}]
    assert [(x["n"], y["n"]) for x, y in pair_records(a, b)] == [(1, 5), (3, 4)]


def test_stages_and_bench_targets_of_our_files(task_of):
    comparison = compare_files([f"{COUNT_BENCH}:llamacpp:q8_0", f"{COUNT_BENCH}:bench/transformers",
                                f"{COUNT}:lora", f"{TINY}:lora"], task_of)
    labels = [b.label for b in comparison.blocks]
    assert labels == ["smollm2-count:bench/llamacpp:q8_0", "smollm2-count:bench/transformers", "smollm2-count:lora",
                      "tiny-offline-reference:lora"]
    assert len(comparison.pairs) == 6
    bench_pair = comparison.pairs[0]
    assert bench_pair.paired == 30  # the bench asked the first 30 of the run's 200 test problems
    lora_pair = comparison.pairs[-1]
    assert lora_pair.paired == 200  # both on the balanced preset's test split
    a, b = lora_pair.side_a, lora_pair.side_b
    assert a.ci95[0] <= a.accuracy <= a.ci95[1] and b.balanced_ci95[0] <= b.balanced_accuracy <= b.balanced_ci95[1]
    d = lora_pair.accuracy_difference
    assert d.ci95[0] <= d.estimate <= d.ci95[1]
    assert d.estimate == pytest.approx(a.accuracy - b.accuracy)
    assert len(lora_pair.discordant) == lora_pair.only_a_correct + lora_pair.only_b_correct
    # the bootstrap is seeded: the same call gives the same intervals
    again = compare_files([f"{COUNT}:lora", f"{TINY}:lora"], task_of)
    assert again.pairs[0].accuracy_difference.ci95 == d.ci95


def test_compare_command_formats(tmp_path, capsys):
    blocks = [f"{COUNT}:lora", f"{TINY}:lora"]
    out = tmp_path / "comparison.json"
    assert main(["compare", *blocks, "--label", "smollm2", "--label", "tiny", "--explain", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "Paired by problem" in text and "200 problems paired by content" in text and "discordant" in text
    comparison = Comparison.model_validate_json(out.read_text())
    assert [b.label for b in comparison.blocks] == ["smollm2", "tiny"]
    assert main(["compare", *blocks, "--format", "json"]) == 0
    assert Comparison.model_validate_json(capsys.readouterr().out).pairs[0].paired == 200
    assert main(["compare", *blocks, "--format", "csv"]) == 0
    rows = list(csv.DictReader(io.StringIO(capsys.readouterr().out)))
    assert len(rows) == 1 and rows[0]["paired"] == "200" and float(rows[0]["mcnemar_p"]) <= 1
    assert main(["compare", *blocks, "--format", "markdown"]) == 0
    md = capsys.readouterr().out
    assert "| A | B | paired |" in md and "McNemar: exact, two-sided" in md
    assert main(["schema", "--comparison"]) == 0
    assert "ComparedPair" in capsys.readouterr().out


def test_csv_has_a_number_in_every_figure_column(task_of):
    text = comparison_csv(compare_files([f"{COUNT}:lora", f"{COUNT}:student_baseline"], task_of))
    [row] = list(csv.DictReader(io.StringIO(text)))
    for key, value in row.items():
        if key not in ("a", "b", "majority_label"):
            float(value)


@pytest.mark.parametrize("args, message", [
    ([f"{ORIGINAL}:lrl"], "needs at least two blocks"),
    ([f"{ORIGINAL}:nope", f"{ORIGINAL}:lora"], "has no stage or bench target 'nope' (stages: bootstrap, lrl, lora)"),
    ([str(ORIGINAL), f"{ORIGINAL}:lora"], "holds 3 stages and bench targets; name one"),
    ([str(ROOT / "results" / "gpu-suite-h100.json"), f"{ORIGINAL}:lora"],
     "neither an lrl-harness results file nor the original experiment's"),
    ([f"{COUNT_BENCH}:bench/nope", f"{COUNT}:lora"], "has no stage or bench target 'bench/nope'"),
    ([f"{ORIGINAL}:lrl", f"{ORIGINAL}:lora", "--label", "one"], "--label given 1 times for 2 blocks"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, args, message):
    assert main(["compare", *args]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1


def test_blocks_sharing_no_problem_or_of_different_tasks_are_refused(tmp_path, capsys):
    data = json.loads(COUNT.read_text())
    for r in data["stages"]["lora"]["results"]:  # the same answers, to problems with one more room
        r["rooms"] += 3
        r["problem"] = r["problem"].rsplit("|", 1)[0] + f"| {r['rooms']} rooms"
    moved = tmp_path / "moved.json"
    write_json(moved, data)
    assert main(["compare", f"{COUNT}:lora", f"{moved}:lora"]) == 2
    err = capsys.readouterr().err
    assert "share no problem (0 of 200 and 200 paired by content)" in err and len(err.strip().splitlines()) == 1
    data["task"] = "another-task"
    write_json(moved, data)
    assert main(["compare", f"{COUNT}:lora", f"{moved}:lora"]) == 2
    assert "cannot compare blocks of different tasks: another-task, meeting-rooms" in capsys.readouterr().err


def test_split_spec_keeps_colons_of_target_labels():
    assert split_spec(f"{COUNT_BENCH}:llamacpp:q8_0") == (COUNT_BENCH, "llamacpp:q8_0")
    assert split_spec(str(COUNT)) == (COUNT, None)
    assert split_spec("missing.json:lora") == (Path("missing.json"), "lora")


def test_the_seed_run_pairs_with_every_kept_answer_of_the_original(task_of):
    """The committed seed-split run answered the original's 150 test problems: every answer the trimmed
    copy keeps (10 of Claude's, 11 of Qwen's) finds its problem."""
    seed = ROOT / "results" / "smollm2-seed" / "results.json"
    comparison = compare_files([f"{seed}:lora", f"{ORIGINAL}:lrl", f"{ORIGINAL}:lora"], task_of)
    student_claude, student_qwen, _ = comparison.pairs
    assert (student_claude.paired, student_claude.only_in_b) == (10, 0)
    assert (student_qwen.paired, student_qwen.only_in_b) == (11, 0)
    assert comparison.blocks[0].total == 150 and comparison.blocks[0].preset == "seed"


def test_the_headline_comparison_reproduces_from_committed_files(task_of):
    """The README's headline: the seed-split SmolLM2 student against the original's published answers
    (the whole file, tests/data/original_results.json), every one of the 150 test problems paired."""
    seed = ROOT / "results" / "smollm2-seed" / "results.json"
    full = ROOT / "tests" / "data" / "original_results.json"
    comparison = compare_files([f"{seed}:lora", f"{full}:lrl", f"{full}:lora"], task_of)
    claude, qwen, _ = comparison.pairs
    assert (claude.paired, claude.only_a_correct, claude.only_b_correct) == (150, 13, 3)
    assert claude.mcnemar_p == pytest.approx(0.0213, abs=1e-4)
    assert claude.side_b.accuracy == pytest.approx(0.900)
    assert claude.side_b.balanced_accuracy == pytest.approx(0.895, abs=1e-3)
    low, high = claude.balanced_accuracy_difference.ci95
    assert low < 0 < high  # balanced accuracy: no difference the data can show
    assert (qwen.paired, qwen.only_a_correct, qwen.only_b_correct) == (150, 18, 2)
    assert qwen.side_b.balanced_accuracy == pytest.approx(0.513, abs=1e-3)
