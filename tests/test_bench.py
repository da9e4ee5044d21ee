"""Benchmarks: target parsing, measuring, ratios, the command, and a run's exported student.

The backends here are stand-ins registered by the test (real models are benchmarked elsewhere): they
read the meetings from the prompt and answer with the task's exact solver, wrong on every k-th
problem when asked to be, and record what they were given.
"""

import hashlib
import re
from types import SimpleNamespace

import lrl_harness_tasks.meeting_rooms as meeting_rooms
import pytest
from click.testing import CliRunner
from lrl_harness import Completion, ModelSpec, hookimpl, sha256_text
from lrl_harness.api.errors import ConfigError, LrlError
from lrl_harness.api.registry import Registry, make_plugin_manager
from lrl_harness.bench.performance import percentile
from lrl_harness.bench.runner import run_bench
from lrl_harness.bench.targets import parse_target, unique_labels
from lrl_harness.cli.commands import bench_command
from lrl_harness.evaluation.statistics import score_stage
from lrl_harness.results.files import write_json
from lrl_harness.results.io import load_results, new_results
from lrl_harness_tasks.meeting_rooms.solver import max_simultaneous

LOADED = []  # every stand-in created, to inspect what the bench asked of it


class StandInBackend:
    """Not a model: answers from the prompt with the exact solver (see the module docstring)."""

    def __init__(self, name, model, options):
        self.name, self.model, self.options = name, model, options
        self.prompts, self.calls, self.closed = [], [], False
        LOADED.append(self)

    def generate(self, prompts, settings, progress=None):
        self.calls.append(len(prompts))
        out = []
        for prompt in prompts:
            self.prompts.append(prompt)
            meetings = [(int(a), int(b)) for a, b in re.findall(r"\[(\d+)-(\d+)\]", prompt)]
            rooms = int(re.search(r"Available rooms: (\d+)", prompt).group(1))
            answer = "YES" if max_simultaneous(meetings) <= rooms else "NO"
            every = self.options.get("wrong_every")
            if every and len(self.prompts) % every == 0:
                answer = {"YES": "NO", "NO": "YES"}[answer]
            out.append(Completion(f"Peak {max_simultaneous(meetings)}. Answer: {answer}",
                                  prompt_tokens=len(prompt.split()), completion_tokens=5, latency_s=0.0,
                                  ttft_s=0.0))
        return out

    def tokenize(self, text):
        return text.split()

    def info(self):
        return {"backend": self.name, "threads": 1, "model": self.model.path}

    def close(self):
        self.closed = True


class StandIns:
    @staticmethod
    @hookimpl
    def register_backends(register):
        for name, runs, threads in (("transformers", "hf", "torch"), ("llamacpp", "gguf", "n_threads"),
                                    ("openai", "server", None), ("myengine", "gguf", "num_threads")):
            register(name, lambda model, options, _n=name: StandInBackend(_n, model, options),
                     description="stand-in for tests", runs=(runs,), threads=threads)


@pytest.fixture
def registry():
    LOADED.clear()
    return Registry(make_plugin_manager(load_entry_points=False, plugins=[meeting_rooms, StandIns]))


@pytest.fixture
def task(registry):
    return registry.get("task", "meeting-rooms").factory()


def test_parse_target():
    t = parse_target("transformers=runs/x/merged")
    assert t == ("transformers", "transformers", ModelSpec("runs/x/merged"), {}, 1)
    assert parse_target("transformers=m,batch=16").batch == 16 and parse_target("transformers=m").batch == 1
    t = parse_target("llamacpp=model-q8_0.gguf,n_threads=2,prefix_cache=false,adapter=lora.gguf")
    assert t.model == ModelSpec("model-q8_0.gguf", adapter="lora.gguf")
    assert t.options == {"n_threads": 2, "prefix_cache": False}
    t = parse_target("local:openai=my-model,base_url=http://127.0.0.1:8000/v1,temperature=0.5")
    assert (t.label, t.backend, t.model.path) == ("local", "openai", "my-model")
    assert t.options == {"base_url": "http://127.0.0.1:8000/v1", "temperature": 0.5}
    for bad in ("llamacpp", "=x.gguf", "llamacpp=", "llamacpp=x.gguf,n_threads", "transformers=m,batch=0",
                "transformers=m,batch=2.5"):
        with pytest.raises(ConfigError, match="invalid target"):
            parse_target(bad)


def test_labels_are_made_unique():
    texts = ("llamacpp=a/model-f32.gguf", "llamacpp=a/model-q8_0.gguf", "transformers=a")
    targets = unique_labels([parse_target(t) for t in texts])
    assert [t.label for t in targets] == ["llamacpp:model-f32.gguf", "llamacpp:model-q8_0.gguf",
                                          "transformers"]
    with pytest.raises(ConfigError, match="two targets are labelled 'x'"):
        unique_labels([parse_target("x:llamacpp=a"), parse_target("x:transformers=b")])


def test_percentile_interpolates():
    assert percentile([1.0], 95) == 1.0
    assert percentile([1.0, 2.0, 3.0, 4.0, 5.0], 50) == 3.0
    assert percentile(list(range(101)), 95) == pytest.approx(95.0)
    assert percentile([0.0, 10.0], 95) == pytest.approx(9.5)


def test_run_bench_measures_each_target(registry, task):
    problems = task.problems("balanced", "test", n=30)
    targets = [parse_target("transformers=hf-dir"), parse_target("llamacpp=model.gguf,wrong_every=7")]
    bench = run_bench(registry, task, problems, targets, warmup=3, repeats=2, preset="balanced", split="test")
    assert (bench["task"], bench["preset"], bench["split"]) == ("meeting-rooms", "balanced", "test")
    assert bench["n"] == 30 and bench["warmup"] == 3 and bench["repeats"] == 2
    hf, gguf = bench["backends"]["transformers"], bench["backends"]["llamacpp"]
    assert hf["accuracy"] == 1.0 and hf["unparsed"] == 0 and len(hf["results"]) == 30
    assert gguf["correct"] == 26  # wrong on calls 7, 14, 21, 28 (the first pass is calls 4-33)
    assert set(hf) >= {"balanced_accuracy", "majority_baseline", "ci95", "by_difficulty", "latency", "ttft",
                       "throughput", "memory", "info", "load_s"}
    assert set(hf["latency"]) >= {"mean_s", "p50_s", "p95_s"} and set(hf["ttft"]) == {"mean_s", "p50_s"}
    assert set(hf["throughput"]) >= {"prefill_tokens_per_s", "decode_tokens_per_s", "problems_per_s"}
    assert hf["memory"]["peak_rss_mib"] > 0 and hf["memory"]["gpu_max_allocated_mib"] is None
    record = hf["results"][0]
    assert set(record) >= {"problem_id", "difficulty", "problem", "expected", "answer", "correct", "response",
                           "prompt_sha256", "prompt_tokens", "completion_tokens", "latency_s"}
    loaded = {b.name: b for b in LOADED}
    assert all(b.closed for b in LOADED)
    assert len(loaded["transformers"].prompts) == 3 + 2 * 30  # warm-up, then every problem twice
    assert loaded["transformers"].prompts[3] == task.student_prompt(problems[0], None)
    assert hf["inconsistent_repeats"] == 0 and gguf["inconsistent_repeats"] > 0
    assert set(bench["ratios"]) == {"transformers/llamacpp"}
    assert set(bench["ratios"]["transformers/llamacpp"]) == {"latency_mean", "latency_p50", "problems_per_s",
                                                             "latency_mean_ci95"}
    machine = bench["machine"]
    assert machine["cpu"] and machine["cores"] and "torch" in machine["packages"]
    assert machine["threads_used"] == {"transformers": 1, "llamacpp": 1}


def test_a_batched_target_sends_n_prompts_per_call(registry, task):
    problems = task.problems("balanced", "test", n=20)
    targets = [parse_target("batched:transformers=hf-dir,batch=8"), parse_target("single:transformers=hf-dir")]
    bench = run_bench(registry, task, problems, targets, warmup=1, isolate=False, order="given", threads=[2])
    batched, single = (b for b in LOADED)
    assert batched.calls == [1, 8, 8, 4] and single.calls == [1] * 21  # a warm-up prompt, then the problems
    entry = bench["backends"]["batched"]
    assert entry["batch"] == 8 and bench["backends"]["single"]["batch"] == 1
    assert entry["correct"] == 20 and [r["problem_id"] for r in entry["results"]] == [p.id for p in problems]
    latencies = [r["latency_s"] for r in entry["results"]]
    assert latencies[:8] == [latencies[0]] * 8 and latencies[8:16] == [latencies[8]] * 8  # a batch's wall time


def test_thread_counts_go_to_the_option_each_backend_declares(registry):
    from lrl_harness.bench.targets import with_threads

    targets = [parse_target(t) for t in ("transformers=hf-dir", "llamacpp=m.gguf", "mine:myengine=m.gguf",
                                         "own:llamacpp=m.gguf,n_threads=1", "openai=x")]
    out = {t.label: t.options for t in with_threads(targets, [1, 2], registry)}
    assert out == {
        "transformers@1t": {"_threads": 1}, "transformers@2t": {"_threads": 2},  # torch threads: own process
        "llamacpp@1t": {"n_threads": 1, "_threads": 1}, "llamacpp@2t": {"n_threads": 2, "_threads": 2},
        "mine@1t": {"num_threads": 1, "_threads": 1}, "mine@2t": {"num_threads": 2, "_threads": 2},
        "own": {"n_threads": 1, "_threads": 1},  # its own setting, once
        "openai": {},  # a server: left alone
    }


def test_run_bench_rejects_an_unknown_backend_before_loading(registry, task):
    problems = task.problems("balanced", "test", n=3)
    with pytest.raises(LrlError, match="unknown backend 'vllm'"):
        run_bench(registry, task, problems, [parse_target("transformers=x"), parse_target("vllm=y")])
    assert LOADED == []


def invoke(registry, args):
    """The command in this process: the stand-in backends exist only here (a spawned process would
    rebuild the installed plugins)."""
    return CliRunner().invoke(bench_command, [*args, "--in-process"], obj=SimpleNamespace(registry=registry))


def test_bench_command_writes_and_updates_results(registry, tmp_path):
    out = tmp_path / "bench.json"
    result = invoke(registry, ["--n", "9", "--target", "transformers=hf", "--target", "llamacpp=m.gguf",
                               "--warmup", "1", "--out", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    data = load_results(out)
    assert data["task"] == "meeting-rooms" and data["split"] == "test"
    assert list(data["benchmarks"]["backends"]) == ["transformers", "llamacpp"]
    assert "Benchmark: speed by backend" in result.output and "transformers/llamacpp" in result.output

    existing = tmp_path / "run.json"
    write_json(existing, {**new_results(task="meeting-rooms", preset="balanced", split="test"), "note": "x"})
    result = invoke(registry, ["--n", "3", "--target", "llamacpp=m.gguf", "--out", str(existing), "-q"])
    assert result.exit_code == 0, result.output
    updated = load_results(existing)
    assert updated["note"] == "x" and list(updated["benchmarks"]["backends"]) == ["llamacpp"]

    other = invoke(registry, ["--preset", "seed", "--n", "3", "--target", "llamacpp=m.gguf", "--out",
                              str(existing), "-q"])
    assert isinstance(other.exception, LrlError) and "preset 'balanced', not 'seed'" in str(other.exception)


STRATEGY = "Sort the start and end times; ends before starts; track the peak."


def make_run(tmp_path, task, strategy_in_prompt=True, tamper=False):
    """A run folder as the pipeline leaves it: results.json with the lora stage and the export."""
    run = tmp_path / "run"
    (run / "export").mkdir(parents=True)
    problems = task.problems("balanced", "test", n=12, seed=5)
    files = {}
    for quant in ("f32", "q8_0"):
        path = run / "export" / f"model-{quant}.gguf"
        path.write_bytes(b"GGUF" + quant.encode())
        files[path.name] = {"path": f"export/{path.name}", "quant": quant, "kind": "model",
                            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
    if tamper:
        (run / "export" / "model-q8_0.gguf").write_bytes(b"GGUF changed")
    seen = STRATEGY if strategy_in_prompt else None
    lora_records = [{"problem_id": p.id, "difficulty": p.difficulty, "problem": task.describe(p),
                     "expected": p.expected, "answer": p.expected, "correct": True,
                     "prompt_sha256": sha256_text(task.student_prompt(p, seen))} for p in problems]
    results = new_results(
        task="meeting-rooms", preset="balanced", split="test", config={"test_n": 12},
        provenance={"seeds": {"test": 5}, "strategy": STRATEGY, "strategy_sha256": sha256_text(STRATEGY)})
    results["stages"]["lora"] = {**score_stage(lora_records), "results": lora_records, "who": {
        "student": "tiny", "path": "base-model", "adapter": str(run / "adapter"),
        "strategy_in_prompt": strategy_in_prompt, "settings": {"max_new_tokens": 48, "stop": []}}}
    (run / "adapter").mkdir()
    results["export"] = {"files": files}
    write_json(run / "results.json", results)
    return run, problems


def test_bench_a_runs_student_on_every_exported_engine(registry, task, tmp_path):
    run, problems = make_run(tmp_path, task)
    out = tmp_path / "bench.json"
    result = invoke(registry, ["--run", str(run), "--warmup", "0", "--out", str(out)])
    assert result.exit_code == 0, result.output
    bench = load_results(out)["benchmarks"]
    assert list(bench["backends"]) == ["transformers", "llamacpp:f32", "llamacpp:q8_0"]
    assert bench["n"] == 12 and bench["settings"]["max_new_tokens"] == 48
    assert bench["strategy_in_prompt"] and bench["strategy_sha256"] == sha256_text(STRATEGY)
    specs = {b.name + ":" + b.model.path.rsplit("/", 1)[-1]: b.model for b in LOADED}
    assert specs["transformers:base-model"].adapter == str(run / "adapter")
    assert specs["llamacpp:model-q8_0.gguf"].path == str(run / "export" / "model-q8_0.gguf")
    assert LOADED[0].prompts[0] == task.student_prompt(problems[0], STRATEGY)
    assert "prompts identical to the run's on 12 of 12 problems" in result.output


def test_bench_run_without_strategy_in_prompt(registry, task, tmp_path):
    run, problems = make_run(tmp_path, task, strategy_in_prompt=False)
    result = invoke(registry, ["--run", str(run), "--warmup", "0", "--out", str(tmp_path / "b.json"), "-q"])
    assert result.exit_code == 0, result.output
    assert LOADED[0].prompts[0] == task.student_prompt(problems[0], None)


def test_bench_run_refuses_changed_files(registry, task, tmp_path):
    run, _ = make_run(tmp_path, task, tamper=True)
    result = invoke(registry, ["--run", str(run), "--out", str(tmp_path / "b.json"), "-q"])
    assert isinstance(result.exception, LrlError) and "sha256 differs" in str(result.exception)


def test_bench_run_without_export_is_an_error(registry, tmp_path):
    run = tmp_path / "run"
    write_json(run / "results.json", new_results(task="meeting-rooms", preset="balanced", split="test"))
    result = invoke(registry, ["--run", str(run), "--out", str(tmp_path / "b.json"), "-q"])
    assert isinstance(result.exception, LrlError) and "no trained student" in str(result.exception)


@pytest.mark.slow
def test_bench_the_offline_runs_student_on_real_engines(offline_run, tmp_path, capsys):
    """The real trained student of the shared offline run, on the real transformers backend (plus
    llama.cpp for every GGUF file the run exported): same prompts, same answers as the run's lora stage."""
    from lrl_harness.cli.app import main
    from lrl_harness.reporting.check import check

    run_dir, results = offline_run
    out = tmp_path / "bench.json"
    assert main(["bench", "--run", str(run_dir), "--warmup", "1", "--out", str(out)]) == 0
    assert "prompts identical to the run's on" in capsys.readouterr().err
    bench = load_results(out)["benchmarks"]
    gguf = [e for e in (results.get("export") or {}).get("files", {}).values() if e.get("kind") == "model"]
    assert list(bench["backends"]) == ["transformers"] + [f"llamacpp:{e['quant']}" for e in gguf]
    lora = results["stages"]["lora"]
    hf = bench["backends"]["transformers"]
    assert [r["answer"] for r in hf["results"]] == [r["answer"] for r in lora["results"]]
    assert hf["latency"]["mean_s"] > 0 and hf["throughput"]["problems_per_s"] > 0
    assert check(load_results(out), load_results(out)).passed


def test_load_levels_on_an_in_process_backend(registry, task):
    """An in-process backend answers one request at a time: only concurrency 1 is measured for it."""
    from lrl_harness.bench.load import parse_levels

    problems = task.problems("balanced", "test", n=8)
    bench = run_bench(registry, task, problems, [parse_target("llamacpp=m.gguf,wrong_every=4")], warmup=0,
                      levels=parse_levels("1,4", None), slo={"e2e": 5.0}, order="random", seed=3)
    entry = bench["backends"]["llamacpp"]
    assert entry["reference_level"] == "c=1" and entry["correct"] == 6
    assert entry["levels"]["c=4"]["skipped"].startswith("the llamacpp backend answers one request at a time")
    load = entry["levels"]["c=1"]["load"]
    assert load["peak_in_flight"] == 1 and load["requests"] == 8 and load["goodput"]["share_of_requests"] == 1.0
    assert load["goodput"]["share_correct_within_slo"] == 0.75
    assert bench["order"] == ["llamacpp"] and bench["levels"][1]["key"] == "c=4"
    with pytest.raises(LrlError, match="no load level can be measured"):
        run_bench(registry, task, problems, [parse_target("llamacpp=m.gguf")], levels=parse_levels("2", None))


def test_threads_sweep_labels_cpu_targets(registry, task):
    problems = task.problems("balanced", "test", n=3)
    bench = run_bench(registry, task, problems, [parse_target("llamacpp=m.gguf"), parse_target("openai=x")],
                      warmup=0, threads=[1, 2])
    assert list(bench["backends"]) == ["llamacpp@1t", "llamacpp@2t", "openai"]
    assert bench["backends"]["llamacpp@2t"]["options"] == {"n_threads": 2}
    assert bench["backends"]["llamacpp@2t"]["threads"] == 2 and bench["threads"] == [1, 2]
    assert bench["comparability"]["fields"]["threads_used"]["llamacpp@1t"] == 1
