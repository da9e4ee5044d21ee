"""What ``lrl bench`` measures: a target (backend, model, options, label), parsed from
``--target BACKEND=MODEL,key=value`` and made unique and thread-pinned before measuring.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

from lrl_harness.api.contract import ModelSpec
from lrl_harness.api.errors import ConfigError

MODEL_FIELDS = ("name", "adapter", "tokenizer", "dtype")


class Target(NamedTuple):
    label: str
    backend: str
    model: ModelSpec
    options: dict
    batch: int = 1
    """Prompts per generate call: 1 asks one problem at a time; N > 1 measures batched throughput
    (each problem's latency is then the wall time of its batch)."""


def parse_target(text: str) -> Target:
    """``[LABEL:]BACKEND=MODEL[,key=value...]``, e.g. ``llamacpp=model-q8_0.gguf,n_threads=2`` or
    ``openai=my-model,base_url=http://127.0.0.1:8000/v1``. ``name``, ``adapter``, ``tokenizer`` and
    ``dtype`` describe the model; ``batch=N`` sends N prompts per call; the other keys are backend
    options."""
    head, sep, rest = text.partition("=")
    label, _, backend = head.rpartition(":")
    backend = backend.strip()
    model, *pairs = rest.split(",")
    if not sep or not backend or not model.strip():
        raise ConfigError(f"invalid target {text!r}: expected BACKEND=MODEL[,key=value...], "
                          "e.g. llamacpp=model.gguf,n_threads=2")
    spec_fields: dict[str, Any] = {}
    options: dict[str, Any] = {}
    batch = 1
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"invalid target {text!r}: option {pair!r} is not key=value")
        if key == "batch":
            batch = _value(value.strip())
            if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
                raise ConfigError(f"invalid target {text!r}: batch must be a positive integer, got {value!r}")
        elif key in MODEL_FIELDS:
            spec_fields[key] = value.strip()
        else:
            options[key] = _value(value.strip())
    return Target(label.strip() or backend, backend, ModelSpec(path=model.strip(), **spec_fields), options, batch)


def _value(text: str):
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def unique_labels(targets: Sequence[Target]) -> list[Target]:
    """Give targets that share a default label (their backend) the model's file name as well;
    two targets with the same explicit label are an error."""
    counts: dict[str, int] = {}
    for t in targets:
        counts[t.label] = counts.get(t.label, 0) + 1
    out = []
    for t in targets:
        if counts[t.label] > 1 and t.label == t.backend:
            t = t._replace(label=f"{t.backend}:{Path(t.model.path).name or t.model.path}")
        out.append(t)
    seen: set[str] = set()
    for t in out:
        if t.label in seen:
            raise ConfigError(f"two targets are labelled {t.label!r}; name them: LABEL:BACKEND=MODEL")
        seen.add(t.label)
    return out


def with_threads(targets: Sequence[Target], threads: Sequence[int] | None, registry) -> list[Target]:
    """Each target of a backend that declares CPU threads (``register(..., threads=...)``) once per
    thread count (labelled ``LABEL@Nt`` when there are several counts), with its thread option set
    (``"torch"``: the process's torch threads, set in the target's own process). A target that sets
    the option itself runs once, with its own count. GPU and server targets are left alone."""
    if not threads:
        return list(targets)
    out = []
    for t in targets:
        declared = registry.get("backend", t.backend).threads
        option = None if declared == "torch" else declared
        if declared is None:
            out.append(t)
        elif option in t.options:
            out.append(t._replace(options=t.options | {"_threads": t.options[option]}))
        else:
            for n in threads:
                label = f"{t.label}@{n}t" if len(threads) > 1 else t.label
                extra = {option: n} if option else {}
                out.append(t._replace(label=label, options=t.options | extra | {"_threads": n}))
    return out
