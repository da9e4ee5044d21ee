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


class ChatTemplate:
    """A chat template that came with a model file rather than a tokenizer (a GGUF's
    ``tokenizer.chat_template``), rendered as transformers renders one: Jinja in a sandbox, with
    ``bos_token``/``eos_token`` defined and whitespace trimmed around blocks.

    It offers the one method :func:`render_prompt` needs, so a backend without a Hugging Face
    tokenizer (llama.cpp on a GGUF file) still gets prompts in its model's own template.
    """

    def __init__(self, template: str, bos_token: str = "", eos_token: str = ""):
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
        env.globals["raise_exception"] = _raise_template_error
        self.chat_template = template
        self._template = env.from_string(template)
        self.bos_token, self.eos_token = bos_token, eos_token

    def apply_chat_template(self, messages: list[dict], tokenize: bool = False,
                            add_generation_prompt: bool = True) -> str:
        if tokenize:
            raise ValueError("ChatTemplate renders text only; tokenize with the backend")
        return self._template.render(messages=messages, add_generation_prompt=add_generation_prompt,
                                     bos_token=self.bos_token, eos_token=self.eos_token)


def _raise_template_error(message: str):
    from lrl_harness.api.errors import ConfigError

    raise ConfigError(f"the model's chat template refused the conversation: {message}")
