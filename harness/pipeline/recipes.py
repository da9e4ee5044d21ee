"""Named transfer recipes: what a student is trained on and how.

A recipe fixes the four choices that decide whether LoRA teaches a student anything: the
transfer format (what each training target looks like), how many examples, whether the learned
strategy stays in the prompt, and the LoRA settings. Students declare a default recipe; ``lrl run
--recipe NAME`` picks another; ``--transfer-format``, ``--transfer-n`` and ``--lora-opt`` still
override single choices on top of it. The run records the recipe it used.

The LoRA settings every recipe starts from (the original's), their checks, what the ``dtype``
setting means on each device and where ``first_layer`` puts LoRA in a model live here too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

from lrl_harness.api.errors import ConfigError

# The original experiment's recipe (Hugging Face Trainer defaults where it set nothing).
DEFAULT_SETTINGS = {
    "r": 8,
    "alpha": 16,
    "dropout": 0.05,
    "target_modules": ["q_proj", "v_proj"],
    "modules_to_save": None,
    # LoRA only on the layers from this one up (0: every layer); autograd then stops at it, so the
    # backward pass skips the layers below
    "first_layer": 0,
    "epochs": 3,
    "max_steps": None,
    "lr": 2e-4,
    "batch_size": 1,
    "grad_accum": 8,
    "warmup_ratio": 0.0,
    "schedule": "linear",
    "weight_decay": 0.0,
    "max_grad_norm": 1.0,
    "device": "auto",
    # auto: float32 on the CPU, bfloat16 (else float16) on a GPU; mixed: also bfloat16 products on a
    # CPU that has them natively (weights and optimizer float32)
    "dtype": "auto",
    # logits only from the first answer token on (the same loss, less time and memory with a large
    # vocabulary; other matmul shapes, so not bit-identical to full logits)
    "answer_logits_only": False,
}
DTYPES = ("auto", "mixed", "float32", "bfloat16", "float16")
SCHEDULES = ("cosine", "linear", "constant")


def resolve_settings(settings: dict | None) -> dict:
    unknown = sorted(set(settings or {}) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ConfigError(f"unknown LoRA setting {unknown[0]!r}; known: {', '.join(DEFAULT_SETTINGS)}")
    s = {**DEFAULT_SETTINGS, **{k: v for k, v in (settings or {}).items() if v is not None}}
    if s["dtype"] not in DTYPES:
        raise ConfigError(f"unknown LoRA dtype {s['dtype']!r}; available: {', '.join(DTYPES)}")
    if s["schedule"] not in SCHEDULES:
        raise ConfigError(f"unknown LoRA schedule {s['schedule']!r}; available: {', '.join(SCHEDULES)}")
    for key in ("r", "batch_size", "grad_accum"):
        if not isinstance(s[key], int) or s[key] < 1:
            raise ConfigError(f"LoRA setting {key} must be a positive integer, got {s[key]!r}")
    if isinstance(s["first_layer"], bool) or not isinstance(s["first_layer"], int) or s["first_layer"] < 0:
        raise ConfigError(f"LoRA setting first_layer must be a layer index (0 or more), got {s['first_layer']!r}")
    if not isinstance(s["answer_logits_only"], bool):
        raise ConfigError(f"LoRA setting answer_logits_only must be true or false, got {s['answer_logits_only']!r}")
    if s["max_steps"] is None and not (isinstance(s["epochs"], (int, float)) and s["epochs"] > 0):
        raise ConfigError(f"LoRA setting epochs must be positive, got {s['epochs']!r}")
    if s["max_steps"] is not None and (not isinstance(s["max_steps"], int) or s["max_steps"] < 1):
        raise ConfigError(f"LoRA setting max_steps must be a positive integer, got {s['max_steps']!r}")
    if isinstance(s["target_modules"], tuple):
        s["target_modules"] = list(s["target_modules"])
    _check_number(s, "lr", 0, None, "a positive number", open_low=True)
    _check_number(s, "alpha", 0, None, "a positive number", open_low=True)
    _check_number(s, "dropout", 0, 1, "a number from 0 to below 1", open_high=True)
    _check_number(s, "warmup_ratio", 0, 1, "a number from 0 to below 1", open_high=True)
    _check_number(s, "weight_decay", 0, None, "a non-negative number")
    _check_number(s, "max_grad_norm", 0, None, "a positive number", open_low=True)
    if s["max_steps"] is None:
        _check_number(s, "epochs", 0, None, "a positive number", open_low=True)
    modules = s["target_modules"]
    if not (isinstance(modules, str) and modules) and not (
            isinstance(modules, list) and modules and all(isinstance(m, str) and m for m in modules)):
        raise ConfigError(f"LoRA setting target_modules must be a module name, 'all-linear' or a list of names, "
                          f"got {modules!r}")
    saved = s["modules_to_save"]
    if saved is not None and not (isinstance(saved, list) and all(isinstance(m, str) and m for m in saved)):
        raise ConfigError(f"LoRA setting modules_to_save must be a list of module names, got {saved!r}")
    if not isinstance(s["device"], str) or not (s["device"] in ("auto", "cpu", "cuda", "mps")
                                                 or s["device"].startswith("cuda:")):
        raise ConfigError(f"LoRA setting device must be auto, cpu, cuda or cuda:N, got {s['device']!r}")
    return s


def training_dtype(torch, device: str, requested: str = "auto"):
    """The base model's dtype: float32 on the CPU; on a GPU bfloat16 where supported, else float16
    (with loss scaling), unless ``requested`` names one (``float16`` mimics a pre-Ampere card).
    ``mixed`` is ``auto`` on a GPU; on the CPU the weights stay float32 (see :func:`cpu_bfloat16`)."""
    if requested == "mixed":
        requested = "auto"
    if requested != "auto":
        if requested != "float32" and not device.startswith("cuda"):
            raise ConfigError(f"LoRA dtype {requested} needs a CUDA device; the CPU trains in float32 "
                              f"(or 'mixed': bfloat16 products where the CPU has them)")
        return getattr(torch, requested)
    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def cpu_bfloat16(torch, device: str, requested: str) -> bool:
    """Whether training on the CPU runs its products in bfloat16 (autocast; weights, LoRA master
    copies, loss and optimizer stay float32): for ``mixed`` on a CPU with native bfloat16
    instructions (AVX512-BF16 or AMX), where it is about 1.8 times as fast as float32 for a 135M
    model. Elsewhere bfloat16 is emulated and slower, so ``mixed`` trains in float32."""
    if requested != "mixed" or device != "cpu":
        return False
    mkldnn = getattr(torch.backends, "mkldnn", None)
    supported = getattr(getattr(torch.ops, "mkldnn", None), "_is_mkldnn_bf16_supported", None)
    try:
        return bool(mkldnn and mkldnn.is_available() and supported and supported())
    except RuntimeError:
        return False


def lora_placement(torch, model, s: dict, model_path: str) -> tuple:
    """peft's ``target_modules`` and ``layers_to_transform`` for the settings: every layer, or those
    from ``first_layer`` up (peft then needs module names, so ``all-linear`` is spelled out: every
    Linear of the decoder layers)."""
    first = s["first_layer"]
    if not first:
        return s["target_modules"], None
    count = getattr(model.config, "num_hidden_layers", None)
    if not count or first >= count:
        raise ConfigError(f"LoRA setting first_layer={first}: {model_path!r} has {count or 'no numbered'} layers")
    target = s["target_modules"]
    if target == "all-linear":
        output = model.get_output_embeddings()
        target = sorted({name.rpartition(".")[2] for name, module in model.named_modules()
                         if isinstance(module, torch.nn.Linear) and module is not output})
    return target, list(range(first, count))


def _check_number(s: dict, key: str, low: float, high: float | None, words: str, *, open_low: bool = False,
                  open_high: bool = False) -> None:
    value = s[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = (value > low if open_low else value >= low) and (
            high is None or (value < high if open_high else value <= high))
    if not ok:
        raise ConfigError(f"LoRA setting {key} must be {words}, got {value!r}")


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    transfer_format: str
    transfer_examples: int
    strategy_in_prompt: bool
    lora: dict = field(default_factory=dict)
    export: tuple[str, ...] | None = None  # GGUF types after training; None: the student's
    parity: tuple[str, ...] | None = None  # of those, the ones parity checks; None: the student's


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
        description="for small pretrained instruct students: a worked count (at each start time every "
                    "meeting written as start, time, end, marked running or not with the running count; "
                    "the peak and rooms written, then compared) as target, no strategy in the prompt once "
                    "it is learned, loss on the answer tokens only, r=16 on every linear module of "
                    "layers 10 and up (the backward pass stops there), lr 1e-3 with cosine decay, 130 "
                    "steps of batch 8 (2 x 4 accumulated: half the activations of 4 x 2) over 1,040 "
                    "examples, products in bfloat16 where the CPU has them (mixed precision); parity on "
                    "the f16 and q8_0 files (q4_k_m is written for lrl bench)",
        transfer_format="count",
        transfer_examples=1040,
        strategy_in_prompt=False,
        lora={**DEFAULT_SETTINGS, "r": 16, "alpha": 32, "dropout": 0.0, "target_modules": "all-linear",
              "lr": 1e-3, "batch_size": 2, "grad_accum": 4, "warmup_ratio": 0.05, "schedule": "cosine",
              "epochs": 1, "max_steps": 130, "first_layer": 10, "answer_logits_only": True, "dtype": "mixed"},
        # f16, llama.cpp's usual full-precision file, in place of f32: on the tally-trained SmolLM2 its
        # greedy texts equalled transformers' on 200 of 200 test prompts, in 425 s of parity to f32's 681
        export=("f16", "q8_0", "q4_k_m"),
        # parity on the files it has targets for (f16 >= 0.98 answers, q8_0 >= 0.95): q4_k_m's took
        # 156 s of a 37-minute run; `--parity all` or `lrl bench` measures it
        parity=("f16", "q8_0"),
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
                   export=recipe.export or student.export, parity=recipe.parity or student.parity,
                   info={**student.info, "recipe": recipe.name})
