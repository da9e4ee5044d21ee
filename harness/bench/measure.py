"""One target measured in this process: one request at a time (``measure_target``) or under load levels
(``bench/load.py``), inside the same memory, warm-up and timing envelope.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import asdict
from typing import Any

from lrl_harness.api.contract import GenerationSettings, Problem
from lrl_harness.bench.envelope import PEAK_NOTE, measurement
from lrl_harness.bench.load import measure_load
from lrl_harness.bench.performance import sequential_spread, speed
from lrl_harness.bench.targets import Target
from lrl_harness.evaluation.ask import ask, make_record
from lrl_harness.evaluation.statistics import score_stage
from lrl_harness.util.progress import ProgressFn, silent

"""Target options that describe the model (ModelSpec fields); every other option goes to the backend."""


# --- targets ----------------------------------------------------------------------------------


# --- measuring ----------------------------------------------------------------------------------


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


def measure_target(registry, task, problems: Sequence[Problem], prompts: Sequence[str], target: Target,
                   settings: GenerationSettings, warmup: int = 2, repeats: int = 1,
                   progress: ProgressFn = silent) -> dict:
    """Load one target, warm it up, ask every problem one at a time; the benchmark entry for it."""
    note = (f"{PEAK_NOTE}; RSS growth is from before loading to the end of the run; a server backend's "
            "memory is not seen here")
    with progress(f"bench {target.label}", len(problems) * repeats) as advance:
        with measurement(registry, target, prompts, settings, warmup, note,
                      on_warmup=lambda: advance(0, note="warming up")) as envelope:
            timings: list[list[tuple[float, Any]]] = [[] for _ in problems]
            for _ in range(repeats):
                correct = 0
                for call in ask(envelope.backend, task, problems, prompts, settings, size=target.batch):
                    for i, completion in enumerate(call.completions, start=call.start):
                        timings[i].append((call.wall_s, completion))
                    correct += sum(r["correct"] for r in call.records)
                    done = call.start + len(call.records)
                    advance(len(call.records), note=f"{correct}/{done} correct")
    # each problem's first answer, timed by the median wall time of its repeats
    records = [make_record(task, p, prompt, runs[0][1], statistics.median(wall for wall, _ in runs))
               for p, prompt, runs in zip(problems, prompts, timings, strict=True)]
    entry = {
        **score_stage(records),
        "label": target.label, "backend": target.backend, "model": asdict(target.model),
        "options": dict(target.options), "info": envelope.info,
        "load_s": round(envelope.load_s, 4), "elapsed_s": round(envelope.elapsed_s, 4),
        "warmup": warmup, "repeats": repeats, "batch": target.batch,
        **speed(timings, target.batch),
        "memory": envelope.memory,
        "inconsistent_repeats": sum(1 for runs in timings if len({c.text for _, c in runs}) > 1),
        "spread": sequential_spread(timings, repeats, target.batch),
        "results": records,
    }
    return entry


