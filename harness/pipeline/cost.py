"""What teacher calls cost: a price table, per-stage usage summaries and the break-even point.

Prices are USD per million tokens, as Anthropic lists them for standard (uncached, non-batch)
requests. They change: ``load_prices(path)`` merges a user's JSON or TOML file over the table, and a
model that is in neither gives a cost of ``None`` (unknown), never a silent 0.

The original experiment claimed "$0.005 per inference (Claude API) vs $0.00 (local model),
break-even ~100 inferences" without measuring either side; ``summarise_usage`` and ``break_even``
replace that claim with figures from the run's own token counts.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import NamedTuple

from lrl_harness.api.contract import Completion
from lrl_harness.api.errors import ConfigError


class Price(NamedTuple):
    """USD per million tokens."""

    input: float
    output: float


PRICES_AS_OF = "2026-11"

DEFAULT_PRICES: dict[str, Price] = {
    # current models
    "claude-haiku-4-5": Price(1.00, 5.00),
    "claude-sonnet-4-5": Price(3.00, 15.00),
    "claude-sonnet-4-6": Price(3.00, 15.00),
    "claude-opus-4-5": Price(5.00, 25.00),
    "claude-opus-4-6": Price(5.00, 25.00),
    "claude-opus-4-7": Price(5.00, 25.00),
    # earlier models, for replaying older runs
    "claude-3-5-haiku": Price(0.80, 4.00),  # the original experiment's teacher (claude-3-5-haiku-20241022)
    "claude-3-haiku": Price(0.25, 1.25),
    "claude-3-5-sonnet": Price(3.00, 15.00),
    "claude-3-7-sonnet": Price(3.00, 15.00),
    "claude-sonnet-4": Price(3.00, 15.00),
    "claude-opus-4": Price(15.00, 75.00),
    "claude-opus-4-1": Price(15.00, 75.00),
}

_DATED = re.compile(r"^(?P<base>.+?)-(?:\d{8}|latest)$")


def load_prices(path: str | Path | None = None,
                base: Mapping[str, Price] = DEFAULT_PRICES) -> dict[str, Price]:
    """The built-in table, with the entries of a JSON or TOML file (if given) added or replaced.

    The file maps a model id to its prices, ``{"claude-haiku-4-5": {"input": 1.0, "output": 5.0}}``
    (JSON) or ``[claude-haiku-4-5]`` / ``input = 1.0`` / ``output = 5.0`` (TOML); a top-level
    ``models`` table is accepted too.
    """
    prices = dict(base)
    if path is None:
        return prices
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: price file not found")
    text = path.read_text(encoding="utf-8")
    try:
        data = tomllib.loads(text) if path.suffix.lower() == ".toml" else json.loads(text)
    except (tomllib.TOMLDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a valid {path.suffix.lstrip('.').upper() or 'JSON'} price file "
                          f"({exc})") from None
    if isinstance(data, dict) and isinstance(data.get("models"), dict):
        data = data["models"]
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a table of model ids to {{input, output}} "
                          "USD per million tokens")
    for model, entry in data.items():
        prices[model] = _price(path, model, entry)
    return prices


def _price(path: Path, model: str, entry) -> Price:
    if isinstance(entry, dict) and set(entry) >= {"input", "output"}:
        values = (entry["input"], entry["output"])
    elif isinstance(entry, (list, tuple)) and len(entry) == 2:
        values = tuple(entry)
    else:
        values = None
    if values is None or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 and math.isfinite(v)
            for v in values):
        raise ConfigError(f"{path}: model {model!r}: expected {{input = USD, output = USD}} per million "
                          f"tokens (non-negative numbers), got {entry!r}")
    return Price(float(values[0]), float(values[1]))


def price_of(model: str | None, prices: Mapping[str, Price] | None = None) -> Price | None:
    """The price of ``model``; a dated id or a ``-latest`` alias falls back to its base name."""
    prices = DEFAULT_PRICES if prices is None else prices
    if not model:
        return None
    if model in prices:
        return prices[model]
    dated = _DATED.match(model)
    if dated and dated.group("base") in prices:
        return prices[dated.group("base")]
    return None


def cost_usd(model: str | None, input_tokens: int, output_tokens: int,
             prices: Mapping[str, Price] | None = None) -> float | None:
    """USD for one request, or ``None`` when the model's price is unknown."""
    price = price_of(model, prices)
    if price is None:
        return None
    return (input_tokens * price.input + output_tokens * price.output) / 1_000_000


def is_billed(usage: Mapping) -> bool:
    """A request to a paid API: its teacher marks the completion's meta with ``api``.

    Completions without it (a local model, the exact solver) cost nothing per request.
    """
    return bool(usage.get("api"))


def _usage_of(item: Completion | Mapping) -> tuple[dict, bool]:
    """(meta-like usage, cached) of a Completion or of a usage dictionary kept in a results file."""
    if isinstance(item, Completion):
        usage = {"input_tokens": item.prompt_tokens, "output_tokens": item.completion_tokens, **item.meta}
        return usage, item.cached
    return dict(item), bool(item.get("cached"))


def summarise_usage(completions: Iterable[Completion | Mapping],
                    prices: Mapping[str, Price] | None = None) -> dict:
    """Requests, cache hits, tokens, retries and USD of one stage's teacher completions.

    Items are Completions, or dictionaries of their usage (``input_tokens``, ``output_tokens``,
    ``retries``, ``cached``, ``model``, ``api``). Tokens count every answer, cached or not.
    ``cost_usd`` is what this run paid (cached answers are free); ``list_cost_usd`` is what every
    answer cost when it was first requested, the figure to compare a teacher with a student. Both
    are ``None`` when a billed answer's model has no price (``unpriced_models`` names it).
    """
    summary = {"requests": 0, "cached": 0, "made": 0, "input_tokens": 0, "output_tokens": 0,
               "retries": 0, "cost_usd": 0.0, "list_cost_usd": 0.0, "models": [], "unpriced_models": []}
    models: set[str] = set()
    unpriced: set[str] = set()
    for item in completions:
        usage, cached = _usage_of(item)
        summary["requests"] += 1
        summary["cached"] += int(cached)
        summary["made"] += int(not cached)
        input_tokens = int(usage.get("input_tokens") or 0)
        output_tokens = int(usage.get("output_tokens") or 0)
        summary["input_tokens"] += input_tokens
        summary["output_tokens"] += output_tokens
        if not cached:
            summary["retries"] += int(usage.get("retries") or 0)
        model = usage.get("model")
        if model:
            models.add(str(model))
        if not is_billed(usage):
            continue
        cost = cost_usd(model, input_tokens, output_tokens, prices)
        if cost is None:
            unpriced.add(str(model))
            continue
        summary["list_cost_usd"] += cost
        if not cached:
            summary["cost_usd"] += cost
    if unpriced:
        summary["cost_usd"] = summary["list_cost_usd"] = None
    else:
        summary["cost_usd"] = round(summary["cost_usd"], 6)
        summary["list_cost_usd"] = round(summary["list_cost_usd"], 6)
    summary["models"] = sorted(models)
    summary["unpriced_models"] = sorted(unpriced)
    return summary


def break_even(teacher_cost_per_problem: float | None, student_cost_per_problem: float | None,
               one_off_cost: float | None) -> dict:
    """How many problems the student must answer before its one-off cost is paid back.

    ``one_off_cost`` is what building the student cost (the teacher calls of the bootstrap and
    distillation stages, plus training if it is priced). The original experiment's claim of
    $0.005 per call against $0 local with break-even ~100 implies a one-off cost of $0.50, a figure
    it never measured.
    """
    result = {"teacher_cost_per_problem": teacher_cost_per_problem,
              "student_cost_per_problem": student_cost_per_problem,
              "one_off_cost": one_off_cost, "saving_per_problem": None, "break_even_problems": None}
    if None in (teacher_cost_per_problem, student_cost_per_problem, one_off_cost):
        result["note"] = "unknown: a cost is missing (a model without a price?)"
        return result
    saving = teacher_cost_per_problem - student_cost_per_problem
    result["saving_per_problem"] = saving
    if saving <= 0:
        result["note"] = "never: the student costs at least as much per problem as the teacher"
        return result
    result["break_even_problems"] = max(0, math.ceil(round(one_off_cost / saving, 9)))
    result["note"] = (f"after {result['break_even_problems']} problems the student has paid back its one-off "
                      f"cost of ${one_off_cost:.4f}")
    return result
