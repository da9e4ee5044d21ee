"""The ``vllm`` backend: vLLM's offline ``LLM`` engine on CUDA GPUs (compute capability 7.0 or newer).

The checks run before vllm is imported, so a machine without it, without CUDA or with an older GPU
(a Tesla M40 is 5.2) gets one clear line instead of an import-time traceback. An adapter is served
through ``LoRARequest`` (``enable_lora``), or pass the merged model as ``ModelSpec.path``.
Options: ``tensor_parallel_size`` (1), ``pipeline_parallel_size`` (1), ``distributed_executor_backend``
(``mp``, ``ray``, ``uni`` or ``external_launcher``; vLLM picks one when unset), ``dtype`` (ModelSpec.dtype),
``gpu_memory_utilization`` (0.9), ``max_model_len``, ``max_lora_rank`` (the adapter's r, at least 8),
``seed`` (0), ``enforce_eager``. The parallel options are passed to ``vllm.LLM`` under the same names
(vLLM's documented engine arguments): tensor x pipeline GPUs in all, on this machine unless the
executor is ``ray`` (a Ray cluster may span several machines, so the local GPU count is not checked).
"""

from __future__ import annotations

import importlib.util
import json
import time
from pathlib import Path

from lrl_harness import BackendUnavailableError, Completion, ConfigError, GenerationSettings, ModelSpec, hookimpl

MIN_CAPABILITY = (7, 0)
BF16_CAPABILITY = (8, 0)
_OPTIONS = {"tensor_parallel_size", "pipeline_parallel_size", "distributed_executor_backend", "dtype",
            "gpu_memory_utilization", "max_model_len", "max_lora_rank", "seed", "enforce_eager"}
EXECUTORS = ("mp", "ray", "uni", "external_launcher")


def parallel_options(options: dict) -> dict:
    """``tensor_parallel_size``, ``pipeline_parallel_size`` and ``distributed_executor_backend`` checked
    (ConfigError, one line, naming the option and what it accepts), as ``vllm.LLM`` keyword arguments."""
    out = {}
    for key in ("tensor_parallel_size", "pipeline_parallel_size"):
        value = options.get(key, 1)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"vllm backend: option {key!r} must be an integer >= 1, got {value!r}")
        out[key] = value
    executor = options.get("distributed_executor_backend")
    if executor is not None:
        if executor not in EXECUTORS:
            raise ConfigError(f"vllm backend: option 'distributed_executor_backend' must be one of "
                              f"{', '.join(EXECUTORS)}, got {executor!r}")
        out["distributed_executor_backend"] = executor
    return out


def sampling_kwargs(settings: GenerationSettings) -> dict:
    """Keyword arguments for ``vllm.SamplingParams`` that reproduce ``settings``.

    Every value is explicit: vLLM's ``max_tokens`` defaults to 16, and its repetition penalty must
    match what the other backends apply (a model's generation_config may ship one).
    """
    if settings.max_new_tokens < 1:
        raise ConfigError(f"max_new_tokens must be at least 1, got {settings.max_new_tokens}")
    greedy = settings.temperature == 0
    return {
        "n": 1,
        "temperature": 0.0 if greedy else float(settings.temperature),
        "top_p": 1.0,
        "top_k": 1 if greedy else -1,
        "max_tokens": int(settings.max_new_tokens),
        "repetition_penalty": float(settings.repetition_penalty),
        "presence_penalty": 0.0,
        "frequency_penalty": 0.0,
        "stop": list(settings.stop),
        "seed": 0,
    }


# --- probes (plain functions so that tests can replace them) -------------------------------------


def vllm_installed() -> bool:
    return importlib.util.find_spec("vllm") is not None


def cuda_devices() -> list[tuple[str, tuple[int, int]]]:
    """(name, compute capability) of each visible CUDA device; empty without CUDA."""
    try:
        import torch
    except ImportError:
        return []
    if not torch.cuda.is_available():
        return []
    return [(torch.cuda.get_device_name(i), tuple(torch.cuda.get_device_capability(i)))
            for i in range(torch.cuda.device_count())]


Device = tuple[str, tuple[int, int]]


def check_environment(dtype: str = "auto", tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
                      executor: str | None = None) -> list[Device]:
    """Raise BackendUnavailableError (one line) unless vLLM can run here; return the devices."""
    if not vllm_installed():
        raise BackendUnavailableError(
            "the vllm backend needs vLLM and a CUDA GPU of compute capability 7.0 or newer: "
            "pip install 'lrl-harness[vllm]'")
    devices = cuda_devices()
    if not devices:
        raise BackendUnavailableError("the vllm backend needs a CUDA GPU, and none is visible here "
                                      "(use --backend transformers or llamacpp on CPU)")
    old = [f"{name} ({cap[0]}.{cap[1]})" for name, cap in devices if tuple(cap) < MIN_CAPABILITY]
    if old:
        raise BackendUnavailableError(
            f"vLLM needs CUDA compute capability 7.0 or newer; this GPU is {old[0]} "
            "(use --backend transformers or llamacpp)")
    needed = tensor_parallel_size * pipeline_parallel_size
    if needed > len(devices) and executor != "ray":
        raise BackendUnavailableError(
            f"tensor_parallel_size {tensor_parallel_size} x pipeline_parallel_size {pipeline_parallel_size} "
            f"needs {needed} GPUs; {len(devices)} visible here (distributed_executor_backend=ray spans machines)")
    if dtype in ("bfloat16", "bf16") and any(tuple(cap) < BF16_CAPABILITY for _, cap in devices):
        raise BackendUnavailableError("bfloat16 needs compute capability 8.0 or newer; use dtype float16")
    return devices


def _adapter_rank(adapter: str) -> int:
    try:
        config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"{adapter}: not a LoRA adapter directory "
                          "(no readable adapter_config.json)") from None
    return int(config.get("r", 8))


class VllmBackend:
    name = "vllm"

    def __init__(self, model: ModelSpec, options: dict | None = None):
        options = dict(options or {})
        unknown = sorted(set(options) - _OPTIONS)
        if unknown:
            raise ConfigError(f"unknown vllm option {unknown[0]!r}; known: {', '.join(sorted(_OPTIONS))}")
        self.model = model
        self.dtype = str(options.get("dtype") or model.dtype or "auto")
        parallel = parallel_options(options)
        self.tensor_parallel_size = parallel["tensor_parallel_size"]
        self.devices = check_environment(self.dtype, parallel["tensor_parallel_size"],
                                         parallel["pipeline_parallel_size"],
                                         parallel.get("distributed_executor_backend"))

        from vllm import LLM

        engine_args = {
            "model": model.path,
            "tokenizer": model.tokenizer or model.path,
            **parallel,
            "dtype": self.dtype,
            "seed": int(options.get("seed", 0)),
            "gpu_memory_utilization": float(options.get("gpu_memory_utilization", 0.9)),
        }
        for key in ("max_model_len", "enforce_eager"):
            if key in options:
                engine_args[key] = options[key]
        self.lora_request = None
        if model.adapter:
            from vllm.lora.request import LoRARequest

            rank = int(options.get("max_lora_rank") or max(8, _adapter_rank(model.adapter)))
            engine_args.update(enable_lora=True, max_lora_rank=rank)
            self.lora_request = LoRARequest(Path(model.adapter).name or "adapter", 1, str(model.adapter))
        self.engine_args = engine_args
        self.llm = LLM(**engine_args)

    def tokenize(self, text: str) -> list[int]:
        """The ids vLLM feeds for a text prompt (the tokenizer's special tokens included)."""
        return list(self.llm.get_tokenizer()(text).input_ids)

    def generate(self, prompts: list[str], settings: GenerationSettings, progress=None) -> list[Completion]:
        from vllm import SamplingParams

        params = SamplingParams(**sampling_kwargs(settings))
        started = time.perf_counter()
        outputs = self.llm.generate(prompts, params, lora_request=self.lora_request, use_tqdm=False)
        elapsed = time.perf_counter() - started
        completions = []
        for out in outputs:
            first = out.outputs[0]
            ttft, latency = _request_times(out, elapsed)
            completions.append(Completion(
                text=first.text, prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(first.token_ids), latency_s=latency, ttft_s=ttft,
                meta={"finish_reason": first.finish_reason, "batch_size": len(prompts),
                      "batch_elapsed_s": round(elapsed, 4)}))
        if progress is not None:
            progress(len(prompts))
        return completions

    def info(self) -> dict:
        from importlib.metadata import version

        return {"backend": self.name, "engine": {k: v for k, v in self.engine_args.items() if k != "model"},
                "model": self.model.path, "adapter": self.model.adapter,
                "devices": [{"name": n, "compute_capability": f"{c[0]}.{c[1]}"} for n, c in self.devices],
                "vllm": version("vllm")}

    def close(self) -> None:
        self.llm = None


def _request_times(out, batch_elapsed: float) -> tuple[float | None, float]:
    """(ttft, latency) of one request from vLLM's metrics when it reports them; otherwise no ttft and
    the batch's wall time (every request of an offline batch finishes within it)."""
    metrics = getattr(out, "metrics", None)
    arrival = getattr(metrics, "arrival_time", None)
    first = getattr(metrics, "first_token_time", None)
    finished = getattr(metrics, "finished_time", None) or getattr(metrics, "last_token_time", None)
    ttft = first - arrival if arrival and first else None
    latency = finished - arrival if arrival and finished else batch_elapsed
    return ttft, latency


def factory(model: ModelSpec, options: dict | None = None) -> VllmBackend:
    return VllmBackend(model, options)


@hookimpl
def register_backends(register):
    register("vllm", factory, runs=("hf",), description="vLLM offline engine on a CUDA GPU (compute capability >= 7.0)")
