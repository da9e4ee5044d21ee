"""The ``hf`` student: any causal LM from the Hugging Face hub or a local directory.

Training defaults are the original experiment's LoRA recipe (r=8, alpha=16 on q_proj and v_proj,
dropout 0.05, 3 epochs, lr 2e-4, batch 1 with 8-step gradient accumulation) on 100 examples that
put the strategy in the prompt and the bare label as the target. Whether prompts go through a chat
template is read from the tokenizer (option ``chat_template`` overrides it).
"""

from __future__ import annotations

from pathlib import Path

from lrl_harness import hookimpl
from lrl_harness.errors import BackendUnavailableError, ConfigError
from lrl_harness.training import DEFAULT_SETTINGS
from lrl_harness.types import StudentModel

ORIGINAL_LORA = dict(DEFAULT_SETTINGS)  # the original experiment's recipe
KNOWN_OPTIONS = {"model", "chat_template", "max_new_tokens", "transfer_examples", "lora"}


def has_chat_template(model: str) -> bool:
    try:
        from transformers import AutoTokenizer
    except ImportError:
        raise BackendUnavailableError("the hf student needs transformers: pip install transformers") from None
    try:
        tokenizer = AutoTokenizer.from_pretrained(model)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load the tokenizer of {model!r}: {str(exc).splitlines()[0]}") from None
    return bool(getattr(tokenizer, "chat_template", None))


def hf_student(task, options: dict, cache_dir: Path) -> StudentModel:
    """Factory for the ``hf`` student. ``options["model"]`` is a hub id or a local directory."""
    options = dict(options or {})
    unknown = sorted(set(options) - KNOWN_OPTIONS)
    if unknown:
        raise ConfigError(f"unknown option {unknown[0]!r} for the hf student; "
                          f"known: {', '.join(sorted(KNOWN_OPTIONS))}")
    model = options.get("model")
    if not model or not isinstance(model, str):
        raise ConfigError("the hf student needs the option model: a Hugging Face hub id "
                          "(e.g. Qwen/Qwen2.5-3B-Instruct) or a local directory")
    chat = options.get("chat_template")
    if chat is None:
        chat = has_chat_template(model)
    return StudentModel(
        name="hf",
        path=model,
        chat_template=bool(chat),
        strategy_in_prompt=True,
        transfer_format="label",
        transfer_examples=int(options.get("transfer_examples", 100)),
        lora={**ORIGINAL_LORA, **(options.get("lora") or {})},
        max_new_tokens=int(options.get("max_new_tokens", 32)),
        info={"description": f"Hugging Face model {model}", "model": model, "chat_template": bool(chat)},
    )


@hookimpl
def register_students(register):
    register("hf", hf_student, description="any Hugging Face causal LM (hub id or local directory)")
