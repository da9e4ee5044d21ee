"""Performance statistics of a benchmark: percentiles, spreads over passes, latency and throughput of
timed calls, and ratios between backends with a percentile-bootstrap interval on the mean latency ratio.
"""

from __future__ import annotations

import random
import statistics
from collections.abc import Sequence
from typing import Any

# --- timings ----------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default)."""
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100
    lo = int(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


def distribution(values: Sequence[float]) -> dict:
    """mean, p50, p90, p99, min, max (seconds, rounded to the microsecond); Nones when empty."""
    if not values:
        return {k: None for k in ("mean_s", "p50_s", "p90_s", "p99_s", "min_s", "max_s")}
    return {"mean_s": rounded(statistics.fmean(values)), "p50_s": rounded(percentile(values, 50)),
            "p90_s": rounded(percentile(values, 90)), "p99_s": rounded(percentile(values, 99)),
            "min_s": rounded(min(values)), "max_s": rounded(max(values))}


def spread(values: Sequence[float | None]) -> dict | None:
    """Median, min, max and sample standard deviation of one figure over repeats (None when unmeasured)."""
    xs = [v for v in values if v is not None]
    if not xs:
        return None
    return {"median": rounded(statistics.median(xs)), "min": rounded(min(xs)), "max": rounded(max(xs)),
            "stdev": rounded(statistics.stdev(xs)) if len(xs) > 1 else 0.0, "n": len(xs)}


def bootstrap_ratio(a: Sequence[float], b: Sequence[float], resamples: int = 2000, seed: int = 0,
                    paired: bool = True) -> dict | None:
    """mean(a)/mean(b) with a 95% percentile-bootstrap interval. ``paired``: a[i] and b[i] belong to the
    same problem and are resampled together."""
    if not a or not b or (paired and len(a) != len(b)):
        return None
    mean_b = statistics.fmean(b)
    if mean_b <= 0:
        return None
    rng = random.Random(seed)
    ratios = []
    for _ in range(resamples):
        if paired:
            idx = [rng.randrange(len(a)) for _ in a]
            num, den = sum(a[i] for i in idx), sum(b[i] for i in idx)
        else:
            num = sum(rng.choice(a) for _ in a) / len(a) * len(b)
            den = sum(rng.choice(b) for _ in b)
        if den > 0:
            ratios.append(num / den)
    return {"ratio": round(statistics.fmean(a) / mean_b, 4), "ci95": [round(percentile(ratios, 2.5), 4),
                                                                      round(percentile(ratios, 97.5), 4)],
            "resamples": resamples, "paired": paired}


def rounded(x: float) -> float:
    return round(x, 6)


# --- timings of a benchmark -------------------------------------------------------------------


def sequential_spread(timings: list[list[tuple[float, Any]]], repeats: int, batch: int = 1) -> dict:
    """Mean and median latency and problems per second of each pass over the problems, spread over passes."""
    passes = [[runs[r][0] for runs in timings] for r in range(repeats)]
    elapsed = [sum(p[::batch]) for p in passes]
    return {"latency_mean_s": spread([statistics.fmean(p) for p in passes]),
            "latency_p50_s": spread([statistics.median(p) for p in passes]),
            "problems_per_s": spread([len(p) / e if e > 0 else None for p, e in zip(passes, elapsed, strict=True)])}


def speed(timings: list[list[tuple[float, Any]]], batch: int = 1) -> dict:
    """Latency and throughput over every timed call (all repeats).

    Prefill speed is prompt tokens over time to first token; decode speed is the tokens after the
    first over the time after it. Both need the backend's time to first token and are None without it.
    With ``batch`` > 1 every problem of a batch waited the batch's wall time, and the elapsed time
    counts each batch once.
    """
    calls = [(wall, c) for runs in timings for wall, c in runs]
    walls = [wall for wall, _ in calls]
    ttfts = [c.ttft_s for _, c in calls if c.ttft_s is not None]
    with_ttft = [(wall, c) for wall, c in calls if c.ttft_s is not None] if batch == 1 else []
    prefill_s = sum(c.ttft_s for _, c in with_ttft)
    decode_s = sum(wall - c.ttft_s for wall, c in with_ttft)
    decoded = sum(max(c.completion_tokens - 1, 0) for _, c in with_ttft)
    total_s = sum(wall for runs in timings[::batch] for wall, _ in runs)
    return {
        "latency": {"mean_s": rounded(statistics.fmean(walls)),
                    "p50_s": rounded(statistics.median(walls)),
                    "p95_s": rounded(percentile(walls, 95)),
                    "min_s": rounded(min(walls)), "max_s": rounded(max(walls))},
        "ttft": {"mean_s": rounded(statistics.fmean(ttfts)) if ttfts else None,
                 "p50_s": rounded(statistics.median(ttfts)) if ttfts else None},
        "throughput": {
            "prefill_tokens_per_s": rate(sum(c.prompt_tokens for _, c in with_ttft), prefill_s) if with_ttft
            else None,
            "decode_tokens_per_s": rate(decoded, decode_s) if with_ttft else None,
            "output_tokens_per_s": rate(sum(c.completion_tokens for _, c in calls), total_s),
            "problems_per_s": rate(len(calls), total_s),
        },
        "tokens": {"prompt": sum(c.prompt_tokens for _, c in calls),
                   "completion": sum(c.completion_tokens for _, c in calls)},
    }


def ratios(backends: dict) -> dict:
    """``"A/B"`` for every pair measured in the same run: latency (above 1: A is slower) and
    problems per second (above 1: A gets through more), and a 95% bootstrap interval of the mean
    latency ratio, resampling the problems both answered (paired)."""
    labels = list(backends)
    out = {}
    for i, a in enumerate(labels):
        for b in labels[i + 1:]:
            la, lb = backends[a]["latency"], backends[b]["latency"]
            ta, tb = backends[a].get("throughput") or {}, backends[b].get("throughput") or {}
            if "levels" in backends[a] and "levels" in backends[b]:
                ra, rb = backends[a]["reference_level"], backends[b]["reference_level"]
                ta = {"problems_per_s": backends[a]["levels"][ra]["load"]["requests_per_s"]}
                tb = {"problems_per_s": backends[b]["levels"][rb]["load"]["requests_per_s"]}
            out[f"{a}/{b}"] = {
                "latency_mean": _ratio(la["mean_s"], lb["mean_s"]),
                "latency_p50": _ratio(la["p50_s"], lb["p50_s"]),
                "problems_per_s": _ratio(ta.get("problems_per_s"), tb.get("problems_per_s")),
                "latency_mean_ci95": _latency_ci(backends[a], backends[b]),
            }
    return out


def _latency_ci(a: dict, b: dict) -> list[float] | None:
    b_by_id = {r["problem_id"]: r for r in b.get("results") or [] if not r.get("error")}
    pairs = [(r["latency_s"], b_by_id[r["problem_id"]]["latency_s"]) for r in a.get("results") or []
             if not r.get("error") and r["problem_id"] in b_by_id]
    boot = bootstrap_ratio([x for x, _ in pairs], [y for _, y in pairs]) if pairs else None
    return boot["ci95"] if boot else None


def rate(amount: float, seconds: float) -> float | None:
    return round(amount / seconds, 3) if seconds > 0 else None


def _ratio(a, b) -> float | None:
    return round(a / b, 4) if a is not None and b else None


def difference(a, b):
    return None if a is None or b is None else round(a - b, 1)
