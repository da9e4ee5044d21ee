"""Re-grade a results file, ours or the original experiment's, with this project's extractor and solver."""

from __future__ import annotations

from pathlib import Path

from .errors import InvalidProblemError, ResultsFileError
from .metrics import score_stage
from .results import STAGE_LABELS, is_original, is_ours, new_results, read_json


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


def rescore(path: Path, task) -> dict:
    """Return our-format results with every stage re-graded, each stage keeping its recorded figures."""
    data = read_json(path)
    if is_ours(data):
        stages, preset = data.get("stages"), data.get("preset")
        source = "lrl-harness"
    elif is_original(data):
        stages, preset = data, "seed"
        source = "original experiment"
    else:
        raise ResultsFileError(f"{path}: neither an lrl-harness results file nor the original experiment's")
    if not isinstance(stages, dict):
        raise ResultsFileError(f"{path}: corrupt results file: no stages")
    by_id = {}
    if preset == "seed" and getattr(task, "name", "") == "meeting-rooms":
        for split in ("test", "train"):
            for p in task.problems("seed", split):
                by_id.setdefault(p.id, p)
    out = new_results(task=task.name, preset=preset, split="test",
                      config={"rescored_from": Path(path).name, "source_format": source},
                      provenance={"prompt_version": task.prompt_version})
    for name, stage in stages.items():
        if not isinstance(stage, dict) or not isinstance(stage.get("results"), list):
            raise ResultsFileError(f"{path}: corrupt results file: stage {name!r} has no results list")
        records = []
        label_mismatches = 0
        for i, r in enumerate(stage["results"]):
            if not isinstance(r, dict):
                raise ResultsFileError(f"{path}: corrupt results file: stage {name!r} result {i} is not an object")
            problem = _problem_for(task, r, by_id)
            expected = task.solve(problem)
            if r.get("expected") not in (None, expected):
                label_mismatches += 1
            answer = task.extract_answer(r.get("response"))
            records.append({
                "problem_id": r.get("problem_id", problem.id),
                "difficulty": problem.difficulty if problem.difficulty != "UNKNOWN" else _difficulty_of(r),
                "problem": task.describe(problem),
                **problem.data,
                "expected": expected,
                "answer": answer,
                "correct": answer == expected,
                "recorded_answer": r.get("answer"),
                "recorded_correct": r.get("correct"),
                "response": r.get("response"),
            })
        block = score_stage(records)
        block = {"stage": name, "label": STAGE_LABELS.get(name, stage.get("stage", name)), **block}
        block["recorded"] = {k: stage.get(k) for k in ("total", "correct", "accuracy")}
        block["recorded_label_mismatches"] = label_mismatches
        block["results"] = records
        out["stages"][name] = block
    return out
