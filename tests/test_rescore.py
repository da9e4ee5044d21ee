"""`lrl rescore` on the original experiment's published format (a trimmed copy of the real file)."""

import json
from pathlib import Path

import pytest
from lrl_harness.cli.app import main
from lrl_harness.evaluation.rescore import looks_truncated, rescore, split_original

PUBLISHED = Path(__file__).parent / "data" / "original_results_trimmed.json"


@pytest.fixture(scope="module")
def rescored(task):
    return rescore(PUBLISHED, task)


def test_published_format_is_read_as_it_is(rescored):
    data = json.loads(PUBLISHED.read_text(encoding="utf-8"))
    assert "metadata" in data and set(split_original(data)[0]) == {"bootstrap", "lrl", "lora"}
    assert list(rescored["stages"]) == ["bootstrap", "lrl", "lora"]
    meta = rescored["provenance"]["source_metadata"]["metadata"]
    assert meta == data["metadata"] and meta["model_teacher"] == "Claude 3.5 Haiku"
    for name, block in rescored["stages"].items():
        assert block["recorded"] == {k: data[name][k] for k in ("total", "correct", "accuracy")}
        assert block["recorded_label_mismatches"] == 0  # the problems recovered agree with the file's labels


def test_id_only_records_get_their_problems_from_the_seed_splits(rescored, task):
    test = {p.id: p for p in task.problems("seed", "test")}
    lora = rescored["stages"]["lora"]["results"]
    assert lora[0]["problem_id"] == "medium_0"
    assert lora[0]["meetings"] == test["medium_0"].data["meetings"] == [[9, 12], [14, 15], [12, 13], [14, 17]]
    assert all(r["expected"] == test[r["problem_id"]].expected for r in lora)
    # bootstrap ran on the train split: its medium_0 is a different problem from the test split's
    boot = rescored["stages"]["bootstrap"]["results"][0]
    assert boot["problem_id"] == "medium_0" and boot["meetings"] == [[10, 13], [12, 14], [14, 16]]


def test_truncated_responses_are_counted_not_hidden(rescored):
    lora = rescored["stages"]["lora"]
    assert lora["truncated"] == lora["total"] == 11
    assert all(r["truncated"] for r in lora["results"])
    assert rescored["stages"]["bootstrap"]["truncated"] == rescored["stages"]["lrl"]["truncated"] == 0
    # graded on what they say (the opening word), like the careful reading: 6 Yes, 5 No
    assert [r["answer"] for r in lora["results"]].count("NO") == 5 and lora["unparsed"] == 0
    assert looks_truncated(" Yes\n\nExplanation:\n- Meetings [9-1")
    assert not looks_truncated(" YES") and not looks_truncated("Answer: NO.")


def test_final_verdicts_and_grade_changes(rescored):
    boot = {r["problem_id"]: r for r in rescored["stages"]["bootstrap"]["results"]}
    assert boot["medium_4"]["recorded_answer"] == "YES" and boot["medium_4"]["answer"] == "NO"
    assert boot["medium_4"]["rule"] == "correction"
    start, end = boot["medium_4"]["span"]
    assert boot["medium_4"]["response"][start:end] == "correct answer is NO"
    assert boot["medium_67"]["answer"] == "NO" and boot["medium_67"]["rule"] == "concluding-phrase"
    assert boot["hard_2"]["recorded_answer"] == "NO" and boot["hard_2"]["answer"] == "YES"
    stages = rescored["stages"]
    assert stages["bootstrap"]["grade_changes"] == {"wrong->right": 7, "right->wrong": 1}
    assert stages["bootstrap"]["correct"] == 9 and stages["bootstrap"]["unparsed"] == 0
    assert stages["lrl"]["correct"] == 6 and stages["lrl"]["unparsed"] == 0
    assert stages["lora"]["grade_changes"] == {"wrong->right": 0, "right->wrong": 0}
    assert all(r["rule"] and (r["span"] is None or len(r["span"]) == 2)
               for block in stages.values() for r in block["results"])


def test_cli_explain_and_out(capsys, tmp_path):
    out = tmp_path / "rescored.json"
    code = main(["rescore", str(PUBLISHED), "--explain", "--out", str(out)])
    stdout = capsys.readouterr().out
    assert code == 0
    lines = [line for line in stdout.splitlines() if line.startswith(("bootstrap ", "lrl ", "lora "))]
    # one line per changed response: problem, recorded -> new answer, the deciding text
    assert any("medium_4 [[12-14], [13-15], [13-15], [13-14] | 2 rooms]" in line and "recorded YES -> NO" in line
               and "'correct answer is NO'" in line for line in lines)
    written = json.loads(out.read_text())
    changed = sum(sum(b["grade_changes"].values()) for b in written["stages"].values())
    assert len(lines) >= changed > 0
    for col in ("recorded acc.", "truncated", "wrong->right", "right->wrong", "majority baseline"):
        assert col in stdout
    assert "model_teacher=Claude 3.5 Haiku" in stdout
    assert written["provenance"]["source_metadata"]["metadata"]["num_test_problems"] == 150


def test_report_shows_the_rescore_columns(rescored):
    from lrl_harness.reporting.report import all_tables

    titles = {t.title: t for t in all_tables(rescored)}
    table = next(t for title, t in titles.items() if title.startswith("Re-graded"))
    assert "truncated" in table.columns and "right->wrong" in table.columns
    lora = next(row for row in table.rows if row[0] == "lora")
    assert lora[table.columns.index("truncated")] == "11"
