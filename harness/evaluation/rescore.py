"""Re-grade a results file, ours or the original experiment's, with this project's extractor and solver.

The original experiment's published file is read as it is:

- top level: stage name -> ``{stage, total, correct, accuracy, by_difficulty, results}``, beside other
  keys (its ``metadata``), which are kept and carried into the output under ``provenance.source_metadata``;
- a record with a problem string (``"[10-13], [12-14] | 3 rooms"``) or ``meetings``/``rooms`` is
  re-graded on that problem; a record with only ``problem_id`` gets its problem from the seed preset's
  splits (``bootstrap`` ran on the train split, every other stage on the test split);
- its student stages decoded at most 10 new tokens, so their responses stop mid-sentence
  (``" Yes\\n\\nExplanation:\\n- Meetings [9-1"``). Such a response is counted as *truncated*: it is
  graded on what it says (its opening word) and the count is shown beside the accuracy, never hidden.

Every re-graded record is the evaluator's record (``evaluation/ask.py``) with the recorded prompt hash,
tokens, timings and finish reason where the file has them, plus the extractor's evidence (``rule`` and
``span``) and the recorded answer and grade; the stage block counts the grades that changed in each
direction.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from lrl_harness.api.errors import InvalidProblemError, ResultsFileError
from lrl_harness.evaluation.ask import regrade
from lrl_harness.evaluation.statistics import score_stage
from lrl_harness.results.files import read_json
from lrl_harness.results.format import STAGE_LABELS
from lrl_harness.results.io import is_ours, new_results, split_original

ORIGINAL_STUDENT_NEW_TOKENS = 10  # the original script's max_new_tokens for its student stages
_TRAIN_STAGES = {"bootstrap"}  # the original ran its LRL bootstrap on the train split, the rest on test
_COMPLETE_END = re.compile(r"[.!?)\]\"'*`]\s*$")
_ONLY_VERDICT = re.compile(r"^[\s*_`\"'(\[]*(?:yes|no)[\s.!*_`\"')\]]*$", re.IGNORECASE)


def looks_truncated(response) -> bool:
    """A response of the original's student stages cut by its 10-token budget: more than a bare
    verdict, and it stops mid-sentence."""
    if not isinstance(response, str) or not response.strip():
        return False
    return not _ONLY_VERDICT.match(response) and not _COMPLETE_END.search(response)


def _problem_for(task, record: dict, by_id: dict):
    if "meetings" in record and "rooms" in record:
        return task.problem_from_dict({**record, "id": record.get("problem_id"), "expected": None})
    if isinstance(record.get("problem"), str):
        return task.parse_description(record["problem"], id=record.get("problem_id", "?"),
                                      difficulty=record.get("difficulty", _difficulty_of(record)))
    if record.get("problem_id") in by_id:
        return by_id[record["problem_id"]]
    raise InvalidProblemError(f"result {record.get('problem_id', '?')!r} has no problem to re-grade "
                              "(no meetings, no problem string, unknown id)")


def _difficulty_of(record: dict) -> str:
    pid = str(record.get("problem_id", ""))
    return pid.split("_")[0].upper() if "_" in pid else "UNKNOWN"


def _seed_problems(task, preset: str) -> dict:
    """Problems by split and id, for records that carry only an id (seed preset only)."""
    if preset != "seed" or "seed" not in getattr(task, "presets", ()):
        return {}
    return {split: {p.id: p for p in task.problems("seed", split)} for split in ("train", "test")}


def _changes(records: list[dict]) -> dict:
    """How many grades changed, in each direction, against the recorded ones."""
    changes = {"wrong->right": 0, "right->wrong": 0}
    for r in records:
        if r["recorded_correct"] is False and r["correct"]:
            changes["wrong->right"] += 1
        elif r["recorded_correct"] is True and not r["correct"]:
            changes["right->wrong"] += 1
    return changes


def rescore(path: Path, task) -> dict:
    """Return our-format results with every stage re-graded, each stage keeping its recorded figures."""
    data = read_json(path)
    original = split_original(data)
    if is_ours(data):
        stages, preset, extras = data.get("stages"), data.get("preset"), {}
        source = "lrl-harness"
    elif original:
        (stages, extras), preset = original, "seed"
        source = "original experiment"
    else:
        raise ResultsFileError(f"{path}: neither an lrl-harness results file nor the original experiment's")
    if not isinstance(stages, dict):
        raise ResultsFileError(f"{path}: corrupt results file: no stages")
    by_split = _seed_problems(task, preset)
    provenance = {"prompt_version": task.prompt_version}
    if extras:
        provenance["source_metadata"] = extras
    out = new_results(task=task.name, preset=preset, split="test",
                      config={"rescored_from": Path(path).name, "source_format": source},
                      provenance=provenance)
    for name, stage in stages.items():
        if not isinstance(stage, dict) or not isinstance(stage.get("results"), list):
            raise ResultsFileError(f"{path}: corrupt results file: stage {name!r} has no results list")
        by_id = by_split.get("train" if name in _TRAIN_STAGES else "test", {})
        records, label_mismatches = regrade_records(task, stage["results"], by_id, original is not None,
                                                    where=f"{path}: corrupt results file: stage {name!r}")
        block = score_stage(records)
        block = {"stage": name, "label": STAGE_LABELS.get(name, stage.get("stage", name)), **block}
        block["truncated"] = sum(1 for r in records if r["truncated"])
        block["recorded"] = {k: stage.get(k) for k in ("total", "correct", "accuracy")}
        block["recorded_label_mismatches"] = label_mismatches
        block["grade_changes"] = _changes(records)
        block["results"] = records
        out["stages"][name] = block
    return out


def regrade_records(task, results: list, by_id: dict | None = None, original: bool = False,
                    where: str = "results") -> tuple[list[dict], int]:
    """Re-grade a list of recorded answers with the task's extractor and solver: each becomes the
    evaluator's record plus the extractor's evidence (``rule``, ``span``) and the recorded answer and
    grade. ``by_id``: problems for records that carry only an id; ``original``: the records come from
    the original experiment's file (its student answers cut at 10 tokens count as truncated).
    Returns (records, how many recorded expected answers the solver contradicts)."""
    records, label_mismatches = [], 0
    for i, r in enumerate(results):
        if not isinstance(r, dict):
            raise ResultsFileError(f"{where} result {i} is not an object")
        problem = _problem_for(task, r, by_id or {})
        expected = task.solve(problem)
        if r.get("expected") not in (None, expected):
            label_mismatches += 1
        verdict = task.extract_verdict(r.get("response"))
        truncated = (r.get("finish_reason") == "length" or r.get("truncated") is True
                     or (original and "problem" not in r and looks_truncated(r.get("response"))))
        difficulty = problem.difficulty if problem.difficulty != "UNKNOWN" else _difficulty_of(r)
        records.append(regrade(
            task, replace(problem, id=r.get("problem_id", problem.id), difficulty=difficulty), r,
            verdict.answer, expected, truncated=truncated,
            extra={"rule": verdict.rule, "span": list(verdict.span) if verdict.span else None,
                   "recorded_answer": r.get("answer"), "recorded_correct": r.get("correct")}))
    return records, label_mismatches


def changed(rescored: dict):
    """``(stage, record)`` for every response whose new answer or grade differs from the recorded one."""
    for name, block in rescored["stages"].items():
        for r in block["results"]:
            if r["answer"] != r["recorded_answer"] or r["correct"] != r["recorded_correct"]:
                yield name, r


def explain_line(stage: str, record: dict) -> str:
    """One response whose grade changed: stage, problem, recorded -> new answer, the deciding text."""
    def show(answer):
        return answer if answer else "unparsed"

    span = record.get("span")
    text = record.get("response") or ""
    evidence = " ".join(text[span[0]:span[1]].split()) if span else "(no verdict)"
    grade = ("right" if record["recorded_correct"] else "wrong") + "->" + ("right" if record["correct"] else "wrong")
    flag = " [truncated]" if record.get("truncated") else ""
    return (f"{stage} {record['problem_id']} [{record['problem']}] expected {record['expected']}: "
            f"recorded {show(record['recorded_answer'])} -> {show(record['answer'])} ({grade}){flag}; "
            f"{record['rule']} at {span[0] if span else '-'}: {evidence!r}")
