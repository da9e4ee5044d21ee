"""The student's stages: its baseline, and LoRA (transfer data from the learned strategy, training,
the adapter merged into the student, the trained student on the test split)."""

from __future__ import annotations

import contextlib
import json
import time
from pathlib import Path

from lrl_harness.api.contract import GenerationSettings, ModelSpec, Problem, TeacherRequest, sha256_text
from lrl_harness.evaluation.ask import ask, describe, rendered, student_prompts, usage_of
from lrl_harness.pipeline.stages.run import Run, StageOutput
from lrl_harness.results.files import atomic_write_text, write_json

CHUNK = 128
"""Problems per checkpointed call when a student answers: a killed run loses at most one chunk, and
the backend batches within it (the transformers backend 64 at a time, rows of like length)."""


def student_baseline(run: Run) -> StageOutput:
    """The student as it comes, on the test split."""
    records, elapsed, info = evaluate_student(run, "student_baseline", run.problems("test"), None)
    block = run.finish_stage(records, info, elapsed)
    block["student"] = run.student.info
    return StageOutput(block)


def lora(run: Run) -> StageOutput:
    """Transfer data, LoRA training (resumable from its checkpoint), and the merged student on the test
    split. A folder that already holds the adapter and its training report skips to the evaluation."""
    student, folder = run.student, run.folder
    _, source = run.learned_strategy()
    prompt_strategy = run.prompt_strategy()
    test = run.problems("test")
    if not folder.training.exists() and (folder.adapter / "training.json").is_file():  # killed right after saving
        write_json(folder.training, json.loads((folder.adapter / "training.json").read_text(encoding="utf-8")))
    if not (folder.training.exists() and folder.adapter.exists()):
        examples, transfer = transfer_data(run, prompt_strategy, test)
        write_json(folder.transfer, transfer)
        write_json(folder.training, _train(run, examples))
        run.note_memory("lora training")
    transfer = json.loads(folder.transfer.read_text(encoding="utf-8")) if folder.transfer.is_file() else None
    training = json.loads(folder.training.read_text(encoding="utf-8"))
    records, elapsed, info = evaluate_student(run, "lora", test, prompt_strategy, merged(run))
    block = run.finish_stage(records, info, elapsed)
    block["strategy_source"] = source
    block["transfer_format"] = (transfer or {}).get("format")
    block["recipe"] = student.info.get("recipe")
    block["student"] = student.info
    extra = {"training": training, **({"transfer": transfer} if transfer else {})}
    provenance = {"adapter_sha256": training.get("adapter_sha256"),
                  **({"transfer_sha256": transfer.get("sha256")} if transfer else {})}
    return StageOutput(block, results=extra, provenance=provenance)


def evaluate_student(run: Run, stage: str, problems: list[Problem], strategy: str | None,
                     merged_dir: Path | None = None) -> tuple[list[dict], float, dict]:
    """The student on the run's backend, in checkpointed batches: the base model (with the baseline's
    budget), or the trained one (``merged_dir``: the adapter folded in, faster than applying the
    adapter at every step).
    Returns (records, seconds, who answered)."""
    student, cfg = run.student, run.config
    spec = ModelSpec(path=str(merged_dir or student.path), name=student.name)
    checkpoint = run.folder.checkpoint(stage)
    done = checkpoint.load()
    records = [r for entry in done for r in entry["records"]]
    budget = run.generation_budget() if merged_dir is not None else run.baseline_budget()
    settings = GenerationSettings(max_new_tokens=budget)
    started = time.perf_counter() - sum(float(e.get("elapsed_s") or 0.0) for e in done)
    with contextlib.ExitStack() as stack:
        with run.status(f"loading {student.name} on {cfg.backend}"):
            backend = stack.enter_context(run.registry.open_backend(cfg.backend, spec, cfg.backend_options))
        info = {"student": student.name, "path": student.path, "backend": cfg.backend,
                "backend_info": backend.info(), "adapter": str(run.folder.adapter) if merged_dir else None,
                "strategy_in_prompt": strategy is not None, "is_language_model": True}
        if merged_dir is not None:
            info.update(adapter_mode="merged", merged=str(merged_dir))
        size = max(cfg.batch_size, CHUNK)
        prompts = student_prompts(run.task, problems, strategy, run.render())
        with run.ui.task(f"{stage} ({student.name} on {cfg.backend})", len(problems)) as advance:
            advance(completed=len(records))
            batch_started = time.perf_counter()
            first = len(records)  # each batch the backend finishes moves the count (a line in a log)
            for call in ask(backend, run.task, problems, prompts, settings, size=size, start=first,
                            progress=lambda done: advance(0, completed=first + done)):
                run.scored(stage, call.records)
                checkpoint.append({"batch": call.start // size + 1, "records": call.records,
                                   "elapsed_s": round(time.perf_counter() - batch_started, 6)})
                run.tick()
                records.extend(call.records)
                advance(0, completed=len(records), note=f"{sum(r['correct'] for r in records)}/{len(records)} correct")
                batch_started = time.perf_counter()
    info["settings"] = settings.to_dict()
    return records, time.perf_counter() - started, info


def merged(run: Run) -> Path:
    """``merged/``: the adapter folded into the student, written once (by the lora stage, or by the
    export when that stage ran in an earlier version)."""
    folder = run.folder
    if not (folder.merged / "config.json").exists():
        from lrl_harness.pipeline.training import merge_adapter

        with run.status("merging the adapter into the student"):
            merge_adapter(run.student.path, folder.adapter, folder.merged)
    return folder.merged


def _train(run: Run, examples: list[dict]) -> dict:
    """LoRA training on ``examples`` with the student's settings under the run's; returns the report."""
    from lrl_harness.pipeline.training import train_lora

    settings = {**run.student.lora, **run.config.lora}
    with run.ui.task("lora training", settings.get("max_steps")) as advance:
        last_tick = [time.perf_counter()]

        def progress(step, total, loss):
            advance(completed=step, note=f"loss {loss:.3f}" if loss is not None else "")
            if time.perf_counter() - last_tick[0] > 5:  # training time counts even if killed
                run.tick()
                last_tick[0] = time.perf_counter()

        return train_lora(run.student.path, examples, run.folder.adapter, settings, progress=progress,
                          seed=run.config.seed, checkpoint=run.folder.training_state)


def transfer_data(run: Run, prompt_strategy: str | None, test: list[Problem]) -> tuple[list[dict], dict]:
    """Training pairs from the learned strategy (never a test problem), rendered as the student reads
    them, written to ``transfer.jsonl``; every label is checked by the solver. Returns (pairs, summary)."""
    student, cfg = run.student, run.config
    fmt = cfg.transfer_format or student.transfer_format
    n = cfg.transfer_n or student.transfer_examples
    draw = cfg.transfer_draw or "balanced"  # "original": the preset's own draw, test problems included
    # ``draw`` is passed only when it is not the default, so a task written before it existed keeps working
    examples = run.task.transfer_examples(prompt_strategy, fmt, n, cfg.transfer_seed, cfg.preset, exclude=test,
                                          **({"draw": draw} if draw != "balanced" else {}))
    seen = {describe(run.task, p) for p in test}
    overlap = sum(describe(run.task, Problem(e["id"], e["difficulty"], e["data"], e["expected"])) in seen
                  for e in examples)
    dropped, usage = 0, None
    if cfg.transfer_source == "teacher":
        examples, dropped, usage = _teacher_written(run, examples)
    prompts = rendered([e["prompt"] for e in examples], run.render())
    examples = [{**e, "prompt": p} for e, p in zip(examples, prompts)]
    text = "".join(json.dumps(e) + "\n" for e in examples)
    atomic_write_text(run.folder.transfer_data, text)
    yes = sum(1 for e in examples if e["expected"] == "YES")
    extra = {"usage": run.usage_summary(usage, examples)} if usage else {}
    return examples, {
        **extra,
        "format": fmt, "source": cfg.transfer_source, "draw": draw, "test_overlap": overlap,
        "examples": len(examples), "yes": yes,
        "no": len(examples) - yes, "dropped_by_solver": dropped, "seed": cfg.transfer_seed,
        "strategy_in_prompt": prompt_strategy is not None, "sha256": sha256_text(text),
        "note": ("targets written by code from the task's reference procedure; labels from the solver"
                 if cfg.transfer_source == "code" else
                 "targets written by the teacher following its learned strategy; wrong ones dropped"),
    }


def _teacher_written(run: Run, examples: list[dict]) -> tuple[list[dict], int, list[dict]]:
    """The teacher solves each transfer problem with the learned strategy; answers the solver rejects
    are dropped. Returns (kept pairs, dropped count, usage)."""
    strategy, _ = run.learned_strategy()
    kept, dropped, usage = [], 0, []
    with run.ui.task("teacher-written transfer data", len(examples)) as advance:
        for e in examples:
            problem = Problem(e["id"], e["difficulty"], e["data"], e["expected"])
            [c] = run.teacher.complete([TeacherRequest("solve", run.task.teacher_prompt(problem, strategy),
                                                       problem=problem)])
            usage.append(usage_of(c))
            if run.task.check_solution(problem, c.text):
                kept.append({**e, "target": c.text})
            else:
                dropped += 1
            advance(1)
    return kept, dropped, usage
