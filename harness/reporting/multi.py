"""``lrl report A.json B.json ...``: several results files (machines, recipes, backends) in one report.

Each file is labelled (by the user, else by its run and machine) and described by its machine's
fingerprint: CPU, cores, GPU, threads, engine versions and the bench's comparability key. Every stage
and every bench target gets one row per file that holds it; where two files answered the same
problems (paired by content, as ``lrl compare`` pairs them), a paired test says whether they differ.
Comparing machines is the point, so files whose comparability keys differ are labelled with a
visible note, never refused (``lrl check`` keeps refusing latency across machines).

Besides our results files, the GPU suite's report (``lrl-harness/gpu-report``) is read: its bench
targets and stages carry figures only, no per-problem answers, so they take part in no paired test.
"""

from __future__ import annotations

import itertools
import textwrap
from dataclasses import dataclass
from pathlib import Path

from lrl_harness.api.errors import LrlError, ResultsFileError
from lrl_harness.reporting.compare import Block, compare_pair, few_discordant_note
from lrl_harness.reporting.report import (
    ACCURACY_COLUMNS,
    _accuracy_cells,
    _model_name,
    _ms,
    _num,
    describe_who,
    load_data,
    write_documents,
)
from lrl_harness.reporting.tables import TableData
from lrl_harness.reporting.views import load_backends, measured_levels
from lrl_harness.results.files import read_json
from lrl_harness.results.format import STAGE_LABELS, STAGES
from lrl_harness.results.io import as_results, read_results
from lrl_harness.results.schema import Latency, Machine, Memory, Results, Throughput

GPU_REPORT = "lrl-harness/gpu-report"
ENGINES = ("torch", "transformers", "llama-cpp-python", "vllm", "cuda")


@dataclass
class Source:
    """One file of the report: its label, path and results."""

    label: str
    path: Path
    results: Results
    kind: str = "results"  # or "gpu-report"


# --- reading ------------------------------------------------------------------------------------


def read_source(path: Path) -> tuple[Results, str]:
    """Our results file (checked), or the GPU suite's report read into our format."""
    path = Path(path)
    data = read_json(path)
    if isinstance(data, dict) and data.get("schema") == GPU_REPORT:
        return as_results(gpu_report_results(data), path), "gpu-report"
    return read_results(path), "results"


def gpu_report_results(data: dict) -> dict:
    """The GPU suite's report as a results file: its run's stages and its bench targets (figures only),
    the device as the machine."""
    device = data.get("device") or {}
    machine = {"cpu": None, "cores": None,
               "gpu": {"name": device.get("name"), "compute_capability": device.get("capability"),
                       "memory_gib": round(device["total_mib"] / 1024, 1) if device.get("total_mib") else None},
               "packages": {k: device.get(k) for k in ("torch", "cuda") if device.get(k)}}
    run, bench = data.get("run") or {}, data.get("bench") or {}

    def block(figures: dict) -> dict:
        keep = ("total", "correct", "accuracy", "balanced_accuracy", "majority_baseline", "unparsed", "ci95",
                "elapsed_s")
        return {**{k: figures[k] for k in keep if k in figures}, "truncated": None}

    stages = {name: {"stage": name, **block(fig)} for name, fig in (run.get("stages") or {}).items()}
    targets = {}
    for label, fig in (bench.get("targets") or {}).items():
        targets[label] = {**block(fig), "label": label, "backend": "transformers",
                          "model": {"name": fig.get("dtype")}, "threads": fig.get("threads"),
                          "load_s": fig.get("load_s"), "latency": fig.get("latency"),
                          "throughput": fig.get("throughput"),
                          "memory": {"gpu_max_allocated_mib": (fig.get("gpu") or {}).get("peak_allocated_mib")},
                          "info": {"device": "cuda" if fig.get("gpu") else "cpu"}}
    return {"schema": "lrl-harness/results", "schema_version": 2, "task": None, "preset": None, "split": None,
            "config": {"gpu_report": {"run": run.get("command"), "bench": bench.get("command")}},
            "provenance": {"machine": machine}, "stages": stages,
            "benchmarks": {"machine": machine, "backends": targets} if targets else None}


def load_sources(paths: list[Path], labels: list[str] = ()) -> list[Source]:
    if labels and len(labels) != len(paths):
        raise LrlError(f"--label given {len(labels)} times for {len(paths)} files: give one per file, in order")
    sources = []
    for i, path in enumerate(paths):
        if not Path(path).is_file():
            raise ResultsFileError(f"{path}: no such file")
        results, kind = read_source(path)
        label = labels[i] if labels else default_label(Path(path), results)
        sources.append(Source(label, Path(path), results, kind))
    seen: dict[str, int] = {}
    for s in sources:
        seen[s.label] = seen.get(s.label, 0) + 1
        if seen[s.label] > 1:
            s.label = f"{s.label} ({seen[s.label]})"
    return sources


# --- what each file is --------------------------------------------------------------------------


def machine_of(results: Results) -> Machine | None:
    bench = results.benchmarks
    return (bench.machine if bench and bench.machine else None) or (
        results.provenance.machine if results.provenance else None)


def machine_name(machine: Machine | None) -> str:
    if machine is None:
        return "machine unknown"
    if machine.gpu and machine.gpu.name:
        return machine.gpu.name
    return f"{machine.cpu or 'CPU ?'} x{machine.cores}" if machine.cores else (machine.cpu or "CPU ?")


def default_label(path: Path, results: Results) -> str:
    """``run @ machine``: the run folder (with the bench file's name) or the file's name, and the GPU,
    else the CPU and its cores."""
    parent = path.parent.name
    if path.stem == "results" and parent:
        run = parent
    elif path.stem.startswith("bench") and parent:
        run = f"{parent}/{path.stem}"
    else:
        run = path.stem
    return f"{run} @ {machine_name(machine_of(results))}"


def threads_of(results: Results) -> str:
    values = sorted({e.threads for e in results.backends.values() if e.threads is not None})
    if values:
        return ", ".join(str(v) for v in values)
    machine = machine_of(results)
    extra = (machine.__pydantic_extra__ or {}) if machine else {}
    return str(extra.get("torch_threads") or "-")


def engines_of(results: Results) -> str:
    machine = machine_of(results)
    packages = (machine.packages if machine else None) or {}
    return ", ".join(f"{k} {packages[k]}" for k in ENGINES if packages.get(k)) or "-"


def comparability_key(results: Results) -> str | None:
    bench = results.benchmarks
    return bench.comparability.key if bench and bench.comparability else None


FILE_COLUMNS = ("file", "path", "task / preset / split", "CPU", "GPU", "threads", "engines", "comparability key")


def files_table(sources: list[Source]) -> TableData:
    rows = []
    for s in sources:
        r, m = s.results, machine_of(s.results)
        what = " / ".join(str(v) for v in (r.task, r.preset, r.split) if v) or "-"
        gpu = m.gpu if m else None
        rows.append([s.label, str(s.path), what, f"{m.cpu} ({m.cores} cores)" if m and m.cpu else "-",
                     f"{gpu.name} (compute {gpu.compute_capability})" if gpu and gpu.name else "-",
                     threads_of(r), engines_of(r), comparability_key(r) or "-"])
    return TableData("Files and the machines they were measured on", FILE_COLUMNS, rows,
                     text_columns=len(FILE_COLUMNS), no_wrap=False)


# --- tables -------------------------------------------------------------------------------------


def _stage_names(sources: list[Source]) -> list[str]:
    names = [s for s in STAGES if any(s in src.results.stages for src in sources)]
    return names + [n for src in sources for n in src.results.stages if n not in names and n not in STAGES]


def _target_names(sources: list[Source]) -> list[str]:
    names: list[str] = []
    for src in sources:
        names += [t for t in src.results.backends if t not in names]
    return names


def stage_table(sources: list[Source]) -> TableData:
    rows = []
    for name in _stage_names(sources):
        for s in sources:
            block = s.results.stages.get(name)
            if block is not None:
                rows.append([name, s.label, describe_who(block.who), *_accuracy_cells(block)])
    return TableData("Accuracy by stage, one row per file", ("stage", "file", "who", *ACCURACY_COLUMNS), rows,
                     text_columns=3)


TARGET_COLUMNS = ("target", "file", "model", "accuracy", "balanced acc.", "majority baseline", "unparsed", "n",
                  "latency mean ms", "p50 ms", "p95 ms", "problems/s", "decode tok/s", "threads", "load s",
                  "peak RSS MiB", "GPU MiB")


def target_table(sources: list[Source]) -> TableData:
    rows = []
    for name in _target_names(sources):
        for s in sources:
            e = s.results.backends.get(name)
            if e is None:
                continue
            lat, thr, mem = e.latency or Latency(), e.throughput or Throughput(), e.memory or Memory()
            rows.append([name, s.label, _model_name(e), f"{e.accuracy:.3f}", f"{e.balanced_accuracy:.3f}",
                         f"{e.majority_baseline:.3f} ({e.majority_label or '-'})", str(e.unparsed), str(e.total),
                         _ms(lat.mean_s), _ms(lat.p50_s), _ms(lat.p95_s), _num(thr.problems_per_s, 2),
                         _num(thr.decode_tokens_per_s), "-" if e.threads is None else str(e.threads),
                         _num(e.load_s, 2), _num(mem.peak_rss_mib), _num(mem.gpu_max_allocated_mib)])
    return TableData("Bench targets, one row per file (timings compare only where the machines do)", TARGET_COLUMNS,
                     rows, text_columns=3)


def under_load_table(sources: list[Source]) -> TableData | None:
    rows, columns = [], None
    for s in sources:
        if not load_backends(s.results):
            continue
        table = load_data(s.results)
        columns = ("file", *table.columns)
        rows += [[s.label, *row] for row in table.rows]
    if not rows:
        return None
    return TableData("Bench targets under load, one row per file, target and level", columns, rows, text_columns=3)


PAIRED_COLUMNS = ("stage / target", "A", "B", "paired", "acc. A", "acc. B", "A-B acc. (95% CI)",
                  "A-B bal. (95% CI)", "only A/only B right", "McNemar p")


def _block(source: Source, kind: str, name: str) -> Block | None:
    if kind == "stage":
        block = source.results.stages.get(name)
    else:
        block = source.results.backends.get(name)
    if block is None or not block.results:
        return None
    records = [r.model_dump(mode="json") for r in block.results]
    if any(not r.get("problem") for r in records):
        return None
    return Block(label=source.label, path=source.path, name=name, kind=kind, source="lrl-harness",
                 task=source.results.task, preset=source.results.preset, split=source.results.split, who=None,
                 records=records)


def paired_tests(sources: list[Source], seed: int = 0) -> tuple[TableData, list[str]]:
    """Every stage and target two files share, on the problems both answered: the paired table, and
    notes on what could not be paired."""
    rows, notes = [], []
    items = [("stage", n) for n in _stage_names(sources)] + [("target", n) for n in _target_names(sources)]
    for kind, name in items:
        holders = [(s, _block(s, kind, name)) for s in sources]
        holders = [(s, b) for s, b in holders if b is not None]
        shown = name if kind == "stage" else f"bench/{name}"
        for (sa, a), (sb, b) in itertools.combinations(holders, 2):
            try:
                pair = compare_pair(a, b, seed=seed)
            except LrlError:
                notes.append(f"{shown}: {sa.label} and {sb.label} answered no problem in common; not paired")
                continue
            notes += [f"{shown}: {n}" for n in few_discordant_note(pair)]
            da, db = pair.accuracy_difference, pair.balanced_accuracy_difference
            rows.append([shown, sa.label, sb.label, str(pair.paired), f"{pair.side_a.accuracy:.3f}",
                         f"{pair.side_b.accuracy:.3f}", f"{da.estimate:+.3f} ({da.ci95[0]:+.3f} to {da.ci95[1]:+.3f})",
                         f"{db.estimate:+.3f} ({db.ci95[0]:+.3f} to {db.ci95[1]:+.3f})",
                         f"{pair.only_a_correct}/{pair.only_b_correct}",
                         f"{pair.mcnemar_p:.4f}" if pair.mcnemar_p >= 0.0001 else f"{pair.mcnemar_p:.1e}"])
    table = TableData("Paired tests where the files answered the same problems (paired by content; differences: "
                      "paired bootstrap 95% interval; McNemar: exact, two-sided)", PAIRED_COLUMNS, rows,
                      text_columns=3, no_wrap=False)
    return table, notes


def comparability_notes(sources: list[Source]) -> list[str]:
    """Visible notes where the files differ in what their figures depend on."""
    notes = []
    for key in ("task", "preset", "split"):
        values = {s.label: getattr(s.results, key) for s in sources if getattr(s.results, key)}
        if len(set(values.values())) > 1:
            notes.append(f"the files are of different {key}s ({', '.join(f'{k}: {v}' for k, v in values.items())}): "
                         "their accuracies are on different problems")
    keyed = {s.label: s.results.benchmarks.comparability for s in sources
             if s.results.benchmarks and s.results.benchmarks.comparability and s.results.benchmarks.comparability.key}
    if len({c.key for c in keyed.values()}) > 1:
        fields = [c.fields or {} for c in keyed.values()]
        differ = sorted(k for k in set().union(*fields) if len({repr(f.get(k)) for f in fields}) > 1)
        notes.append("comparability keys differ (" + ", ".join(f"{k}: {c.key}" for k, c in keyed.items())
                     + f"): the timings come from different machines or software, differing in {', '.join(differ)}")
    benched = [s for s in sources if s.results.backends]
    unkeyed = [s.label for s in benched if s.label not in keyed]
    if unkeyed and len(benched) > 1:
        notes.append(f"no comparability key in {', '.join(unkeyed)}: compare its timings only through the "
                     "machine columns above")
    notes += [f"{s.label} is the GPU suite's report: figures only, no per-problem answers, so no paired test"
              for s in sources if s.kind == "gpu-report"]
    return notes


def multi_tables(sources: list[Source], seed: int = 0) -> tuple[list[TableData], list[str]]:
    tables = [files_table(sources)]
    if any(s.results.stages for s in sources):
        tables.append(stage_table(sources))
    if any(s.results.backends for s in sources):
        tables.append(target_table(sources))
    load = under_load_table(sources)
    if load is not None:
        tables.append(load)
    paired, notes = paired_tests(sources, seed)
    if paired.rows:
        tables.append(paired)
    return tables, comparability_notes(sources) + notes


# --- plots and documents ------------------------------------------------------------------------


_COLORS = ("#4878a8", "#e0a040", "#50a060", "#c03030", "#8060b0", "#808080")
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _accuracy_latency_points(entry) -> list[tuple[str, float, object]]:
    """(level or '', median latency in ms, block) for every measured point of a target."""
    levels = measured_levels(entry)
    if levels:
        return [(key, (b.load.e2e.p50_s or 0.0) * 1000, b) for key, b in levels]
    lat = entry.latency or Latency()
    if lat.p50_s is None and lat.mean_s is None:
        return []
    return [("", (lat.p50_s if lat.p50_s is not None else lat.mean_s) * 1000, entry)]


def accuracy_latency_plot(path: Path, sources: list[Source]) -> bool:
    """Accuracy (Wilson 95% interval) against median latency, every file's targets, one colour and
    marker per file, each point named by its target and each file's majority baseline dashed in its
    colour; log latency axis (machines differ by orders of magnitude). False when no target has a
    latency."""
    from matplotlib.figure import Figure

    points = []  # (x, accuracy, interval, name, source index)
    baselines: dict[int, set] = {}
    for i, s in enumerate(sources):
        for name, entry in s.results.backends.items():
            for level, x, block in _accuracy_latency_points(entry):
                if x > 0:
                    points.append((x, block.accuracy, block.ci95 or (block.accuracy, block.accuracy),
                                   f"{name} {level}".strip(), i))
                    baselines.setdefault(i, set()).add(round(block.majority_baseline, 4))
    if not points:
        return False
    fig = Figure(figsize=(9.5, 6.2), dpi=110)
    ax = fig.add_subplot()
    for i, s in enumerate(sources):
        color, marker = _COLORS[i % len(_COLORS)], _MARKERS[i % len(_MARKERS)]
        mine = [p for p in points if p[4] == i]
        if not mine:
            continue
        for j, (x, acc, (lo, hi), _, _) in enumerate(mine):
            ax.errorbar([x], [acc], yerr=[[max(acc - lo, 0.0)], [max(hi - acc, 0.0)]], fmt=marker, color=color,
                        capsize=3, markersize=6, label=s.label if j == 0 else None)
        for base in sorted(baselines.get(i, ())):
            ax.axhline(base, color=color, linestyle="dashed", linewidth=1.1, alpha=0.8)
    ax.plot([], [], color="#555555", linestyle="dashed", linewidth=1.1, label="majority baseline (file's colour)")
    xs = [p[0] for p in points]
    ax.set_xscale("log")
    ax.set_xlim(min(xs) / 1.6, max(xs) * 2.2)
    ax.set_ylim(-0.02, 1.1)
    _place_labels(fig, ax, [(x, acc, name, _COLORS[i % len(_COLORS)]) for x, acc, _, name, i in points])
    ax.set_xlabel("median latency per problem (ms, log scale; under load: end-to-end p50 per level)")
    ax.set_ylabel("accuracy (95% Wilson interval)")
    ax.set_title("Accuracy against latency, every file's bench targets", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path)
    return True


def _place_labels(fig, ax, points: list[tuple[float, float, str, str]], fontsize: float = 6.5) -> None:
    """Name every point beside it, each label where it overlaps the fewest labels and points already
    placed (a greedy choice among eight positions, in display pixels)."""
    fig.canvas.draw()  # the final layout of the axes, so data map to pixels as they will be drawn
    to_px = ax.transData.transform
    height = fontsize * fig.dpi / 72
    char = 0.55 * height
    marks = [tuple(to_px((x, y))) for x, y, _, _ in points]
    boxes = [(mx - 4, my - 4, mx + 4, my + 4) for mx, my in marks]

    def overlap(a, b) -> float:
        w = min(a[2], b[2]) - max(a[0], b[0])
        h = min(a[3], b[3]) - max(a[1], b[1])
        return w * h if w > 0 and h > 0 else 0.0

    left, bottom, right, top = ax.bbox.extents
    order = sorted(range(len(points)), key=lambda k: (marks[k][0], -marks[k][1]))
    for k in order:
        x, y, text, color = points[k]
        mx, my = marks[k]
        width = char * len(text)
        candidates = []
        for dx, dy in ((6, 3), (6, -3 - height), (-6 - width, 3), (-6 - width, -3 - height), (6, 5 + height),
                       (-6 - width, 5 + height), (6, -5 - 2 * height), (-6 - width, -5 - 2 * height)):
            box = (mx + dx, my + dy, mx + dx + width, my + dy + height)
            outside = (box[0] < left) + (box[2] > right) + (box[1] < bottom) + (box[3] > top)
            candidates.append((outside * 1e6 + sum(overlap(box, b) for b in boxes), dx, dy, box))
        _, dx, dy, box = min(candidates, key=lambda c: c[0])
        boxes.append(box)
        ax.annotate(text, (x, y), textcoords="offset pixels", xytext=(dx, dy), fontsize=fontsize, color=color,
                    ha="left", va="bottom")


def stage_plot(path: Path, sources: list[Source]) -> None:
    """Accuracy by stage, one bar per file in each stage's group (Wilson 95% interval), balanced
    accuracy as a black diamond on it and the majority baseline as a red dash across it."""
    from matplotlib.figure import Figure

    stages = _stage_names(sources)
    holders = [(i, s) for i, s in enumerate(sources) if s.results.stages]  # colours as in the other plots
    n = len(holders)
    width = 0.8 / n
    fig = Figure(figsize=(max(7.0, 0.45 * n * len(stages) + 2.5), 5.2), dpi=110)
    ax = fig.add_subplot()
    for slot, (i, s) in enumerate(holders):
        color = _COLORS[i % len(_COLORS)]
        for g, stage in enumerate(stages):
            block = s.results.stages.get(stage)
            if block is None:
                continue
            x = g - 0.4 + width * (slot + 0.5)
            acc = block.accuracy
            lo, hi = block.ci95 or (acc, acc)
            ax.bar(x, acc, width * 0.92, color=color, yerr=[[max(acc - lo, 0.0)], [max(hi - acc, 0.0)]], capsize=3,
                   ecolor="#222222", label=s.label if g == stages.index(next(t for t in stages
                                                                              if t in s.results.stages)) else None)
            ax.plot([x], [block.balanced_accuracy], "D", color="black", markersize=4)
            ax.hlines(block.majority_baseline, x - width * 0.46, x + width * 0.46, colors="#c03030",
                      linestyles="dashed", linewidth=1.6)
            ax.text(x, min(hi, 1.0) + 0.015, f"{acc:.2f}", ha="center", va="bottom", fontsize=6.5)
    ax.plot([], [], "D", color="black", markersize=4, label="balanced accuracy")
    ax.plot([], [], color="#c03030", linestyle="dashed", linewidth=1.6, label="majority baseline")
    ticks = ["\n".join(textwrap.wrap(STAGE_LABELS.get(t, t), 16)) for t in stages]
    ax.set_xticks(range(len(stages)), ticks, fontsize=8)
    ax.set_xlim(-0.5, len(stages) - 0.5)
    ax.set_ylim(0, 1.12)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("accuracy (95% Wilson interval)")
    ax.set_title("Accuracy by stage, one bar per file", fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path)


def write_multi_plots(sources: list[Source], out_dir: Path) -> dict[str, Path]:
    from lrl_harness.reporting.plots import _load_curve_plot

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    if any(s.results.stages for s in sources):
        plots["accuracy_by_stage"] = out_dir / "accuracy_by_stage.png"
        stage_plot(plots["accuracy_by_stage"], sources)
    path = out_dir / "accuracy_vs_latency.png"
    if accuracy_latency_plot(path, sources):
        plots["accuracy_vs_latency"] = path
    under_load = {f"{s.label}: {name}": e for s in sources for name, e in load_backends(s.results).items()}
    if under_load:
        plots["load_curve"] = out_dir / "load_curve.png"
        _load_curve_plot(plots["load_curve"], "Load curve, every file's targets under load", under_load)
    return plots


def write_multi_report(sources: list[Source], out_dir: Path, seed: int = 0) -> dict[str, Path]:
    tables, notes = multi_tables(sources, seed)
    plots = write_multi_plots(sources, out_dir)
    facts = [(f"file {i + 1}", f"{s.label}: {s.path}") for i, s in enumerate(sources)]
    return write_documents(Path(out_dir), facts, plots, tables, title=", ".join(s.label for s in sources),
                           notes=notes)
