"""Files written whole or not at all: atomic text and JSON writes, JSON reads, and checking a path can be written
before work starts. Used for every file the harness writes (results, run folders, caches, exports).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from lrl_harness.api.errors import LrlError, ResultsFileError, path_error


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
    """Write JSON data (or a results model) to ``path`` atomically, indented."""
    if hasattr(data, "model_dump"):
        data = data.model_dump(mode="json", by_alias=True, exclude_unset=True)
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False, default=json_default) + "\n")


def json_default(obj):
    if isinstance(obj, Path):
        return str(obj)
    if isinstance(obj, (set, tuple)):
        return list(obj)
    raise TypeError(f"cannot serialise {type(obj).__name__}")


def read_json(path: Path) -> Any:
    """The JSON data in ``path``; ResultsFileError in one line for a missing, unreadable or invalid file."""
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
