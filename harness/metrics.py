"""Honest accuracy: every figure comes with the majority-class baseline, balanced accuracy,
the unparsed count and a Wilson 95% interval. Paired comparisons use an exact McNemar test."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence

Z95 = 1.959963984540054


def wilson_interval(correct: int, total: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion; (0, 1) for an empty sample."""
    if total <= 0:
        return (0.0, 1.0)
    p = correct / total
    denom = 1 + z * z / total
    centre = (p + z * z / (2 * total)) / denom
    half = z * math.sqrt(p * (1 - p) / total + z * z / (4 * total * total)) / denom
    lo = 0.0 if correct <= 0 else max(0.0, centre - half)  # exact ends: no floating-point crumbs
    hi = 1.0 if correct >= total else min(1.0, centre + half)
    return (lo, hi)


def wilson_lower_one_sided(correct: int, total: int, alpha: float = 0.05) -> float:
    """One-sided lower Wilson bound at level 1 - alpha."""
    z = _normal_quantile(1 - alpha)
    return wilson_interval(correct, total, z)[0]


def wilson_upper_one_sided(correct: int, total: int, alpha: float = 0.05) -> float:
    z = _normal_quantile(1 - alpha)
    return wilson_interval(correct, total, z)[1]


def _normal_quantile(p: float) -> float:
    """Inverse of the standard normal CDF (bisection on erf; plenty accurate for intervals)."""
    lo, hi = -10.0, 10.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if 0.5 * (1 + math.erf(mid / math.sqrt(2))) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def mcnemar_exact(b: int, c: int) -> float:
    """Two-sided exact McNemar p-value. ``b``: only A correct; ``c``: only B correct."""
    n = b + c
    if n == 0:
        return 1.0
    k = min(b, c)
    tail = sum(math.comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def mcnemar_one_sided(worse: int, better: int) -> float:
    """P(at least ``worse`` discordant pairs against B | no difference): small when B got worse.

    ``worse``: pairs A right, B wrong. ``better``: pairs A wrong, B right.
    """
    n = worse + better
    if n == 0:
        return 1.0
    return sum(math.comb(n, i) for i in range(worse, n + 1)) / 2**n


def score_block(records: Sequence[dict], labels: Iterable[str] = ("YES", "NO")) -> dict:
    """Metrics of one set of scored records (each has ``expected``, ``answer`` (None = unparsed), ``correct``)."""
    total = len(records)
    correct = sum(1 for r in records if r["correct"])
    unparsed = sum(1 for r in records if r.get("answer") is None)
    truncated = sum(1 for r in records if r.get("truncated") is True)
    expected_counts = Counter(r["expected"] for r in records)
    majority_label, majority_n = (expected_counts.most_common(1)[0] if expected_counts else (None, 0))
    recalls = {}
    for label in sorted(set(labels) | set(expected_counts)):
        n = expected_counts.get(label, 0)
        if n:
            hit = sum(1 for r in records if r["expected"] == label and r["correct"])
            recalls[label] = hit / n
    answers = Counter(r.get("answer") or "UNPARSED" for r in records)
    lo, hi = wilson_interval(correct, total)
    return {
        "total": total,
        "correct": correct,
        "accuracy": correct / total if total else 0.0,
        "balanced_accuracy": sum(recalls.values()) / len(recalls) if recalls else 0.0,
        "majority_baseline": majority_n / total if total else 0.0,
        "majority_label": majority_label,
        "unparsed": unparsed,
        "truncated": truncated,
        "ci95": [lo, hi],
        "recall": recalls,
        "answer_counts": dict(sorted(answers.items())),
    }


def score_stage(records: Sequence[dict]) -> dict:
    """Overall metrics plus the same block per difficulty (``by_difficulty``)."""
    block = score_block(records)
    by_difficulty = {}
    for diff in sorted({r.get("difficulty", "UNKNOWN") for r in records}, key=_difficulty_order):
        by_difficulty[diff] = score_block([r for r in records if r.get("difficulty", "UNKNOWN") == diff])
    block["by_difficulty"] = by_difficulty
    return block


def _difficulty_order(name: str) -> tuple[int, str]:
    order = {"EASY": 0, "MEDIUM": 1, "HARD": 2}
    return (order.get(name, 9), name)


def paired_comparison(a: Sequence[dict], b: Sequence[dict]) -> dict:
    """Compare two scored runs over the same problems (matched by ``problem_id``)."""
    a_by_id = {r["problem_id"]: r for r in a}
    b_by_id = {r["problem_id"]: r for r in b}
    common = [pid for pid in a_by_id if pid in b_by_id]
    only_a = sum(1 for p in common if a_by_id[p]["correct"] and not b_by_id[p]["correct"])
    only_b = sum(1 for p in common if b_by_id[p]["correct"] and not a_by_id[p]["correct"])
    agree = sum(1 for p in common if a_by_id[p].get("answer") == b_by_id[p].get("answer"))
    return {
        "paired": len(common),
        "answer_agreement": agree / len(common) if common else 0.0,
        "agreements": agree,
        "only_a_correct": only_a,
        "only_b_correct": only_b,
        "mcnemar_p": mcnemar_exact(only_a, only_b),
    }
