"""The ``hf`` student: any causal LM from the Hugging Face hub or a local directory.

Training defaults are the original experiment's recipe, ``seed`` (r=8, alpha=16 on q_proj and
v_proj, dropout 0.05, 3 epochs, lr 2e-4, batch 1 with 8-step gradient accumulation, on 100 examples
that put the strategy in the prompt and the bare label as the target); option ``recipe`` or ``lrl
run --recipe`` picks another (see ``lrl_harness.pipeline.recipes``). Whether prompts go through a chat
template is read from the tokenizer (option ``chat_template`` overrides it).
"""

from __future__ import annotations

from pathlib import Path

from lrl_harness import (
    DEFAULT_SETTINGS,
    RECIPES,
    BackendUnavailableError,
    ConfigError,
    Option,
    StudentModel,
    apply_recipe,
    check_options,
    hookimpl,
)

ORIGINAL_LORA = dict(DEFAULT_SETTINGS)  # the original experiment's recipe
OPTIONS = {
    "model": Option(str, None, "a Hugging Face hub id (org/name) or a local directory", nullable=True),
    "chat_template": Option(bool, None, "wrap prompts in the tokenizer's chat template (default: when it has one)",
                            nullable=True),
    "max_new_tokens": Option(int, None, "new tokens per answer (default: the longest training target in "
                             "the student's tokens, plus a margin)", min=1, nullable=True),
    "recipe": Option(str, "seed", "transfer recipe (lrl_harness.pipeline.recipes): seed is the original experiment's",
                     choices=tuple(RECIPES)),
    "transfer_examples": Option(int, None, "training examples (default: the recipe's)", min=1, nullable=True),
    "lora": Option(dict, None, "LoRA settings", nullable=True),
}
KNOWN_OPTIONS = set(OPTIONS)


def looks_local(model: str) -> bool:
    """A local path rather than a hub id: absolute, relative with ./ or ../, ~, or more than org/name."""
    return (model.startswith(("/", "./", "../", "~", "\\")) or model.count("/") > 1
            or Path(model).expanduser().exists())


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
    options = check_options("the hf student", OPTIONS, options)
    model = options.get("model")
    if not model or not model.strip():
        raise ConfigError("the hf student needs the option model: a Hugging Face hub id "
                          "(e.g. Qwen/Qwen2.5-3B-Instruct) or a local directory")
    if looks_local(model) and not Path(model).expanduser().is_dir():
        raise ConfigError(f"cannot load the tokenizer of {model!r}: no such folder (a local model is a "
                          "directory; a hub id looks like org/name)")
    chat = options.get("chat_template")
    if chat is None:
        chat = has_chat_template(model)
    student = StudentModel(
        name="hf",
        path=model,
        chat_template=bool(chat),
        max_new_tokens=options["max_new_tokens"],
        info={"description": f"Hugging Face model {model}", "model": model, "chat_template": bool(chat)},
    )
    return with_recipe(student, RECIPES[options["recipe"]], options)


def with_recipe(student: StudentModel, recipe, options: dict) -> StudentModel:
    """The student trained by ``recipe``, with the options ``transfer_examples`` and ``lora`` on top."""
    student = apply_recipe(student, recipe)
    if options.get("transfer_examples") is not None:
        student.transfer_examples = options["transfer_examples"]
    student.lora = {**student.lora, **(options.get("lora") or {})}
    return student


@hookimpl
def register_students(register):
    register("hf", hf_student, options=OPTIONS, description="any Hugging Face causal LM (hub id or local directory)")
