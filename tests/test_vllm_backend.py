"""The vllm backend's refusals and sampling settings.

vLLM cannot run here: this machine has no GPU and vllm is not installed. So the probes
(``vllm_installed``, ``cuda_devices``) are replaced with monkeypatch to show each refusal, and the
SamplingParams construction is a pure function tested without vllm. Generation itself is untested here.
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
    monkeypatch.setattr(vllm_backend, "vllm_installed", lambda: False)
    with pytest.raises(BackendUnavailableError) as err:
        vllm_factory()(model=ModelSpec(path="some/model"), options={})
    assert "pip install 'lrl-harness[vllm]'" in str(err.value) and "\n" not in str(err.value)


def test_refuses_without_cuda(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_installed", lambda: True)
    monkeypatch.setattr(vllm_backend, "cuda_devices", lambda: [])
    with pytest.raises(BackendUnavailableError, match="needs a CUDA GPU, and none is visible"):
        vllm_factory()(model=ModelSpec(path="some/model"), options={})


def test_refuses_a_gpu_older_than_compute_capability_7(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_installed", lambda: True)
    monkeypatch.setattr(vllm_backend, "cuda_devices", lambda: [M40])
    with pytest.raises(BackendUnavailableError) as err:
        vllm_factory()(model=ModelSpec(path="some/model"), options={})
    assert str(err.value) == ("vLLM needs CUDA compute capability 7.0 or newer; this GPU is Tesla M40 (5.2) "
                              "(use --backend transformers or llamacpp)")


def test_refuses_bf16_before_ampere_and_too_few_gpus(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_installed", lambda: True)
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
    monkeypatch.setattr(vllm_backend, "vllm_installed", lambda: pytest.fail("probed too early"))
    with pytest.raises(ConfigError, match="unknown vllm option 'tp'"):
        vllm_factory()(model=ModelSpec(path="some/model"), options={"tp": 2})


def test_module_does_not_import_vllm_or_torch():
    import subprocess
    import sys

    code = ("import sys, lrl_harness_plugins.vllm_backend; "
            "print(any(m in sys.modules for m in ('vllm', 'torch')))")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "False"


def test_parallel_options_are_checked_in_one_line():
    assert parallel_options({}) == {"tensor_parallel_size": 1, "pipeline_parallel_size": 1}
    assert parallel_options({"tensor_parallel_size": 2, "pipeline_parallel_size": 2,
                             "distributed_executor_backend": "ray"}) == {
        "tensor_parallel_size": 2, "pipeline_parallel_size": 2, "distributed_executor_backend": "ray"}
    for options, message in (({"tensor_parallel_size": 0}, "option 'tensor_parallel_size' must be an integer >= 1"),
                             ({"pipeline_parallel_size": "2"}, "option 'pipeline_parallel_size' must be an integer"),
                             ({"distributed_executor_backend": "slurm"},
                              "must be one of mp, ray, uni, external_launcher, got 'slurm'")):
        with pytest.raises(ConfigError, match=message):
            parallel_options(options)


def test_pipeline_parallel_counts_gpus_unless_ray_spans_machines(monkeypatch):
    monkeypatch.setattr(vllm_backend, "vllm_installed", lambda: True)
    monkeypatch.setattr(vllm_backend, "cuda_devices", lambda: [A100, A100])
    with pytest.raises(BackendUnavailableError, match="needs 4 GPUs; 2 visible here"):
        check_environment("auto", tensor_parallel_size=2, pipeline_parallel_size=2)
    assert check_environment("auto", 2, 2, executor="ray") == [A100, A100]


def test_parallel_options_reach_vllm_llm(monkeypatch):
    """vllm is not installed here: a stand-in ``vllm`` module records what ``LLM(...)`` is given."""
    import sys
    import types

    given = {}
    stand_in = types.ModuleType("vllm")
    stand_in.LLM = lambda **kwargs: given.update(kwargs) or object()
    monkeypatch.setitem(sys.modules, "vllm", stand_in)
    monkeypatch.setattr(vllm_backend, "vllm_installed", lambda: True)
    monkeypatch.setattr(vllm_backend, "cuda_devices", lambda: [A100] * 4)
    vllm_factory()(model=ModelSpec(path="some/model"), options={
        "tensor_parallel_size": 2, "pipeline_parallel_size": 2, "distributed_executor_backend": "mp"})
    assert (given["tensor_parallel_size"], given["pipeline_parallel_size"]) == (2, 2)
    assert given["distributed_executor_backend"] == "mp" and given["model"] == "some/model"
    with pytest.raises(ConfigError, match="vllm backend: option 'distributed_executor_backend'"):
        vllm_factory()(model=ModelSpec(path="m"), options={"distributed_executor_backend": "mpi"})
