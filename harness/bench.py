"""Benchmark backends on a task split: accuracy and speed of the same model on several engines.

Each target is loaded, warmed up on a few prompts that are not counted, then asked every problem
one at a time, so latency is per problem and comparable across engines. The command measures by
itself (wall clock around each ``generate`` call); backends add time to first token when they know it.
"""

from __future__ import annotations

import resource
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import asdict, fields, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import click

from . import machine
from .errors import ConfigError, LrlError
from .metrics import score_stage
from .results import load_results, new_results, write_json
from .types import GenerationSettings, ModelSpec, Problem, sha256_text

MODEL_FIELDS = ("name", "adapter", "tokenizer", "dtype")
"""Target options that describe the model (ModelSpec fields); every other option goes to the backend."""


class Target(NamedTuple):
    label: str
    backend: str
    model: ModelSpec
    options: dict


# --- targets ----------------------------------------------------------------------------------


def parse_target(text: str) -> Target:
    """``[LABEL:]BACKEND=MODEL[,key=value...]``, e.g. ``llamacpp=model-q8_0.gguf,n_threads=2`` or
    ``openai=my-model,base_url=http://127.0.0.1:8000/v1``. ``name``, ``adapter``, ``tokenizer`` and
    ``dtype`` describe the model; the other keys are backend options."""
    head, sep, rest = text.partition("=")
    label, _, backend = head.rpartition(":")
    backend = backend.strip()
    model, *pairs = rest.split(",")
    if not sep or not backend or not model.strip():
        raise ConfigError(f"invalid target {text!r}: expected BACKEND=MODEL[,key=value...], "
                          "e.g. llamacpp=model.gguf,n_threads=2")
    spec_fields: dict[str, Any] = {}
    options: dict[str, Any] = {}
    for pair in pairs:
        key, eq, value = pair.partition("=")
        key = key.strip()
        if not eq or not key:
            raise ConfigError(f"invalid target {text!r}: option {pair!r} is not key=value")
        if key in MODEL_FIELDS:
            spec_fields[key] = value.strip()
        else:
            options[key] = _value(value.strip())
    return Target(label.strip() or backend, backend, ModelSpec(path=model.strip(), **spec_fields), options)


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


@contextmanager
def _silent(description: str, total: int | None):
    yield lambda n=1, **_: None


Progress = Callable[[str, int], Any]
"""``progress(description, total)``: a context manager yielding ``advance(n=1, note=None)``
(``lrl_harness.progress.UI.task`` is one)."""


def run_bench(registry, task, problems: Sequence[Problem], targets: Sequence[Target], warmup: int = 2,
              repeats: int = 1, progress: Progress | None = None, *,
              settings: GenerationSettings | None = None, strategy: str | None = None,
              prompts: Sequence[str] | None = None, preset: str | None = None,
              split: str | None = None) -> dict:
    """Measure every target on ``problems`` and return the ``benchmarks`` section of a results file.

    ``prompts`` defaults to ``task.student_prompt(problem, strategy)``. Each problem is asked
    ``repeats`` times; the first answer is scored, every timing counts.
    """
    if not problems:
        raise LrlError("nothing to benchmark: no problems")
    if not targets:
        raise LrlError("nothing to benchmark: give at least one --target (or --run)")
    if warmup < 0 or repeats < 1:
        raise LrlError(f"warm-up must be >= 0 and repeats >= 1 (got {warmup} and {repeats})")
    targets = unique_labels(targets)
    for t in targets:  # an unknown backend fails before anything slow starts
        registry.get("backend", t.backend)
    settings = settings or GenerationSettings()
    prompts = list(prompts) if prompts is not None else [task.student_prompt(p, strategy) for p in problems]
    if len(prompts) != len(problems):
        raise LrlError(f"{len(prompts)} prompts for {len(problems)} problems")
    backends = {t.label: measure_target(registry, task, problems, prompts, t, settings, warmup, repeats,
                                        progress or _silent) for t in targets}
    fingerprint = machine.fingerprint()
    fingerprint["threads_used"] = {label: e["info"].get("threads", e["info"].get("n_threads"))
                                   for label, e in backends.items()}
    return {
        "task": getattr(task, "name", None), "preset": preset, "split": split, "n": len(problems),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "settings": settings.to_dict(), "strategy_in_prompt": strategy is not None,
        "strategy_sha256": sha256_text(strategy) if strategy is not None else None,
        "warmup": warmup, "repeats": repeats, "machine": fingerprint,
        "backends": backends, "ratios": ratios(backends),
    }


def measure_target(registry, task, problems: Sequence[Problem], prompts: Sequence[str], target: Target,
                   settings: GenerationSettings, warmup: int = 2, repeats: int = 1,
                   progress: Progress = _silent) -> dict:
    """Load one target, warm it up, ask every problem one at a time; the benchmark entry for it."""
    torch = _cuda_torch()
    if torch is not None:
        torch.cuda.reset_peak_memory_stats()
    rss_before = _current_rss_mib()
    started = time.perf_counter()
    factory = registry.get("backend", target.backend).factory
    backend = factory(model=target.model, options=dict(target.options))
    load_s = time.perf_counter() - started
    try:
        info = backend.info()
        with progress(f"bench {target.label}", len(problems) * repeats) as advance:
            advance(0, note="warming up")
            for i in range(warmup):
                backend.generate([prompts[i % len(prompts)]], settings)
            timings: list[list[tuple[float, Any]]] = [[] for _ in problems]
            for _ in range(repeats):
                correct = 0
                for i, (problem, prompt) in enumerate(zip(problems, prompts, strict=True)):
                    t0 = time.perf_counter()
                    [completion] = backend.generate([prompt], settings)
                    timings[i].append((time.perf_counter() - t0, completion))
                    correct += task.extract_answer(timings[i][0][1].text) == problem.expected
                    advance(1, note=f"{correct}/{i + 1} correct")
        elapsed = time.perf_counter() - started
        rss_loaded = _current_rss_mib()
    finally:
        backend.close()
    records = [_record(task, p, prompt, runs)
               for p, prompt, runs in zip(problems, prompts, timings, strict=True)]
    torch = _cuda_torch()
    entry = {
        **score_stage(records),
        "label": target.label, "backend": target.backend, "model": asdict(target.model),
        "options": dict(target.options), "info": info,
        "load_s": round(load_s, 4), "elapsed_s": round(elapsed, 4),
        "warmup": warmup, "repeats": repeats,
        **speed(timings),
        "memory": {
            "peak_rss_mib": _peak_rss_mib(),
            "rss_growth_mib": _difference(rss_loaded, rss_before),
            "gpu_max_allocated_mib": round(torch.cuda.max_memory_allocated() / 2**20, 1) if torch else None,
            "note": "peak RSS is this process's peak so far (earlier targets included); RSS growth is from "
                    "before loading to the end of the run; a server backend's memory is not seen here",
        },
        "inconsistent_repeats": sum(1 for runs in timings if len({c.text for _, c in runs}) > 1),
        "results": records,
    }
    return entry


def _record(task, problem: Problem, prompt: str, runs: list[tuple[float, Any]]) -> dict:
    """The first answer, timed by the median wall time of its repeats."""
    return make_record(task, problem, prompt, runs[0][1], statistics.median(wall for wall, _ in runs))


def make_record(task, problem: Problem, prompt: str, completion, latency_s: float | None = None) -> dict:
    """The results-file record of one answered problem (``latency_s`` defaults to the backend's)."""
    answer = task.extract_answer(completion.text)
    describe = getattr(task, "describe", None)
    latency = completion.latency_s if latency_s is None else latency_s
    return {
        "problem_id": problem.id, "difficulty": problem.difficulty,
        "problem": describe(problem) if describe else str(problem.data),
        "expected": problem.expected, "answer": answer, "correct": answer == problem.expected,
        "response": completion.text, "prompt_sha256": sha256_text(prompt),
        "prompt_tokens": completion.prompt_tokens, "completion_tokens": completion.completion_tokens,
        "latency_s": round(latency, 6),
        "ttft_s": None if completion.ttft_s is None else round(completion.ttft_s, 6),
    }


def speed(timings: list[list[tuple[float, Any]]]) -> dict:
    """Latency and throughput over every timed call (all repeats).

    Prefill speed is prompt tokens over time to first token; decode speed is the tokens after the
    first over the time after it. Both need the backend's time to first token and are None without it.
    """
    calls = [(wall, c) for runs in timings for wall, c in runs]
    walls = [wall for wall, _ in calls]
    ttfts = [c.ttft_s for _, c in calls if c.ttft_s is not None]
    with_ttft = [(wall, c) for wall, c in calls if c.ttft_s is not None]
    prefill_s = sum(c.ttft_s for _, c in with_ttft)
    decode_s = sum(wall - c.ttft_s for wall, c in with_ttft)
    decoded = sum(max(c.completion_tokens - 1, 0) for _, c in with_ttft)
    total_s = sum(walls)
    return {
        "latency": {"mean_s": _r(statistics.fmean(walls)), "p50_s": _r(statistics.median(walls)),
                    "p95_s": _r(percentile(walls, 95)), "min_s": _r(min(walls)), "max_s": _r(max(walls))},
        "ttft": {"mean_s": _r(statistics.fmean(ttfts)) if ttfts else None,
                 "p50_s": _r(statistics.median(ttfts)) if ttfts else None},
        "throughput": {
            "prefill_tokens_per_s": _rate(sum(c.prompt_tokens for _, c in with_ttft), prefill_s) if with_ttft
            else None,
            "decode_tokens_per_s": _rate(decoded, decode_s) if with_ttft else None,
            "output_tokens_per_s": _rate(sum(c.completion_tokens for _, c in calls), total_s),
            "problems_per_s": _rate(len(calls), total_s),
        },
        "tokens": {"prompt": sum(c.prompt_tokens for _, c in calls),
                   "completion": sum(c.completion_tokens for _, c in calls)},
    }


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def ratios(backends: dict) -> dict:
    """``"A/B"`` for every pair measured in the same run: latency (above 1: A is slower) and
    problems per second (above 1: A gets through more)."""
    labels = list(backends)
    out = {}
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            la, lb = backends[a]["latency"], backends[b]["latency"]
            ta, tb = backends[a]["throughput"], backends[b]["throughput"]
            out[f"{a}/{b}"] = {
                "latency_mean": _ratio(la["mean_s"], lb["mean_s"]),
                "latency_p50": _ratio(la["p50_s"], lb["p50_s"]),
                "problems_per_s": _ratio(ta["problems_per_s"], tb["problems_per_s"]),
            }
    return out


def _r(x: float) -> float:
    return round(x, 6)


def _rate(amount: float, seconds: float) -> float | None:
    return round(amount / seconds, 3) if seconds > 0 else None


def _ratio(a, b) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def _difference(a, b):
    return None if a is None or b is None else round(a - b, 1)


def _cuda_torch():
    """torch, when something already imported it and CUDA is up; never imports it."""
    torch = sys.modules.get("torch")
    return torch if torch is not None and torch.cuda.is_available() else None


def _peak_rss_mib() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)  # bytes on macOS, KiB on Linux


def _current_rss_mib() -> float | None:
    try:
        with open("/proc/self/statm", encoding="ascii") as fh:
            pages = int(fh.read().split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return round(pages * resource.getpagesize() / 2**20, 1)


# --- a trained run's student -------------------------------------------------------------------


def run_targets(run_dir: Path, results: dict, verify: bool = True) -> list[Target]:
    """The run's trained student on every engine it was exported for: the merged Hugging Face model
    (or base model plus adapter) on transformers, each exported GGUF model on llamacpp. A run exported
    without GGUF files is benchmarked on transformers only."""
    export = results.get("export") if isinstance(results.get("export"), dict) else {}
    targets = []
    merged = export.get("merged_dir")
    lora_who = ((results.get("stages") or {}).get("lora") or {}).get("who") or {}
    if merged:
        targets.append(Target("transformers", "transformers", ModelSpec(str(_resolve(run_dir, merged))), {}))
    elif lora_who.get("path") and lora_who.get("adapter"):
        in_run = run_dir / "adapter"
        adapter_dir = str(in_run if in_run.is_dir() else _resolve(run_dir, lora_who["adapter"]))
        spec = ModelSpec(lora_who["path"], adapter=adapter_dir)
        targets.append(Target("transformers", "transformers", spec, {}))
    files = export.get("files") or {}
    adapters = [e for e in files.values() if e.get("kind") == "lora"]
    adapter = str(_checked(run_dir, adapters[0], verify)) if adapters else None
    tokenizer = str(_resolve(run_dir, merged)) if merged else None
    for name, entry in files.items():
        if entry.get("kind", "model") != "model" or not str(entry.get("path", "")).endswith(".gguf"):
            continue
        path = _checked(run_dir, entry, verify)
        targets.append(Target(f"llamacpp:{entry.get('quant') or name}", "llamacpp",
                              ModelSpec(str(path), adapter=adapter, tokenizer=tokenizer), {}))
    if not targets:
        raise LrlError(f"{run_dir}: the run has no trained student to benchmark (no lora stage, no export)")
    return targets


def _resolve(run_dir: Path, path: str) -> Path:
    """Export paths are relative to the run folder or its ``export`` folder; other recorded paths may be
    relative to where the run was started."""
    candidates = [Path(path)] if Path(path).is_absolute() else [run_dir / path, run_dir / "export" / path,
                                                                  Path(path)]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise LrlError(f"{run_dir}: exported file {path} is missing")


def _checked(run_dir: Path, entry: dict, verify: bool) -> Path:
    path = _resolve(run_dir, entry["path"])
    if verify and entry.get("sha256"):
        from .export import sha256_file

        if sha256_file(path) != entry["sha256"]:
            raise LrlError(f"{path}: sha256 differs from the run's export record; the file changed since")
    return path


def run_strategy(results: dict) -> str | None:
    """The strategy text the run's student saw in its prompt, or None when it saw none."""
    lora = (results.get("stages") or {}).get("lora") or {}
    flags = [(section or {}).get("strategy_in_prompt")
             for section in (results.get("config"), lora.get("who"), results.get("transfer"))]
    in_prompt = next((f for f in flags if f is not None), True)
    if not in_prompt:
        return None
    provenance = results.get("provenance") or {}
    strategy = provenance.get("strategy")
    if isinstance(strategy, dict):
        strategy = strategy.get("text")
    if not isinstance(strategy, str):
        raise LrlError("the run's student saw the learned strategy in its prompt, but results.json does not "
                       "record the strategy text (provenance.strategy)")
    recorded = provenance.get("strategy_sha256")
    if recorded and recorded != sha256_text(strategy):
        raise LrlError("results.json is inconsistent: provenance.strategy does not match strategy_sha256")
    return strategy


def run_settings(results: dict) -> GenerationSettings:
    """The generation settings the run's trained student was evaluated with (defaults without a run)."""
    lora = (results.get("stages") or {}).get("lora") or {}
    recorded = dict((lora.get("who") or {}).get("settings") or {})
    if not recorded and (results.get("config") or {}).get("max_new_tokens"):
        recorded = {"max_new_tokens": results["config"]["max_new_tokens"]}
    known = {f.name for f in fields(GenerationSettings)}
    recorded = {k: v for k, v in recorded.items() if k in known}
    if "stop" in recorded:
        recorded["stop"] = tuple(recorded["stop"])
    return GenerationSettings(**recorded)


def check_prompts_match_run(results: dict, problems: Sequence[Problem], prompts: Sequence[str], task) -> int:
    """How many of ``prompts`` match the prompt the run's trained student was asked for the same problem;
    LrlError when any differs (a benchmark of other prompts would not measure that student)."""
    lora = (results.get("stages") or {}).get("lora") or {}
    describe = getattr(task, "describe", None)
    recorded = {(r.get("problem_id"), r.get("problem")): r.get("prompt_sha256")
                for r in lora.get("results") or []}
    checked = differ = 0
    for problem, prompt in zip(problems, prompts, strict=True):
        sha = recorded.get((problem.id, describe(problem) if describe else None))
        if sha is None:
            continue
        checked += 1
        differ += sha != sha256_text(prompt)
    if differ:
        raise LrlError(f"the prompts built here differ from the run's on {differ} of {checked} problems "
                       "(a chat template or another prompt version?); not benchmarking a different input")
    return checked


# --- the command ------------------------------------------------------------------------------


@click.command("bench")
@click.option("--task", "task_name", help="Task (default: the run's, else meeting-rooms).")
@click.option("--preset", help="Problem preset (default: the run's, else balanced).")
@click.option("--split", help="Split (default: the run's, else test).")
@click.option("--n", type=int, help="How many problems (default: the run's test size, else the split's).")
@click.option("--target", "target_texts", multiple=True, metavar="[LABEL:]BACKEND=MODEL[,k=v...]",
              help="A backend and model to measure (repeatable), e.g. llamacpp=model.gguf,n_threads=2.")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path),
              help="A run folder: benchmark its trained student (merged model on transformers, GGUF files "
                   "on llamacpp) with the prompts it was trained on.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Results JSON to write the 'benchmarks' section into (created, or updated in place).")
@click.option("--warmup", type=int, default=2, show_default=True,
              help="Uncounted warm-up prompts per target.")
@click.option("--repeats", type=int, default=1, show_default=True, help="Times each problem is asked.")
@click.option("--max-new-tokens", type=int, help="Generation limit (default: the run's, else 128).")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.pass_context
def bench_command(ctx, task_name, preset, split, n, target_texts, run_dir, out_file, warmup, repeats,
                  max_new_tokens, quiet):
    """Measure accuracy, latency, throughput and memory of one model on several backends."""
    from .progress import UI
    from .report import benchmark_tables, print_tables

    registry = _registry(ctx)
    run = load_results(run_dir / "results.json") if run_dir else {}
    config = run.get("config") or {}
    task_name = task_name or run.get("task") or "meeting-rooms"
    preset = preset or run.get("preset") or "balanced"
    split = split or run.get("split") or "test"
    task = registry.get("task", task_name).factory()
    seed = ((run.get("provenance") or {}).get("seeds") or {}).get(split) if run else None
    problems = task.problems(preset, split, n if n is not None else config.get(f"{split}_n"), seed)
    targets = [parse_target(t) for t in target_texts]
    strategy = None
    if run_dir:
        targets = run_targets(run_dir, run) + targets
        strategy = run_strategy(run)
    prompts = [task.student_prompt(p, strategy) for p in problems]
    ui = UI(quiet=quiet)
    if run_dir:
        checked = check_prompts_match_run(run, problems, prompts, task)
        ui.say(f"prompts identical to the run's on {checked} of {len(problems)} problems" if checked else
               "prompts not checked against the run's (no common problems)")
    settings = run_settings(run)
    if max_new_tokens:
        settings = replace(settings, max_new_tokens=max_new_tokens)
    bench = run_bench(registry, task, problems, targets, warmup=warmup, repeats=repeats, progress=ui.task,
                      settings=settings, strategy=strategy, prompts=prompts, preset=preset, split=split)
    if run_dir:
        bench["run"] = str(run_dir)
    results = _results_to_update(out_file, task_name, preset, split)
    results["benchmarks"] = bench
    write_json(out_file, results)
    print_tables(benchmark_tables(results))
    click.echo(f"wrote {out_file}")


def _registry(ctx: click.Context):
    """The registry of the ``lrl`` command this runs under, else one built from the installed plugins."""
    registry = getattr(ctx.find_root().obj, "registry", None)
    if registry is None:
        from .plugins import Registry, make_plugin_manager

        registry = Registry(make_plugin_manager())
    return registry


def _results_to_update(path: Path, task: str, preset: str, split: str) -> dict:
    if not path.exists():
        return new_results(task=task, preset=preset, split=split, config={"command": "bench"})
    results = load_results(path)
    for key, value in (("task", task), ("preset", preset), ("split", split)):
        if results.get(key) not in (None, value):
            raise LrlError(f"{path} holds results for {key} {results[key]!r}, not {value!r}; "
                           "use another --out")
    return results
