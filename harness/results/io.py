"""The results file on disk: one writer (atomic, validated), one reader of ours (schema checked, version 1
upgraded) and one of the original experiment's published format.

The schema is declared in ``schema.py`` (``lrl schema`` prints it as JSON Schema), its names in
``format.py``, atomic file writes in ``files.py``. A results file is ``{"schema": "lrl-harness/results",
"schema_version": 2, "task", "preset", "split", "config", "config_hash", "provenance", "stages": {name:
score block with its records}, "teacher", "transfer", "training", "export", "parity", "cost",
"benchmarks"}``. ``read_results`` returns it typed (a ``schema.Results``); ``load_results`` returns the
same file checked, as plain JSON data. Version 1 files read as version 2 (``upgrade_v1``); writers
write version 2.

pydantic is imported only when a file is checked, so that importing this module stays cheap.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lrl_harness.api.errors import ResultsFileError
from lrl_harness.results.files import json_default, read_json, write_json
from lrl_harness.results.format import READABLE_VERSIONS, SCHEMA, SCHEMA_VERSION

if TYPE_CHECKING:
    from lrl_harness.results.schema import Results


def new_results(**fields) -> dict:
    """A new results file in the current schema version, with no stages yet."""
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


# --- reading ours -------------------------------------------------------------------------------


def read_results(path: Path) -> Results:
    """Read one of our results files: a ``schema.Results``, version 1 files upgraded; a clear one-line
    ResultsFileError for anything else (naming the file and, for a wrong type, the field)."""
    data = _read_ours(path)
    return _typed(data, path)


def load_results(path: Path) -> dict:
    """Read one of our results files as plain JSON data, checked against the schema exactly as
    ``read_results`` checks it (version 1 files upgraded)."""
    data = _read_ours(path)
    _typed(data, path)
    return data


def as_results(data: Results | dict, path: Path | str = "results") -> Results:
    """``data`` as a ``schema.Results``: a results model as it is, JSON data in our format (a dict a
    writer is about to write, say) checked like a file read from ``path``; the dict is not changed."""
    from lrl_harness.results.schema import Results

    if isinstance(data, Results):
        return data
    data = json.loads(json.dumps(data, default=json_default))
    if not is_ours(data):
        raise ResultsFileError(f"{path}: not an lrl-harness results file (no schema {SCHEMA!r})")
    return _typed(_check_ours(data, path), path)


def write_results(path: Path, results: Results | dict) -> None:
    """Write ``results`` (a ``schema.Results``, or JSON data in our format, checked first) atomically."""
    if not hasattr(results, "model_dump"):
        as_results(results, path)
    write_json(path, results)


def _dump(model) -> dict:
    """A model's JSON data: what was read or set, nothing filled in by a default."""
    return model.model_dump(mode="json", by_alias=True, exclude_unset=True)


def _read_ours(path: Path) -> dict:
    data = read_json(path)
    if not is_ours(data):
        raise ResultsFileError(f"{path}: not an lrl-harness results file (no schema {SCHEMA!r})")
    return _check_ours(data, path)


def _check_ours(data: dict, path) -> dict:
    """``data`` with a readable version and a stages object, version 1 upgraded in place."""
    version = data.get("schema_version")
    if type(version) is not int or version not in READABLE_VERSIONS:
        raise ResultsFileError(f"{path}: schema version {version!r} is not supported "
                               f"(this lrl-harness reads {' and '.join(map(str, READABLE_VERSIONS))})")
    if not isinstance(data.get("stages"), dict):
        raise ResultsFileError(f"{path}: corrupt results file: 'stages' is missing or not an object")
    return upgrade_v1(data) if version == 1 else data


def _typed(data: dict, path) -> Results:
    from lrl_harness.results.schema import Results
    from pydantic import ValidationError

    try:
        return Results.model_validate(data)
    except ValidationError as exc:
        raise ResultsFileError(f"{path}: {describe_error(exc)}") from None


def validate_results(data: dict, path: Path | str = "results") -> None:
    """Check JSON data in our format against the declared schema (``schema.Results``): a wrong type
    raises ResultsFileError naming the field and the file."""
    as_results(data, path)


# --- errors in one line -------------------------------------------------------------------------

_WANT = {"float_type": "a number", "int_type": "an integer", "string_type": "a string", "bool_type": "true or false",
         "list_type": "a list", "tuple_type": "a list", "dict_type": "an object", "model_type": "an object",
         "model_attributes_type": "an object"}


def _where(loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _kind(value) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return repr(value)
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean",
            type(None): "null"}.get(type(value), type(value).__name__)


def describe_error(exc) -> str:
    """The first failure of ``exc`` (a pydantic ValidationError) in one line, naming the field, a wrong
    value before a missing key: ``x.y must be a number, not 'fast'``, ``x lacks total, correct``."""
    errors = exc.errors(include_url=False)
    wrong = [e for e in errors if e["type"] != "missing"]
    if not wrong:
        parent = errors[0]["loc"][:-1]
        missing = [str(e["loc"][-1]) for e in errors if e["loc"][:-1] == parent]
        return f"{_where(parent) or 'the file'} lacks {', '.join(missing)}"
    error = wrong[0]
    ctx = error.get("ctx", {})
    loc = (*error["loc"], ctx["field"]) if "field" in ctx else error["loc"]
    if error["type"] == "lacks":
        return f"{_where(loc) or 'the file'} {error['msg']}"
    value = ctx.get("value", error["input"])
    want = ctx.get("want") or _WANT.get(error["type"])
    if want is None:
        return f"{_where(loc)}: {error['msg']}"
    return f"{_where(loc)} must be {want}, not {_kind(value)}"


# --- version 1 ----------------------------------------------------------------------------------


def upgrade_v1(data: dict) -> dict:
    """A version-1 file as version 2, in place. Version 2 declares ``truncated`` in every score block
    (stages, their difficulties, benchmarked targets and load levels, parity engines): where a
    version-1 block lacks it, it is counted from the block's records (answers marked ``truncated`` or
    stopped at the token limit), or null where the records do not say."""
    blocks = list(data["stages"].values())
    for section, key in (("benchmarks", "backends"), ("parity", "backends")):
        owner = data.get(section)
        entries = owner.get(key) if isinstance(owner, dict) else None
        blocks += list(entries.values()) if isinstance(entries, dict) else []
    for block in list(blocks):
        levels = block.get("levels") if isinstance(block, dict) else None
        if isinstance(levels, dict):
            blocks += [b for b in levels.values() if isinstance(b, dict) and "load" in b]
    for block in blocks:
        _add_truncated(block)
    data["schema_version"] = 2
    return data


def _add_truncated(block, records=None) -> None:
    if not isinstance(block, dict):
        return
    records = block["results"] if isinstance(block.get("results"), list) else records
    block.setdefault("truncated", _truncated(records))
    by_difficulty = block.get("by_difficulty")
    if isinstance(by_difficulty, dict):
        for name, sub in by_difficulty.items():
            same = None if records is None else [r for r in records if isinstance(r, dict)
                                                 and r.get("difficulty", "UNKNOWN") == name]
            _add_truncated(sub, same)


def _truncated(records) -> int | None:
    """How many ``records`` were cut off, or None unless every record says whether it was."""
    if records is None or not all(isinstance(r, dict) and ("truncated" in r or "finish_reason" in r)
                                  for r in records):
        return None
    return sum(1 for r in records if r.get("truncated") is True or r.get("finish_reason") == "length")


# --- the original experiment's format -----------------------------------------------------------


def validate_original(data: dict, path: Path | str = "results") -> None:
    """Check a results file in the original experiment's format: stage -> {accuracy, results: [...]}."""
    from lrl_harness.results.schema import OriginalStage
    from pydantic import TypeAdapter, ValidationError

    try:
        TypeAdapter(dict[str, OriginalStage]).validate_python(data)
    except ValidationError as exc:
        raise ResultsFileError(f"{path}: {describe_error(exc)}") from None


def validate_any(path: Path) -> Any:
    """Read a results file of either format and check it; what a command is given is refused here in
    one line, never half-way through its work. Returns its JSON data (ours upgraded to version 2)."""
    data = read_json(path)
    if is_ours(data):
        _typed(_check_ours(data, path), path)
    elif (original := split_original(data)) is not None:
        validate_original(original[0], path)  # its stages; extras such as `metadata` are kept as they are
    return data
