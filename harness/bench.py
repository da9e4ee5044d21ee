"""Benchmark backends on a task split: accuracy and speed of the same model on several engines.

Two modes. Without a load (the default), each target is loaded, warmed up on a few prompts that are
not counted, then asked every problem one at a time (through ``harness/evaluate.py``, which grades
each answer and builds its record), so latency is per problem and comparable across engines. With
``--concurrency`` and/or ``--request-rate`` (``harness/load.py``), every problem is sent under each
load level, and each level gets the full accuracy block, latency distributions (TTFT, ITL, TPOT, end
to end), throughput, errors, retries, the measured peak in flight, and a paired comparison of its
answers with those of the reference level (concurrency 1 when measured).

``lrl bench`` (``harness/commands.py``; a run's trained student: ``harness/trained.py``) runs each
target in its own process (spawned), in random order recorded in the results, with the same number
of CPU threads for every CPU target (or a ``--threads`` sweep), so load time, peak RSS and warm
state are the target's own. Every bench stores a comparability key (hardware and software
fingerprint); ``lrl check --latency-ratio`` refuses baselines measured on another key.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

from . import machine
from .contract import GenerationSettings, ModelSpec, Problem, sha256_text
from .errors import ConfigError, LrlError
from .evaluate import ask, generate, make_record, student_prompts
from .load import TIMING_DEFINITIONS, Level, measure_load
from .machine import cuda_torch, current_rss_mib, peak_rss_mib
from .metrics import difference, ratios, score_stage, sequential_spread, speed
from .progress import ProgressFn, silent

MODEL_FIELDS = ("name", "adapter", "tokenizer", "dtype")
"""Target options that describe the model (ModelSpec fields); every other option goes to the backend."""


class Target(NamedTuple):
    label: str
    backend: str
    model: ModelSpec
    options: dict
    batch: int = 1
    """Prompts per generate call: 1 asks one problem at a time; N > 1 measures batched throughput
    (each problem's latency is then the wall time of its batch)."""


# --- targets ----------------------------------------------------------------------------------


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


# --- measuring ----------------------------------------------------------------------------------


def run_bench(registry, task, problems: Sequence[Problem], targets: Sequence[Target], warmup: int = 2,
              repeats: int = 1, progress: ProgressFn | None = None, *,
              settings: GenerationSettings | None = None, strategy: str | None = None,
              prompts: Sequence[str] | None = None, preset: str | None = None,
              split: str | None = None, levels: Sequence[Level] | None = None, slo: dict | None = None,
              seed: int = 0, isolate: bool = False, order: str = "given",
              threads: Sequence[int] | None = None) -> dict:
    """Measure every target on ``problems`` and return the ``benchmarks`` section of a results file.

    ``prompts`` defaults to the task's student prompts (``evaluate.student_prompts``). Each problem is asked
    ``repeats`` times; the first answer is scored, every timing counts. ``levels``: load levels
    (``harness/load.py``) instead of one request at a time. ``isolate``: each target in its own
    spawned process (its task is rebuilt there from the installed plugins by name). ``order``:
    ``"given"`` or ``"random"`` (seeded). ``threads``: CPU threads for every CPU target, one
    measurement per value (a target's own thread option wins).
    """
    if not problems:
        raise LrlError("nothing to benchmark: no problems")
    if not targets:
        raise LrlError("nothing to benchmark: give at least one --target (or --run)")
    if warmup < 0 or repeats < 1:
        raise LrlError(f"warm-up must be >= 0 and repeats >= 1 (got {warmup} and {repeats})")
    if order not in ("given", "random"):
        raise ConfigError(f"order must be 'given' or 'random', got {order!r}")
    if threads is not None and (not threads or any(not isinstance(t, int) or t < 1 for t in threads)):
        raise ConfigError(f"threads must be positive integers, got {threads!r}")
    targets = unique_labels(targets)
    for t in targets:  # an unknown backend fails before anything slow starts
        registry.get("backend", t.backend)
    targets = with_threads(targets, threads, registry)
    settings = settings or GenerationSettings()
    prompts = list(prompts) if prompts is not None else student_prompts(task, problems, strategy)
    if len(prompts) != len(problems):
        raise LrlError(f"{len(prompts)} prompts for {len(problems)} problems")
    ordered = list(targets)
    if order == "random":
        random.Random(seed).shuffle(ordered)
    plan = {"warmup": warmup, "repeats": repeats, "levels": list(levels or []), "slo": dict(slo or {}),
            "seed": seed}
    measured = {}
    for target in ordered:
        if isolate:
            measured[target.label] = measure_isolated(getattr(task, "name", None), problems, prompts, target,
                                                      settings, plan, progress or silent)
        else:
            measured[target.label] = measure(registry, task, problems, prompts, target, settings, plan,
                                             progress or silent)
    backends = {t.label: measured[t.label] for t in targets}
    fingerprint = machine.fingerprint()
    fingerprint["threads_used"] = {label: e.get("threads") or e["info"].get("threads", e["info"].get("n_threads"))
                                   for label, e in backends.items()}
    bench = {
        "task": getattr(task, "name", None), "preset": preset, "split": split, "n": len(problems),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": settings.to_dict(), "strategy_in_prompt": strategy is not None,
        "strategy_sha256": sha256_text(strategy) if strategy is not None else None,
        "warmup": warmup, "repeats": repeats, "machine": fingerprint,
        "comparability": comparability_key(fingerprint),
        "isolated": isolate, "order": [t.label for t in ordered], "order_rule": order, "seed": seed,
        "threads": list(threads) if threads else None,
        "timing_definitions": TIMING_DEFINITIONS,
        "backends": backends, "ratios": ratios(backends),
    }
    if levels:
        bench["levels"] = [level.to_dict() | {"key": level.key} for level in levels]
        bench["slo"] = dict(slo or {})
    return bench


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


def comparability_key(fingerprint: dict) -> dict:
    """What must be equal for two benches' timings to be compared: CPU, cores, GPU, OS, Python, the
    packages that run the models, and the threads each target used. ``key`` is a short hash of them."""
    gpu = fingerprint.get("gpu") or {}
    fields_ = {
        "cpu": fingerprint.get("cpu"), "cores": fingerprint.get("cores"),
        "usable_cores": fingerprint.get("usable_cores"), "machine": fingerprint.get("machine"),
        "system": fingerprint.get("system"), "python": fingerprint.get("python"),
        "gpu": gpu.get("name") if isinstance(gpu, dict) else None,
        "packages": {k: v for k, v in (fingerprint.get("packages") or {}).items()
                     if k in ("torch", "transformers", "llama-cpp-python", "vllm", "lrl-harness")},
        "threads_used": fingerprint.get("threads_used"),
    }
    blob = json.dumps(fields_, sort_keys=True, default=str)
    return {"key": hashlib.sha256(blob.encode()).hexdigest()[:16], "fields": fields_}


def measure(registry, task, problems, prompts, target: Target, settings: GenerationSettings, plan: dict,
            progress: ProgressFn = silent) -> dict:
    """One target's entry, in this process: under load levels when the plan has them."""
    n_threads = target.options.get("_threads")
    target = target._replace(options={k: v for k, v in target.options.items() if k != "_threads"})
    if plan["levels"]:
        entry = measure_load(registry, task, problems, prompts, target, settings, plan, progress)
    else:
        entry = measure_target(registry, task, problems, prompts, target, settings, plan["warmup"],
                               plan["repeats"], progress)
    entry["threads"] = n_threads or entry["info"].get("threads") or entry["info"].get("n_threads")
    return entry


def measure_isolated(task_name: str | None, problems, prompts, target: Target, settings: GenerationSettings,
                     plan: dict, progress: ProgressFn = silent) -> dict:
    """``measure`` in a fresh spawned process: its load time, peak RSS and warm state are its own."""
    import multiprocessing

    if not task_name:
        raise LrlError("cannot measure in a separate process: the task has no name (use in-process mode)")
    context = multiprocessing.get_context("spawn")
    receive, send = context.Pipe(duplex=False)
    child = context.Process(target=_child_main, args=(send, task_name, list(problems), list(prompts), target,
                                                      settings, plan))  # not a daemon: vLLM starts workers
    with progress(f"bench {target.label} (own process)", 1) as advance:
        child.start()
        send.close()
        try:
            kind, payload = receive.recv()
        except EOFError:
            child.join()
            raise LrlError(f"{target.label}: the measuring process died (exit code {child.exitcode})") from None
        finally:
            child.join(timeout=30)
            if child.is_alive():
                child.terminate()
                child.join()
            receive.close()
        advance(1)
    if kind == "error":
        raise LrlError(payload)
    if kind == "crash":
        raise RuntimeError(f"{target.label}: {payload}")
    return payload


def _child_main(conn, task_name, problems, prompts, target: Target, settings, plan) -> None:
    n_threads = target.options.get("_threads")
    if n_threads:  # before anything imports torch or an OpenMP runtime
        for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ[var] = str(n_threads)
    try:
        from .plugins import Registry, make_plugin_manager

        registry = Registry(make_plugin_manager())
        if n_threads and registry.get("backend", target.backend).threads == "torch":
            import torch

            torch.set_num_threads(int(n_threads))
        task = registry.get("task", task_name).factory()
        entry = measure(registry, task, problems, prompts, target, settings, plan)
        entry["memory"]["note"] = ("peak RSS of this target's own process; RSS growth is from before loading to "
                                   "the end of the run; a server backend's memory is not seen here")
        conn.send(("ok", entry))
    except LrlError as exc:
        conn.send(("error", str(exc)))
    except Exception as exc:  # noqa: BLE001 - reported in the parent, which shows the traceback's line
        conn.send(("crash", f"{type(exc).__name__}: {exc}"))
    finally:
        conn.close()


def measure_target(registry, task, problems: Sequence[Problem], prompts: Sequence[str], target: Target,
                   settings: GenerationSettings, warmup: int = 2, repeats: int = 1,
                   progress: ProgressFn = silent) -> dict:
    """Load one target, warm it up, ask every problem one at a time; the benchmark entry for it."""
    torch = cuda_torch()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()
    rss_before = current_rss_mib()
    started = time.perf_counter()
    factory = registry.get("backend", target.backend).factory
    backend = factory(model=target.model, options=dict(target.options))
    load_s = time.perf_counter() - started
    try:
        info = backend.info()
        with progress(f"bench {target.label}", len(problems) * repeats) as advance:
            advance(0, note="warming up")
            for i in range(warmup):
                generate(backend, [prompts[i % len(prompts)]], settings)
            timings: list[list[tuple[float, Any]]] = [[] for _ in problems]
            for _ in range(repeats):
                correct = 0
                for call in ask(backend, task, problems, prompts, settings, size=target.batch):
                    for i, completion in enumerate(call.completions, start=call.start):
                        timings[i].append((call.wall_s, completion))
                    correct += sum(r["correct"] for r in call.records)
                    done = call.start + len(call.records)
                    advance(len(call.records), note=f"{correct}/{done} correct")
        elapsed = time.perf_counter() - started
        rss_loaded = current_rss_mib()
    finally:
        backend.close()
    # each problem's first answer, timed by the median wall time of its repeats
    records = [make_record(task, p, prompt, runs[0][1], statistics.median(wall for wall, _ in runs))
               for p, prompt, runs in zip(problems, prompts, timings, strict=True)]
    torch = cuda_torch()
    entry = {
        **score_stage(records),
        "label": target.label, "backend": target.backend, "model": asdict(target.model),
        "options": dict(target.options), "info": info,
        "load_s": round(load_s, 4), "elapsed_s": round(elapsed, 4),
        "warmup": warmup, "repeats": repeats, "batch": target.batch,
        **speed(timings, target.batch),
        "memory": {
            "peak_rss_mib": peak_rss_mib(),
            "rss_growth_mib": difference(rss_loaded, rss_before),
            "gpu_max_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch else None,
            "note": "peak RSS is this process's peak so far (earlier targets included); RSS growth is from "
                    "before loading to the end of the run; a server backend's memory is not seen here",
        },
        "inconsistent_repeats": sum(1 for runs in timings if len({c.text for _, c in runs}) > 1),
        "spread": sequential_spread(timings, repeats, target.batch),
        "results": records,
    }
    return entry


def results_to_update(path: Path, task: str, preset: str, split: str) -> dict:
    """The results file to write the benchmarks into: ``path``'s when it holds the same task, preset
    and split, else a new one."""
    from .results import load_results, new_results

    if not path.exists():
        return new_results(task=task, preset=preset, split=split, config={"command": "bench"})
    results = load_results(path)
    for key, value in (("task", task), ("preset", preset), ("split", split)):
        if results.get(key) not in (None, value):
            raise LrlError(f"{path} holds results for {key} {results[key]!r}, not {value!r}; "
                           "use another --out")
    return results
