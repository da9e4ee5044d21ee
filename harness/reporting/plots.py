"""The report's PNG plots (matplotlib, no display needed): accuracy by stage and by backend beside the
balanced accuracy and the majority baseline, latency by backend, the LoRA loss curve, and under load
the load curve and accuracy against latency."""

from __future__ import annotations

from pathlib import Path

from lrl_harness.reporting.views import (
    load_backends,
    measured_levels,
    ordered_stages,
    sequential_backends,
    table_title,
)
from lrl_harness.results.format import STAGE_LABELS
from lrl_harness.results.io import as_results
from lrl_harness.results.schema import BenchEntry, Latency, Results, ScoreBlock, Throughput


def _bar_figure(groups: int):
    """A figure wide enough for ``groups`` groups of bars, and its axes."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(max(6.0, 1.7 * groups + 2), 4.8), dpi=110)
    return fig, fig.add_subplot()


def _save_bar_figure(fig, ax, title: str, path: Path) -> None:
    """The title, a horizontal grid behind the bars and the legend below them; then the PNG file."""
    ax.set_title(title, fontsize=10)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8, frameon=False)
    fig.tight_layout()
    fig.savefig(path)


def _accuracy_plot(path: Path, title: str, names: list[str], blocks: list[ScoreBlock]) -> None:
    """Grouped bars: accuracy with its Wilson 95% interval, balanced accuracy beside it, and each
    group's majority baseline as a dashed line across the group."""
    width = 0.38
    fig, ax = _bar_figure(len(names))
    for i, block in enumerate(blocks):
        acc, bal = block.accuracy, block.balanced_accuracy
        lo, hi = block.ci95 or (acc, acc)
        ax.bar(i - width / 2, acc, width, color="#4878a8", yerr=[[max(acc - lo, 0.0)], [max(hi - acc, 0.0)]], capsize=4,
               ecolor="#222222", label="accuracy (95% Wilson CI)" if i == 0 else None)
        ax.bar(i + width / 2, bal, width, color="#e0a040", label="balanced accuracy" if i == 0 else None)
        ax.hlines(block.majority_baseline, i - width - 0.06, i + width + 0.06, colors="#c03030",
                  linestyles="dashed", linewidth=2, label="majority baseline" if i == 0 else None)
        for x, value, top in ((i - width / 2, acc, hi), (i + width / 2, bal, bal)):  # inside: clear of lines
            inside = value > 0.1
            ax.text(x, 0.02 if inside else top + 0.01, f"{value:.3f}", ha="center", va="bottom", fontsize=8,
                    color="white" if inside else "black", fontweight="bold" if inside else "normal")
    ticks = [f"{name}\nn={b.total}, unparsed {b.unparsed}"
             for name, b in zip(names, blocks, strict=True)]
    ax.set_xticks(range(len(names)), ticks, fontsize=8)
    ax.set_ylim(0, 1.12)
    ax.set_yticks([0, 0.2, 0.4, 0.6, 0.8, 1.0])
    ax.set_ylabel("fraction of problems")
    _save_bar_figure(fig, ax, title, path)


def _latency_plot(path: Path, title: str, backends: dict[str, BenchEntry]) -> None:
    """Mean, median and 95th-percentile latency per problem, by backend (milliseconds)."""
    names = list(backends)
    series = (("mean_s", "mean", "#4878a8"), ("p50_s", "median", "#80a8d0"),
              ("p95_s", "95th percentile", "#e0a040"))
    width = 0.26
    fig, ax = _bar_figure(len(names))
    top = 0.0
    for j, (key, label, color) in enumerate(series):
        values = [(getattr(backends[n].latency or Latency(), key) or 0.0) * 1000 for n in names]
        top = max([top, *values])
        xs = [i + (j - 1) * width for i in range(len(names))]
        ax.bar(xs, values, width, color=color, label=label)
        for x, v in zip(xs, values, strict=True):
            ax.text(x, v, f"{v:.1f}", ha="center", va="bottom", fontsize=7)
    labels = []
    for n in names:
        pps = (backends[n].throughput or Throughput()).problems_per_s
        labels.append(f"{n}\n{pps:.2f} problems/s" if pps else n)
    ax.set_xticks(range(len(names)), labels, fontsize=8)
    ax.set_ylim(0, top * 1.15 or 1.0)
    ax.set_ylabel("latency per problem (ms)")
    _save_bar_figure(fig, ax, title, path)


def _loss_plot(path: Path, title: str, loss_curve: list[list[float]]) -> None:
    """The LoRA training loss (mean per logged window of optimizer steps) against the step."""
    from matplotlib.figure import Figure

    steps, losses = zip(*loss_curve, strict=True)
    fig = Figure(figsize=(6.0, 4.0), dpi=110)
    ax = fig.add_subplot()
    ax.plot(steps, losses, marker=".", color=_COLORS[0])
    ax.set_yscale("log")
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss per answer token (log scale)")
    ax.text(0.98, 0.95, f"first logged {losses[0]:.3f}, last {losses[-1]:.3f}", transform=ax.transAxes,
            ha="right", va="top", fontsize=8, bbox={"facecolor": "white", "edgecolor": "#cccccc"})
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)


def write_plots(results: Results | dict, out_dir: Path) -> dict[str, Path]:
    """Write the PNG plots of ``results`` into ``out_dir``; return their paths by name."""
    results = as_results(results)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = {}
    stages = ordered_stages(results)
    if stages:
        plots["accuracy_by_stage"] = out_dir / "accuracy_by_stage.png"
        _accuracy_plot(plots["accuracy_by_stage"], table_title("Accuracy by stage", results, "\n"),
                       [STAGE_LABELS.get(name, name) for name, _ in stages], [b for _, b in stages])
    training = results.training
    if training is not None and training.loss_curve:
        plots["loss_curve"] = out_dir / "loss_curve.png"
        what = [f"{training.examples} examples", f"{training.steps} steps"]
        lora = results.stages.get("lora")
        what += [f"recipe {lora.recipe}"] if lora is not None and lora.recipe else []
        _loss_plot(plots["loss_curve"], f"LoRA training loss\n({', '.join(what)})", training.loss_curve)
    backends = results.backends
    if backends:
        bench = results.benchmarks
        plots["accuracy_by_backend"] = out_dir / "accuracy_by_backend.png"
        _accuracy_plot(plots["accuracy_by_backend"], table_title("Accuracy by backend", bench, "\n"),
                       list(backends), list(backends.values()))
        sequential = sequential_backends(results)
        if sequential:
            plots["latency_by_backend"] = out_dir / "latency_by_backend.png"
            _latency_plot(plots["latency_by_backend"], table_title("Latency per problem by backend", bench, "\n"),
                          sequential)
        under_load = load_backends(results)
        if under_load:
            plots["load_curve"] = out_dir / "load_curve.png"
            _load_curve_plot(plots["load_curve"], table_title("Load curve", bench, "\n"), under_load)
            plots["accuracy_vs_latency"] = out_dir / "accuracy_vs_latency.png"
            _accuracy_latency_plot(plots["accuracy_vs_latency"], table_title("Accuracy against latency", bench, "\n"),
                                   under_load)
    return plots


_COLORS = ("#4878a8", "#e0a040", "#50a060", "#c03030", "#8060b0", "#808080")


def _load_curve_plot(path: Path, title: str, backends: dict[str, BenchEntry]) -> None:
    """Throughput (answered requests per second) against p50 (solid) and p99 (dashed) end-to-end latency,
    one line per target through its load levels."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8.0, 5.0 + 0.2 * len(backends)), dpi=110)
    ax = fig.add_subplot()
    for i, (label, entry) in enumerate(backends.items()):
        color = _COLORS[i % len(_COLORS)]
        points = sorted(((b.load.requests_per_s or 0.0, b.load.e2e, key)
                         for key, b in measured_levels(entry)), key=lambda p: p[0])
        xs = [p[0] for p in points]
        p50 = [(p[1].p50_s or 0.0) * 1000 for p in points]
        p99 = [(p[1].p99_s or 0.0) * 1000 for p in points]
        ax.plot(xs, p50, "o-", color=color, label=f"{label} p50")
        ax.plot(xs, p99, "s--", color=color, alpha=0.8, label=f"{label} p99")
        for x, y, (_, _, key) in zip(xs, p99, points, strict=True):
            ax.annotate(key, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7, color=color)
    ax.set_xlabel("throughput (answered requests per second)")
    ax.set_ylabel("end-to-end latency (ms)")
    ax.set_ylim(0, ax.get_ylim()[1] * 1.08)  # room for the level labels above the highest point
    ax.set_xlim(left=0)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=4, frameon=False)
    fig.tight_layout()
    fig.savefig(path)


def _accuracy_latency_plot(path: Path, title: str, backends: dict[str, BenchEntry]) -> None:
    """Accuracy (Wilson 95% interval) against median end-to-end latency, every target at every measured
    level, with the majority baseline: the deployable targets sit top left."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7.5, 5.0), dpi=110)
    ax = fig.add_subplot()
    baselines = set()
    for i, (label, entry) in enumerate(backends.items()):
        color = _COLORS[i % len(_COLORS)]
        levels = measured_levels(entry)
        ax.plot([(b.load.e2e.p50_s or 0.0) * 1000 for _, b in levels], [b.accuracy for _, b in levels],
                "-", color=color, alpha=0.4, linewidth=1)
        for j, (key, block) in enumerate(levels):
            x = (block.load.e2e.p50_s or 0.0) * 1000
            acc = block.accuracy
            lo, hi = block.ci95 or (acc, acc)
            ax.errorbar([x], [acc], yerr=[[max(acc - lo, 0.0)], [max(hi - acc, 0.0)]], fmt="o", color=color,
                        capsize=3, label=label if j == 0 else None)
            if len(levels) > 1:  # a target measured at one level is named by the legend alone
                ax.annotate(key, (x, acc), textcoords="offset points", xytext=(6, -10 - 9 * j), fontsize=7,
                            color=color)  # staggered: levels of one target often sit at nearly the same latency
            baselines.add(round(block.majority_baseline, 4))
    for k, base in enumerate(sorted(baselines)):
        ax.axhline(base, color="#c03030", linestyle="dashed", linewidth=1.5,
                   label="majority baseline" if k == 0 else None)
    ax.set_xlabel("median end-to-end latency (ms)")
    ax.set_ylabel("accuracy")
    ax.set_ylim(-0.02, 1.05)
    ax.set_xlim(left=0)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
