"""Every bad input a user can give ends in one line on stderr, exit status 2, no traceback, and
nothing written: the files present before the command are byte-identical afterwards and no file
is added. Real commands through ``lrl``'s ``main()``, on a real small run (see conftest)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from lrl_harness.cli.app import main

RUN = ["run", "--quiet", "@small-student", "--test-n", "20", "--train-n", "20"]
TEACHER_ONLY = ["run", "--quiet", "--stages", "teacher_baseline"]

# (id, arguments, a fragment of the one line). {ws}: the test's folder, {ro}: an unwritable
# folder, {run}: the small run, {f:NAME}: a file of the workspace (made by ``make_files``),
# @small-student: the small tiny student's options.
CASES = [
    # lrl run: plugin names
    ("run-teacher", [*RUN, "--out", "{ws}/o", "--teacher", "nosuch"], "unknown teacher 'nosuch'"),
    ("run-student", [*RUN, "--out", "{ws}/o", "--student", "nosuch"], "unknown student 'nosuch'"),
    ("run-student-dir", ["run", "--quiet", "--out", "{ws}/o", "--student", "/no/such/dir"], "no such folder"),
    ("run-backend-lora", [*RUN, "--out", "{ws}/o", "--backend", "nosuch", "--stages", "lora"],
     "unknown backend 'nosuch'"),
    ("run-task", [*RUN, "--out", "{ws}/o", "--task", "chess"], "unknown task 'chess'"),
    ("run-preset", [*RUN, "--out", "{ws}/o", "--preset", "weird"], "unknown preset 'weird'"),
    ("run-stage", [*RUN, "--out", "{ws}/o", "--stages", "warp"], "unknown stage 'warp'"),
    ("run-no-stage", [*RUN, "--out", "{ws}/o", "--stages", ","], "no stage to run"),
    # lrl run: numbers and choices
    ("run-batch-0", [*RUN, "--out", "{ws}/o", "--batch-size", "0"], "batch_size must be a positive integer"),
    ("run-batch-neg", [*RUN, "--out", "{ws}/o", "--batch-size", "-1"], "batch_size must be a positive"),
    ("run-journal-every", [*RUN, "--out", "{ws}/o", "--journal-every", "0"], "journal_every must be"),
    ("run-distill-every", [*RUN, "--out", "{ws}/o", "--distill-every", "0"], "distill_every must be"),
    ("run-journal-chars", [*RUN, "--out", "{ws}/o", "--journal-chars", "0"], "journal_chars must be"),
    ("run-train-n", ["run", "--quiet", "--out", "{ws}/o", "--train-n", "0"], "train_n must be a positive"),
    ("run-test-n", ["run", "--quiet", "--out", "{ws}/o", "--test-n", "-5"], "test_n must be a positive"),
    ("run-transfer-n-neg", [*RUN, "--out", "{ws}/o", "--stages", "lora", "--transfer-n", "-3"],
     "transfer_n must be a positive integer, got -3"),
    ("run-transfer-n-0", [*RUN, "--out", "{ws}/o", "--transfer-n", "0"], "transfer_n must be a positive"),
    ("run-seed-neg", [*RUN, "--out", "{ws}/o", "--seed", "-1"], "seed must be a non-negative integer"),
    ("run-seed-huge", [*RUN, "--out", "{ws}/o", "--seed", "99999999999999999999999"],
     "seed must be at most 4294967295 (the largest seed numpy takes), got 99999999999999999999999"),
    # lrl run: a split larger than the preset can draw (it never finishes), whichever stages run
    ("run-test-n-huge", [*TEACHER_ONLY, "--out", "{ws}/o", "--test-n", "99999999999999999999999"],
     "test_n must be at most 270357255 (the problems preset balanced of task meeting-rooms can draw), "
     "got 99999999999999999999999"),
    ("run-train-n-huge", [*TEACHER_ONLY, "--out", "{ws}/o", "--train-n", "270357256"],
     "train_n must be at most 270357255 (the problems preset balanced"),
    ("run-transfer-n-huge", [*TEACHER_ONLY, "--out", "{ws}/o", "--transfer-n", "99999999999999999999999"],
     "transfer_n must be at most 270357255 (the problems preset balanced"),
    ("run-test-n-huge-seed", [*TEACHER_ONLY, "--out", "{ws}/o", "--preset", "seed", "--test-n", "10000000000"],
     "test_n must be at most 270153513 (the problems preset seed of task meeting-rooms can draw)"),
    ("run-config-test-n-huge", [*TEACHER_ONLY, "--out", "{ws}/o", "--config", "{f:bigsplit.toml}"],
     "test_n must be at most 270357255"),
    ("run-config-transfer-n-huge", [*TEACHER_ONLY, "--out", "{ws}/o", "--config", "{f:bigtransfer.toml}"],
     "transfer_n must be at most 270357255"),
    # a test split that holds every EASY problem answered NO leaves the balanced transfer data 5 at most
    ("run-transfer-n-after-test", ["run", "--quiet", "@small-student", "--out", "{ws}/o", "--stages", "lora",
                                   "--test-n", "6000", "--transfer-n", "6000"],
     "transfer_n must be at most 5 (the problems preset balanced of task meeting-rooms can draw apart from "
     "the test split's 6000), got 6000"),
    ("run-seed-text", [*RUN, "--out", "{ws}/o", "--seed", "abc"], "'abc' is not a valid integer"),
    ("run-train-n-text", [*RUN, "--out", "{ws}/o", "--train-n", "ten"], "'ten' is not a valid integer"),
    ("run-format", [*RUN, "--out", "{ws}/o", "--transfer-format", "bogus"], "'bogus' is not one of"),
    ("run-source", [*RUN, "--out", "{ws}/o", "--transfer-source", "bogus"], "'bogus' is not one of"),
    ("run-export", [*RUN, "--out", "{ws}/o", "--export", "q9_bogus"], "unknown export quantisation 'q9_bogus'"),
    ("run-export-2", [*RUN, "--out", "{ws}/o", "--export", "f32,q9"], "unknown export quantisation 'q9'"),
    ("run-parity", [*RUN, "--out", "{ws}/o", "--parity", "q9"], "unknown parity quantisation 'q9'"),
    ("run-parity-unexported", [*RUN, "--out", "{ws}/o", "--export", "f32", "--parity", "q8_0"],
     "parity names q8_0, which the run does not export (exported: f32)"),
    ("run-unknown-option", [*RUN, "--out", "{ws}/o", "--bogus"], "No such option '--bogus'"),
    ("run-cache-flags", [*RUN, "--out", "{ws}/o", "--cache-only", "--no-cache"], "exclude each other"),
    ("run-cache-flags-2", [*RUN, "--out", "{ws}/o", "--no-cache", "--refresh-cache"], "exclude each other"),
    # lrl run: files it reads
    ("run-prices-missing", [*RUN, "--out", "{ws}/o", "--prices", "{ws}/none.json"], "price file not found"),
    ("run-prices-binary", [*RUN, "--out", "{ws}/o", "--prices", "{f:prices.bin}"], "not a JSON or TOML price"),
    ("run-prices-malformed", [*RUN, "--out", "{ws}/o", "--prices", "{f:prices-bad.json}"],
     "not a valid JSON price file"),
    ("run-prices-shape", [*RUN, "--out", "{ws}/o", "--prices", "{f:prices-list.json}"], "expected a table"),
    ("run-prices-entry", [*RUN, "--out", "{ws}/o", "--prices", "{f:prices-entry.json}"], "model 'm'"),
    ("run-config-missing", [*RUN, "--out", "{ws}/o", "--config", "{ws}/none.toml"], "config file not found"),
    ("run-config-malformed", [*RUN, "--out", "{ws}/o", "--config", "{f:malformed.toml}"], "malformed TOML"),
    ("run-config-scalar-table", [*RUN, "--out", "{ws}/o", "--config", "{f:lora5.toml}"],
     "lora must be a table of options, got 5"),
    ("run-config-options-str", [*RUN, "--out", "{ws}/o", "--config", "{f:teacheropts.toml}"],
     "teacher_options must be a table"),
    ("run-config-unknown", [*RUN, "--out", "{ws}/o", "--config", "{f:unknown.toml}"], "unknown setting 'teachr'"),
    ("run-config-type", [*RUN, "--out", "{ws}/o", "--config", "{f:batchstr.toml}"], "batch_size must be an integer"),
    ("run-config-stages-str", [*RUN, "--out", "{ws}/o", "--config", "{f:stagesstr.toml}"], "stages must be a list"),
    ("run-config-export-int", [*RUN, "--out", "{ws}/o", "--config", "{f:exportint.toml}"],
     "unknown export quantisation 1"),
    ("run-config-run-scalar", [*RUN, "--out", "{ws}/o", "--config", "{f:runscalar.toml}"], "[run] must be a table"),
    ("run-config-binary", [*RUN, "--out", "{ws}/o", "--config", "{f:prices.bin}"], "malformed TOML"),
    # lrl run: plugin options
    ("run-opt-novalue", [*RUN, "--out", "{ws}/o", "--teacher-opt", "novalue"], "must look like key=value"),
    ("run-opt-nokey", [*RUN, "--out", "{ws}/o", "--teacher-opt", "=3"], "must look like key=value"),
    ("run-solver-unknown", [*RUN, "--out", "{ws}/o", "--teacher-opt", "bogus=1"],
     "unknown option 'bogus' for teacher solver"),
    ("run-solver-max-tokens", [*RUN, "--out", "{ws}/o", "--teacher-opt", "max_tokens=0"],
     "max_tokens must be a positive integer"),
    ("run-anthropic-temperature", [*RUN, "--out", "{ws}/o", "--teacher", "anthropic", "--teacher-opt",
                                   "temperature=hot"], "temperature must be a number from 0 to 1"),
    ("run-anthropic-url", [*RUN, "--out", "{ws}/o", "--teacher", "anthropic", "--teacher-opt",
                           "base_url=localhost:1"], "base_url must be an http(s) URL"),
    ("run-anthropic-key", [*RUN, "--out", "{ws}/o", "--teacher", "anthropic"], "ANTHROPIC_API_KEY"),
    ("run-anthropic-retries", [*RUN, "--out", "{ws}/o", "--teacher", "anthropic", "--teacher-opt",
                               "max_retries=-1"], "max_retries must be a non-negative integer"),
    ("run-model-teacher", [*RUN, "--out", "{ws}/o", "--teacher", "model"], "teacher model needs a model"),
    ("run-transformers-opt", [*RUN, "--out", "{ws}/o", "--backend-opt", "n_threads=abc"],
     "unknown transformers option 'n_threads'"),
    ("run-transformers-batch", [*RUN, "--out", "{ws}/o", "--backend-opt", "batch_size=0"],
     "batch_size must be a positive integer"),
    ("run-transformers-dtype", [*RUN, "--out", "{ws}/o", "--backend-opt", "dtype=float64"], "unknown dtype"),
    ("run-transformers-device", [*RUN, "--out", "{ws}/o", "--backend-opt", "device=tpu"],
     "device must be auto, cpu, cuda"),
    ("run-llamacpp-threads", [*RUN, "--out", "{ws}/o", "--backend", "llamacpp", "--backend-opt", "n_threads=abc"],
     "option n_threads must be a positive integer"),
    ("run-llamacpp-threads-neg", [*RUN, "--out", "{ws}/o", "--backend", "llamacpp", "--backend-opt",
                                  "n_threads=-1"], "option n_threads must be a positive integer"),
    ("run-llamacpp-quant", [*RUN, "--out", "{ws}/o", "--backend", "llamacpp", "--backend-opt", "quant=q9"],
     "unknown quant 'q9'"),
    ("run-llamacpp-flag", [*RUN, "--out", "{ws}/o", "--backend", "llamacpp", "--backend-opt",
                           "prefix_cache=maybe"], "prefix_cache must be true or false"),
    ("run-llamacpp-unknown", [*RUN, "--out", "{ws}/o", "--backend", "llamacpp", "--backend-opt", "threads=2"],
     "unknown llamacpp option 'threads'"),
    ("run-lora-r", [*RUN, "--out", "{ws}/o", "--lora-opt", "r=0"], "r must be a positive integer"),
    # every option given is checked, whichever stages run (and no model is loaded for it)
    ("run-backend-opt-teacher-only", [*TEACHER_ONLY, "--test-n", "5", "--out", "{ws}/o", "--backend-opt",
                                      "batch_size=-4"],
     "backend transformers: option batch_size must be a positive integer, got -4"),
    ("run-backend-opt-unknown-teacher-only", [*TEACHER_ONLY, "--out", "{ws}/o", "--backend-opt", "bogus=1"],
     "unknown transformers option 'bogus'"),
    ("run-backend-teacher-only", [*TEACHER_ONLY, "--out", "{ws}/o", "--backend", "nosuch"],
     "unknown backend 'nosuch'"),
    ("run-gguf-backend-unknown", [*TEACHER_ONLY, "--out", "{ws}/o", "--gguf-backend", "nosuch"],
     "unknown backend 'nosuch'"),
    ("run-gguf-backend-not-gguf", [*TEACHER_ONLY, "--out", "{ws}/o", "--gguf-backend", "transformers"],
     "backend 'transformers' does not load gguf models"),
    ("run-lora-r-teacher-only", [*TEACHER_ONLY, "--out", "{ws}/o", "--lora-opt", "r=0"],
     "r must be a positive integer"),
    ("run-lora-r-baseline-only", [*RUN, "--out", "{ws}/o", "--stages", "student_baseline", "--lora-opt", "r=0"],
     "r must be a positive integer"),
    ("run-student-opt-teacher-only", [*TEACHER_ONLY, "--out", "{ws}/o", "--student", "hf", "--student-opt",
                                      "recipe=bogus"], "the hf student: unknown recipe 'bogus'"),
    ("run-lora-unknown", [*RUN, "--out", "{ws}/o", "--lora-opt", "bogus=1"], "unknown LoRA setting 'bogus'"),
    ("run-lora-schedule", [*RUN, "--out", "{ws}/o", "--lora-opt", "schedule=weird"], "unknown LoRA schedule"),
    ("run-lora-steps", [*RUN, "--out", "{ws}/o", "--lora-opt", "max_steps=-1"], "max_steps must be a positive"),
    ("run-lora-lr", [*RUN, "--out", "{ws}/o", "--lora-opt", "lr=fast"], "lr must be a positive number"),
    ("run-lora-dropout", [*RUN, "--out", "{ws}/o", "--lora-opt", "dropout=2"], "dropout must be a number from 0"),
    ("run-tiny-size", [*RUN, "--out", "{ws}/o", "--student-opt", "width=3"], "unknown tiny-student size 'width'"),
    ("run-tiny-zero", ["run", "--quiet", "--out", "{ws}/o", "--student-opt", "hidden_size=0"],
     "hidden_size must be a positive integer"),
    ("run-tiny-seed", [*RUN, "--out", "{ws}/o", "--student-opt", "seed=abc"], "seed must be an integer"),
    # lrl run: the output folder
    ("run-out-file", [*RUN, "--out", "{f:a-file.txt}"], "is a file"),
    ("run-out-foreign", [*RUN, "--out", "{f:foreign}"], "holds no lrl-harness run"),
    ("run-out-unwritable", [*RUN, "--out", "{ro}/o"], "cannot write"),
    ("run-out-other-config", [*RUN, "--out", "{f:other-run}", "--batch-size", "7"],
     "belongs to a different configuration"),
    ("run-out-corrupt-config", [*RUN, "--out", "{f:corrupt-run}"], "corrupt run configuration"),
    ("unknown-command", ["frobnicate"], "No such command 'frobnicate'"),
    # lrl problems
    ("problems-task", ["problems", "--task", "chess"], "unknown task 'chess'"),
    ("problems-n", ["problems", "--n", "0"], "must be at least 1"),
    ("problems-n-huge", ["problems", "--n", "99999999999999999999999"],
     "must be at most 270357255, the problems preset balanced can draw, got 99999999999999999999999"),
    ("problems-split", ["problems", "--split", "weird"], "unknown split 'weird'"),
    ("problems-preset", ["problems", "--preset", "weird"], "unknown preset 'weird'"),
    # lrl rescore
    ("rescore-missing", ["rescore", "{ws}/none.json"], "no such file"),
    ("rescore-folder", ["rescore", "{ws}"], "is a directory"),
    ("rescore-not-json", ["rescore", "{f:not.json}"], "not valid JSON"),
    ("rescore-empty", ["rescore", "{f:empty.json}"], "not valid JSON"),
    ("rescore-binary", ["rescore", "{f:prices.bin}"], "not valid JSON"),
    ("rescore-array", ["rescore", "{f:array.json}"], "neither an lrl-harness results file"),
    ("rescore-other", ["rescore", "{f:hello.json}"], "neither an lrl-harness results file"),
    ("rescore-version", ["rescore", "{f:v99.json}"], "schema version 99 is not supported"),
    ("rescore-accuracy-str", ["rescore", "{f:acc-str.json}"], "stages.lora.accuracy must be a number"),
    ("rescore-stages-list", ["rescore", "{f:stages-list.json}"], "'stages' is missing or not an object"),
    ("rescore-correct-str", ["rescore", "{f:correct-str.json}"], ".correct must be true or false"),
    ("rescore-id-object", ["rescore", "{f:id-object.json}"], ".problem_id must be a string"),
    ("rescore-original-numeric", ["rescore", "{f:orig-numeric.json}"], "lrl.results[0].response must be a string"),
    ("rescore-original-results", ["rescore", "{f:orig-results.json}"], "lrl.results must be a list"),
    ("rescore-original-accuracy", ["rescore", "{f:orig-accuracy.json}"], "lrl.accuracy must be a number"),
    ("rescore-out-unwritable", ["rescore", "{f:original.json}", "--out", "{ro}/r.json"], "cannot write"),
    ("rescore-out-folder", ["rescore", "{f:original.json}", "--out", "{ws}"], "is a directory"),
    ("rescore-task", ["rescore", "{f:original.json}", "--task", "chess"], "unknown task 'chess'"),
    # lrl check
    ("check-missing", ["check", "{ws}/none.json", "--baseline", "{f:good.json}"], "no such file"),
    ("check-baseline-missing", ["check", "{f:good.json}", "--baseline", "{ws}/none.json"], "no such file"),
    ("check-no-baseline", ["check", "{f:good.json}"], "Missing option '--baseline'"),
    ("check-accuracy-str", ["check", "{f:acc-str.json}", "--baseline", "{f:good.json}"],
     "stages.lora.accuracy must be a number"),
    ("check-version", ["check", "{f:v99.json}", "--baseline", "{f:good.json}"], "schema version 99"),
    ("check-ci", ["check", "{f:ci-bad.json}", "--baseline", "{f:good.json}"], "ci95 must be a list of two numbers"),
    ("check-by-difficulty", ["check", "{f:by-difficulty.json}", "--baseline", "{f:good.json}"],
     "by_difficulty must be an object"),
    ("check-total", ["check", "{f:total-neg.json}", "--baseline", "{f:good.json}"], "total must be a non-negative"),
    ("check-tolerance", ["check", "{f:good.json}", "--baseline", "{f:good.json}", "--tolerance", "2"],
     "--tolerance must be in [0, 1)"),
    ("check-alpha", ["check", "{f:good.json}", "--baseline", "{f:good.json}", "--alpha", "0"],
     "--alpha must be in (0, 1)"),
    ("check-latency", ["check", "{f:good.json}", "--baseline", "{f:good.json}", "--latency-ratio", "-1"],
     "--latency-ratio must be positive"),
    ("check-junit", ["check", "{f:good.json}", "--baseline", "{f:good.json}", "--junit", "{ro}/j.xml"],
     "cannot write"),
    ("check-nothing-common", ["check", "{f:teacher-only.json}", "--baseline", "{f:student-only.json}"],
     "nothing to compare"),
    ("check-tolerance-text", ["check", "{f:good.json}", "--baseline", "{f:good.json}", "--tolerance", "x"],
     "'x' is not a valid float"),
    # lrl report
    ("report-accuracy-str", ["report", "{f:acc-str.json}", "--out", "{ws}/rep"], "must be a number"),
    ("report-version", ["report", "{f:v99.json}", "--out", "{ws}/rep"], "schema version 99"),
    ("report-out-unwritable", ["report", "{f:good.json}", "--out", "{ro}/rep"], "cannot write"),
    ("report-out-file", ["report", "{f:good.json}", "--out", "{f:a-file.txt}"], "is a file"),
    ("report-bench-list", ["report", "{f:bench-list.json}", "--out", "{ws}/rep"], "benchmarks.backends must be"),
    ("report-latency-text", ["report", "{f:latency-text.json}", "--out", "{ws}/rep"], "must be a number"),
    ("report-not-ours", ["report", "{f:hello.json}", "--out", "{ws}/rep"], "not an lrl-harness results file"),
    # lrl export
    ("export-missing", ["export", "{ws}/none"], "does not exist"),
    ("export-empty-adapter", ["export", "{f:empty-adapter-run}"], "holds no trained adapter"),
    ("export-neither", ["export", "{f:foreign}"], "neither an lrl-harness run directory"),
    ("export-quant", ["export", "{run}", "--quant", "q9"], "'q9' is not one of"),
    ("export-mode", ["export", "{run}", "--adapter-mode", "bogus"], "'bogus' is not one of"),
    ("export-out-unwritable", ["export", "{run}", "--out", "{ro}/e"], "cannot write"),
    ("export-teacher-only", ["export", "{f:teacher-only-run}"], "no student stage"),
    # lrl parity
    ("parity-tokens", ["parity", "{run}", "--max-new-tokens", "0"], "--max-new-tokens must be at least 1"),
    ("parity-threads", ["parity", "{run}", "--threads", "-1"], "--threads must be a positive number"),
    ("parity-n", ["parity", "{run}", "-n", "0"], "-n must be a positive number"),
    ("parity-out", ["parity", "{run}", "--out", "{ro}/p.json"], "cannot write"),
    ("parity-neither", ["parity", "{f:foreign}"], "neither an lrl-harness run directory"),
    ("parity-gguf", ["parity", "{run}", "--gguf", "{ws}/none.gguf"], "does not exist"),
    ("parity-no-export", ["parity", "{f:teacher-only-run}"], "no student stage"),
    # lrl cache
    ("cache-clear-nothing", ["cache", "clear"], "say what to clear"),
    ("cache-clear-unknown", ["cache", "clear", "--teacher", "nosuch"], "nothing cached for teacher 'nosuch'"),
    ("cache-clear-model-only", ["cache", "clear", "--model", "m"], "--model needs --teacher"),
    ("cache-clear-both", ["cache", "clear", "--all", "--teacher", "t"], "give either --all"),
]


def _results_variants(good: dict) -> dict[str, object]:
    def changed(edit):
        data = copy.deepcopy(good)
        edit(data)
        return data

    def drop_stages(keep):
        return lambda d: d.__setitem__("stages", {k: v for k, v in d["stages"].items() if k in keep})

    lora = "lora"
    return {
        "good.json": good,
        "v99.json": changed(lambda d: d.__setitem__("schema_version", 99)),
        "acc-str.json": changed(lambda d: d["stages"][lora].__setitem__("accuracy", "0.9")),
        "stages-list.json": changed(lambda d: d.__setitem__("stages", [])),
        "correct-str.json": changed(lambda d: d["stages"][lora]["results"][0].__setitem__("correct", "yes")),
        "id-object.json": changed(lambda d: d["stages"][lora]["results"][0].__setitem__("problem_id", {"a": 1})),
        "ci-bad.json": changed(lambda d: d["stages"][lora].__setitem__("ci95", [0.1])),
        "by-difficulty.json": changed(lambda d: d["stages"][lora].__setitem__("by_difficulty", 3)),
        "total-neg.json": changed(lambda d: d["stages"][lora].__setitem__("total", -1)),
        "bench-list.json": changed(lambda d: d.__setitem__("benchmarks", {"backends": []})),
        "latency-text.json": changed(lambda d: d.__setitem__("benchmarks", {"backends": {"x": {
            **{k: good["stages"][lora][k] for k in ("total", "correct", "accuracy", "balanced_accuracy",
                                                    "unparsed", "majority_baseline")},
            "latency": {"mean_s": "fast"}}}})),
        "teacher-only.json": changed(drop_stages({"teacher_baseline", "bootstrap", "lrl"})),
        "student-only.json": changed(drop_stages({"student_baseline", "lora"})),
    }


def _original(results: dict) -> dict:
    records = [{"problem_id": r["problem_id"], "problem": r["problem"], "response": r["response"],
                "answer": r["answer"], "correct": r["correct"], "expected": r["expected"]}
               for r in results["stages"]["lrl"]["results"]]
    return {"lrl": {"stage": "Stage 3", "total": len(records), "correct": sum(r["correct"] for r in records),
                    "accuracy": 1.0, "results": records}}


def make_files(ws: Path, run: Path) -> None:
    good = json.loads((run / "results.json").read_text())
    for name, data in _results_variants(good).items():
        (ws / name).write_text(json.dumps(data))
    original = _original(good)
    (ws / "original.json").write_text(json.dumps(original))
    numeric = copy.deepcopy(original)
    numeric["lrl"]["results"][0]["response"] = 42
    (ws / "orig-numeric.json").write_text(json.dumps(numeric))
    (ws / "orig-results.json").write_text(json.dumps({"lrl": {"accuracy": 1.0, "results": "all"}}))
    (ws / "orig-accuracy.json").write_text(json.dumps({"lrl": {**original["lrl"], "accuracy": "high"}}))
    (ws / "not.json").write_text("{not json")
    (ws / "empty.json").write_text("")
    (ws / "array.json").write_text("[1, 2]")
    (ws / "hello.json").write_text(json.dumps({"hello": 1}))
    (ws / "prices.bin").write_bytes(bytes(range(256)) * 4)
    (ws / "prices-bad.json").write_text("{not")
    (ws / "prices-list.json").write_text("[1, 2]")
    (ws / "prices-entry.json").write_text(json.dumps({"m": {"input": -1, "output": 2}}))
    (ws / "malformed.toml").write_text("teacher = [unclosed\n")
    (ws / "lora5.toml").write_text("lora = 5\n")
    (ws / "teacheropts.toml").write_text('teacher_options = "x"\n')
    (ws / "unknown.toml").write_text('teachr = "solver"\n')
    (ws / "batchstr.toml").write_text('batch_size = "ten"\n')
    (ws / "stagesstr.toml").write_text('stages = "lora"\n')
    (ws / "exportint.toml").write_text("export = [1]\n")
    (ws / "runscalar.toml").write_text("run = 3\n")
    (ws / "bigsplit.toml").write_text("test_n = 99999999999999999999999\n")
    (ws / "bigtransfer.toml").write_text("[run]\ntransfer_n = 300000000\n")
    (ws / "a-file.txt").write_text("mine")
    (ws / "foreign").mkdir()
    (ws / "foreign" / "notes.txt").write_text("mine")
    (ws / "other-run").mkdir()
    (ws / "other-run" / "config.json").write_bytes((run / "config.json").read_bytes())
    (ws / "corrupt-run").mkdir()
    (ws / "corrupt-run" / "config.json").write_text("{cut")
    (ws / "empty-adapter-run" / "adapter").mkdir(parents=True)
    (ws / "empty-adapter-run" / "results.json").write_bytes((run / "results.json").read_bytes())
    (ws / "teacher-only-run").mkdir()
    (ws / "teacher-only-run" / "results.json").write_text(json.dumps(_results_variants(good)["teacher-only.json"]))


def snapshot(*roots: Path) -> dict[str, bytes]:
    return {str(p): p.read_bytes() for root in roots if root.exists() for p in sorted(root.rglob("*"))
            if p.is_file()} | {str(p): b"<dir>" for root in roots if root.exists() for p in root.rglob("*")
                               if p.is_dir()}


@pytest.fixture
def workspace(tmp_path, small_run, monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    monkeypatch.delenv("LRL_HARNESS_DEBUG", raising=False)
    ws = tmp_path / "ws"
    ws.mkdir()
    make_files(ws, small_run)
    return ws


def _expand(args: list[str], ws: Path, ro: Path, run: Path, student: list[str]) -> list[str]:
    out = []
    for arg in args:
        if arg == "@small-student":
            out.extend(student)
            continue
        if arg.startswith("{f:"):
            arg = str(ws / arg[3:-1])
        out.append(arg.format(ws=ws, ro=ro, run=run))
    return out


@pytest.mark.parametrize("name, args, fragment", CASES, ids=[c[0] for c in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(name, args, fragment, workspace, unwritable,
                                                          small_run, small_student, capsys, monkeypatch):
    monkeypatch.chdir(workspace)
    before = snapshot(workspace, small_run)
    code = main(_expand(args, workspace, unwritable, small_run, small_student))
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert code == 2, err
    assert len(lines) == 1, err
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]
    assert snapshot(workspace, small_run) == before, "a refused command changed or added files"


def test_the_disable_list_names_only_real_plugins(monkeypatch, capsys):
    monkeypatch.setenv("LRL_HARNESS_DISABLE_PLUGINS", "vllm")
    assert main(["plugins"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "vllm-backend" in err and "'vllm'" in err
    monkeypatch.setenv("LRL_HARNESS_DISABLE_PLUGINS", "vllm-backend")
    assert main(["plugins", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)["plugins"]
    assert "vllm" not in {r["name"] for r in rows}
    assert {"plugin"} <= set(rows[0])


def test_a_second_run_on_a_held_folder_is_refused(tmp_path, capsys):
    from lrl_harness.pipeline.rundir import RunLock

    out = tmp_path / "run"
    assert main(["run", "--quiet", "--stages", "teacher_baseline", "--test-n", "10", "--out", str(out)]) == 0
    before = snapshot(out)
    lock = RunLock(out)
    lock.acquire()  # another run at work in the folder
    try:
        code = main(["run", "--quiet", "--stages", "teacher_baseline", "--test-n", "10", "--out", str(out)])
    finally:
        lock.release()
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and "in use by another lrl run" in err
    assert snapshot(out) == before
    assert main(["run", "--quiet", "--stages", "teacher_baseline", "--test-n", "10", "--out", str(out)]) == 0


def test_a_bug_is_one_line_and_the_traceback_only_on_request(monkeypatch, capsys):
    from lrl_harness_tasks import meeting_rooms

    def broken(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(meeting_rooms.MeetingRoomsTask, "problems", broken)
    assert main(["problems"]) == 1
    err = capsys.readouterr().err
    assert err.strip().splitlines() == [
        "lrl: error: internal error: ZeroDivisionError: a bug (re-run with --debug or LRL_HARNESS_DEBUG=1 "
        "for the traceback)"]
    assert main(["--debug", "problems"]) == 1
    assert "Traceback" in capsys.readouterr().err
    monkeypatch.setenv("LRL_HARNESS_DEBUG", "1")
    assert main(["problems"]) == 1
    assert "Traceback" in capsys.readouterr().err


def test_check_warns_when_no_problem_is_shared(small_run, tmp_path, capsys):
    good = json.loads((small_run / "results.json").read_text())
    other = copy.deepcopy(good)
    for block in other["stages"].values():
        for r in block["results"]:
            r["problem_id"] = "other_" + r["problem_id"]
    (tmp_path / "a.json").write_text(json.dumps(good))
    (tmp_path / "b.json").write_text(json.dumps(other))
    main(["check", str(tmp_path / "b.json"), "--baseline", str(tmp_path / "a.json")])
    err = capsys.readouterr().err
    assert "warning: lora: no problem in common with the baseline (0 of 20 paired)" in err
