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
                             "results": [{"problem_id", "difficulty", "problem", ...the problem's data,
                                          "expected", "answer" (YES/NO/null = unparsed), "correct",
                                          "response", "finish_reason", "truncated", "prompt_sha256",
                                          "prompt_tokens", "completion_tokens", "latency_s", "ttft_s",
                                          "cached"?, "usage"?}, ...]},  (evaluate.Record)
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

from .errors import LrlError, ResultsFileError, path_error

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
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise path_error(path, exc) from None
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise path_error(path, exc) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: Path, folder: bool = False) -> None:
    """Refuse now, in one line, an output ``path`` (a file, or with ``folder`` a folder) that cannot be
    written, so that a command fails before it computes anything. Leaves nothing behind."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise LrlError(f"cannot write {path}: it exists and is not a folder; choose another path")
    if not folder and path.is_dir():
        raise LrlError(f"cannot write {path}: it is a folder; give a file name")
    probe = path if folder else path.parent
    while not probe.exists() and probe.parent != probe:
        probe = probe.parent
    if not probe.is_dir():
        raise LrlError(f"cannot write {path}: {probe} is not a folder; choose another path")
    try:
        fd, tmp = tempfile.mkstemp(prefix=".lrl-write-test-", dir=probe)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise path_error(path, exc) from None


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
    if path.is_dir():
        raise ResultsFileError(f"{path}: is a folder, not a results file")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ResultsFileError(f"{path}: not valid JSON ({str(exc).splitlines()[0][:200]})") from None
    except OSError as exc:
        raise path_error(path, exc, "read") from None


def new_results(**fields) -> dict:
    return {"schema": SCHEMA, "schema_version": SCHEMA_VERSION, **fields, "stages": {}}


def is_ours(data: Any) -> bool:
    return isinstance(data, dict) and data.get("schema") == SCHEMA


def _is_stage_block(value) -> bool:
    return isinstance(value, dict) and "results" in value and "accuracy" in value


def split_original(data) -> tuple[dict, dict] | None:
    """``(stages, extras)`` of a file in the original experiment's format, or None when it is not one.

    Stages are the top-level objects with ``results`` and ``accuracy``; every other top-level key
    (the published file's ``metadata``) is an extra, kept as it is."""
    if not isinstance(data, dict) or is_ours(data):
        return None
    stages = {k: v for k, v in data.items() if _is_stage_block(v)}
    if not stages:
        return None
    return stages, {k: v for k, v in data.items() if k not in stages}


def load_results(path: Path) -> dict:
    """Read one of our results files, checking the schema; a clear error for anything else."""
    data = read_json(path)
    if not is_ours(data):
        raise ResultsFileError(f"{path}: not an lrl-harness results file (no schema {SCHEMA!r})")
    _check_ours(data, path)
    return data


def _check_ours(data: dict, path: Path) -> None:
    version = data.get("schema_version")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise ResultsFileError(f"{path}: schema version {data.get('schema_version')!r} is not supported "
                               f"(this lrl-harness reads {SCHEMA_VERSION})")
    if not isinstance(data.get("stages"), dict):
        raise ResultsFileError(f"{path}: corrupt results file: 'stages' is missing or not an object")
    validate_results(data, path)


# --- the declared schema, checked on every read ---------------------------------------------------

_COUNTS = ("total", "correct", "unparsed")
_RATES = ("accuracy", "balanced_accuracy", "majority_baseline")
_RECORD_REQUIRED = ("problem_id", "expected", "answer", "correct")
_RECORD_TEXT = ("problem_id", "difficulty", "problem", "expected", "answer", "response")
_TOP_OBJECTS = ("config", "provenance", "teacher", "transfer", "training", "export", "parity", "cost",
                "benchmarks")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _kind(value) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null",
            int: "a number", float: "a number"}.get(type(value), type(value).__name__)


class _Checker:
    def __init__(self, path):
        self.path = path

    def fail(self, where: str, want: str, value) -> None:
        got = repr(value) if _is_number(value) else _kind(value)
        raise ResultsFileError(f"{self.path}: {where} must be {want}, not {got}")

    def score_block(self, where: str, block, records: bool = True) -> None:
        if not isinstance(block, dict):
            self.fail(where, "an object", block)
        missing = [key for key in _COUNTS + _RATES if key not in block]
        if missing:
            raise ResultsFileError(f"{self.path}: {where} lacks {', '.join(missing)}")
        for key in _COUNTS:
            if not (isinstance(block[key], int) and not isinstance(block[key], bool) and block[key] >= 0):
                self.fail(f"{where}.{key}", "a non-negative integer", block[key])
        for key in _RATES:
            value = block[key]
            if not (_is_number(value) and 0 <= value <= 1):
                self.fail(f"{where}.{key}", "a number from 0 to 1", value)
        if block.get("majority_label") is not None and not isinstance(block["majority_label"], str):
            self.fail(f"{where}.majority_label", "a string", block["majority_label"])
        ci = block.get("ci95")
        if "ci95" in block and ci is not None and not (
                isinstance(ci, list) and len(ci) == 2 and all(_is_number(v) for v in ci)):
            self.fail(f"{where}.ci95", "a list of two numbers", ci)
        if "elapsed_s" in block and block["elapsed_s"] is not None and not _is_number(block["elapsed_s"]):
            self.fail(f"{where}.elapsed_s", "a number", block["elapsed_s"])
        by = block.get("by_difficulty")
        if "by_difficulty" in block and by is not None:
            if not isinstance(by, dict):
                self.fail(f"{where}.by_difficulty", "an object", by)
            for name, sub in by.items():
                self.score_block(f"{where}.by_difficulty.{name}", sub, records=False)
        if records and "results" in block:
            self.records(f"{where}.results", block["results"], _RECORD_REQUIRED)
        for key in ("who", "usage", "latency", "ttft", "throughput", "memory", "model"):
            if block.get(key) is not None and not isinstance(block[key], dict):
                self.fail(f"{where}.{key}", "an object", block[key])
        for key in ("latency", "ttft", "throughput", "memory"):
            for name, value in (block.get(key) or {}).items():
                if value is not None and not _is_number(value) and not isinstance(value, (dict, list, str)):
                    self.fail(f"{where}.{key}.{name}", "a number", value)
                if isinstance(value, str) and name.endswith(("_s", "_per_s", "_mib")):
                    self.fail(f"{where}.{key}.{name}", "a number", value)

    def records(self, where: str, records, required: tuple[str, ...] = ()) -> None:
        if not isinstance(records, list):
            self.fail(where, "a list", records)
        for i, r in enumerate(records):
            at = f"{where}[{i}]"
            if not isinstance(r, dict):
                self.fail(at, "an object", r)
            missing = [key for key in required if key not in r]
            if missing:
                raise ResultsFileError(f"{self.path}: {at} lacks {', '.join(missing)}")
            if required and not isinstance(r["correct"], bool):
                self.fail(f"{at}.correct", "true or false", r["correct"])
            for key in _RECORD_TEXT:
                if r.get(key) is not None and not isinstance(r[key], str):
                    if key == "problem_id" and isinstance(r[key], int) and not isinstance(r[key], bool):
                        continue
                    self.fail(f"{at}.{key}", "a string", r[key])
            if "correct" in r and r["correct"] is not None and not isinstance(r["correct"], bool):
                self.fail(f"{at}.correct", "true or false", r["correct"])
            for key in ("latency_s", "prompt_tokens", "completion_tokens"):
                if r.get(key) is not None and not _is_number(r[key]):
                    self.fail(f"{at}.{key}", "a number", r[key])


def validate_results(data: dict, path: Path | str = "results") -> None:
    """Check an lrl-harness results file against the declared schema (the layout above): a wrong type
    raises ResultsFileError naming the field and the file."""
    check = _Checker(path)
    for key in ("task", "preset", "split", "config_hash"):
        if data.get(key) is not None and not isinstance(data[key], str):
            check.fail(key, "a string", data[key])
    for key in _TOP_OBJECTS:
        if data.get(key) is not None and not isinstance(data[key], dict):
            check.fail(key, "an object", data[key])
    if "elapsed_s" in data and data["elapsed_s"] is not None and not _is_number(data["elapsed_s"]):
        check.fail("elapsed_s", "a number", data["elapsed_s"])
    for name, block in data["stages"].items():
        check.score_block(f"stages.{name}", block)
    bench = data.get("benchmarks") or {}
    for key in ("backends", "ratios"):
        if bench.get(key) is not None and not isinstance(bench[key], dict):
            check.fail(f"benchmarks.{key}", "an object", bench[key])
    for name, block in (bench.get("backends") or {}).items():
        check.score_block(f"benchmarks.backends.{name}", block)
    for name, ratio in (bench.get("ratios") or {}).items():
        if not isinstance(ratio, dict):
            check.fail(f"benchmarks.ratios.{name}", "an object", ratio)
        for key, value in ratio.items():
            if value is not None and not _is_number(value) and not isinstance(value, (str, dict, list)):
                check.fail(f"benchmarks.ratios.{name}.{key}", "a number", value)


def validate_original(data: dict, path: Path | str = "results") -> None:
    """Check a results file in the original experiment's format: stage -> {accuracy, results: [...]}."""
    check = _Checker(path)
    for name, block in data.items():
        for key in ("total", "correct", "accuracy"):
            if block.get(key) is not None and not _is_number(block[key]):
                check.fail(f"{name}.{key}", "a number", block[key])
        check.records(f"{name}.results", block["results"])


def validate_any(path: Path) -> Any:
    """Read a results file of either format and check it; what a command is given is refused here in
    one line, never half-way through its work."""
    data = read_json(path)
    if is_ours(data):
        _check_ours(data, path)
    elif (original := split_original(data)) is not None:
        validate_original(original[0], path)  # its stages; extras such as `metadata` are kept as they are
    return data
