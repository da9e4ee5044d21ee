"""An on-disk cache of teacher answers, so a stopped stage resumes without paying twice.

An entry is keyed by the full identity of a request: the teacher's ``cache_identity()`` (name,
model, every sampling parameter), the endpoint it talks to (the teacher's ``endpoint``, when it is
not the provider's own: the same model name behind a proxy or a compatible server gives other
answers), the request's purpose, the sha256 of the prompt and a sample index
(``request.context["sample"]``, 0 by default). Never by the prompt alone: a cache keyed by prompt
hands one model's answers to another (lm-evaluation-harness issues 2715 and 4063).

``read=False`` (``--refresh-cache``) asks the teacher again and overwrites what is stored.

Layout: ``<root>/<teacher>/<model>/<key[:2]>/<key>.json``, one file per answer, written to a
temporary file and renamed, so a crash leaves either the whole entry or none. Deleting a teacher's
or a model's folder clears just that part.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

from lrl_harness.api.contract import Completion, TeacherRequest, sha256_text
from lrl_harness.api.errors import CacheMissError, LrlError, TeacherError
from lrl_harness.results.files import atomic_write_text
from lrl_harness.util.paths import cache_dir

ENTRY_SCHEMA = "lrl-harness/teacher-cache"
ENTRY_VERSION = 1


def default_cache_root() -> Path:
    return cache_dir() / "teacher-responses"


def request_key(identity: dict, request: TeacherRequest) -> str:
    """The sha256 naming one request of one teacher configuration."""
    blob = json.dumps({"identity": identity, "purpose": request.purpose,
                       "prompt_sha256": sha256_text(request.prompt), "sample": sample_index(request)},
                      sort_keys=True, default=str)
    return sha256_text(blob)


def sample_index(request: TeacherRequest) -> int:
    """Which of several samples of the same prompt this is (``context["sample"]``, default 0)."""
    return int(request.context.get("sample", 0) or 0)


def _slug(text: str, limit: int = 64) -> str:
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("._") or "_"
    if len(slug) > limit:
        slug = f"{slug[:limit - 13]}-{sha256_text(text)[:12]}"
    return slug


class CachedTeacher:
    """Wraps any teacher; answers what the cache holds and asks the teacher for the rest.

    Cached completions come back with ``cached=True`` and cost nothing. With ``cache_only`` the
    first request the cache does not hold raises ``CacheMissError`` naming it, and the teacher is
    never called. Counters: ``hits``, ``misses``, ``requests_made`` (requests sent to the teacher).
    """

    def __init__(self, teacher: Any, cache_root: Path | str | None = None, cache_only: bool = False,
                 read: bool = True):
        identity = getattr(teacher, "cache_identity", None)
        if identity is None:
            raise LrlError(f"teacher {getattr(teacher, 'name', teacher)!r} has no cache_identity(); "
                           "its answers cannot be cached")
        if cache_only and not read:
            raise LrlError("--cache-only replays the cache and --refresh-cache ignores it: choose one")
        self.teacher = teacher
        self.identity: dict = dict(identity())
        self.endpoint: str | None = getattr(teacher, "endpoint", None)
        self.read = read
        self._key_identity = ({**self.identity, "endpoint": self.endpoint} if self.endpoint
                              else self.identity)
        self.cache_root = Path(cache_root) if cache_root is not None else default_cache_root()
        self.cache_only = cache_only
        self.name: str = teacher.name
        self.model: str = teacher.model
        self.is_language_model: bool = teacher.is_language_model
        self.hits = 0
        self.misses = 0
        self.requests_made = 0
        self._folder = (self.cache_root / _slug(str(self.identity.get("teacher", self.name)))
                        / _slug(str(self.identity.get("model", self.model))))

    # --- the Teacher interface ---------------------------------------------------------------

    def cache_identity(self) -> dict:
        return dict(self.identity)

    def info(self) -> dict:
        return {**self.teacher.info(), "cache": self.stats()}

    def stats(self) -> dict:
        return {"root": str(self.cache_root), "cache_only": self.cache_only, "hits": self.hits,
                "misses": self.misses, "requests_made": self.requests_made}

    def complete(self, requests: list[TeacherRequest]) -> list[Completion]:
        results: list[Completion | None] = [None] * len(requests)
        keys = [request_key(self._key_identity, r) for r in requests]
        to_ask: dict[str, list[int]] = {}  # key -> indexes of identical requests, asked once
        for i, (request, key) in enumerate(zip(requests, keys, strict=True)):
            entry = self._load(key) if self.read else None
            if entry is not None:
                self.hits += 1
                results[i] = entry
                continue
            if self.cache_only:
                raise CacheMissError(self._describe_miss(request))
            self.misses += 1
            to_ask.setdefault(key, []).append(i)
        if to_ask:
            unique = [indexes[0] for indexes in to_ask.values()]
            try:
                fresh = self.teacher.complete([requests[i] for i in unique])
            except TeacherError as exc:
                for j, completion in exc.completed.items():
                    self._store(keys[unique[j]], requests[unique[j]], completion)
                self.requests_made += len(exc.completed) + 1
                raise
            if len(fresh) != len(unique):
                raise LrlError(f"teacher {self.name!r} returned {len(fresh)} answers "
                               f"for {len(unique)} requests")
            self.requests_made += len(unique)
            for i, completion in zip(unique, fresh, strict=True):
                self._store(keys[i], requests[i], completion)
                for k in to_ask[keys[i]]:
                    results[k] = completion
        return results  # type: ignore[return-value]

    def close(self) -> None:
        close = getattr(self.teacher, "close", None)
        if close is not None:
            close()

    # --- storage -----------------------------------------------------------------------------

    def path_for(self, request: TeacherRequest) -> Path:
        """Where the answer to ``request`` is (or would be) stored."""
        return self._path(request_key(self._key_identity, request))

    def _path(self, key: str) -> Path:
        return self._folder / key[:2] / f"{key}.json"

    def _load(self, key: str) -> Completion | None:
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            data = entry["completion"]
            if entry.get("key") != key:
                return None
            return Completion(text=data["text"], prompt_tokens=data.get("prompt_tokens", 0),
                              completion_tokens=data.get("completion_tokens", 0),
                              latency_s=data.get("latency_s", 0.0), ttft_s=data.get("ttft_s"),
                              cached=True, meta=dict(data.get("meta") or {}))
        except (OSError, ValueError, KeyError, TypeError):
            return None  # absent, or unreadable: asked again and rewritten

    def _store(self, key: str, request: TeacherRequest, completion: Completion) -> None:
        data = asdict(completion)
        data.pop("cached", None)
        entry = {
            "schema": ENTRY_SCHEMA,
            "schema_version": ENTRY_VERSION,
            "key": key,
            "identity": self.identity,
            "endpoint": self.endpoint,
            "purpose": request.purpose,
            "problem_id": request.problem.id if request.problem is not None else None,
            "sample": sample_index(request),
            "prompt_sha256": sha256_text(request.prompt),
            "prompt": request.prompt,
            "stored_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "completion": data,
        }
        atomic_write_text(self._path(key), json.dumps(entry, indent=1, default=str) + "\n")

    def _describe_miss(self, request: TeacherRequest) -> str:
        problem = f" for problem {request.problem.id}" if request.problem is not None else ""
        sample = sample_index(request)
        return (f"not in the teacher cache (--cache-only): {self.name} model {self.model}, "
                f"{request.purpose} request{problem}"
                f"{f', sample {sample}' if sample else ''}, prompt sha256 {sha256_text(request.prompt)[:16]} "
                f"(cache: {self._folder})")


# --- what the cache holds -----------------------------------------------------------------------


def cache_contents(root: Path) -> list[dict]:
    """One row per teacher and model folder: entries and bytes."""
    rows = []
    if not root.is_dir():
        return rows
    for teacher in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for model in sorted(p for p in teacher.iterdir() if p.is_dir()):
            files = [f for f in model.rglob("*.json") if f.is_file()]
            rows.append({"teacher": teacher.name, "model": model.name, "entries": len(files),
                         "bytes": sum(f.stat().st_size for f in files), "path": str(model)})
    return rows


def clear_cached(root: Path, teacher: str | None = None, model: str | None = None) -> int:
    """Remove the cached answers of ``teacher`` (of its ``model`` only, when given), or of every teacher
    when ``teacher`` is None; return how many answers were removed."""
    if teacher is None:
        targets = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    else:
        target = root / _slug(teacher)
        if model:
            target = target / _slug(model)
        if not target.is_dir():
            raise LrlError(f"nothing cached for teacher {teacher!r}{f' model {model!r}' if model else ''}; "
                           "`lrl cache list` shows what is")
        targets = [target]
    entries = sum(1 for t in targets for f in t.rglob("*.json") if f.is_file())
    for target in targets:
        shutil.rmtree(target)
    return entries
