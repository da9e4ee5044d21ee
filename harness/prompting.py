"""The one place where a task's user text becomes the exact string and tokens a model sees.

Backends and training receive text rendered here, so a student is trained on the same prompt it
is later asked, whichever engine runs it.
"""

from __future__ import annotations

import hashlib


def render_prompt(tokenizer, user_text: str, chat_template: bool) -> str:
    """The final prompt string: the tokenizer's chat template with a generation prompt for
    instruction-tuned models, otherwise ``user_text`` unchanged."""
    if not chat_template:
        return user_text
    messages = [{"role": "user", "content": user_text}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_prompt(tokenizer, text: str) -> list[int]:
    """Token ids of a rendered prompt: special tokens as the tokenizer adds them (BOS per its
    config), except that a BOS the chat template already wrote is not added a second time."""
    bos = getattr(tokenizer, "bos_token", None)
    add_special = not (bos and text.startswith(bos))
    return list(tokenizer(text, add_special_tokens=add_special)["input_ids"])


def prompt_record(text: str, token_ids: list[int]) -> dict:
    """What a results file keeps of a prompt: its hash and its length in tokens."""
    return {"prompt_sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
            "prompt_tokens": len(token_ids)}
