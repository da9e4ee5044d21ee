"""Reports of a results file: the same tables in the terminal (rich), in Markdown and in a static HTML
page, with the PNG plots of ``plots``.

Every accuracy is shown beside the majority-class baseline, the balanced accuracy, the unparsed count
and its Wilson 95% interval: an accuracy alone says little on a split where one answer dominates.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from pathlib import Path

from lrl_harness.reporting.tables import TableData
from lrl_harness.reporting.tables import print_tables as print_tables  # re-exported: bench imports it from here
from lrl_harness.reporting.views import load_backends, measured_levels, ordered_stages, sequential_backends, table_title
from lrl_harness.results.files import atomic_write_text
from lrl_harness.results.io import as_results
from lrl_harness.results.schema import (
    BenchEntry,
    Latency,
    Memory,
    Paired,
    Results,
    ScoreBlock,
    Throughput,
    Who,
)

ACCURACY_COLUMNS = ("accuracy", "balanced acc.", "majority baseline", "unparsed", "truncated", "95% CI", "n")
SPEED_COLUMNS = ("backend", "latency mean ms", "p50 ms", "p95 ms", "TTFT mean ms", "TTFT p50 ms",
                 "problems/s")
RESOURCE_COLUMNS = ("backend", "prefill tok/s", "decode tok/s", "load s", "peak RSS MiB", "GPU MiB")
EXPLANATION = (
    "Majority baseline: the accuracy of always giving the most common expected answer. "
    "Balanced accuracy: the mean of the per-answer recalls (0.5 for a constant answer). "
    "Unparsed: responses with no clear verdict; they count as wrong. "
    "95% CI: Wilson interval of the accuracy."
)


# --- what the tables hold ---------------------------------------------------------------------


def describe_who(who: Who | dict | str | None) -> str:
    """A short name for what produced a stage: ``tiny on transformers``, ``claude (claude-3-5-haiku)``."""
    if not who:
        return "-"
    if isinstance(who, str):
        return who
    if isinstance(who, dict):
        who = Who.model_construct(**who)
    if who.student:
        return f"{who.student} on {who.backend}" if who.backend else str(who.student)
    if who.teacher:
        return f"{who.teacher} ({who.model})" if who.model and who.model != who.teacher else str(who.teacher)
    return next((str(value) for value in (who.name, who.model, who.backend) if value), "-")


def _accuracy_cells(block: ScoreBlock) -> list[str]:
    lo, hi = block.ci95 or (0.0, 1.0)
    return [f"{block.accuracy:.3f}", f"{block.balanced_accuracy:.3f}",
            f"{block.majority_baseline:.3f} ({block.majority_label or '-'})",
            f"{block.unparsed}", _count(block.truncated), f"{lo:.3f}-{hi:.3f}", str(block.total)]


def _count(value: int | None) -> str:
    return "-" if value is None else str(value)


def stage_data(results: Results | dict) -> TableData:
    results = as_results(results)
    rows = [[name, describe_who(block.who), *_accuracy_cells(block)] for name, block in ordered_stages(results)]
    return TableData(table_title("Accuracy by stage", results), ("stage", "who", *ACCURACY_COLUMNS), rows)


def difficulty_data(results: Results | dict) -> TableData:
    stages = ordered_stages(results)
    difficulties: list[str] = []
    for _, block in stages:
        difficulties += [d for d in block.by_difficulty or {} if d not in difficulties]
    rows = []
    for name, block in stages:
        by = block.by_difficulty or {}
        rows.append([name, *(_difficulty_cell(by[d]) if d in by else "-" for d in difficulties)])
    return TableData("Accuracy / balanced accuracy by difficulty", ("stage", *difficulties), rows,
                     text_columns=1)


RESCORE_COLUMNS = ("recorded acc.", "accuracy", "balanced acc.", "majority baseline", "unparsed", "truncated",
                   "wrong->right", "right->wrong", "95% CI", "n")


def rescore_data(results: Results | dict, title: str | None = None) -> TableData:
    """Re-graded stages beside their recorded figures (``lrl rescore``): recorded and re-graded accuracy,
    balanced accuracy, majority baseline, unparsed, truncated and the grades changed each way."""
    results = as_results(results)
    rows = []
    for name, block in ordered_stages(results):
        recorded = block.recorded.accuracy if block.recorded else None
        changes = block.grade_changes or {}
        lo, hi = block.ci95 or (0.0, 1.0)
        rows.append([name, "-" if recorded is None else f"{recorded:.3f}", f"{block.accuracy:.3f}",
                     f"{block.balanced_accuracy:.3f}",
                     f"{block.majority_baseline:.3f} ({block.majority_label or '-'})",
                     str(block.unparsed), _count(block.truncated),
                     str(changes.get("wrong->right", 0)), str(changes.get("right->wrong", 0)),
                     f"{lo:.3f}-{hi:.3f}", str(block.total)])
    return TableData(title or table_title("Re-graded against the recorded grades", results),
                     ("stage", *RESCORE_COLUMNS), rows, text_columns=1)


def _difficulty_cell(block: ScoreBlock) -> str:
    return f"{block.accuracy:.3f} / {block.balanced_accuracy:.3f} (n={block.total})"


def _model_name(entry: BenchEntry) -> str:
    model = entry.model
    path = (model.name or model.path or "") if model else ""
    name = (Path(path).name or path) if path else "-"
    return f"{name} + adapter {Path(model.adapter).name}" if model and model.adapter else name


def benchmark_accuracy_data(results: Results | dict) -> TableData:
    results = as_results(results)
    rows = [[label, _model_name(entry), *_accuracy_cells(entry)] for label, entry in results.backends.items()]
    return TableData(table_title("Benchmark: accuracy by backend", results.benchmarks),
                     ("backend", "model", *ACCURACY_COLUMNS), rows)


def benchmark_speed_data(results: Results | dict) -> TableData:
    rows = []
    for label, entry in sequential_backends(as_results(results)).items():
        lat, ttft, thr = entry.latency or Latency(), entry.ttft or Latency(), entry.throughput or Throughput()
        rows.append([label, _ms(lat.mean_s), _ms(lat.p50_s), _ms(lat.p95_s), _ms(ttft.mean_s), _ms(ttft.p50_s),
                     _num(thr.problems_per_s, 2)])
    return TableData("Benchmark: speed by backend (one problem at a time)", SPEED_COLUMNS, rows,
                     text_columns=1)


def benchmark_resource_data(results: Results | dict) -> TableData:
    rows = []
    for label, entry in as_results(results).backends.items():
        thr, mem = entry.throughput or Throughput(), entry.memory or Memory()
        rows.append([label, _num(thr.prefill_tokens_per_s), _num(thr.decode_tokens_per_s), _num(entry.load_s, 2),
                     _num(mem.peak_rss_mib), _num(mem.gpu_max_allocated_mib)])
    return TableData("Benchmark: throughput and memory by backend", RESOURCE_COLUMNS, rows, text_columns=1)


LOAD_COLUMNS = ("backend", "level", "accuracy", "vs ref. (p)", "e2e p50 ms", "e2e p99 ms", "TTFT p50 ms",
                "TTFT p99 ms", "ITL p50 ms", "TPOT p50 ms", "req/s", "out tok/s", "errors", "retries",
                "peak in flight", "goodput")


def load_data(results: Results | dict) -> TableData:
    """One row per target and load level: accuracy (and its paired difference from the reference level),
    latency distributions, throughput, errors, retries, measured peak in flight and goodput."""
    rows = []
    for label, entry in load_backends(as_results(results)).items():
        for key, block in measured_levels(entry):
            load, paired = block.load, block.paired_vs_reference or Paired()
            lost = paired.only_a_correct - paired.only_b_correct
            versus = "ref." if key == entry.reference_level else f"{-lost:+d} ({paired.mcnemar_p:.2g})"
            goodput = load.goodput.share_of_requests if load.goodput else None
            rows.append([label, key, f"{block.accuracy:.3f}", versus, _ms(load.e2e.p50_s), _ms(load.e2e.p99_s),
                         _ms(load.ttft.p50_s), _ms(load.ttft.p99_s), _ms(load.itl.p50_s), _ms(load.tpot.p50_s),
                         _num(load.requests_per_s, 2), _num(load.output_tokens_per_s), str(load.errors),
                         str(load.retries), str(load.peak_in_flight), "-" if goodput is None else f"{goodput:.2f}"])
    return TableData("Benchmark: under load (accuracy vs reference level: correct answers gained, McNemar p)",
                     LOAD_COLUMNS, rows)


def ratio_data(results: Results | dict) -> TableData:
    benchmarks = as_results(results).benchmarks
    ratios = (benchmarks.ratios if benchmarks else None) or {}
    rows = [[pair, _num(r.latency_mean, 2) + "x", _interval(r.latency_mean_ci95), _num(r.latency_p50, 2) + "x",
             _num(r.problems_per_s, 2) + "x"] for pair, r in ratios.items()]
    return TableData("Benchmark: ratios (A/B)", ("A/B", "latency mean", "95% bootstrap", "latency p50",
                                                 "problems/s"), rows, text_columns=1)


def _interval(bounds) -> str:
    return "-" if not bounds else f"{bounds[0]:.2f}-{bounds[1]:.2f}x"


def _ms(seconds) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1000
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}"


def _num(value, digits: int = 1) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def summary_table(results: Results | dict):
    """The stage table as a rich Table: stage, who, accuracy, balanced acc., majority baseline,
    unparsed, 95% CI, n."""
    return stage_data(results).rich()


def benchmark_tables(results: Results | dict) -> list:
    """Rich tables of the benchmarks (accuracy, speed, ratios); empty when there are none."""
    return [t.rich() for t in _benchmark_data(as_results(results))]


def _benchmark_data(results: Results) -> list[TableData]:
    if not results.backends:
        return []
    tables = [benchmark_accuracy_data(results)]
    if sequential_backends(results):
        tables.append(benchmark_speed_data(results))
    if load_backends(results):
        tables.append(load_data(results))
    tables.append(benchmark_resource_data(results))
    if results.benchmarks.ratios:
        tables.append(ratio_data(results))
    return tables


def all_tables(results: Results | dict) -> list[TableData]:
    """Every table of the report: stages (and re-grading), then benchmarks."""
    results = as_results(results)
    tables = []
    if results.stages:
        tables += [stage_data(results), difficulty_data(results)]
        if any(block.recorded is not None for block in results.stages.values()):
            tables.append(rescore_data(results))
    return tables + _benchmark_data(results)


# --- documents --------------------------------------------------------------------------------


def _facts(results: Results) -> list[tuple[str, str]]:
    provenance = results.provenance
    machine = (provenance.machine if provenance else None) or (results.benchmarks.machine if results.benchmarks
                                                                else None)
    gpu = machine.gpu if machine else None
    facts = [
        ("task", results.task), ("preset", results.preset), ("split", results.split),
        ("config hash", results.config_hash), ("prompt version", provenance.prompt_version if provenance else None),
        ("created", provenance.created if provenance else None),
        ("CPU", f"{machine.cpu} ({machine.cores} cores)" if machine and machine.cpu else None),
        ("GPU", f"{gpu.name} (compute {gpu.compute_capability})" if gpu and gpu.name else None),
    ]
    return [(k, str(v)) for k, v in facts if v]


def write_report(results: Results | dict, out_dir: Path) -> dict[str, Path]:
    """Write ``report.md``, ``report.html`` and the PNG plots into ``out_dir``; return their paths by name."""
    from lrl_harness.reporting.plots import write_plots

    results = as_results(results)
    out_dir = Path(out_dir)
    plots = write_plots(results, out_dir)
    return write_documents(out_dir, _facts(results), plots, all_tables(results), title=results.task or "")


NOTE_STYLE = "p.note { background: #fff4d6; border-left: 4px solid #e0a040; padding: 0.4em 0.8em; }\n"


def write_documents(out_dir: Path, facts: list[tuple[str, str]], plots: dict[str, Path], tables: list[TableData],
                    title: str = "", notes: list[str] = ()) -> dict[str, Path]:
    """``report.md`` and ``report.html``: the facts, the explanation, ``notes`` (shown before the plots),
    the plots and the tables; returns every path by name (the plots' too)."""
    generated = datetime.now(UTC).isoformat(timespec="seconds")
    md = ["# lrl-harness report", ""]
    md += [f"- **{k}**: {v}" for k, v in facts]
    md += [f"- **report generated**: {generated}", "", EXPLANATION, ""]
    md += [f"> **Note**: {note}\n" for note in notes]
    md += [f"![{name}]({path.name})\n" for name, path in plots.items()]
    md += [t.markdown() for t in tables]
    paths = {"markdown": out_dir / "report.md", "html": out_dir / "report.html"}
    atomic_write_text(paths["markdown"], "\n".join(md))

    fact_items = "".join(f"<li><b>{html.escape(k)}</b>: {html.escape(v)}</li>" for k, v in facts)
    note_items = "".join(f'<p class="note"><b>Note</b>: {html.escape(n)}</p>\n' for n in notes)
    images = "".join(f'<figure><img src="{html.escape(p.name)}" alt="{html.escape(n)}" /></figure>\n'
                     for n, p in plots.items())
    page = f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>lrl-harness report: {html.escape(title)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 72em; color: #222; }}
table {{ border-collapse: collapse; margin-bottom: 1.5em; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 0.3em 0.6em; text-align: right; }}
th.t, td.t {{ text-align: left; }}
th {{ background: #f0f0f0; }}
figure {{ display: inline-block; margin: 0 1em 1em 0; }}
img {{ max-width: 100%; }}
{NOTE_STYLE if notes else ""}</style>
</head>
<body>
<h1>lrl-harness report</h1>
<ul>{fact_items}<li><b>report generated</b>: {generated}</li></ul>
<p>{html.escape(EXPLANATION)}</p>
{note_items}{images}
{"".join(t.html() for t in tables)}
</body>
</html>
"""
    atomic_write_text(paths["html"], page)
    return {**paths, **plots}
