"""LoRA training and merging for students (peft on transformers, CPU or CUDA).

The loop is deliberately plain: shuffle with a seeded generator, pad each micro-batch, compute the
loss on the target tokens only (the prompt is context, not something to imitate), AdamW with
linear warm-up then cosine or linear decay, gradient clipping. The same seed on the same machine
gives the same adapter.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import os
import shutil
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

from lrl_harness.api.deps import import_torch
from lrl_harness.api.errors import BackendUnavailableError, ConfigError
from lrl_harness.api.prompting import encode_prompt
from lrl_harness.pipeline.recipes import cpu_bfloat16, lora_placement, resolve_settings, training_dtype

ADAPTER_PREFIX = "adapter_"


def _import_stack():
    torch = import_torch()
    try:
        import peft
        import transformers
    except ImportError as exc:
        raise BackendUnavailableError(
            f"training needs transformers and peft ({exc.name} is missing): pip install transformers peft") from None
    # peft asks transformers a deprecated question on every get_peft_model; the answer is right, the
    # warning is noise in every training log
    warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*is deprecated", category=FutureWarning)
    return torch, transformers, peft


def encode_example(tokenizer, prompt: str, target: str, eos_id: int) -> tuple[list[int], int]:
    """Token ids of prompt + target + EOS, and where the target starts.

    The prompt is encoded alone, exactly as a backend will encode it at inference time; the target
    ids are taken from the encoding of the whole text when the prompt's ids are its prefix, so the
    target is tokenized as the model will see it continuing the prompt.
    """
    prompt_ids = encode_prompt(tokenizer, prompt)
    full = encode_prompt(tokenizer, prompt + target)
    if full[:len(prompt_ids)] == prompt_ids:
        target_ids = full[len(prompt_ids):]
    else:
        target_ids = list(tokenizer(target, add_special_tokens=False)["input_ids"])
    return prompt_ids + target_ids + [eos_id], len(prompt_ids)


def learning_rate_factor(step: int, total: int, warmup: int, schedule: str) -> float:
    """Multiplier of the peak learning rate before optimizer step ``step`` (0-based)."""
    if warmup and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    if schedule == "linear":
        return max(0.0, 1.0 - progress)
    return 0.5 * (1.0 + math.cos(math.pi * progress))


def train_lora(model_path: str, examples: list[dict], out_dir: Path, settings: dict,
               progress: Callable[[int, int, float], None] | None = None, seed: int = 0,
               checkpoint: Path | None = None, checkpoint_every: int | None = None) -> dict:
    """Train a LoRA adapter on ``examples`` (each with an already-rendered "prompt" and a "target")
    and save it, with the tokenizer, into ``out_dir`` (written atomically).

    Returns what was done: the settings used, steps, examples, elapsed_s, loss_curve
    ([step, mean loss] every few steps), final_loss, trainable_params and adapter_sha256.
    ``progress(step, total, loss)`` is called after every optimizer step.

    With ``checkpoint`` (a file path) the state of training (trainable weights, optimizer, grad
    scaler, RNG, position in the data stream, loss curve) is saved there atomically every
    ``checkpoint_every`` steps (default: every 5% of the steps), and a later call with the same
    inputs resumes from it; the checkpoint is removed once the adapter is saved. A checkpoint made
    from other inputs (settings, seed, examples) is ignored.
    """
    torch, transformers, peft = _import_stack()
    s = resolve_settings(settings)
    if not examples:
        raise ConfigError("no training examples")
    started = time.perf_counter()
    device = s["device"] if s["device"] != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = training_dtype(torch, device, s["dtype"])
    # the precision of the matrix products, where autocast lowers it below the weights' dtype
    if cpu_bfloat16(torch, device, s["dtype"]):
        autocast = torch.bfloat16
    else:
        autocast = dtype if device.startswith("cuda") and dtype != torch.float32 else None

    tokenizer = transformers.AutoTokenizer.from_pretrained(model_path)
    eos_id = tokenizer.eos_token_id
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else eos_id
    if eos_id is None:
        raise ConfigError(f"the tokenizer of {model_path!r} has no end-of-sequence token")
    encoded = [encode_example(tokenizer, ex["prompt"], ex["target"], eos_id) for ex in examples]

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        transformers.utils.logging.disable_progress_bar()
        model = transformers.AutoModelForCausalLM.from_pretrained(model_path, dtype=dtype)
        target, layers = lora_placement(torch, model, s, model_path)
        lora = peft.LoraConfig(r=s["r"], lora_alpha=s["alpha"], lora_dropout=s["dropout"],
                               target_modules=target, modules_to_save=s["modules_to_save"],
                               layers_to_transform=layers, bias="none", task_type="CAUSAL_LM")
        model = peft.get_peft_model(model, lora)
        trainable = [p for p in model.parameters() if p.requires_grad]
        for p in trainable:  # master copies in fp32 even when the base model runs in half precision
            p.data = p.data.float()
        model.to(device).train()
        resume = None
        if checkpoint is not None:
            resume = _Resume(torch, Path(checkpoint), _fingerprint(s, seed, encoded, model_path), checkpoint_every)
        result = _optimise(torch, model, trainable, encoded, s, pad_id, device, dtype, seed, progress, resume,
                           autocast)

    trainable_params = sum(p.numel() for p in trainable)
    out_dir = Path(out_dir)
    _save_atomically(out_dir, lambda tmp: (model.save_pretrained(tmp), tokenizer.save_pretrained(tmp),
                                           _sort_adapter_config(tmp)))
    report = {
        "settings": s,
        "seed": seed,
        "steps": result["steps"],
        "examples": len(examples),
        "target_tokens": sum(len(ids) - start for ids, start in encoded),
        "elapsed_s": round(time.perf_counter() - started + result.get("elapsed_before_s", 0.0), 3),
        "loss_curve": result["loss_curve"],
        "final_loss": result["final_loss"],
        "trainable_params": trainable_params,
        "device": device,
        "dtype": str(dtype).removeprefix("torch."),
        "autocast": str(autocast).removeprefix("torch.") if autocast is not None else None,
        "adapter_sha256": adapter_sha256(out_dir),
    }
    if result.get("resumed_at_step"):
        report["resumed_at_step"] = result["resumed_at_step"]
    (out_dir / "training.json").write_text(json.dumps(report, indent=2) + "\n")
    if resume is not None:
        resume.remove()
    return report


def _sort_adapter_config(folder: Path) -> None:
    """peft writes ``target_modules`` from a set, in an order that changes from process to process;
    sorted, the same training gives the same file and the same adapter_sha256."""
    path = Path(folder) / "adapter_config.json"
    if not path.is_file():
        return
    config = json.loads(path.read_text(encoding="utf-8"))
    for key in ("target_modules", "modules_to_save"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _fingerprint(s: dict, seed: int, encoded: list, model_path: str) -> str:
    blob = json.dumps({"settings": s, "seed": seed, "model": str(model_path), "examples": encoded},
                      sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class _Resume:
    """Where training state is saved every few steps, and read back on resume."""

    def __init__(self, torch, path: Path, fingerprint: str, every: int | None):
        self.torch, self.path, self.fingerprint, self.every = torch, path, fingerprint, every

    def interval(self, total: int) -> int:
        return self.every if self.every else max(1, math.ceil(total / 20))

    def load(self) -> dict | None:
        if not self.path.is_file():
            return None
        try:
            state = self.torch.load(self.path, map_location="cpu", weights_only=False)
        except Exception:  # a damaged checkpoint is not worth a failure: train from the start
            return None
        if not isinstance(state, dict) or state.get("fingerprint") != self.fingerprint:
            return None
        return state

    def save(self, state: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.torch.save({**state, "fingerprint": self.fingerprint}, tmp)
            with open(tmp, "rb") as fh:
                os.fsync(fh.fileno())
            os.replace(tmp, self.path)
        finally:
            tmp.unlink(missing_ok=True)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def _optimise(torch, model, trainable, encoded, s, pad_id, device, dtype, seed, progress,
              resume: _Resume | None = None, autocast_dtype=None) -> dict:
    micro, accum = s["batch_size"], s["grad_accum"]
    per_step = micro * accum
    if s["max_steps"] is not None:
        total = s["max_steps"]
    else:
        total = max(1, math.ceil(s["epochs"] * len(encoded) / per_step))
    warmup = int(round(s["warmup_ratio"] * total))
    optimizer = torch.optim.AdamW(trainable, lr=s["lr"], weight_decay=s["weight_decay"])
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    autocast = torch.autocast("cuda" if device.startswith("cuda") else "cpu", dtype=autocast_dtype or torch.bfloat16,
                              enabled=autocast_dtype is not None)
    batches_stream = _micro_batches(torch, encoded, micro, seed)
    partial_logits = (s["answer_logits_only"]
                      and "logits_to_keep" in inspect.signature(model.get_base_model().forward).parameters)
    log_every = max(1, total // 50)
    curve, window, final_loss = [], [], float("nan")
    first, elapsed_before, started = 0, 0.0, time.perf_counter()
    named = [name for name, p in model.named_parameters() if p.requires_grad]
    state = resume.load() if resume is not None else None
    if state is not None and state["total"] == total and 0 < state["step"] < total:
        with torch.no_grad():
            for p, saved in zip(trainable, (state["params"][n] for n in named), strict=True):
                p.copy_(saved.to(p.device, p.dtype))
        optimizer.load_state_dict(state["optimizer"])
        if scaler is not None and state.get("scaler"):
            scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        curve, window, final_loss = state["curve"], state["window"], state["final_loss"]
        first, elapsed_before = state["step"], state.get("elapsed_s", 0.0)
        for _ in range(first * accum):  # the data stream is a pure function of the seed: replay it
            next(batches_stream)
    for step in range(first, total):
        for group in optimizer.param_groups:
            group["lr"] = s["lr"] * learning_rate_factor(step, total, warmup, s["schedule"])
        batches = [next(batches_stream) for _ in range(accum)]
        n_tokens = sum(len(ids) - start for batch in batches for ids, start in batch)
        step_loss = 0.0
        for batch in batches:
            input_ids, attention, labels = _collate(torch, batch, pad_id)
            # Logits only from the position before the batch's first answer token: the prompt's
            # logits would be thrown away, and over a large vocabulary they cost time and memory.
            keep = input_ids.size(1) - min(start for _, start in batch) + 1 if partial_logits else 0
            with autocast:
                logits = model(input_ids=input_ids.to(device), attention_mask=attention.to(device),
                               **({"logits_to_keep": keep} if partial_logits else {})).logits
            loss = torch.nn.functional.cross_entropy(
                logits[:, :-1].float().reshape(-1, logits.size(-1)),
                labels[:, input_ids.size(1) - logits.size(1) + 1:].reshape(-1).to(device),
                ignore_index=-100, reduction="sum") / n_tokens
            (scaler.scale(loss) if scaler else loss).backward()
            step_loss += loss.item()
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(trainable, s["max_grad_norm"])
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        window.append(step_loss)
        final_loss = step_loss
        if (step + 1) % log_every == 0 or step + 1 == total:
            curve.append([step + 1, round(sum(window) / len(window), 6)])
            window = []
        if progress is not None:
            progress(step + 1, total, step_loss)
        if resume is not None and (step + 1) % resume.interval(total) == 0 and step + 1 < total:
            resume.save({
                "step": step + 1, "total": total,
                "params": {n: p.detach().cpu().clone() for n, p in zip(named, trainable, strict=True)},
                "optimizer": optimizer.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state_all() if device.startswith("cuda") else None,
                "curve": curve, "window": window, "final_loss": final_loss,
                "elapsed_s": elapsed_before + time.perf_counter() - started,
            })
    result = {"steps": total, "loss_curve": curve, "final_loss": round(final_loss, 6),
              "elapsed_before_s": elapsed_before}
    if first:
        result["resumed_at_step"] = first
    return result


def _micro_batches(torch, encoded: list, micro: int, seed: int, pool: int = 8):
    """Endless stream of micro-batches: a fresh seeded permutation every epoch, cut into pools of
    ``pool`` batches whose examples are grouped by length (less padding), served in seeded order."""
    generator = torch.Generator().manual_seed(seed)

    def indices():
        while True:
            yield from torch.randperm(len(encoded), generator=generator).tolist()

    stream = indices()
    while True:
        chosen = sorted((next(stream) for _ in range(micro * pool)), key=lambda i: len(encoded[i][0]))
        groups = [chosen[k:k + micro] for k in range(0, len(chosen), micro)]
        for g in torch.randperm(len(groups), generator=generator).tolist():
            yield [encoded[i] for i in groups[g]]


def _collate(torch, batch: list[tuple[list[int], int]], pad_id: int):
    width = max(len(ids) for ids, _ in batch)
    input_ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    attention = torch.zeros((len(batch), width), dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    for row, (ids, start) in enumerate(batch):
        input_ids[row, :len(ids)] = torch.tensor(ids)
        attention[row, :len(ids)] = 1
        labels[row, start:len(ids)] = torch.tensor(ids[start:])
    return input_ids, attention, labels


def adapter_sha256(adapter_dir: Path) -> str:
    """One hash over the adapter's files (names and contents, in sorted order)."""
    digest = hashlib.sha256()
    for path in sorted(Path(adapter_dir).iterdir()):
        if path.is_file() and path.name.startswith(ADAPTER_PREFIX):
            digest.update(path.name.encode() + b"\0")
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _save_atomically(out_dir: Path, write: Callable[[Path], object]) -> None:
    """Write into a temporary sibling directory, then put it in place of ``out_dir``."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", suffix=".tmp", dir=out_dir.parent))
    try:
        tmp.chmod(0o755)
        write(tmp)
        old = None
        if out_dir.exists():
            old = out_dir.with_name(f".{out_dir.name}.{os.getpid()}.old")
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def merge_adapter(model_path: str, adapter_dir: Path, out_dir: Path) -> Path:
    """Fold the adapter into the base weights and save a complete Hugging Face directory
    (safetensors weights in the base model's dtype, tokenizer, chat template if any), atomically."""
    _, transformers, peft = _import_stack()
    transformers.utils.logging.disable_progress_bar()
    model = transformers.AutoModelForCausalLM.from_pretrained(model_path, dtype="auto")
    merged = peft.PeftModel.from_pretrained(model, str(adapter_dir)).merge_and_unload()
    tokenizer = transformers.AutoTokenizer.from_pretrained(str(adapter_dir))
    out_dir = Path(out_dir)
    _save_atomically(out_dir, lambda tmp: (merged.save_pretrained(tmp, safe_serialization=True),
                                           tokenizer.save_pretrained(tmp)))
    return out_dir
