"""``lrl compare``: two or more systems on the problems they share, problem by problem.

A block is ``FILE[:NAME]``: a stage or a bench target (``bench/LABEL`` when a stage has the same
name) of one of our results files, or a stage of the original experiment's published file. Every
block is re-graded on read with this project's extractor and solver, as ``lrl rescore`` does, so
both sides of a pair are graded by the same rule. Problems are paired by the task's description
of a problem (its content: the meetings and rooms), never by id or position; a problem that a split
holds twice pairs occurrence by occurrence.

For each pair, on the paired problems: accuracy (Wilson 95% interval) and balanced accuracy
(paired-bootstrap 95% interval) of both sides, the majority baseline, the unparsed count; the
differences in accuracy and balanced accuracy with a paired bootstrap 95% interval (problems
resampled together, percentile interval, seeded); and the exact two-sided McNemar p over the
problems exactly one side got right.
"""

from __future__ import annotations

import csv
import io
import itertools
from dataclasses import dataclass
from pathlib import Path

from lrl_harness.api.errors import LrlError, ResultsFileError
from lrl_harness.evaluation.rescore import regrade_records, rescore
from lrl_harness.evaluation.statistics import mcnemar_exact, score_block, wilson_interval
from lrl_harness.reporting.tables import TableData
from lrl_harness.results.files import read_json
from lrl_harness.results.io import is_ours, split_original, validate_any
from lrl_harness.results.schema import (
    ComparedBlock,
    ComparedPair,
    ComparedSide,
    Comparison,
    Difference,
    Discordant,
)

RESAMPLES = 10_000
GRADING = "re-graded on read with this project's extractor and solver (as lrl rescore does)"
INTERVAL = ("differences and balanced accuracy: paired bootstrap over problems ({resamples} resamples, "
            "seed {seed}, percentile 95% interval); accuracy: Wilson 95% interval")


@dataclass
class Block:
    """A compared block: its records re-graded, and what it is."""

    label: str
    path: Path
    name: str
    kind: str  # "stage" or "target"
    source: str
    task: str | None
    preset: str | None
    split: str | None
    who: str | None
    records: list[dict]
    recorded_accuracy: float | None = None
    grade_changes: dict | None = None
    machine: dict | None = None


# --- reading blocks -----------------------------------------------------------------------------


def split_spec(text: str) -> tuple[Path, str | None]:
    """``FILE[:NAME]``: a path that exists as given is a file without a name; else the text after
    the first colon that ends an existing file's path names the stage or target."""
    if Path(text).is_file() or ":" not in text:
        return Path(text), None
    for i, char in enumerate(text):  # target labels hold colons too (llamacpp:q8_0): the file comes first
        if char == ":" and Path(text[:i]).is_file():
            return Path(text[:i]), text[i + 1:] or None
    path, name = text.rsplit(":", 1)
    return Path(path), name or None


def _file_task(data: dict) -> str | None:
    return data.get("task") if is_ours(data) else None


def load_blocks(specs: list[str], task_of, labels: list[str] = (), task_name: str | None = None) -> list[Block]:
    """The blocks ``specs`` name, re-graded. ``task_of(name)`` gives the task plugin; the task is the
    one the files name (the original's file names none: it is the meeting-room task's), or
    ``task_name``. LrlError in one line for fewer than two blocks, a file that is not a results file,
    a missing stage or target, or files of different tasks."""
    if len(specs) < 2:
        raise LrlError("lrl compare needs at least two blocks (FILE[:STAGE or bench target] ...)")
    if labels and len(labels) != len(specs):
        raise LrlError(f"--label given {len(labels)} times for {len(specs)} blocks: give one per block, in order")
    parsed = [split_spec(s) for s in specs]
    files = {}
    for path, _ in parsed:
        if path not in files:
            files[path] = _read(path)
    named = {t for data in files.values() if (t := _file_task(data))}
    if len(named) > 1:
        raise LrlError(f"cannot compare blocks of different tasks: {', '.join(sorted(named))}")
    if task_name and named and task_name not in named:
        raise LrlError(f"--task {task_name} but the files are of task {next(iter(named))}")
    task = task_of(task_name or (next(iter(named)) if named else "meeting-rooms"))
    rescored: dict[Path, dict] = {}
    blocks = []
    for i, (path, name) in enumerate(parsed):
        data = files[path]
        kind, name = _resolve(path, data, name)
        label = labels[i] if labels else _default_label(path, name, kind)
        if kind == "stage":
            if path not in rescored:
                rescored[path] = rescore(path, task)
            blocks.append(_stage_block(label, path, name, data, rescored[path]))
        else:
            blocks.append(_target_block(label, path, name, data, task))
    seen: dict[str, int] = {}
    for block in blocks:  # two blocks under one label would be indistinguishable in the tables
        seen[block.label] = seen.get(block.label, 0) + 1
        if seen[block.label] > 1:
            block.label = f"{block.label} ({seen[block.label]})"
    return blocks


def _read(path: Path) -> dict:
    if not path.is_file():
        raise ResultsFileError(f"{path}: no such results file")
    data = validate_any(path)
    if not is_ours(data) and split_original(data) is None:
        raise ResultsFileError(f"{path}: neither an lrl-harness results file nor the original experiment's")
    return read_json(path) if is_ours(data) else data


def stage_names(data: dict) -> list[str]:
    if is_ours(data):
        return list(data.get("stages") or {})
    return list(split_original(data)[0])


def target_names(data: dict) -> list[str]:
    if not is_ours(data):
        return []
    return list((data.get("benchmarks") or {}).get("backends") or {})


def _resolve(path: Path, data: dict, name: str | None) -> tuple[str, str]:
    """``(kind, name)``: a stage, else a bench target; ``bench/LABEL`` is always a target."""
    stages, targets = stage_names(data), target_names(data)
    if name is None:
        choices = [("stage", s) for s in stages] + [("target", t) for t in targets]
        if len(choices) == 1:
            return choices[0]
        raise LrlError(f"{path} holds {len(choices)} stages and bench targets; name one as {path}:NAME "
                       f"({_choices(stages, targets)})")
    if name.startswith("bench/") and name[len("bench/"):] in targets:
        return "target", name[len("bench/"):]
    if name in stages:
        return "stage", name
    if name in targets:
        return "target", name
    raise LrlError(f"{path} has no stage or bench target {name!r} ({_choices(stages, targets)})")


def _choices(stages: list[str], targets: list[str]) -> str:
    return "; ".join(part for part in (f"stages: {', '.join(stages)}" if stages else "no stages",
                                       f"bench targets: {', '.join(targets)}" if targets else "") if part)


def _default_label(path: Path, name: str, kind: str) -> str:
    where = path.parent.name if path.stem in ("results", "bench") and path.parent.name else path.stem
    return f"{where}:{'bench/' if kind == 'target' else ''}{name}"


def _stage_block(label: str, path: Path, name: str, data: dict, rescored: dict) -> Block:
    block = rescored["stages"][name]
    ours = is_ours(data)
    who = None
    if ours:
        from lrl_harness.reporting.report import describe_who

        who = describe_who((data["stages"][name] or {}).get("who"))
    else:
        meta = data.get("metadata") or {}
        who = meta.get("model_student" if name == "lora" else "model_teacher")
    provenance = (data.get("provenance") or {}) if ours else {}
    return Block(label=label, path=path, name=name, kind="stage",
                 source="lrl-harness" if ours else "original experiment",
                 task=rescored.get("task"), preset=rescored.get("preset"),
                 split=block.get("split") or ("train" if name == "bootstrap" else rescored.get("split")),
                 who=who, records=block["results"], recorded_accuracy=(block.get("recorded") or {}).get("accuracy"),
                 grade_changes=block.get("grade_changes"), machine=provenance.get("machine"))


def _target_block(label: str, path: Path, name: str, data: dict, task) -> Block:
    bench = data["benchmarks"]
    entry = bench["backends"][name]
    records, _ = regrade_records(task, entry.get("results") or [],
                                 where=f"{path}: corrupt results file: bench target {name!r}")
    changes = {"wrong->right": sum(1 for r in records if r["recorded_correct"] is False and r["correct"]),
               "right->wrong": sum(1 for r in records if r["recorded_correct"] is True and not r["correct"])}
    from lrl_harness.reporting.report import describe_who

    return Block(label=label, path=path, name=name, kind="target", source="lrl-harness", task=data.get("task"),
                 preset=bench.get("preset") or data.get("preset"), split=bench.get("split") or data.get("split"),
                 who=describe_who({"backend": entry.get("backend"), "name": (entry.get("model") or {}).get("path")}),
                 records=records, recorded_accuracy=entry.get("accuracy"), grade_changes=changes,
                 machine=bench.get("machine"))


# --- pairing and statistics -----------------------------------------------------------------------


def pair_records(a: list[dict], b: list[dict]) -> list[tuple[dict, dict]]:
    """Records of the same problem (same description, i.e. content), the k-th occurrence in ``a``
    with the k-th in ``b``, in ``a``'s order."""
    by_problem: dict[str, list[dict]] = {}
    for r in b:
        by_problem.setdefault(r["problem"], []).append(r)
    taken: dict[str, int] = {}
    pairs = []
    for r in a:
        key = r["problem"]
        k = taken.get(key, 0)
        if k < len(by_problem.get(key, ())):
            pairs.append((r, by_problem[key][k]))
            taken[key] = k + 1
    return pairs


def _balanced(expected, correct, labels) -> float:
    recalls = [correct[expected == label].mean() for label in labels if (expected == label).any()]
    return float(sum(recalls) / len(recalls)) if recalls else 0.0


def paired_bootstrap(pairs: list[tuple[dict, dict]], resamples: int = RESAMPLES, seed: int = 0) -> dict:
    """95% percentile intervals, problems resampled together: A-B in accuracy and in balanced
    accuracy, and each side's balanced accuracy. A resample that lacks a label averages the recalls
    of the labels it has (as the figures do)."""
    import numpy as np

    n = len(pairs)
    labels = sorted({a["expected"] for a, _ in pairs})
    expected = np.array([labels.index(a["expected"]) for a, _ in pairs])
    ca = np.array([bool(a["correct"]) for a, _ in pairs], dtype=float)
    cb = np.array([bool(b["correct"]) for _, b in pairs], dtype=float)
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, n, size=(resamples, n))
    e, a, b = expected[idx], ca[idx], cb[idx]
    acc_diff = a.mean(axis=1) - b.mean(axis=1)
    recall_a, recall_b, present = [], [], []
    for k in range(len(labels)):
        mask = e == k
        count = mask.sum(axis=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            recall_a.append(np.where(count > 0, (a * mask).sum(axis=1) / np.maximum(count, 1), 0.0))
            recall_b.append(np.where(count > 0, (b * mask).sum(axis=1) / np.maximum(count, 1), 0.0))
        present.append(count > 0)
    labels_present = np.maximum(np.sum(present, axis=0), 1)
    bal_a = np.sum(recall_a, axis=0) / labels_present
    bal_b = np.sum(recall_b, axis=0) / labels_present

    def interval(values) -> list[float]:
        lo, hi = np.percentile(values, [2.5, 97.5])
        return [float(lo), float(hi)]

    return {"accuracy_difference": interval(acc_diff), "balanced_difference": interval(bal_a - bal_b),
            "balanced_a": interval(bal_a), "balanced_b": interval(bal_b)}


def _evidence(record: dict) -> str | None:
    span, text = record.get("span"), record.get("response") or ""
    if not span:
        return "(no verdict)" if text else None
    return " ".join(text[span[0]:span[1]].split())


def _side(block: Block, records: list[dict], balanced_ci: list[float]) -> ComparedSide:
    fig = score_block(records)
    return ComparedSide(block=block.label, correct=fig["correct"], unparsed=fig["unparsed"],
                        truncated=sum(1 for r in records if r.get("truncated")), accuracy=fig["accuracy"],
                        ci95=list(fig["ci95"]), balanced_accuracy=fig["balanced_accuracy"],
                        balanced_ci95=balanced_ci, majority_baseline=fig["majority_baseline"],
                        majority_label=fig["majority_label"])


def compare_pair(a: Block, b: Block, resamples: int = RESAMPLES, seed: int = 0) -> ComparedPair:
    pairs = pair_records(a.records, b.records)
    if not pairs:
        raise LrlError(f"{a.label} and {b.label} share no problem (0 of {len(a.records)} and {len(b.records)} "
                       "paired by content): they were asked different problems")
    boot = paired_bootstrap(pairs, resamples, seed)
    side_a = _side(a, [x for x, _ in pairs], boot["balanced_a"])
    side_b = _side(b, [y for _, y in pairs], boot["balanced_b"])
    only_a = [(x, y) for x, y in pairs if x["correct"] and not y["correct"]]
    only_b = [(x, y) for x, y in pairs if y["correct"] and not x["correct"]]
    discordant = [Discordant(id_a=x["problem_id"], id_b=y["problem_id"], problem=x.get("problem"),
                             expected=x.get("expected"), answer_a=x.get("answer"), answer_b=y.get("answer"),
                             evidence_a=_evidence(x), evidence_b=_evidence(y), right="a" if x["correct"] else "b")
                  for x, y in pairs if x["correct"] != y["correct"]]
    return ComparedPair(
        a=a.label, b=b.label, paired=len(pairs), only_in_a=len(a.records) - len(pairs),
        only_in_b=len(b.records) - len(pairs), side_a=side_a, side_b=side_b,
        accuracy_difference=Difference(estimate=side_a.accuracy - side_b.accuracy,
                                       ci95=boot["accuracy_difference"]),
        balanced_accuracy_difference=Difference(estimate=side_a.balanced_accuracy - side_b.balanced_accuracy,
                                                ci95=boot["balanced_difference"]),
        both_correct=sum(1 for x, y in pairs if x["correct"] and y["correct"]),
        only_a_correct=len(only_a), only_b_correct=len(only_b),
        neither_correct=sum(1 for x, y in pairs if not x["correct"] and not y["correct"]),
        answers_agree=sum(1 for x, y in pairs if x.get("answer") == y.get("answer")),
        mcnemar_p=mcnemar_exact(len(only_a), len(only_b)), discordant=discordant)


def few_discordant_note(pair: ComparedPair) -> list[str]:
    """A caution where few problems are discordant: a percentile bootstrap is then too narrow, and the
    exact McNemar p is the figure to read."""
    discordant = pair.only_a_correct + pair.only_b_correct
    if not 0 < discordant < 10:
        return []
    return [f"{pair.a} vs {pair.b}: only {discordant} discordant problems; at that size the bootstrap "
            "interval of a difference is too narrow: read the exact McNemar p"]


def _compared_block(block: Block) -> ComparedBlock:
    fig = score_block(block.records)
    return ComparedBlock(
        label=block.label, file=str(block.path), name=block.name, kind=block.kind, source=block.source,
        task=block.task, preset=block.preset, split=block.split, who=block.who, total=fig["total"],
        correct=fig["correct"], unparsed=fig["unparsed"], truncated=sum(1 for r in block.records if r.get("truncated")),
        accuracy=fig["accuracy"], balanced_accuracy=fig["balanced_accuracy"],
        majority_baseline=fig["majority_baseline"], majority_label=fig["majority_label"],
        ci95=list(wilson_interval(fig["correct"], fig["total"])), recorded_accuracy=block.recorded_accuracy,
        grade_changes=block.grade_changes, machine=block.machine)


def compare(blocks: list[Block], resamples: int = RESAMPLES, seed: int = 0) -> Comparison:
    """Every pair of ``blocks`` (in the order given). LrlError when a pair shares no problem."""
    if resamples < 100:
        raise LrlError(f"--resamples must be at least 100, got {resamples}")
    pairs = [compare_pair(a, b, resamples, seed) for a, b in itertools.combinations(blocks, 2)]
    notes = []
    for key in ("preset", "split"):
        values = {getattr(b, key) for b in blocks if getattr(b, key)}
        if len(values) > 1:
            notes.append(f"the blocks come from different {key}s ({', '.join(sorted(values))}): "
                         "only the problems they share are compared")
    for p in pairs:
        notes += few_discordant_note(p)
        smaller = min(p.paired + p.only_in_a, p.paired + p.only_in_b)
        if p.paired < smaller / 2:
            notes.append(f"{p.a} vs {p.b}: only {p.paired} of {smaller} problems paired; the pair's figures "
                         "describe those problems only")
    for block in blocks:
        changes = block.grade_changes or {}
        if sum(changes.values()):
            notes.append(f"{block.label}: re-grading changed {changes.get('wrong->right', 0)} grades wrong->right "
                         f"and {changes.get('right->wrong', 0)} right->wrong against the file's own")
    return Comparison(task=blocks[0].task, grading=GRADING, interval=INTERVAL.format(resamples=resamples, seed=seed),
                      resamples=resamples, seed=seed, blocks=[_compared_block(b) for b in blocks], pairs=pairs,
                      notes=notes)


def compare_files(specs: list[str], task_of, labels: list[str] = (), task_name: str | None = None,
                  resamples: int = RESAMPLES, seed: int = 0) -> Comparison:
    return compare(load_blocks(specs, task_of, labels, task_name), resamples, seed)


# --- output -------------------------------------------------------------------------------------


def _ci(bounds) -> str:
    return f"{bounds[0]:.3f}-{bounds[1]:.3f}"


def _signed_ci(bounds) -> str:
    return f"{bounds[0]:+.3f} to {bounds[1]:+.3f}"


def _p(value: float) -> str:
    return f"{value:.4f}" if value >= 0.0001 else f"{value:.1e}"


BLOCK_COLUMNS = ("block", "who", "accuracy", "95% CI", "balanced acc.", "majority baseline", "unparsed",
                 "truncated", "n")
PAIR_COLUMNS = ("A", "B", "paired", "acc. A (95% CI)", "acc. B (95% CI)", "bal. A (95% CI)", "bal. B (95% CI)",
                "majority", "unparsed A/B", "A-B acc. (95% CI)", "A-B bal. (95% CI)", "only A/only B right",
                "McNemar p")


def block_table(comparison: Comparison) -> TableData:
    rows = [[b.label, b.who or "-", f"{b.accuracy:.3f}", _ci(b.ci95), f"{b.balanced_accuracy:.3f}",
             f"{b.majority_baseline:.3f} ({b.majority_label or '-'})", str(b.unparsed), _count(b.truncated),
             str(b.total)] for b in comparison.blocks]
    return TableData(f"Compared blocks ({comparison.task or 'task ?'}; all their problems, re-graded)",
                     BLOCK_COLUMNS, rows)


def pair_table(comparison: Comparison) -> TableData:
    rows = []
    for p in comparison.pairs:
        a, b = p.side_a, p.side_b
        rows.append([p.a, p.b, f"{p.paired}", f"{a.accuracy:.3f} ({_ci(a.ci95)})", f"{b.accuracy:.3f} ({_ci(b.ci95)})",
                     f"{a.balanced_accuracy:.3f} ({_ci(a.balanced_ci95)})",
                     f"{b.balanced_accuracy:.3f} ({_ci(b.balanced_ci95)})",
                     f"{a.majority_baseline:.3f} ({a.majority_label or '-'})", f"{a.unparsed}/{b.unparsed}",
                     f"{p.accuracy_difference.estimate:+.3f} ({_signed_ci(p.accuracy_difference.ci95)})",
                     f"{p.balanced_accuracy_difference.estimate:+.3f} "
                     f"({_signed_ci(p.balanced_accuracy_difference.ci95)})",
                     f"{p.only_a_correct}/{p.only_b_correct}", _p(p.mcnemar_p)])
    return TableData("Paired by problem (figures on the paired problems only)", PAIR_COLUMNS, rows, no_wrap=False)


def _count(value) -> str:
    return "-" if value is None else str(value)


def comparison_tables(comparison: Comparison) -> list[TableData]:
    return [block_table(comparison), pair_table(comparison)]


def pairing_lines(comparison: Comparison) -> list[str]:
    """How many problems each pair shares, and what the figures mean."""
    lines = [f"{p.a} vs {p.b}: {p.paired} problems paired by content ({p.only_in_a} only in {p.a}, "
             f"{p.only_in_b} only in {p.b}); {p.answers_agree} same answer" for p in comparison.pairs]
    lines += [f"grading: {comparison.grading}", f"intervals: {comparison.interval}; McNemar: exact, two-sided"]
    return lines + [f"note: {n}" for n in comparison.notes]


def explain_lines(comparison: Comparison) -> list[str]:
    """Every discordant problem of every pair: ids, problem, expected, both answers and deciding text."""
    lines = []
    for p in comparison.pairs:
        lines.append(f"{p.a} vs {p.b}: {p.only_a_correct + p.only_b_correct} discordant problems")
        for d in p.discordant:
            ids = d.id_a if d.id_a == d.id_b else f"{d.id_a} / {d.id_b}"
            lines.append(f"  {ids} [{d.problem}] expected {d.expected}: {p.a if d.right == 'a' else p.b} right; "
                         f"A {d.answer_a or 'unparsed'} ({d.evidence_a!r}), B {d.answer_b or 'unparsed'} "
                         f"({d.evidence_b!r})")
    return lines


CSV_COLUMNS = ("a", "b", "paired", "only_in_a", "only_in_b", "accuracy_a", "accuracy_a_lo", "accuracy_a_hi",
               "accuracy_b", "accuracy_b_lo", "accuracy_b_hi", "balanced_a", "balanced_a_lo", "balanced_a_hi",
               "balanced_b", "balanced_b_lo", "balanced_b_hi", "majority_baseline", "majority_label",
               "unparsed_a", "unparsed_b", "accuracy_diff", "accuracy_diff_lo", "accuracy_diff_hi",
               "balanced_diff", "balanced_diff_lo", "balanced_diff_hi", "both_correct", "only_a_correct",
               "only_b_correct", "neither_correct", "mcnemar_p")


def comparison_csv(comparison: Comparison) -> str:
    """One row per pair, every figure a number (for spreadsheets and dataframes)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for p in comparison.pairs:
        a, b, da, db = p.side_a, p.side_b, p.accuracy_difference, p.balanced_accuracy_difference
        writer.writerow([p.a, p.b, p.paired, p.only_in_a, p.only_in_b, a.accuracy, *a.ci95, b.accuracy, *b.ci95,
                         a.balanced_accuracy, *a.balanced_ci95, b.balanced_accuracy, *b.balanced_ci95,
                         a.majority_baseline, a.majority_label, a.unparsed, b.unparsed, da.estimate, *da.ci95,
                         db.estimate, *db.ci95, p.both_correct, p.only_a_correct, p.only_b_correct,
                         p.neither_correct, p.mcnemar_p])
    return out.getvalue()


def comparison_json(comparison: Comparison) -> str:
    return comparison.model_dump_json(by_alias=True, indent=2)


def comparison_markdown(comparison: Comparison, explain: bool = False) -> str:
    parts = [t.markdown() for t in comparison_tables(comparison)]
    parts.append("\n".join(f"- {line}" for line in pairing_lines(comparison)) + "\n")
    if explain:
        parts.append("```\n" + "\n".join(explain_lines(comparison)) + "\n```\n")
    return "\n".join(parts)

