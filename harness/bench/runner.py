"""Benchmark backends on a task split: accuracy and speed of the same model on several engines.

Two modes. Without a load (the default), each target is loaded, warmed up on a few prompts that are
not counted, then asked every problem one at a time (through ``evaluation/ask.py``, which grades
each answer and builds its record), so latency is per problem and comparable across engines. With
``--concurrency`` and/or ``--request-rate`` (``bench/load.py``), every problem is sent under each
load level, and each level gets the full accuracy block, latency distributions (TTFT, ITL, TPOT, end
to end), throughput, errors, retries, the measured peak in flight, and a paired comparison of its
answers with those of the reference level (concurrency 1 when measured).

``lrl bench`` (``cli/commands.py``; a run's trained student: ``bench/trained.py``) runs each
target in its own process (spawned), in random order recorded in the results, with the same number
of CPU threads for every CPU target (or a ``--threads`` sweep), so load time, peak RSS and warm
state are the target's own. Every bench stores a comparability key (hardware and software
fingerprint); ``lrl check --latency-ratio`` refuses baselines measured on another key.
"""


from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

from lrl_harness.api.contract import GenerationSettings, Problem, sha256_text
from lrl_harness.api.errors import ConfigError, LrlError
from lrl_harness.bench.isolation import measure_isolated
from lrl_harness.bench.load import TIMING_DEFINITIONS, Level
from lrl_harness.bench.measure import measure
from lrl_harness.bench.performance import ratios
from lrl_harness.bench.targets import Target, unique_labels, with_threads
from lrl_harness.evaluation.ask import student_prompts
from lrl_harness.results import machine
from lrl_harness.util.progress import ProgressFn, silent


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
    (``bench/load.py``) instead of one request at a time. ``isolate``: each target in its own
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


def results_to_update(path: Path, task: str, preset: str, split: str) -> dict:
    """The results file to write the benchmarks into: ``path``'s when it holds the same task, preset
    and split, else a new one."""
    from lrl_harness.results.io import load_results, new_results

    if not path.exists():
        return new_results(task=task, preset=preset, split=split, config={"command": "bench"})
    results = load_results(path)
    for key, value in (("task", task), ("preset", preset), ("split", split)):
        if results.get(key) not in (None, value):
            raise LrlError(f"{path} holds results for {key} {results[key]!r}, not {value!r}; "
                           "use another --out")
    return results
