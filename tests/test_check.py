"""The regression check: identical results pass; a real drop fails with one clear line; bad input is exit 2.

Results files are built from the real task's problems, scored with the real metrics; only the answers
are synthetic (chosen so that a known number of problems flips).
"""

import copy
import json
import xml.etree.ElementTree as ET

import pytest
from click.testing import CliRunner
from lrl_harness.api.errors import LrlError
from lrl_harness.cli.app import main
from lrl_harness.cli.commands import check_command
from lrl_harness.evaluation.statistics import (
    balanced_accuracy_bounds,
    mcnemar_one_sided,
    score_stage,
    stratified_mcnemar_one_sided,
)
from lrl_harness.reporting.check import check, check_files
from lrl_harness.results.files import write_json
from lrl_harness.results.io import new_results
from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask

TASK = MeetingRoomsTask()
OTHER = {"YES": "NO", "NO": "YES"}


def records(problems, wrong=(), unparsed=(), latency=0.1):
    """Answer every problem right except the indices in ``wrong`` (flipped) and ``unparsed`` (no verdict)."""
    out = []
    for i, p in enumerate(problems):
        answer = None if i in unparsed else OTHER[p.expected] if i in wrong else p.expected
        out.append({"problem_id": p.id, "difficulty": p.difficulty, "problem": TASK.describe(p),
                    "expected": p.expected, "answer": answer, "correct": answer == p.expected,
                    "response": f"Answer: {answer}" if answer else "I am not sure.",
                    "prompt_sha256": "0" * 64, "prompt_tokens": 40, "completion_tokens": 3,
                    "latency_s": latency})
    return out


def stage(recs, name="lora"):
    return {"stage": name, "label": name, **score_stage(recs), "who": {"student": "tiny"}, "results": recs}


def results_with(stages, split="test", preset="balanced", task="meeting-rooms", benchmarks=None):
    data = new_results(task=task, preset=preset, split=split, config={}, provenance={"prompt_version": "x/1"})
    data["stages"] = stages
    if benchmarks is not None:
        data["benchmarks"] = benchmarks
    return data


@pytest.fixture(scope="module")
def problems():
    return TASK.problems("balanced", "test")  # 200 problems, half YES


def half_right(problems):
    return stage(records(problems, wrong=range(0, 200, 2)), "student_baseline")


@pytest.fixture(scope="module")
def baseline(problems):
    return results_with({"student_baseline": half_right(problems),
                         "lora": stage(records(problems, wrong={0, 1, 2}))})


@pytest.fixture(scope="module")
def degraded(problems):
    """The same run with the answers of 10% of the problems (20, all previously right) flipped."""
    return results_with({"student_baseline": half_right(problems),
                         "lora": stage(records(problems, wrong={0, 1, 2} | set(range(100, 120))))})


def write(tmp_path, name, data):
    path = tmp_path / name
    write_json(path, data)
    return path


def test_identical_results_pass(baseline):
    report = check(baseline, copy.deepcopy(baseline))
    assert report.passed
    assert [i.label for i in report.items] == ["student_baseline", "lora"]
    assert all(i.paired == 200 and i.right_to_wrong == 0 for i in report.items)
    assert report.failure_lines() == []


def test_ten_percent_flipped_fails_with_a_clear_line(baseline, degraded):
    report = check(degraded, baseline)
    assert not report.passed
    [line] = report.failure_lines()
    assert line.startswith("FAIL lora: ")
    assert "accuracy 0.985 -> 0.885" in line
    assert "McNemar p=" in line and "20 of 200 problems flipped right to wrong, 0 wrong to right" in line
    lora = report.items[1]
    assert lora.accuracy_p == pytest.approx(mcnemar_one_sided(20, 0)) and lora.accuracy_p < 1e-5
    assert report.items[0].passed


def test_command_exit_codes_and_junit(tmp_path, baseline, degraded):
    base = write(tmp_path, "base.json", baseline)
    same = write(tmp_path, "same.json", baseline)
    worse = write(tmp_path, "worse.json", degraded)
    runner = CliRunner()
    ok = runner.invoke(check_command, [str(same), "--baseline", str(base)])
    assert ok.exit_code == 0, ok.output
    assert "OK: 2 checks hold" in ok.output

    junit = tmp_path / "junit.xml"
    bad = runner.invoke(check_command, [str(worse), "--baseline", str(base), "--junit", str(junit)])
    assert bad.exit_code == 1
    fail_lines = [line for line in bad.output.splitlines() if line.startswith("FAIL ")]
    assert len(fail_lines) == 1 and fail_lines[0].startswith("FAIL lora: balanced accuracy 0.985 -> 0.885")

    root = ET.parse(junit).getroot()  # well-formed, or this raises
    suite = root.find("testsuite")
    cases = suite.findall("testcase")
    assert [c.get("name") for c in cases] == ["student_baseline", "lora"]
    assert suite.get("tests") == "2" and suite.get("failures") == "1"
    assert cases[0].find("failure") is None
    assert "20 of 200 problems flipped" in cases[1].find("failure").get("message")


def test_small_or_insignificant_drops_pass(problems):
    base = results_with({"lora": stage(records(problems, wrong={0}))})
    one_more = results_with({"lora": stage(records(problems, wrong={0, 5}))})
    assert check(one_more, base).passed  # 0.005 below: inside the tolerance
    few = problems[:40]
    small_base = results_with({"lora": stage(records(few))})
    two_flipped = results_with({"lora": stage(records(few, wrong={3, 4}))})
    report = check(two_flipped, small_base)
    assert report.passed  # 0.05 below, but 2 flips out of 40 is not significant
    assert report.items[0].accuracy_p == pytest.approx(0.25)
    assert not check(two_flipped, small_base, alpha=0.3).passed


def test_more_unparsed_answers_fail(problems):
    base = results_with({"lora": stage(records(problems))})
    new = results_with({"lora": stage(records(problems, unparsed={7}))})
    report = check(new, base)
    assert report.failure_lines() == ["FAIL lora: unparsed answers rose 0 -> 1 of 200"]


def test_latency_fails_only_when_a_ratio_is_asked(problems):
    base = results_with({"lora": stage(records(problems, latency=0.1))})
    slow = results_with({"lora": stage(records(problems, latency=0.25))})
    assert check(slow, base).passed
    report = check(slow, base, latency_ratio=2.0)
    assert report.failure_lines() == ["FAIL lora: mean latency 0.1000 s -> 0.2500 s (2.50x, limit 2x)"]
    assert check(slow, base, latency_ratio=3.0).passed


def test_collapse_to_the_majority_answer_fails_on_balanced_accuracy():
    """On the original, 88%-YES split a constant YES loses little accuracy; balanced accuracy catches it."""
    seed_problems = TASK.problems("seed", "test")
    yes_idx = [i for i, p in enumerate(seed_problems) if p.expected == "YES"]
    base_recs = records(seed_problems, wrong=set(yes_idx[:10]))
    always_yes = records(seed_problems, wrong={i for i, p in enumerate(seed_problems) if p.expected == "NO"})
    base = results_with({"lora": stage(base_recs)}, preset="seed")
    new = results_with({"lora": stage(always_yes)}, preset="seed")
    report = check(new, base)
    item = report.items[0]
    assert item.accuracy_p > 0.05  # the plain McNemar test alone would let this through
    assert item.balanced_p < 0.001
    [line] = report.failure_lines()
    assert line.startswith("FAIL lora: balanced accuracy 0.962 -> 0.500 (accuracy 0.933 -> 0.880")


def test_without_per_problem_results_the_wilson_bound_decides(baseline, degraded):
    def strip(data):
        data = copy.deepcopy(data)
        for block in data["stages"].values():
            del block["results"]
        return data

    report = check(strip(degraded), strip(baseline))
    lora = report.items[1]
    assert lora.paired == 0 and lora.accuracy_upper < 0.985
    assert "balanced accuracy not tested: no per-problem results" in lora.notes
    [line] = report.failure_lines()
    assert "no paired problems; the new accuracy's one-sided 95% Wilson upper bound is" in line


def test_same_ids_on_different_problems_are_not_paired(problems):
    """Splits drawn with another size reuse ids such as easy_0 for other problems."""
    other = TASK.problems("balanced", "test", n=150)
    base = results_with({"lora": stage(records(problems))})
    new = results_with({"lora": stage(records(other, wrong=set(range(30))))})
    same = sum(1 for p in other for q in problems if p.id == q.id and TASK.describe(p) == TASK.describe(q))
    assert 0 < same < 10  # a few coincide; too few for a paired test
    item = check(new, base).items[0]
    assert item.paired == 0
    assert f"only {same} of 150 problems are also in the baseline; compared unpaired" in item.notes
    [reason] = item.failures  # 0.8 against 1.0: far above the new result's upper bounds
    assert reason.startswith("accuracy 1.000 -> 0.800") or reason.startswith("balanced accuracy 1.000 -> 0.8")


def test_benchmarked_backends_are_checked_too(problems):
    def bench(wrong):
        return {"task": "meeting-rooms", "preset": "balanced", "split": "test",
                "backends": {"llamacpp:q8_0": {**stage(records(problems, wrong=wrong)),
                                               "latency": {"mean_s": 0.02}}}}

    base = results_with({}, benchmarks=bench(set()))
    new = results_with({}, benchmarks=bench(set(range(0, 200, 5))))
    report = check(new, base)
    assert [i.label for i in report.items] == ["bench/llamacpp:q8_0"]
    assert report.failure_lines()[0].startswith("FAIL bench/llamacpp:q8_0: ")


def test_stages_in_one_file_only_are_reported_not_failed(baseline, problems):
    partial = results_with({"lora": baseline["stages"]["lora"]})
    report = check(partial, baseline)
    assert report.passed and report.only_in_baseline == [("stage", "student_baseline")]
    root = ET.fromstring(report.to_junit_xml())
    assert root.find("testsuite/testcase[@name='student_baseline']/skipped") is not None


def test_incomparable_results_raise(baseline):
    for key, value in (("task", "chess"), ("split", "train"), ("preset", "seed")):
        other = copy.deepcopy(baseline)
        other[key] = value
        with pytest.raises(LrlError, match=f"{key} '{value}'"):
            check(other, baseline)
    with pytest.raises(LrlError, match="nothing to compare"):
        check(results_with({}), baseline)
    with pytest.raises(LrlError, match="tolerance"):
        check(baseline, baseline, tolerance=-0.1)


@pytest.mark.parametrize("case", ["missing", "corrupt", "not ours", "other task"])
def test_bad_input_exits_2_with_one_line(tmp_path, capsys, baseline, case):
    base = write(tmp_path, "base.json", baseline)
    target = tmp_path / "new.json"
    if case == "corrupt":
        target.write_text('{"schema": "lrl-harness/results", "stages": {')
    elif case == "not ours":
        target.write_text(json.dumps({"hello": 1}))
    elif case == "other task":
        write_json(target, {**baseline, "task": "chess"})
    code = main(["check", str(target), "--baseline", str(base)])
    err = capsys.readouterr().err
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    expected = {"missing": "no such file", "corrupt": "not valid JSON",
                "not ours": "not an lrl-harness results file", "other task": "task 'chess'"}
    assert expected[case] in err


def test_check_files_and_the_lrl_command_agree(tmp_path, capsys, baseline, degraded):
    base = write(tmp_path, "base.json", baseline)
    worse = write(tmp_path, "worse.json", degraded)
    assert not check_files(worse, base).passed
    assert main(["check", str(worse), "--baseline", str(base)]) == 1
    assert "FAIL lora:" in capsys.readouterr().out


def test_stratified_mcnemar_reduces_to_mcnemar():
    for worse, better in ((7, 2), (20, 0), (0, 5), (3, 3)):
        assert stratified_mcnemar_one_sided({"YES": worse}, {"YES": better}, {"YES": 100}) == \
            pytest.approx(mcnemar_one_sided(worse, better))
        split = stratified_mcnemar_one_sided({"YES": worse, "NO": 0}, {"YES": better, "NO": 0},
                                             {"YES": 50, "NO": 50})
        assert split == pytest.approx(mcnemar_one_sided(worse, better))


def test_balanced_accuracy_bounds_bracket_the_estimate(problems):
    recs = records(problems, wrong=set(range(0, 200, 7)))
    block = score_stage(recs)
    lo, hi = balanced_accuracy_bounds(recs)
    assert lo < block["balanced_accuracy"] < hi
    assert balanced_accuracy_bounds(recs, alpha=0.2)[0] > lo
