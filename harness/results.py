"""The results JSON: one schema, one writer (atomic), one reader (ours and the original experiment's).

Layout (schema_version 1)::

    {
      "schema": "lrl-harness/results", "schema_version": 1,
      "task": "meeting-rooms", "preset": "balanced", "split": "test",
      "config": {...every option...}, "config_hash": "...",
      "provenance": {"packages": {...}, "machine": {...}, "seeds": {...},
                     "strategy_sha256": ..., "transfer_sha256": ..., "adapter_sha256": ...,
                     "prompt_version": ..., "prompt_hashes": {...}},
      "stages": {
        "student_baseline": {"stage": ..., "label": ..., "total", "correct", "accuracy",
                             "balanced_accuracy", "majority_baseline", "majority_label", "unparsed",
                             "ci95": [lo, hi], "by_difficulty": {"EASY": {same block}, ...},
                             "who": {...model/teacher info...}, "elapsed_s": ...,
                             "results": [{"problem_id", "difficulty", "problem", "expected", "answer"
                                          (YES/NO/null = unparsed), "correct", "response",
                                          "prompt_sha256", "prompt_tokens", "completion_tokens",
                                          "latency_s"}, ...]},
        "teacher_baseline": ..., "bootstrap": ..., "lrl": ..., "lora": ...
      },
      "training": {...}, "export": {...}, "cost": {...}, "benchmarks": {...}, "parity": {...}
    }
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from .errors import ResultsFileError

SCHEMA = "lrl-harness/results"
SCHEMA_VERSION = 1
STAGES = ("student_baseline", "teacher_baseline", "bootstrap", "lrl", "lora")
STAGE_LABELS = {
    "student_baseline": "Student baseline",
    "teacher_baseline": "Teacher baseline",
    "bootstrap": "LRL bootstrap (train split)",
    "lrl": "Teacher with learned strategy",
    "lora": "Student after LoRA",
}


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` so that readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=_json_default) + "\n")


def _json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def read_json(path: Path) -> Any:
    path = Path(path)
    if not path.exists():
        raise ResultsFileError(f"{path}: no such file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsFileError(f"{path}: not valid JSON ({exc})") from None


def new_results(**fields) -> dict:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **fields, "stages": {}}


def is_ours(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def is_original(data: Any) -> bool:
    """The original experiment's file: stage name -> {stage, total, correct, accuracy, results}."""
    if not isinstance(data, dict) or not data or is_ours(data):
        return False
    return all(isinstance(v, dict) and "results" in v and "accuracy" in v for v in data.values())


def load_results(path: Path) -> dict:
    """Read one of our results files, checking the schema; a clear error for anything else."""
    data = read_json(path)
    if not is_ours(data):
        raise ResultsFileError(f"{path}: not an lrl-harness results file (no schema {SCHEMA!r})")
    if data.get("schema_version") != SCHEMA_VERSION:
        raise ResultsFileError(f"{path}: schema version {data.get('schema_version')!r} is not supported "
                               f"(this lrl-harness reads {SCHEMA_VERSION})")
    if not isinstance(data.get("stages"), dict):
        raise ResultsFileError(f"{path}: corrupt results file: 'stages' is missing or not an object")
    return data
