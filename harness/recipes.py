"""Named transfer recipes: what a student is trained on and how.

A recipe fixes the four choices that decide whether LoRA teaches a student anything: the
transfer format (what each training target looks like), how many examples, whether the learned
strategy stays in the prompt, and the LoRA settings. Students declare a default recipe; ``lrl run
--recipe NAME`` picks another; ``--transfer-format``, ``--transfer-n`` and ``--lora-opt`` still
override single choices on top of it. The run records the recipe it used.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace

from .errors import ConfigError
from .training import DEFAULT_SETTINGS


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    transfer_format: str
    transfer_examples: int
    strategy_in_prompt: bool
    lora: dict = field(default_factory=dict)


RECIPES = {
    "seed": Recipe(
        name="seed",
        description="the original experiment's: the strategy in the prompt, the bare label as target, "
                    "100 examples x 3 epochs, r=8 on q_proj/v_proj, lr 2e-4, batch 1 x 8 accumulated",
        transfer_format="label",
        transfer_examples=100,
        strategy_in_prompt=True,
        lora=dict(DEFAULT_SETTINGS),
    ),
    "small": Recipe(
        name="small",
        description="for small pretrained instruct students: a worked tally (at each start time every "
                    "meeting written as start, time, end, marked running or not with the running count; "
                    "each line's count and the peak so far; the peak and rooms written, then compared) "
                    "as target, no strategy in the prompt once it is learned, loss on the "
                    "answer tokens only, r=16 on every linear layer, lr 1e-3 with cosine decay, "
                    "150 steps of batch 8 (4 x 2 accumulated)",
        transfer_format="tally",
        transfer_examples=1200,
        strategy_in_prompt=False,
        lora={**DEFAULT_SETTINGS, "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear",
              "lr": 1e-3, "batch_size": 4, "grad_accum": 2, "warmup_ratio": 0.05, "schedule": "cosine",
              "epochs": 1, "max_steps": 150, "answer_logits_only": True},
    ),
}


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown recipe {name!r}; available: {', '.join(RECIPES)}")
    return RECIPES[name]


def apply_recipe(student, recipe: Recipe):
    """The student with the recipe's training choices (a copy; the student's own are replaced)."""
    return replace(student, transfer_format=recipe.transfer_format, transfer_examples=recipe.transfer_examples,
                   strategy_in_prompt=recipe.strategy_in_prompt, lora=dict(recipe.lora),
                   info={**student.info, "recipe": recipe.name})
