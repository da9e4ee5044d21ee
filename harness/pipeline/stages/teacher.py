"""The teacher's stages: its baseline, the LRL bootstrap (solve in batches, journal, distil a
strategy), and the teacher again with the learned strategy. Each batch is checkpointed."""

from __future__ import annotations

import time

from lrl_harness.api.contract import Problem, TeacherRequest, sha256_text
from lrl_harness.evaluation.ask import make_records, usage_of
from lrl_harness.pipeline.stages.run import Run, StageOutput
from lrl_harness.results.files import atomic_write_text


def teacher_baseline(run: Run) -> StageOutput:
    """The teacher on the test split with the task's initial strategy."""
    records, _, usage, elapsed = _batches(run, "teacher_baseline", run.problems("test"),
                                          lambda state: run.task.initial_strategy)
    return StageOutput(run.finish_stage(records, run.teacher.info(), elapsed, usage))


def bootstrap(run: Run) -> StageOutput:
    """LRL on the train split: a journal entry every ``journal_every`` batches, a new strategy every
    ``distill_every`` batches from the last ``journal_chars`` characters of the journal. Writes the
    journal, the strategy evolution and the final strategy into the run folder."""
    cfg, task = run.config, run.task

    def learn(batch_no: int, batch_records: list[dict], state: dict):
        usage = []
        state.setdefault("strategy", task.initial_strategy)
        state.setdefault("journal", "")
        state.setdefault("entries", [])
        state.setdefault("evolution", [])
        if batch_no % cfg.journal_every == 0:
            prompt = task.journal_prompt(batch_no, batch_records)
            [entry] = run.teacher.complete([TeacherRequest(
                "journal", prompt, context={"batch": batch_no, "records": batch_records})])
            usage.append(usage_of(entry))
            state["journal"] += f"\n\n=== BATCH {batch_no} ===\n{entry.text}"
            correct = sum(r["correct"] for r in batch_records)
            state["entries"].append({"batch": batch_no, "correct": correct, "total": len(batch_records),
                                     "examples": [r["problem"] for r in batch_records[:5]],
                                     "text": entry.text})
        if batch_no % cfg.distill_every == 0:
            tail = state["journal"][-cfg.journal_chars:]
            prompt = task.distill_prompt(tail, state["strategy"])
            [new] = run.teacher.complete([TeacherRequest(
                "distill", prompt, context={"journal": tail, "strategy": state["strategy"]})])
            usage.append(usage_of(new))
            state["evolution"].append({"batch": batch_no, "old": state["strategy"], "new": new.text})
            state["strategy"] = new.text
        return state, usage

    records, state, usage, elapsed = _batches(
        run, "bootstrap", run.problems("train"), lambda st: st.get("strategy", task.initial_strategy), learn)
    strategy = state.get("strategy", task.initial_strategy)
    _write_logs(run, state, strategy)
    block = run.finish_stage(records, run.teacher.info(), elapsed, usage)
    block["split"] = "train"
    block["batches"] = {"size": cfg.batch_size, "journal_every": cfg.journal_every,
                        "distill_every": cfg.distill_every, "journal_chars": cfg.journal_chars,
                        "journal_entries": len(state.get("entries", [])),
                        "distillations": len(state.get("evolution", []))}
    return StageOutput(block, provenance={"strategy": strategy, "strategy_sha256": sha256_text(strategy)})


def lrl(run: Run) -> StageOutput:
    """The teacher on the test split with the strategy the bootstrap learned."""
    strategy, source = run.learned_strategy()
    records, _, usage, elapsed = _batches(run, "lrl", run.problems("test"), lambda state: strategy)
    block = run.finish_stage(records, run.teacher.info(), elapsed, usage)
    block["strategy_source"] = source
    block["strategy_sha256"] = sha256_text(strategy)
    return StageOutput(block)


def _batches(run: Run, stage: str, problems: list[Problem], strategy_for_batch, after_batch=None):
    """The teacher over ``problems`` in batches of ``batch_size``, each batch checkpointed with the
    state ``after_batch`` returns (the bootstrap's journal and strategy); a resumed stage starts at
    its first unfinished batch. Returns (records, last state, usage, seconds)."""
    checkpoint = run.folder.checkpoint(stage)
    done = checkpoint.load()
    records = [r for entry in done for r in entry["records"]]
    extra_usage = [u for entry in done for u in entry.get("usage", [])]
    state = done[-1].get("state", {}) if done else {}
    size = run.config.batch_size
    batches = [problems[i:i + size] for i in range(0, len(problems), size)]
    started = time.perf_counter() - sum(float(e.get("elapsed_s") or 0.0) for e in done)
    with run.ui.task(f"{stage} ({run.teacher.name})", len(problems)) as advance:
        advance(completed=len(records))
        for index in range(len(done), len(batches)):
            batch_started = time.perf_counter()
            batch = batches[index]
            strategy = strategy_for_batch(state)
            prompts = [run.task.teacher_prompt(p, strategy) for p in batch]
            completions = run.teacher.complete(
                [TeacherRequest("solve", text, problem=p, context={"strategy": strategy})
                 for text, p in zip(prompts, batch)])
            batch_records = make_records(run.task, batch, prompts, completions)
            run.scored(stage, batch_records)
            entry = {"batch": index + 1, "records": batch_records}
            if after_batch is not None:
                state, usage = after_batch(index + 1, batch_records, dict(state))
                entry["state"], entry["usage"] = state, usage
                extra_usage.extend(usage)
            entry["elapsed_s"] = round(time.perf_counter() - batch_started, 6)
            checkpoint.append(entry)
            run.tick()
            records.extend(batch_records)
            correct = sum(r["correct"] for r in records)
            advance(len(batch), note=f"{correct}/{len(records)} correct")
    return records, state, extra_usage, time.perf_counter() - started


def _write_logs(run: Run, state: dict, strategy: str) -> None:
    """The bootstrap's journal (raw and per entry), strategy evolution and final strategy."""
    bar = "#" * 80
    journal_log = "".join(
        f"\n{bar}\nBATCH {e['batch']} JOURNAL ENTRY\nAccuracy: {e['correct']}/{e['total']}\n{bar}\n\n"
        "EXAMPLES ANALYZED:\n" + "\n".join(f"- {x}" for x in e["examples"]) +
        f"\n\nREFLECTION:\n{e['text']}\n" for e in state.get("entries", []))
    stars = "*" * 80
    evolution = "".join(
        f"\n{stars}\nSTRATEGY DISTILLATION after batch {e['batch']}\n{stars}\n\nOLD STRATEGY:\n{e['old']}"
        f"\n\nNEW STRATEGY:\n{e['new']}\n" for e in state.get("evolution", []))
    folder = run.folder
    atomic_write_text(folder.journal_log, journal_log)
    atomic_write_text(folder.journal, f"=== BOOTSTRAP JOURNAL ==={state.get('journal', '')}\n")
    atomic_write_text(folder.strategy_evolution, evolution)
    atomic_write_text(folder.strategy, strategy + "\n")
