"""The CI regression check: compare a fresh results file with a baseline, stage by stage and
backend by backend.

A drop must be both large (more than ``tolerance``) and significant before it fails, so a gate on a
few hundred problems does not flake. Significance is tested on the problems both files answered
(paired by problem id and problem text): an exact one-sided McNemar test for accuracy, and the same
test stratified by expected label for balanced accuracy. Where no problems pair up, the baseline
figure must lie above the new result's one-sided Wilson upper bound. A rise in unparsed answers
always fails; latency fails only when a ratio is asked for. The tests and intervals themselves live
in ``metrics``.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

from lrl_harness.api.errors import LrlError
from lrl_harness.evaluation.statistics import (
    balanced_accuracy_bounds,
    mcnemar_one_sided,
    stratified_mcnemar_one_sided,
    wilson_upper_one_sided,
)
from lrl_harness.results.files import atomic_write_text
from lrl_harness.results.io import as_results, read_results
from lrl_harness.results.schema import BenchEntry, Record, Results, ScoreBlock

IDENTITY_KEYS = ("task", "preset", "split")


# --- the report -------------------------------------------------------------------------------


@dataclass
class ItemCheck:
    """One stage or one benchmarked backend, compared with its baseline."""

    kind: str  # "stage" or "backend"
    name: str
    baseline: ScoreBlock
    new: ScoreBlock
    paired: int = 0
    right_to_wrong: int = 0
    wrong_to_right: int = 0
    accuracy_p: float | None = None
    balanced_p: float | None = None
    accuracy_upper: float | None = None  # unpaired: the new result's one-sided Wilson upper bound
    balanced_upper: float | None = None
    latency_ratio: float | None = None
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)  # shown on stderr: the comparison is weaker than asked

    @property
    def label(self) -> str:
        return item_label(self.kind, self.name)

    @property
    def passed(self) -> bool:
        return not self.failures


def item_label(kind: str, name: str) -> str:
    """``lora`` for a stage, ``bench/llamacpp`` for a benchmarked backend."""
    return name if kind == "stage" else f"bench/{name}"


@dataclass
class CheckReport:
    items: list[ItemCheck]
    only_in_results: list[tuple[str, str]]  # (kind, name)
    only_in_baseline: list[tuple[str, str]]
    tolerance: float
    alpha: float
    latency_ratio: float | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return all(item.passed for item in self.items)

    def failure_lines(self) -> list[str]:
        return [f"FAIL {item.label}: {reason}" for item in self.items for reason in item.failures]

    def summary(self) -> str:
        """Plain text: one line per item, then every failure (for assertion messages and logs)."""
        lines = [f"{'PASS' if item.passed else 'FAIL'} {item.label}: {_figures(item)}" for item in self.items]
        lines += [f"note: {n}" for n in self.notes]
        lines += self.failure_lines()
        return "\n".join(lines)

    def __str__(self) -> str:
        return self.summary()

    def table(self):
        """The comparison as a rich Table."""
        from lrl_harness.reporting.tables import TableData

        ratio = f", latency limit {self.latency_ratio:g}x" if self.latency_ratio else ""
        columns = ("check", "accuracy", "balanced acc.", "unparsed", "paired", "right->wrong", "wrong->right",
                   "p (acc / bal.)", "latency", "result")
        rows = []
        for item in self.items:
            b, n = item.baseline, item.new
            rows.append([
                item.label,
                f"{b.accuracy:.3f} -> {n.accuracy:.3f}",
                f"{b.balanced_accuracy:.3f} -> {n.balanced_accuracy:.3f}",
                f"{b.unparsed} -> {n.unparsed}",
                f"{item.paired}/{n.total}",
                str(item.right_to_wrong) if item.paired else "-",
                str(item.wrong_to_right) if item.paired else "-",
                f"{_p(item.accuracy_p)} / {_p(item.balanced_p)}",
                "-" if item.latency_ratio is None else f"{item.latency_ratio:.2f}x",
                "[green]PASS[/green]" if item.passed else "[red]FAIL[/red]",
            ])
        return TableData(f"Regression check (tolerance {self.tolerance:g}, alpha {self.alpha:g}{ratio})", columns,
                         rows, text_columns=1, no_wrap=False).rich()

    def to_junit_xml(self) -> str:
        """JUnit XML: one testcase per compared stage or backend; items in one file only are skipped."""
        skipped = len(self.only_in_baseline)
        suite = ET.Element("testsuite", name="lrl-check", tests=str(len(self.items) + skipped),
                           failures=str(sum(not i.passed for i in self.items)), errors="0",
                           skipped=str(skipped))
        for item in self.items:
            case = ET.SubElement(suite, "testcase", classname=f"lrl.check.{item.kind}", name=item.name,
                                 time="0")
            if item.failures:
                failure = ET.SubElement(case, "failure", message="; ".join(item.failures), type="regression")
                failure.text = "\n".join(item.failures)
            ET.SubElement(case, "system-out").text = _figures(item)
        for kind, name in self.only_in_baseline:
            case = ET.SubElement(suite, "testcase", classname=f"lrl.check.{kind}", name=name, time="0")
            ET.SubElement(case, "skipped", message="in the baseline only; not in the new results")
        root = ET.Element("testsuites")
        root.append(suite)
        ET.indent(root)
        return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"

    def write_junit(self, path: Path) -> None:
        atomic_write_text(Path(path), self.to_junit_xml())


def _p(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.4f}" if value >= 0.0001 else f"{value:.1e}"


def _figures(item: ItemCheck) -> str:
    b, n = item.baseline, item.new
    text = (f"balanced accuracy {b.balanced_accuracy:.3f} -> {n.balanced_accuracy:.3f}, "
            f"accuracy {b.accuracy:.3f} -> {n.accuracy:.3f}, "
            f"unparsed {b.unparsed} -> {n.unparsed}, {item.paired} paired problems")
    if item.latency_ratio is not None:
        text += f", latency {item.latency_ratio:.2f}x"
    return text


# --- the check --------------------------------------------------------------------------------


def check(results: Results | dict, baseline: Results | dict, tolerance: float = 0.02, alpha: float = 0.05,
          latency_ratio: float | None = None) -> CheckReport:
    """Compare ``results`` with ``baseline`` over the stages and benchmarked backends both hold.

    Raises LrlError when the two are not comparable (different task, preset or split) or share nothing.
    """
    check_arguments(tolerance, alpha, latency_ratio)
    results, baseline = as_results(results), as_results(baseline, "baseline")
    notes = _check_comparable(results, baseline)
    if latency_ratio is not None:
        notes += _check_same_machine(results, baseline)
    new_items = _comparable_blocks(results)
    base_items = _comparable_blocks(baseline)
    common = [key for key in base_items if key in new_items]
    if not common:
        raise LrlError("nothing to compare: the results and the baseline share no stage and no benchmarked "
                       f"backend (results: {', '.join(_names(new_items)) or 'none'}; "
                       f"baseline: {', '.join(_names(base_items)) or 'none'})")
    items = [_compare(kind, name, base_items[(kind, name)], new_items[(kind, name)], tolerance, alpha,
                      latency_ratio) for kind, name in common]
    return CheckReport(
        items=items,
        only_in_results=[key for key in new_items if key not in base_items],
        only_in_baseline=[key for key in base_items if key not in new_items],
        tolerance=tolerance, alpha=alpha, latency_ratio=latency_ratio, notes=notes,
    )


def check_files(results_path: Path, baseline_path: Path, **options) -> CheckReport:
    """``check`` on two results files (a missing or corrupt file raises ResultsFileError)."""
    return check(read_results(Path(results_path)), read_results(Path(baseline_path)), **options)


def check_arguments(tolerance: float, alpha: float, latency_ratio: float | None) -> None:
    """LrlError for a tolerance, alpha or latency ratio out of range (before any file is read)."""
    if not 0 <= tolerance < 1:
        raise LrlError(f"--tolerance must be in [0, 1), got {tolerance}")
    if not 0 < alpha < 1:
        raise LrlError(f"--alpha must be in (0, 1), got {alpha}")
    if latency_ratio is not None and latency_ratio <= 0:
        raise LrlError(f"--latency-ratio must be positive, got {latency_ratio}")


def _check_comparable(results: Results, baseline: Results) -> list[str]:
    """LrlError for a different task, preset or split; notes on lesser differences (prompt version)."""
    pairs = [("", results, baseline)]
    if results.benchmarks is not None and baseline.benchmarks is not None:
        pairs.append(("benchmark ", results.benchmarks, baseline.benchmarks))
    for where, new, base in pairs:
        for key in IDENTITY_KEYS:
            new_value, base_value = getattr(new, key), getattr(base, key)
            if new_value is not None and base_value is not None and new_value != base_value:
                raise LrlError(f"cannot compare: the results are for {where}{key} {new_value!r} but the "
                               f"baseline is for {base_value!r}")
    notes = []
    new_version, base_version = _prompt_version(results), _prompt_version(baseline)
    if new_version and base_version and new_version != base_version:
        notes.append(f"prompt version differs: {base_version} (baseline) -> {new_version}")
    return notes


def _prompt_version(results: Results) -> str | None:
    return results.provenance.prompt_version if results.provenance else None


def _check_same_machine(results: Results, baseline: Results) -> list[str]:
    """Latency only compares on the same hardware and software: LrlError when both benches carry a
    comparability key and the keys differ; a loud note when either lacks one."""
    new, base = (data.benchmarks.comparability if data.benchmarks else None for data in (results, baseline))
    if not (new and new.key and base and base.key):
        return ["WARNING: latency compared without a comparability key on both sides (older bench?); "
                "the two may come from different machines or software"]
    if new.key == base.key:
        return []
    new_fields, base_fields = new.fields or {}, base.fields or {}
    differ = sorted(k for k in set(new_fields) | set(base_fields) if new_fields.get(k) != base_fields.get(k))
    raise LrlError(f"cannot compare latency: the baseline was measured on another machine or software "
                   f"(comparability key {base.key} vs {new.key}; differs in: {', '.join(differ) or '?'})")


def _comparable_blocks(data: Results) -> dict[tuple[str, str], ScoreBlock]:
    blocks: dict[tuple[str, str], ScoreBlock] = {("stage", name): block for name, block in data.stages.items()}
    blocks.update({("backend", name): block for name, block in data.backends.items()})
    return blocks


def _names(blocks: dict) -> list[str]:
    return [item_label(kind, name) for kind, name in blocks]


def _pairs(base: ScoreBlock, new: ScoreBlock) -> list[tuple[Record, Record]]:
    """Records of the same problem in both: same id and, where both record it, the same problem text.

    The text matters: two splits drawn with different sizes reuse ids like ``easy_0`` for other problems.
    """
    base_by_id = {r.problem_id: r for r in base.results}
    pairs = []
    for r in new.results:
        b = base_by_id.get(r.problem_id)
        if b is None:
            continue
        if b.problem is not None and r.problem is not None and b.problem != r.problem:
            continue
        pairs.append((b, r))
    return pairs


def _compare(kind: str, name: str, base: ScoreBlock, new: ScoreBlock, tolerance: float, alpha: float,
             latency_limit: float | None) -> ItemCheck:
    """The paired test is used only when every new problem has its pair: a handful of pairs would
    give a weak test where the two whole samples give a strong one."""
    item = ItemCheck(kind, name, base, new)
    pairs = _pairs(base, new)
    new_count = len(new.results)
    if not pairs and new_count and base.results:
        item.warnings.append(f"{item.label}: no problem in common with the baseline (0 of {new_count} paired): "
                             "the two were run on different problems, so only their overall figures are "
                             "compared; re-run on the baseline's split to compare problem by problem")
    if pairs and len(pairs) < new_count:
        item.notes.append(f"only {len(pairs)} of {new_count} problems are also in the baseline; "
                          "compared unpaired")
        pairs = []
    if pairs:
        acc_significant, bal_significant, evidence = _paired_test(item, pairs, alpha)
    else:
        acc_significant, bal_significant, evidence = _unpaired_test(item, base, new, alpha)
    acc_drop = base.accuracy - new.accuracy
    bal_drop = base.balanced_accuracy - new.balanced_accuracy
    if acc_drop > tolerance and acc_significant or bal_drop > tolerance and bal_significant:
        first, second = ("balanced_accuracy", "accuracy") if bal_drop >= acc_drop else ("accuracy",
                                                                                        "balanced_accuracy")
        item.failures.append(
            f"{first.replace('_', ' ')} {getattr(base, first):.3f} -> {getattr(new, first):.3f} "
            f"({second.replace('_', ' ')} {getattr(base, second):.3f} -> {getattr(new, second):.3f}, {evidence})")
    _check_unparsed(item, base, new)
    if latency_limit is not None:
        _check_latency(item, base, new, latency_limit)
    return item


def _paired_test(item: ItemCheck, pairs: list[tuple[Record, Record]], alpha: float) -> tuple[bool, bool, str]:
    """Exact one-sided McNemar tests on the paired problems: (accuracy fell, balanced accuracy fell, text)."""
    item.paired = len(pairs)
    item.right_to_wrong = sum(1 for b, n in pairs if b.correct and not n.correct)
    item.wrong_to_right = sum(1 for b, n in pairs if n.correct and not b.correct)
    item.accuracy_p = mcnemar_one_sided(item.right_to_wrong, item.wrong_to_right)
    item.balanced_p = _stratified_p(pairs)
    evidence = (f"McNemar p={_p(item.accuracy_p)}, stratified by label p={_p(item.balanced_p)}, "
                f"{item.right_to_wrong} of {item.paired} problems flipped right to wrong, "
                f"{item.wrong_to_right} wrong to right")
    return item.accuracy_p < alpha, item.balanced_p < alpha, evidence


def _unpaired_test(item: ItemCheck, base: ScoreBlock, new: ScoreBlock, alpha: float) -> tuple[bool, bool, str]:
    """Is the baseline figure above the new result's one-sided upper bound? (accuracy, balanced, text)"""
    item.accuracy_upper = wilson_upper_one_sided(new.correct, new.total, alpha)
    evidence = (f"no paired problems; the new accuracy's one-sided {1 - alpha:.0%} Wilson upper bound is "
                f"{item.accuracy_upper:.3f}")
    bal_significant = False
    if new.results:
        graded = [{"expected": r.expected, "correct": r.correct} for r in new.results]
        item.balanced_upper = balanced_accuracy_bounds(graded, alpha)[1]
        bal_significant = base.balanced_accuracy > item.balanced_upper
        evidence += f", balanced accuracy's {item.balanced_upper:.3f}"
    else:
        item.notes.append("balanced accuracy not tested: no per-problem results")
    return base.accuracy > item.accuracy_upper, bal_significant, evidence + f", n={new.total}"


def _stratified_p(pairs: list[tuple[Record, Record]]) -> float:
    worse: dict[str, int] = {}
    better: dict[str, int] = {}
    sizes: dict[str, int] = {}
    for b, n in pairs:
        label = b.expected
        sizes[label] = sizes.get(label, 0) + 1
        worse[label] = worse.get(label, 0) + (b.correct and not n.correct)
        better[label] = better.get(label, 0) + (n.correct and not b.correct)
    return stratified_mcnemar_one_sided(worse, better, sizes)


def _check_unparsed(item: ItemCheck, base: ScoreBlock, new: ScoreBlock) -> None:
    """Counts when both answered as many problems; rates otherwise."""
    if base.total == new.total:
        if new.unparsed > base.unparsed:
            item.failures.append(f"unparsed answers rose {base.unparsed} -> {new.unparsed} of {new.total}")
        return
    base_rate = base.unparsed / base.total if base.total else 0.0
    new_rate = new.unparsed / new.total if new.total else 0.0
    if new_rate > base_rate:
        item.failures.append(f"unparsed rate rose {base_rate:.3f} ({base.unparsed}/{base.total}) -> "
                             f"{new_rate:.3f} ({new.unparsed}/{new.total})")


def mean_latency(block: ScoreBlock) -> float | None:
    """Mean seconds per problem: a benchmark entry's measured mean, else the mean of its records."""
    if isinstance(block, BenchEntry) and block.latency is not None and block.latency.mean_s is not None:
        return block.latency.mean_s
    values = [r.latency_s for r in block.results if r.latency_s is not None]
    return sum(values) / len(values) if values else None


def _check_latency(item: ItemCheck, base: ScoreBlock, new: ScoreBlock, limit: float) -> None:
    base_s, new_s = mean_latency(base), mean_latency(new)
    if not base_s or new_s is None:
        item.notes.append("latency not compared: no latency recorded")
        return
    item.latency_ratio = new_s / base_s
    if item.latency_ratio > limit:
        item.failures.append(f"mean latency {base_s:.4f} s -> {new_s:.4f} s ({item.latency_ratio:.2f}x, "
                             f"limit {limit:g}x)")
