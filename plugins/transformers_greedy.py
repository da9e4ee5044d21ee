"""Greedy decoding for the transformers backend that stops each row at its end.

``model.generate`` keeps every row of a batch in the forward pass until the longest one ends: a
batch whose answers run from 80 to 480 tokens spends most of its steps on rows that have already
finished. Here a row leaves the batch (and the KV cache) as soon as it emits an end token or
reaches its budget, so a step costs what its unfinished rows cost.

It is the same computation as greedy ``generate``: left padding, an attention mask, position ids
counted from each row's first real token, the argmax of the last position's logits. Used for
greedy settings without a repetition penalty or stop strings; everything else goes through
``generate``.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass


@dataclass
class Rows:
    """What :func:`greedy_rows` returns: each row's new tokens (the end token included when the row
    ended), and when the first new token of the batch was ready (for time to first token)."""

    tokens: list[list[int]]
    first_token_at: float


def left_padded(torch, batch: list[list[int]], pad_id: int, device: str | None = None):
    """``batch`` (token ids, any lengths) as one left-padded tensor and its attention mask."""
    width = max(len(ids) for ids in batch)
    input_ids = torch.tensor([[pad_id] * (width - len(ids)) + ids for ids in batch], device=device)
    attention = torch.tensor([[0] * (width - len(ids)) + [1] * len(ids) for ids in batch], device=device)
    return input_ids, attention


def _forward_keywords(model) -> tuple[str, str | None]:
    """The forward() keywords for the KV cache (``past_key_values``, ``cache`` in recent
    transformers) and for keeping only the last position's logits (None where there is none)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    params = inspect.signature(base.forward).parameters
    cache_kw = "cache" if "cache" in params else "past_key_values"
    return cache_kw, next((k for k in ("logits_to_keep", "num_logits_to_keep") if k in params), None)


def greedy_rows(torch, model, batch: list[list[int]], pad_id: int, end_ids: set[int],
                max_new_tokens: int, device: str) -> Rows:
    """Greedy continuations of ``batch`` (prompt token ids, any lengths)."""
    from transformers import DynamicCache

    input_ids, attention = left_padded(torch, batch, pad_id, device)
    positions = (attention.cumsum(-1) - 1).clamp(min=0)
    cache = DynamicCache()
    cache_kw, last_kw = _forward_keywords(model)
    tokens: list[list[int]] = [[] for _ in batch]
    alive = list(range(len(batch)))  # batch rows still generating, in cache order
    first_token_at = 0.0
    with torch.inference_mode():
        out = model(input_ids=input_ids, attention_mask=attention, position_ids=positions, use_cache=True,
                    **{cache_kw: cache}, **({last_kw: 1} if last_kw else {}))
        logits = out.logits[:, -1]
        next_position = positions[:, -1] + 1
        while True:
            chosen = logits.argmax(-1)
            keep = []
            for slot, (row, token) in enumerate(zip(alive, chosen.tolist())):
                tokens[row].append(token)
                if token not in end_ids and len(tokens[row]) < max_new_tokens:
                    keep.append(slot)
            if not first_token_at:
                first_token_at = time.perf_counter()
            if not keep:
                break
            if len(keep) < len(alive):  # finished rows leave the batch and the cache
                index = torch.tensor(keep, device=device)
                cache.batch_select_indices(index)
                attention, chosen, next_position = attention[index], chosen[index], next_position[index]
                alive = [alive[slot] for slot in keep]
            attention = torch.cat([attention, attention.new_ones((len(alive), 1))], dim=1)
            out = model(input_ids=chosen[:, None], attention_mask=attention, position_ids=next_position[:, None],
                        use_cache=True, **{cache_kw: cache})
            logits = out.logits[:, -1]
            next_position = next_position + 1
    return Rows(tokens=tokens, first_token_at=first_token_at)
