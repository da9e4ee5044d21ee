"""The command line: problems, bad input (one line on stderr, exit 2), rescore of both formats."""

import json

import pytest
from lrl_harness.cli.app import main
from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask


def run_cli(capsys, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_problems_seed_test_reproduces_the_original(capsys):
    code, out, _ = run_cli(capsys, "problems", "--preset", "seed", "--split", "test")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 150
    assert lines[0] == {"id": "medium_0", "difficulty": "MEDIUM", "meetings": [[9, 12], [14, 15], [12, 13], [14, 17]],
                        "rooms": 3, "max_simultaneous": 2, "expected": "YES"}
    assert sum(1 for x in lines if x["expected"] == "YES") == 132


@pytest.mark.parametrize("args,message", [
    (["run", "--teacher", "nope", "--stages", "teacher_baseline"], "unknown teacher 'nope'; available:"),
    (["run", "--stages", "teacher_baseline,warp"], "unknown stage 'warp'"),
    (["run", "--preset", "weird", "--stages", "teacher_baseline"], "unknown preset 'weird'"),
    (["problems", "--task", "chess"], "unknown task 'chess'; available: meeting-rooms"),
    (["rescore", "does-not-exist.json"], "no such file"),
    (["run", "--batch-size", "0", "--stages", "teacher_baseline"], "batch_size must be a positive integer"),
    (["run", "--teacher-opt", "novalue", "--stages", "teacher_baseline"], "must look like key=value"),
])
def test_bad_input_is_one_line_and_exit_2(capsys, tmp_path, args, message):
    code, _, err = run_cli(capsys, *args, *(["--out", str(tmp_path / "o")] if args[0] == "run" else []))
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_malformed_and_unknown_config(capsys, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("teacher = [unclosed\n")
    code, _, err = run_cli(capsys, "run", "--config", str(bad), "--out", str(tmp_path / "o"))
    assert code == 2 and "malformed TOML" in err
    unknown = tmp_path / "unknown.toml"
    unknown.write_text('teachr = "solver"\n')
    code, _, err = run_cli(capsys, "run", "--config", str(unknown), "--out", str(tmp_path / "o"))
    assert code == 2 and "unknown setting 'teachr'" in err
    wrong = tmp_path / "wrong.toml"
    wrong.write_text('batch_size = "ten"\n')
    code, _, err = run_cli(capsys, "run", "--config", str(wrong), "--out", str(tmp_path / "o"))
    assert code == 2 and "batch_size must be an integer" in err


def test_teacher_stages_run_resume_and_refuse_a_different_config(capsys, tmp_path):
    out = tmp_path / "run"
    args = ["run", "--quiet", "--stages", "teacher_baseline,bootstrap,lrl", "--out", str(out)]
    assert main(args) == 0
    results = json.loads((out / "results.json").read_text())
    assert list(results["stages"]) == ["teacher_baseline", "bootstrap", "lrl"]
    boot = results["stages"]["bootstrap"]
    assert boot["batches"]["journal_entries"] == 10 and boot["batches"]["distillations"] == 2
    assert results["stages"]["lrl"]["accuracy"] == 1.0
    assert results["teacher"]["is_language_model"] is False
    for name in ("journal.log", "journal.txt", "strategy_evolution.log", "strategy.txt"):
        assert (out / name).stat().st_size > 0
    assert "Sweep-line procedure" in (out / "strategy.txt").read_text()
    before = (out / "results.json").read_bytes()
    assert main(args) == 0  # finished stages are not redone
    assert json.loads((out / "results.json").read_text())["stages"] == json.loads(before)["stages"]
    before = (out / "results.json").read_bytes()
    capsys.readouterr()
    code = main(["run", "--quiet", "--stages", "teacher_baseline", "--batch-size", "5", "--out", str(out)])
    err = capsys.readouterr().err
    assert code == 2 and "belongs to a different configuration" in err and "batch_size" in err
    assert (out / "results.json").read_bytes() == before  # nothing already written is damaged


def test_resume_after_a_crash_mid_stage(tmp_path, monkeypatch):
    """Kill the bootstrap after three batches; the re-run starts at batch four and ends identical."""
    from lrl_harness_plugins import solver_teacher

    out = tmp_path / "run"
    args = ["run", "--quiet", "--stages", "bootstrap", "--out", str(out)]
    calls = {"n": 0}
    original = solver_teacher.SolverTeacher.complete

    def crashing(self, requests):
        if requests[0].purpose == "solve":
            calls["n"] += 1
            if calls["n"] == 4:
                raise KeyboardInterrupt
        return original(self, requests)

    monkeypatch.setattr(solver_teacher.SolverTeacher, "complete", crashing)
    assert main(args) == 130
    lines = (out / "checkpoints" / "bootstrap.jsonl").read_text().splitlines()
    assert len(lines) == 3
    # a half-written line (a crash during the write) is dropped on resume
    with open(out / "checkpoints" / "bootstrap.jsonl", "a") as fh:
        fh.write('{"batch": 4, "records": [')
    monkeypatch.setattr(solver_teacher.SolverTeacher, "complete", original)
    counted = {"n": 0}

    def counting(self, requests):
        counted["n"] += sum(1 for r in requests if r.purpose == "solve")
        return original(self, requests)

    monkeypatch.setattr(solver_teacher.SolverTeacher, "complete", counting)
    assert main(args) == 0
    assert counted["n"] == 70  # only the seven unfinished batches
    results = json.loads((out / "results.json").read_text())
    assert results["stages"]["bootstrap"]["total"] == 100
    assert results["stages"]["bootstrap"]["batches"]["distillations"] == 2


def test_out_folder_that_is_not_a_run(capsys, tmp_path):
    (tmp_path / "stuff.txt").write_text("mine")
    code, _, err = run_cli(capsys, "run", "--stages", "teacher_baseline", "--out", str(tmp_path))
    assert code == 2 and "holds no lrl-harness run" in err
    assert (tmp_path / "stuff.txt").read_text() == "mine"


def original_format_file(path, task):
    """A results file in the original experiment's format: the parser scored 'YES' after char 50 as NO."""
    test = task.problems("seed", "test")[:20]
    results = []
    for p in test:
        body = f"Checking overlaps for {task.describe(p)}.\n\nConclusion: {p.expected}, by the peak count."
        parsed = "YES" if "YES" in body.upper()[:50] else "NO"
        results.append({"problem_id": p.id, "answer": parsed, "correct": parsed == p.expected,
                        "response": body, "expected": p.expected, "problem": task.describe(p),
                        "max_simultaneous": p.data["max_simultaneous"]})
    lora = [{"problem_id": p.id, "answer": "YES", "correct": p.expected == "YES", "response": " YES",
             "expected": p.expected} for p in test]  # the original's student records carry no problem string
    data = {
        "lrl": {"stage": "Stage 3", "total": 20, "correct": sum(r["correct"] for r in results),
                "accuracy": sum(r["correct"] for r in results) / 20, "by_difficulty": {}, "results": results},
        "lora": {"stage": "Stage 4", "total": 20, "correct": sum(r["correct"] for r in lora),
                 "accuracy": sum(r["correct"] for r in lora) / 20, "by_difficulty": {}, "results": lora},
    }
    path.write_text(json.dumps(data))
    return data


def test_rescore_the_original_format(capsys, tmp_path):
    task = MeetingRoomsTask()
    src = tmp_path / "original.json"
    data = original_format_file(src, task)
    out = tmp_path / "rescored.json"
    code, stdout, _ = run_cli(capsys, "rescore", str(src), "--out", str(out))
    assert code == 0 and "lrl" in stdout
    rescored = json.loads(out.read_text())
    lrl = rescored["stages"]["lrl"]
    assert lrl["recorded"]["accuracy"] == data["lrl"]["accuracy"] < 1.0
    assert lrl["accuracy"] == 1.0 and lrl["unparsed"] == 0
    assert all(r["answer"] in ("YES", "NO") for r in lrl["results"])
    lora = rescored["stages"]["lora"]
    assert lora["majority_baseline"] == lora["accuracy"]  # a constant YES equals the majority baseline
    assert lora["balanced_accuracy"] in (0.5, 1.0)


def test_rescore_rejects_corrupt_files(capsys, tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    code, _, err = run_cli(capsys, "rescore", str(bad))
    assert code == 2 and "not valid JSON" in err
    other = tmp_path / "other.json"
    other.write_text(json.dumps({"hello": 1}))
    code, _, err = run_cli(capsys, "rescore", str(other))
    assert code == 2 and "neither" in err
    invalid = tmp_path / "invalid.json"
    invalid.write_text(json.dumps({"lrl": {"accuracy": 1, "results": [
        {"problem_id": "x", "problem": "[12-10] | 2 rooms", "response": "YES"}]}}))
    code, _, err = run_cli(capsys, "rescore", str(invalid))
    assert code == 2 and "must start before it ends" in err


def test_run_settings_are_declared_once(capsys):
    """Every run setting with a flag is an ``lrl run`` option with its declared help, and the command
    line's values are parsed as the setting declares (a new setting is one declaration)."""
    import dataclasses

    from lrl_harness.pipeline.config import RunConfig, command_line_settings, from_command_line

    code, out, _ = run_cli(capsys, "run", "--help")
    out = " ".join(out.split())  # as one line: click wraps the help
    assert code == 0
    for f in command_line_settings():
        assert f.metadata["flag"] in out and f.metadata["help"].split(" ")[0] in out
    assert {f.name for f in dataclasses.fields(RunConfig)} >= {f.name for f in command_line_settings()}
    assert "peak (the small recipe's)." in out  # the task's own help of its formats  # the task's own format help
    parsed = from_command_line({"stages": "lora, student_baseline", "export": "none", "lora": ("r=8",),
                                "parity": "f16", "test_n": 5})
    assert parsed["stages"] == ["lora", "student_baseline"] and parsed["export"] == [] and parsed["lora"] == {"r": 8}
    assert parsed["parity"] == ["f16"] and parsed["test_n"] == 5 and parsed["teacher_options"] is None
