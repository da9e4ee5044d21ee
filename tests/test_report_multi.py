"""``lrl report A.json B.json ...`` on the committed results: one report of several files (machines,
recipes, backends), a row per file, machine fingerprints, paired tests, notes where the machines differ."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
from lrl_harness.cli.app import main
from lrl_harness.reporting.multi import load_sources, multi_tables, write_multi_report
from lrl_harness.reporting.report import write_report
from lrl_harness.results.io import load_results

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "results"
COUNT_BENCH = RESULTS / "smollm2-count" / "bench.json"
TALLY_BENCH = RESULTS / "smollm2-tally" / "bench.json"
GPU_SUITE = RESULTS / "gpu-suite-h100.json"
RUNS = [RESULTS / "smollm2-count" / "results.json", RESULTS / "tiny-offline-reference.json",
        RESULTS / "smollm2-tally" / "results.json"]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _table(tables, start):
    return next(t for t in tables if t.title.startswith(start))


def test_two_machines_one_report(tmp_path):
    sources = load_sources([COUNT_BENCH, TALLY_BENCH, GPU_SUITE])
    assert [s.label for s in sources] == ["smollm2-count/bench @ AMD EPYC x2", "smollm2-tally/bench @ AMD EPYC x2",
                                          "gpu-suite-h100 @ NVIDIA H100 80GB HBM3"]
    tables, notes = multi_tables(sources)
    files = _table(tables, "Files")
    gpu_row = files.rows[2]
    assert "NVIDIA H100 80GB HBM3 (compute 9.0)" in gpu_row and "torch 2.11.0+cu130, cuda 13.0" in gpu_row
    assert "AMD EPYC (2 cores)" in files.rows[0] and "d23330242b57afee" in files.rows[0]
    targets = _table(tables, "Bench targets")
    transformers = [row for row in targets.rows if row[0] == "transformers"]
    assert [row[1] for row in transformers] == [s.label for s in sources]  # one row per file
    paired = _table(tables, "Paired tests")
    assert {row[0] for row in paired.rows} >= {"bench/transformers", "bench/llamacpp:q8_0"}
    assert all(row[3] == "30" for row in paired.rows)  # both benches asked the first 30 test problems
    assert any(n.startswith("comparability keys differ") for n in notes)
    assert any("GPU suite's report" in n for n in notes)
    paths = write_multi_report(sources, tmp_path)
    assert {"markdown", "html", "accuracy_vs_latency", "accuracy_by_stage"} <= set(paths)
    for name in ("accuracy_vs_latency", "accuracy_by_stage"):
        assert paths[name].read_bytes()[:8] == PNG_MAGIC
    md = paths["markdown"].read_text()
    assert "> **Note**: comparability keys differ" in md and "### Files and the machines" in md
    assert 'class="note"' in paths["html"].read_text()


def test_three_runs_paired_stage_by_stage():
    tables, notes = multi_tables(load_sources(RUNS, ["count", "tiny", "tally"]))
    stages = _table(tables, "Accuracy by stage")
    assert [row[1] for row in stages.rows if row[0] == "lora"] == ["count", "tiny", "tally"]
    paired = _table(tables, "Paired tests")
    lora = {(row[1], row[2]): row for row in paired.rows if row[0] == "lora"}
    assert lora[("count", "tally")][3] == "200" and lora[("count", "tally")][8] == "1/14"
    assert not any("comparability keys differ" in n for n in notes)  # run files carry no bench key


def test_report_command_several_files_and_formats(tmp_path, capsys):
    out = tmp_path / "report"
    args = ["report", str(COUNT_BENCH), str(GPU_SUITE), "--label", "cpu", "--label", "h100", "--out", str(out)]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "Files and the machines" in text and "note: no comparability key in h100" in text
    assert (out / "report.md").is_file() and (out / "accuracy_vs_latency.png").is_file()
    assert main([*args, "--format", "json"]) == 0
    tables = json.loads(capsys.readouterr().out)
    assert tables[0]["title"].startswith("Files") and tables[0]["rows"][1]["file"] == "h100"
    assert main([*args, "--format", "csv"]) == 0
    first = capsys.readouterr().out.split("\n\n")[0].splitlines()
    assert first[0].startswith("# Files") and list(csv.reader(io.StringIO(first[2])))[0][0] == "cpu"
    assert main(["report", str(COUNT_BENCH), str(GPU_SUITE), "--label", "one", "--out", str(out)]) == 2
    assert "--label given 1 times for 2 files" in capsys.readouterr().err
    assert main(["report", str(COUNT_BENCH), str(ROOT / "pyproject.toml"), "--out", str(out)]) == 2


@pytest.mark.parametrize("path", [RUNS[0], COUNT_BENCH])
def test_single_file_report_is_unchanged(tmp_path, capsys, path):
    """The one-file report through the command is the one ``write_report`` writes."""
    assert main(["report", str(path), "--out", str(tmp_path / "cli")]) == 0
    direct = write_report(load_results(path), tmp_path / "direct")
    for name in ("report.md", "report.html"):
        a, b = ((tmp_path / d / name).read_text() for d in ("cli", "direct"))
        strip = re.compile(r"report generated.*")
        assert strip.sub("", a) == strip.sub("", b)
    assert "Note" not in (tmp_path / "cli" / "report.md").read_text()
    assert "Majority baseline:" in capsys.readouterr().out
    assert direct["markdown"].name == "report.md"
