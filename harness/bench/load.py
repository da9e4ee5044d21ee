"""Load generation and its metrics: every problem of a split sent under a fixed concurrency or at a
Poisson request rate, and what that load did to latency, throughput and errors.

Timing definitions (the same for every backend; ``TIMING_DEFINITIONS`` is stored in the results):
a request starts when the load generator hands it to the backend (after it got a concurrency slot or
its arrival time came; waiting for a slot is not counted). That start includes everything the backend
does before the first token: tokenisation, the HTTP request, the server's queue, prefill.
"""

from __future__ import annotations

import asyncio
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from lrl_harness.api.contract import Completion, GenerationSettings, Problem
from lrl_harness.api.errors import ConfigError, LrlError
from lrl_harness.bench.envelope import PEAK_NOTE, measurement
from lrl_harness.bench.performance import distribution, rate, rounded, spread
from lrl_harness.evaluation.ask import generate, make_record
from lrl_harness.evaluation.statistics import paired_comparison, score_stage
from lrl_harness.util.progress import ProgressFn, silent

if TYPE_CHECKING:
    from lrl_harness.bench.targets import Target

TIMING_DEFINITIONS = {
    "start": "the load generator hands the request to the backend (a slot is free or its arrival time came); "
             "waiting for a concurrency slot is not counted",
    "ttft": "start -> the first non-empty piece of output text reaches the harness (includes tokenisation, "
            "HTTP, server queueing, prefill and the first token; retries of the request are included)",
    "e2e": "start -> the whole answer is in the harness (the harness's wall clock around the backend call)",
    "itl": "gap between the arrival of consecutive pieces of output text of one request (streamed chunks; "
           "servers send about one token per chunk), pooled over requests",
    "tpot": "per request (e2e - ttft) / (output tokens - 1), for requests of at least 2 output tokens",
    "output_tokens": "the server's usage when it reports it, else counted by the harness (stream chunks or "
                     "the student's tokenizer); the source is recorded per level",
    "requests_per_s": "requests answered without error / wall time of the level (first start to last end)",
    "peak_in_flight": "the most requests between start and end at the same moment, measured by the harness",
}


@dataclass
class Level:
    """One load level: ``concurrency`` requests at most in flight, and/or Poisson arrivals at ``rate``/s."""

    concurrency: int | None = None
    rate: float | None = None

    @property
    def key(self) -> str:
        parts = []
        if self.rate is not None:
            parts.append(f"rate={self.rate:g}")
        if self.concurrency is not None:
            parts.append(f"c={self.concurrency}")
        return ",".join(parts) or "c=1"

    def to_dict(self) -> dict:
        return {"concurrency": self.concurrency, "request_rate": self.rate}


@dataclass
class RequestOutcome:
    index: int
    start_s: float
    end_s: float
    completion: Any = None
    error: str | None = None
    retries: int = 0

    @property
    def e2e_s(self) -> float:
        return self.end_s - self.start_s


@dataclass
class LoadRun:
    outcomes: list[RequestOutcome]
    wall_s: float
    peak_in_flight: int
    level: Level
    extra: dict = field(default_factory=dict)


def parse_levels(concurrency: str | None, request_rate: str | None) -> list[Level]:
    """``--concurrency 1,4,16`` and/or ``--request-rate 2,8``: one level per value (a rate with a single
    concurrency value is capped by it). ConfigError, one line, on anything else."""
    concurrencies = positive_numbers("--concurrency", concurrency, int) if concurrency is not None else []
    rates = positive_numbers("--request-rate", request_rate, float) if request_rate is not None else []
    if rates and len(concurrencies) > 1:
        raise ConfigError("--request-rate takes at most one --concurrency value (the cap on requests in flight)")
    if rates:
        cap = concurrencies[0] if concurrencies else None
        return [Level(concurrency=cap, rate=r) for r in rates]
    return [Level(concurrency=c) for c in concurrencies]


def positive_numbers(option: str, text: str, kind) -> list:
    """``N[,N...]`` as distinct positive numbers of ``kind``; ConfigError naming ``option`` otherwise."""
    values = []
    for part in str(text).split(","):
        try:
            value = kind(part.strip())
        except ValueError:
            raise ConfigError(f"{option} takes comma-separated positive {'integers' if kind is int else 'numbers'}, "
                              f"got {text!r}") from None
        if not value > 0 or (kind is float and not math.isfinite(value)):
            raise ConfigError(f"{option} values must be positive, got {part.strip()!r}")
        values.append(value)
    if len(set(values)) != len(values):
        raise ConfigError(f"{option} lists a value twice: {text!r}")
    return values


def parse_slo(text: str | None) -> dict[str, float]:
    """``ttft=0.5,e2e=5`` (seconds; keys ttft, e2e, tpot, itl) -> {"ttft": 0.5, "e2e": 5.0}."""
    if text is None:
        return {}
    slo = {}
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in ("ttft", "e2e", "tpot", "itl"):
            raise ConfigError(f"--slo takes key=seconds pairs with keys ttft, e2e, tpot, itl; got {part.strip()!r}")
        try:
            seconds = float(value)
        except ValueError:
            raise ConfigError(f"--slo {key} must be a number of seconds, got {value.strip()!r}") from None
        if not seconds > 0 or not math.isfinite(seconds):
            raise ConfigError(f"--slo {key} must be positive, got {value.strip()!r}")
        slo[key] = seconds
    return slo


async def drive(send: Callable[[int], Awaitable[Any]], n: int, level: Level, seed: int = 0,
                on_done: Callable[[RequestOutcome], Any] | None = None) -> LoadRun:
    """Send requests ``0..n-1`` through ``send(index)`` under ``level``; errors (LrlError) are recorded
    per request, anything else propagates. Arrivals of a rate level are drawn from ``random.Random(seed)``."""
    gate = asyncio.Semaphore(level.concurrency) if level.concurrency else None
    in_flight = peak = 0
    outcomes: list[RequestOutcome | None] = [None] * n
    began = time.perf_counter()

    async def one(index: int, arrival: float) -> None:
        nonlocal in_flight, peak
        if arrival:
            await asyncio.sleep(max(0.0, began + arrival - time.perf_counter()))
        if gate is not None:
            await gate.acquire()
        in_flight += 1
        peak = max(peak, in_flight)
        start = time.perf_counter()
        completion, error = None, None
        try:
            completion = await send(index)
        except LrlError as exc:
            error = str(exc)
        finally:
            end = time.perf_counter()
            in_flight -= 1
            if gate is not None:
                gate.release()
        retries = (getattr(completion, "meta", None) or {}).get("retries", 0) if completion is not None else 0
        outcome = RequestOutcome(index, start - began, end - began, completion, error, retries)
        outcomes[index] = outcome
        if on_done is not None:
            on_done(outcome)

    arrivals = [0.0] * n
    if level.rate:
        rng, t = random.Random(seed), 0.0
        for i in range(n):
            arrivals[i] = t
            t += rng.expovariate(level.rate)
    tasks = [asyncio.ensure_future(one(i, arrivals[i])) for i in range(n)]
    try:
        await asyncio.gather(*tasks)
    except BaseException:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    done = [o for o in outcomes if o is not None]
    wall = max(o.end_s for o in done) - min(o.start_s for o in done) if done else 0.0
    return LoadRun(done, wall, peak, level)


# --- metrics ------------------------------------------------------------------------------------


def request_times(outcome: RequestOutcome) -> dict:
    """ttft, tpot and the inter-token gaps of one answered request (None where not measurable)."""
    c = outcome.completion
    ttft = getattr(c, "ttft_s", None)
    tokens = int(getattr(c, "completion_tokens", 0) or 0)
    tpot = (outcome.e2e_s - ttft) / (tokens - 1) if ttft is not None and tokens > 1 else None
    times = (getattr(c, "meta", None) or {}).get("token_times_s") or []
    gaps = [b - a for a, b in zip(times, times[1:])]
    return {"ttft": ttft, "tpot": tpot, "itl": gaps}


def load_metrics(run: LoadRun, correct: Sequence[bool] | None = None, slo: dict | None = None) -> dict:
    """The figures of one load level: latency distributions, throughput, errors, retries, measured
    peak in flight and, with an SLO, goodput (``correct[i]``: request i's answer was right)."""
    ok = [o for o in run.outcomes if o.error is None]
    times = {o.index: request_times(o) for o in ok}
    ttfts = [t["ttft"] for t in times.values() if t["ttft"] is not None]
    tpots = [t["tpot"] for t in times.values() if t["tpot"] is not None]
    itls = [g for t in times.values() for g in t["itl"]]
    output_tokens = sum(int(o.completion.completion_tokens or 0) for o in ok)
    sources = sorted({(o.completion.meta or {}).get("usage_source", "backend") for o in ok})
    errors = [o for o in run.outcomes if o.error is not None]
    out = {
        "level": run.level.to_dict(), "requests": len(run.outcomes), "errors": len(errors),
        "error_examples": sorted({o.error for o in errors})[:3],
        "retries": sum(o.retries for o in run.outcomes),
        "peak_in_flight": run.peak_in_flight, "wall_s": rounded(run.wall_s),
        "e2e": distribution([o.e2e_s for o in ok]), "ttft": distribution(ttfts),
        "itl": distribution(itls), "tpot": distribution(tpots),
        "requests_per_s": rate(len(ok), run.wall_s), "output_tokens_per_s": rate(output_tokens, run.wall_s),
        "output_tokens": output_tokens, "token_source": sources,
    }
    if slo:
        within = [o.error is None and _within(o, times[o.index], slo) for o in run.outcomes]
        good_correct = [w and bool(correct[o.index]) for w, o in zip(within, run.outcomes)] if correct else []
        out["goodput"] = {
            "slo": dict(slo),
            "share_of_requests": rounded(sum(within) / len(within)) if within else None,
            "share_correct_within_slo": rounded(sum(good_correct) / len(within)) if correct and within else None,
            "requests_per_s": rate(sum(within), run.wall_s),
        }
    return out


def _within(outcome: RequestOutcome, times: dict, slo: dict) -> bool:
    measured = {"ttft": times["ttft"], "tpot": times["tpot"], "e2e": outcome.e2e_s,
                "itl": max(times["itl"]) if times["itl"] else None}
    for key, limit in slo.items():
        value = measured[key]
        if value is None and key in ("ttft", "e2e"):
            return False  # not measured (no streaming): not shown to be within
        if value is not None and value > limit:
            return False
    return True


# --- one target under load ---------------------------------------------------------------------


def measure_load(registry, task, problems: Sequence[Problem], prompts: Sequence[str], target: Target,
                 settings: GenerationSettings, plan: dict, progress: ProgressFn = silent) -> dict:
    """Load one target, warm it up, then send every problem under each load level of the plan.

    A backend with ``agenerate`` (the openai backend) is driven concurrently on its own event loop; an
    in-process backend answers one request at a time, so only a level of concurrency 1 without a rate
    is measured for it (the others are recorded as skipped). The entry's top-level accuracy block,
    ``latency`` and ``results`` are those of the reference level (concurrency 1 when it was measured).
    """
    levels: list[Level] = plan["levels"]
    repeats, seed, slo = plan["repeats"], plan["seed"], plan["slo"]
    note = f"{PEAK_NOTE}; a server backend's memory is not seen here"
    blocks: dict[str, dict] = {}
    with measurement(registry, target, prompts, settings, plan["warmup"], note) as envelope:
        backend = envelope.backend
        concurrent = registry.get("backend", target.backend).concurrent
        for level in levels:
            if not concurrent and (level.rate is not None or (level.concurrency or 1) > 1):
                blocks[level.key] = {"level": level.to_dict(),
                                     "skipped": f"the {target.backend} backend answers one request at a time"}
                continue
            runs = []
            for r in range(repeats):
                with progress(f"bench {target.label} {level.key}", len(problems)) as advance:
                    def done(_outcome, advance=advance):
                        advance(1)

                    if concurrent:
                        async def send(i):
                            return await backend.agenerate(prompts[i], settings)

                        run = backend.run(drive(send, len(problems), level, seed + r, done))
                    else:
                        async def send(i):
                            [completion] = generate(backend, [prompts[i]], settings)
                            return completion

                        run = asyncio.run(drive(send, len(problems), level, seed + r, done))
                runs.append(run)
            blocks[level.key] = _level_block(task, problems, prompts, runs, slo)
        envelope.info = backend.info()
    measured = [k for k, b in blocks.items() if "skipped" not in b]
    if not measured:
        raise LrlError(f"{target.label}: no load level can be measured on the {target.backend} backend "
                       "(it answers one request at a time: use --concurrency 1)")
    for key in measured:
        block = blocks[key]
        if block["load"]["errors"] == block["load"]["requests"]:
            raise LrlError(f"{target.label} at {key}: all {block['total']} requests failed: "
                           f"{block['load']['error_examples'][0]}")
    reference = next((k for k in measured if blocks[k]["load"]["level"] == {"concurrency": 1,
                                                                             "request_rate": None}), measured[0])
    for key in measured:
        comparison = paired_comparison(blocks[reference]["results"], blocks[key]["results"])
        comparison["reference"] = reference
        comparison["significant_at_0.05"] = comparison["mcnemar_p"] < 0.05
        blocks[key]["paired_vs_reference"] = comparison
    ref = blocks[reference]
    return {
        **{k: v for k, v in ref.items() if k not in ("load", "spread", "paired_vs_reference", "results")},
        "label": target.label, "backend": target.backend, "model": asdict(target.model),
        "options": dict(target.options), "info": envelope.info, "load_s": round(envelope.load_s, 4),
        "elapsed_s": round(envelope.elapsed_s, 4),
        "warmup": plan["warmup"], "repeats": repeats, "reference_level": reference,
        "latency": {k: ref["load"]["e2e"][k] for k in ("mean_s", "p50_s", "p90_s", "p99_s")},
        "memory": envelope.memory,
        "levels": blocks,
        "results": ref["results"],
    }


def _level_block(task, problems, prompts, runs, slo: dict) -> dict:
    """Accuracy (first repeat's answers) and load metrics of one level; figures spread over repeats."""
    first = runs[0]
    records = []
    for outcome in sorted(first.outcomes, key=lambda o: o.index):
        completion = outcome.completion if outcome.error is None else Completion(text="")
        records.append(make_record(task, problems[outcome.index], prompts[outcome.index], completion,
                                   outcome.e2e_s, error=outcome.error, extra={"retries": outcome.retries}))
    correct = [r["correct"] for r in records]
    metrics = [load_metrics(run, correct if i == 0 else None, slo) for i, run in enumerate(runs)]
    figures = {"e2e_p50_s": ("e2e", "p50_s"), "e2e_p99_s": ("e2e", "p99_s"), "ttft_p50_s": ("ttft", "p50_s"),
               "ttft_p99_s": ("ttft", "p99_s"), "itl_p50_s": ("itl", "p50_s"), "tpot_p50_s": ("tpot", "p50_s")}
    spreads = {name: spread([m[a][b] for m in metrics]) for name, (a, b) in figures.items()}
    for name in ("requests_per_s", "output_tokens_per_s", "peak_in_flight"):
        spreads[name] = spread([m[name] for m in metrics])
    return {**score_stage(records), "load": metrics[0], "spread": spreads,
            "repeats_errors": [m["errors"] for m in metrics], "results": records}
