"""A run folder: the one place that knows where a run keeps what.

``lrl run --out DIR`` writes everything into ``DIR``; ``lrl export``, ``lrl bench --run`` and
``lrl report`` read from it. Every path of the layout is a property of :class:`RunDir`::

    config.json             the run's configuration and its hash (written first)
    results.json            the results (rewritten atomically after every stage)
    elapsed.json            seconds spent on the folder over every invocation
    .lock                   held by the one ``lrl run`` working in the folder
    checkpoints/<stage>.jsonl  one line per finished batch of a stage
    checkpoints/lora-training.pt  the training state, for resuming LoRA training
    journal.txt, journal.log, strategy_evolution.log, strategy.txt   the bootstrap's texts
    transfer.jsonl, transfer.json   the training pairs and their summary
    adapter/, training.json   the LoRA adapter and its training report
    merged/                 the adapter folded into the student
    export/                 the GGUF files
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
from pathlib import Path

from lrl_harness.api.errors import ConfigError, LrlError, ResultsFileError, RunLockedError, path_error
from lrl_harness.results.files import atomic_write_text, write_json
from lrl_harness.results.io import load_results


class RunDir:
    """The layout of one run folder, and the checks on it that need no run."""

    def __init__(self, root: Path):
        self.root = Path(root).absolute()  # subprocesses (the GGUF converter) run elsewhere

    # --- the layout --------------------------------------------------------------------------

    config = property(lambda self: self.root / "config.json")
    results = property(lambda self: self.root / "results.json")
    elapsed = property(lambda self: self.root / "elapsed.json")
    checkpoints = property(lambda self: self.root / "checkpoints")
    training_state = property(lambda self: self.checkpoints / "lora-training.pt")
    journal = property(lambda self: self.root / "journal.txt")
    journal_log = property(lambda self: self.root / "journal.log")
    strategy_evolution = property(lambda self: self.root / "strategy_evolution.log")
    strategy = property(lambda self: self.root / "strategy.txt")
    transfer_data = property(lambda self: self.root / "transfer.jsonl")
    transfer = property(lambda self: self.root / "transfer.json")
    adapter = property(lambda self: self.root / "adapter")
    training = property(lambda self: self.root / "training.json")
    merged = property(lambda self: self.root / "merged")
    export = property(lambda self: self.root / "export")

    def checkpoint(self, stage: str) -> Checkpoint:
        return Checkpoint(self.checkpoints / f"{stage}.jsonl")

    def lock(self) -> RunLock:
        return RunLock(self.root)

    def resolve(self, recorded: str) -> Path:
        """A path recorded in the results (relative to the folder, or to ``export/``, or absolute)."""
        path = Path(recorded)
        candidates = [path] if path.is_absolute() else [self.root / path, self.export / path, path]
        for candidate in candidates:
            if candidate.exists():
                return candidate
        raise LrlError(f"{self.root}: exported file {recorded} is missing")

    # --- checks ------------------------------------------------------------------------------

    def check_config(self, identity: dict, identity_hash: str) -> None:
        """Refuse a folder that holds a run of another configuration (read only)."""
        try:
            recorded = json.loads(self.config.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LrlError(f"{self.config}: corrupt run configuration; use a new --out folder") from None
        except OSError as exc:
            raise path_error(self.config, exc, "read") from None
        if not isinstance(recorded, dict) or not isinstance(recorded.get("config", {}), dict):
            raise LrlError(f"{self.config}: corrupt run configuration; use a new --out folder")
        if recorded.get("config_hash") != identity_hash:
            changed = sorted(k for k, v in identity.items() if recorded.get("config", {}).get(k) != v)
            raise ConfigError(
                f"{self.root} belongs to a different configuration (differs in: {', '.join(changed) or '?'}); "
                "use another --out folder")

    def refuse_foreign(self) -> None:
        """A folder given as ``--out`` must be new, empty, or hold an lrl-harness run."""
        if self.root.exists() and not self.root.is_dir():
            raise ConfigError(f"--out {self.root} is a file; give a folder")
        if (self.root.exists() and not self.config.exists()
                and any(p.name not in _BOOKKEEPING for p in self.root.iterdir())):
            raise ConfigError(f"{self.root} is not empty and holds no lrl-harness run; use another --out folder")

    def existing_results(self) -> dict | None:
        """The results already in the folder, read only (None when there are none or they are damaged)."""
        try:
            return load_results(self.results) if self.results.is_file() else None
        except ResultsFileError:
            return None

    def claim(self, identity: dict, identity_hash: str) -> None:
        """Create the folder and record the configuration it belongs to."""
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.config, {"config": identity, "config_hash": identity_hash})

    # --- time spent --------------------------------------------------------------------------

    def recorded_elapsed(self) -> float:
        try:
            return float(json.loads(self.elapsed.read_text(encoding="utf-8"))["elapsed_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0

    def record_elapsed(self, seconds: float) -> None:
        atomic_write_text(self.elapsed, json.dumps({"elapsed_s": seconds}) + "\n")


class Checkpoint:
    """Append-only JSON lines, one per finished batch; a line cut short by a crash is dropped.

    Each line is written with one ``write`` and fsynced, so a crash leaves whole lines and at most
    one cut-short last line. Loading keeps batches 1, 2, 3... in order, each once, and never a
    problem twice: a repeated batch or problem (a file written by two runs at once, before runs
    took a lock) is dropped and the file rewritten without it."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> list[dict]:
        if not self.path.exists():
            return []
        entries, good = [], []
        seen: set = set()
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            if not isinstance(entry, dict) or not isinstance(entry.get("records"), list):
                break
            if entry.get("batch") != len(entries) + 1:
                continue  # a batch already held (or out of order): dropped
            ids = [r.get("problem_id") for r in entry["records"] if isinstance(r, dict)]
            if len(ids) != len(entry["records"]) or seen.intersection(ids) or len(set(ids)) != len(ids):
                continue
            seen.update(ids)
            entries.append(entry)
            good.append(line)
        if sum(len(line.encode("utf-8")) for line in good) != self.path.stat().st_size:
            atomic_write_text(self.path, "".join(good))
        return entries

    def append(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(entry) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


class RunLock:
    """One ``lrl run`` per output folder: an exclusive ``flock`` on ``<out>/.lock``. The kernel drops
    it when the process ends, however it ends, so a killed run never leaves the folder locked."""

    NAME = ".lock"

    def __init__(self, out: Path):
        self.path = Path(out) / self.NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise path_error(self.path.parent, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunLockedError(f"{self.path.parent} is in use by another lrl run (pid {holder}); wait for it "
                                 "to finish, or use another --out folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


_BOOKKEEPING = {RunLock.NAME}
"""Files a folder may hold and still count as empty (a lock taken by a run refused afterwards)."""


def file_tree_sha256(root: Path) -> str:
    """One hash over every file under ``root`` (relative names and contents, sorted)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()
