"""Reports: Markdown, HTML and PNG plots from a results file; the same tables in the terminal.

The results are built from the real task's problems and scored with the real metrics; the answers
and timings are synthetic.
"""

import html
import io
import xml.etree.ElementTree as ET

import pytest
from lrl_harness.cli.app import main
from lrl_harness.evaluation.statistics import score_stage
from lrl_harness.reporting.report import all_tables, describe_who, summary_table, write_report
from lrl_harness.reporting.tables import print_tables
from lrl_harness.results.files import write_json
from lrl_harness.results.io import new_results
from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask
from rich.console import Console

TASK = MeetingRoomsTask()
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def records(problems, wrong_every=0, constant=None, unparsed=0):
    out = []
    for i, p in enumerate(problems):
        answer = constant or p.expected
        if wrong_every and i % wrong_every == 0:
            answer = "NO" if p.expected == "YES" else "YES"
        if i < unparsed:
            answer = None
        out.append({"problem_id": p.id, "difficulty": p.difficulty, "problem": TASK.describe(p),
                    "expected": p.expected, "answer": answer, "correct": answer == p.expected,
                    "response": f"Answer: {answer}", "prompt_sha256": "0" * 64, "prompt_tokens": 40,
                    "completion_tokens": 3, "latency_s": 0.01})
    return out


def bench_entry(recs, backend, latency_s):
    return {**score_stage(recs), "label": backend, "backend": backend, "model": {"path": "student.gguf"},
            "latency": {"mean_s": latency_s, "p50_s": latency_s * 0.9, "p95_s": latency_s * 1.8},
            "ttft": {"mean_s": latency_s / 4, "p50_s": latency_s / 4},
            "throughput": {"prefill_tokens_per_s": 900.0, "decode_tokens_per_s": 150.0,
                           "problems_per_s": 1 / latency_s},
            "memory": {"peak_rss_mib": 512.0, "gpu_max_allocated_mib": None}, "load_s": 0.4, "results": recs}


@pytest.fixture(scope="module")
def results():
    problems = TASK.problems("seed", "test")  # 88% YES: the majority baseline matters here
    data = new_results(task="meeting-rooms", preset="seed", split="test", config={}, config_hash="c0ffee",
                       provenance={"prompt_version": "meeting-rooms/1",
                                   "machine": {"cpu": "Test CPU", "cores": 2, "gpu": None}})
    who_student = {"student": "tiny", "backend": "transformers"}
    who_teacher = {"teacher": "claude", "model": "haiku"}
    for name, recs, who in (
        ("student_baseline", records(problems, constant="YES"), who_student),
        ("teacher_baseline", records(problems, wrong_every=6, unparsed=4), who_teacher),
        ("lrl", records(problems, wrong_every=12), {"teacher": "solver", "model": "exact-solver"}),
        ("lora", records(problems, wrong_every=30), who_student),
    ):
        data["stages"][name] = {"stage": name, **score_stage(recs), "who": who, "results": recs}
    data["benchmarks"] = {
        "task": "meeting-rooms", "preset": "seed", "split": "test",
        "backends": {"transformers": bench_entry(records(problems, wrong_every=30), "transformers", 0.2),
                     "llamacpp:q8_0": bench_entry(records(problems, wrong_every=25), "llamacpp", 0.02)},
        "ratios": {"transformers/llamacpp:q8_0": {"latency_mean": 10.0, "latency_p50": 10.0,
                                                  "problems_per_s": 0.1}},
    }
    return data


def test_report_writes_markdown_html_and_pngs(tmp_path, results):
    paths = write_report(results, tmp_path / "report")
    plots = ("accuracy_by_stage", "accuracy_by_backend", "latency_by_backend")
    assert set(paths) == {"markdown", "html", *plots}
    for name in plots:
        data = paths[name].read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 10_000, name
    md = paths["markdown"].read_text()
    assert "![accuracy_by_stage](accuracy_by_stage.png)" in md
    assert "| student_baseline | tiny on transformers | 0.880 | 0.500 | 0.880 (YES) | 0 |" in md
    assert "| teacher_baseline | claude (haiku) |" in md
    assert "Benchmark: speed by backend" in md and "| transformers/llamacpp:q8_0 | 10.00x |" in md
    page = paths["html"].read_text()
    assert page.startswith("<!DOCTYPE html>")
    for name in ("accuracy_by_stage.png", "accuracy_by_backend.png", "latency_by_backend.png"):
        assert f'src="{name}"' in page
    body = page[page.index("<body>"):page.index("</body>") + len("</body>")]
    ET.fromstring(body)  # the generated markup is well-formed


def test_stages_only_gives_one_plot(tmp_path, results):
    stages_only = {k: v for k, v in results.items() if k != "benchmarks"}
    paths = write_report(stages_only, tmp_path)
    assert set(paths) == {"markdown", "html", "accuracy_by_stage"}
    assert "Benchmark" not in paths["markdown"].read_text()


def test_summary_table_has_the_honest_columns(results):
    table = summary_table(results)
    assert [c.header for c in table.columns] == ["stage", "who", "accuracy", "balanced acc.",
                                                 "majority baseline", "unparsed", "truncated", "95% CI", "n"]
    assert table.row_count == 4
    console = Console(width=200, record=True)
    console.print(table)
    text = console.export_text()
    assert "student_baseline" in text and "0.880 (YES)" in text and "0.500" in text


def test_terminal_tables_match_the_documents(tmp_path, results):
    tables = all_tables(results)
    assert [t.title for t in tables] == [
        "Accuracy by stage (meeting-rooms, seed preset, test split)", "Accuracy / balanced accuracy by difficulty",
        "Benchmark: accuracy by backend (meeting-rooms, seed preset, test split)",
        "Benchmark: speed by backend (one problem at a time)", "Benchmark: throughput and memory by backend",
        "Benchmark: ratios (A/B)"]
    paths = write_report(results, tmp_path)
    md, page = paths["markdown"].read_text(), paths["html"].read_text()
    console = Console(width=80, record=True, file=io.StringIO())  # not a terminal, like a CI log
    print_tables(tables, console)
    terminal = console.export_text()
    for table in tables:
        assert f"### {table.title}" in md and f"<h3>{html.escape(table.title)}</h3>" in page
        for row in table.rows:
            for cell in row:  # every figure in full, even in 80 columns
                assert cell in terminal and html.escape(cell) in page


def test_report_command(tmp_path, capsys, results):
    path = tmp_path / "results.json"
    write_json(path, results)
    assert main(["report", str(path), "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "Accuracy by stage" in out and "Majority baseline:" in out
    assert (tmp_path / "out" / "report.html").is_file()
    assert main(["report", str(tmp_path / "missing.json"), "--out", str(tmp_path / "x")]) == 2
    assert "no such file" in capsys.readouterr().err


@pytest.mark.parametrize("who,expected", [
    ({"student": "tiny", "backend": "llamacpp"}, "tiny on llamacpp"),
    ({"teacher": "solver", "model": "exact-solver"}, "solver (exact-solver)"),
    ({"teacher": "claude", "model": "claude"}, "claude"),
    ({"name": "x"}, "x"),
    (None, "-"),
    ("free text", "free text"),
])
def test_describe_who(who, expected):
    assert describe_who(who) == expected


def test_a_stage_with_nothing_right_still_plots(tmp_path):
    """All unparsed: accuracy 0 sits on the interval's lower end (matplotlib refuses negative error bars)."""
    problems = TASK.problems("balanced", "test", n=30)
    recs = records(problems, unparsed=30)
    data = new_results(task="meeting-rooms", preset="balanced", split="test")
    data["stages"]["student_baseline"] = {**score_stage(recs), "who": {"student": "tiny"}, "results": recs}
    paths = write_report(data, tmp_path)
    assert paths["accuracy_by_stage"].read_bytes()[:8] == PNG_MAGIC
    assert "| student_baseline | tiny | 0.000 | 0.000 |" in paths["markdown"].read_text()
