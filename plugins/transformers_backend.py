"""The ``transformers`` backend: Hugging Face models (plus an optional LoRA adapter) in PyTorch.

Device: CUDA when available, else CPU (option ``device``). Dtype (option ``dtype`` or
``ModelSpec.dtype``): float32 on CPU; on a GPU bfloat16 where it is supported (Ampere and later),
else float16, so a 3B student (about 6 GB of weights in fp16) fits a 12 GB card. Option
``max_memory_gb`` caps what torch may allocate on the GPU, so a large card can stand in for a
small one (``dtype=float16,max_memory_gb=12`` behaves like a pre-Ampere 12 GB card). Prompts are
completed in batches (option ``batch_size``, default 64) with left padding. Greedy settings
(no repetition penalty, no stop strings) decode with :func:`greedy_rows`, which drops each row from
the batch when it ends (option ``decode=generate`` keeps ``model.generate`` for them); every
sampling setting is passed explicitly, so a model's own ``generation_config`` (for example a
repetition penalty shipped with the checkpoint) never changes the result behind the caller's back.
Threads: torch's default.
"""

from __future__ import annotations

import gc
import time
from collections.abc import Callable
from typing import Any

from lrl_harness import (
    BackendUnavailableError,
    Completion,
    ConfigError,
    GenerationSettings,
    ModelSpec,
    Option,
    check_options,
    encode_prompt,
    hookimpl,
    import_torch,
)
from lrl_harness_plugins.transformers_greedy import greedy_rows, left_padded

DEFAULT_BATCH_SIZE = 64
_DTYPES = {"float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}
OPTIONS = {
    "device": Option(str, "auto", "where the model runs",
                     check=lambda v: v in ("auto", "cpu", "mps", "cuda") or v.startswith("cuda:"),
                     requirement="auto, cpu, cuda or cuda:N"),
    "dtype": Option(str, None, "weights dtype (default: float32 on CPU, bf16/fp16 on a GPU)",
                    choices=("auto", *_DTYPES), nullable=True),
    "batch_size": Option(int, DEFAULT_BATCH_SIZE, "prompts decoded together", min=1),
    "decode": Option(str, "rows", "greedy decoding: rows (a row leaves the batch when it ends) or "
                     "generate (model.generate, every row to the batch's end)", choices=("rows", "generate")),
}


def _import_torch_stack():
    torch = import_torch()
    try:
        import transformers
    except ImportError:
        raise BackendUnavailableError("the transformers backend needs transformers: pip install transformers") from None
    return torch, transformers


def resolve_device(torch, requested: str | None) -> str:
    if not requested or requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise BackendUnavailableError(f"device {requested!r} was asked for but CUDA is not available here")
    return requested


def resolve_dtype(torch, device: str, requested: str | None):
    if requested and requested != "auto":
        if requested not in _DTYPES:
            raise ConfigError(f"unknown dtype {requested!r}; available: auto, float32, bfloat16, float16")
        return getattr(torch, _DTYPES[requested])
    if not device.startswith("cuda"):
        return torch.float32
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


class TransformersBackend:
    name = "transformers"

    def __init__(self, model: ModelSpec, options: dict | None = None):
        options = check_options("backend transformers", OPTIONS, options, unknown_label="transformers")
        torch, transformers = _import_torch_stack()
        transformers.utils.logging.disable_progress_bar()
        self._torch = torch
        self.spec = model
        self.device = resolve_device(torch, options.get("device"))
        self.dtype = resolve_dtype(torch, self.device, options.get("dtype") or model.dtype)
        self.batch_size = options["batch_size"]
        self.decode = options["decode"]
        try:
            self.tokenizer = transformers.AutoTokenizer.from_pretrained(model.tokenizer or model.path)
            self.model = transformers.AutoModelForCausalLM.from_pretrained(model.path, dtype=self.dtype)
        except OSError as exc:
            raise ConfigError(f"cannot load model {model.path!r}: {str(exc).splitlines()[0]}") from None
        if model.adapter:
            self.model = _apply_adapter(self.model, model.adapter)
        self.max_memory_gb = _cap_gpu_memory(torch, self.device, options.get("max_memory_gb"))
        if self.device.startswith("cuda"):
            torch.cuda.reset_peak_memory_stats(self.device)
        self.model.to(self.device).eval()
        self.tokenizer.padding_side = "left"
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        pad = self.tokenizer.pad_token_id
        self.pad_id = pad if pad is not None else self.eos_ids[0]

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a rendered prompt, exactly as :meth:`generate` feeds it to the model."""
        return encode_prompt(self.tokenizer, text)

    def generate(self, prompts: list[str], settings: GenerationSettings,
                 progress: Callable[[int], None] | None = None) -> list[Completion]:
        """Complete each rendered prompt. Batches are formed from prompts of similar length;
        ``latency_s`` is the batch's wall time divided by its size; ``ttft_s`` (prefill plus the
        first token) is measured when a single prompt is given."""
        encoded = [self.tokenize(p) for p in prompts]
        order = sorted(range(len(prompts)), key=lambda i: -len(encoded[i]))
        results: list[Completion | None] = [None] * len(prompts)
        done = 0
        for start in range(0, len(order), self.batch_size):
            batch = order[start:start + self.batch_size]
            for i, completion in zip(batch, self._generate_batch([encoded[i] for i in batch], settings,
                                                                 timed=len(prompts) == 1)):
                results[i] = completion
            done += len(batch)
            if progress is not None:
                progress(done)
        return results  # type: ignore[return-value]

    def _generate_batch(self, batch: list[list[int]], settings: GenerationSettings,
                        timed: bool) -> list[Completion]:
        torch = self._torch
        end_ids = set(self.eos_ids) | {self.pad_id}
        started = time.perf_counter()
        if self.decode == "rows" and self._plain_greedy(settings):
            result = greedy_rows(torch, self.model, batch, self.pad_id, end_ids, settings.max_new_tokens,
                                 self.device)
            rows, first_token_at = result.tokens, result.first_token_at
        else:
            rows, first_token_at = self._generate(batch, settings, timed)
        if self.device.startswith("cuda"):  # kernels run asynchronously: time the work, not its launch
            torch.cuda.synchronize(self.device)
        elapsed = time.perf_counter() - started
        completions = []
        for row, ids in zip(rows, batch):
            n, finished = _generated_length(row, end_ids)
            text = self.tokenizer.decode(row[:n], skip_special_tokens=True)
            text, stopped = _cut_at_stop(text, settings.stop)
            completions.append(Completion(
                text=text, prompt_tokens=len(ids), completion_tokens=n,
                latency_s=elapsed / len(batch),
                ttft_s=(first_token_at - started) if timed and first_token_at else None,
                meta={"finish_reason": "stop" if finished or stopped else "length"}))
        return completions

    @staticmethod
    def _plain_greedy(settings: GenerationSettings) -> bool:
        return settings.temperature <= 0 and settings.repetition_penalty == 1.0 and not settings.stop

    def _generate(self, batch: list[list[int]], settings: GenerationSettings,
                  timed: bool) -> tuple[list[list[int]], float | None]:
        """``model.generate`` on a left-padded batch: each row's new tokens (finished rows padded to
        the batch's end) and when the first new token arrived (when ``timed``)."""
        torch = self._torch
        input_ids, attention = left_padded(torch, batch, self.pad_id, self.device)
        width = input_ids.size(1)
        timer = _FirstTokenTimer() if timed else None
        with torch.inference_mode():
            output = self.model.generate(
                input_ids=input_ids, attention_mask=attention,
                generation_config=self._generation_config(settings), streamer=timer,
                **({"stop_strings": list(settings.stop), "tokenizer": self.tokenizer} if settings.stop else {}))
        return output[:, width:].tolist(), timer.first_token_at if timer else None

    def _generation_config(self, settings: GenerationSettings):
        from transformers import GenerationConfig

        sampling = settings.temperature > 0
        # Greedy: the neutral values, so none of the model's own sampling defaults leaks in.
        # Sampling: plain temperature sampling, without the model's top-k/top-p.
        return GenerationConfig(
            max_new_tokens=settings.max_new_tokens, do_sample=sampling, num_beams=1,
            temperature=settings.temperature if sampling else 1.0, top_k=0 if sampling else 50,
            top_p=1.0, repetition_penalty=settings.repetition_penalty,
            eos_token_id=self.eos_ids, pad_token_id=self.pad_id)

    def info(self) -> dict[str, Any]:
        import peft
        import transformers

        torch = self._torch
        return {
            "backend": self.name,
            "model": self.spec.path,
            "adapter": self.spec.adapter,
            "device": self.device,
            "device_name": torch.cuda.get_device_name(self.device) if self.device.startswith("cuda") else "cpu",
            "dtype": str(self.dtype).removeprefix("torch."),
            "batch_size": self.batch_size,
            "decode": self.decode,
            "threads": torch.get_num_threads(),
            **self._gpu_memory(),
            "parameters": sum(p.numel() for p in self.model.parameters()),
            "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                         "peft": peft.__version__},
        }

    def _gpu_memory(self) -> dict[str, Any]:
        """Peak GPU memory since loading (weights included), as torch's allocator saw it."""
        if not self.device.startswith("cuda"):
            return {}
        torch = self._torch
        props = torch.cuda.get_device_properties(self.device)
        return {"gpu": {
            "capability": f"{props.major}.{props.minor}",
            "total_mib": round(props.total_memory / 2**20, 1),
            "max_memory_gb": self.max_memory_gb,
            "peak_allocated_mib": round(torch.cuda.max_memory_allocated(self.device) / 2**20, 1),
            "peak_reserved_mib": round(torch.cuda.max_memory_reserved(self.device) / 2**20, 1),
        }}

    def close(self) -> None:
        self.model = None
        gc.collect()
        if self.device.startswith("cuda"):
            self._torch.cuda.empty_cache()


def _cap_gpu_memory(torch, device: str, max_memory_gb) -> float | None:
    if max_memory_gb in (None, ""):
        return None
    try:
        cap = float(max_memory_gb)
    except (TypeError, ValueError):
        raise ConfigError(f"transformers option max_memory_gb must be a number of GB, got {max_memory_gb!r}") from None
    if cap <= 0:
        raise ConfigError(f"transformers option max_memory_gb must be positive, got {max_memory_gb!r}")
    if not device.startswith("cuda"):
        raise ConfigError("transformers option max_memory_gb applies to a CUDA device only")
    index = torch.device(device).index
    index = torch.cuda.current_device() if index is None else index
    total = torch.cuda.get_device_properties(index).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap * 2**30 / total), index)
    return cap


def _apply_adapter(model, adapter: str):
    try:
        from peft import PeftModel
    except ImportError:
        raise BackendUnavailableError("loading a LoRA adapter needs peft: pip install peft") from None
    try:
        return PeftModel.from_pretrained(model, adapter)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot load adapter {adapter!r}: {str(exc).splitlines()[0]}") from None


def _eos_ids(model, tokenizer) -> list[int]:
    eos = model.generation_config.eos_token_id
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if not ids:
        raise ConfigError("the model defines no end-of-sequence token")
    return ids


def _generated_length(row: list[int], end_ids: set[int]) -> tuple[int, bool]:
    """Tokens generated before the end-of-sequence (or padding) token, and whether it ended."""
    for n, token in enumerate(row):
        if token in end_ids:
            return n, True
    return len(row), False


def _cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    cuts = [text.find(s) for s in stops if s and s in text]
    return (text[:min(cuts)], True) if cuts else (text, False)


class _FirstTokenTimer:
    """A generate() streamer that notes when the first new token arrives (the first ``put`` is
    the prompt itself)."""

    def __init__(self):
        self.calls = 0
        self.first_token_at: float | None = None

    def put(self, value) -> None:
        self.calls += 1
        if self.calls == 2:
            self.first_token_at = time.perf_counter()

    def end(self) -> None:
        pass


def transformers_backend(model: ModelSpec, options: dict | None = None) -> TransformersBackend:
    return TransformersBackend(model, options or {})


@hookimpl
def register_backends(register):
    register("transformers", transformers_backend, runs=("hf",), threads="torch", batches="batch_size",
             description="Hugging Face transformers on CPU or CUDA, batched greedy decoding, LoRA adapters",
             options=OPTIONS)
