"""After the lora stage: the trained student exported to GGUF, and the parity of each GGUF file
against the merged Hugging Face model."""

from __future__ import annotations

import contextlib

from lrl_harness.api.contract import Completion, GenerationSettings, ModelSpec, sha256_text
from lrl_harness.evaluation.ask import student_prompts
from lrl_harness.pipeline.rundir import file_tree_sha256
from lrl_harness.pipeline.stages.run import Run
from lrl_harness.pipeline.stages.student import merged
from lrl_harness.results import machine

PARITY_BATCH = 32


def export(run: Run) -> dict:
    """Merge the adapter into the base model (kept in ``merged/``), write the GGUF files into
    ``export/``; paths in the record are relative to the run folder."""
    from lrl_harness.pipeline.export import export_model

    merged_dir = merged(run)
    quants = run.export_quants()
    with run.status(f"writing GGUF {', '.join(quants)}"):
        info = export_model(merged_dir, run.folder.export, quants=tuple(quants),
                            progress=lambda message: run.ui.say(f"  {message}"))
    prefix = run.folder.export.relative_to(run.folder.root)
    for entry in info["files"].values():
        entry["path"] = f"{prefix}/{entry['path']}"
    info["source"] = {"model": run.student.path, "adapter": str(run.folder.adapter.relative_to(run.folder.root)),
                      "adapter_mode": "merge"}
    info["merged_dir"] = str(merged_dir.relative_to(run.folder.root))
    info["merged_sha256"] = file_tree_sha256(merged_dir)
    return info


def engines(run: Run):
    """The parity engines: the run's own backend for the merged model when it loads Hugging Face
    folders (else one that does), and one that loads GGUF files (``gguf_backend`` when set)."""
    own = run.registry.get("backend", run.config.backend)
    reference = own if "hf" in own.runs else run.registry.engine_for("hf")
    return reference, run.registry.engine_for("gguf", run.config.gguf_backend)


def parity(run: Run) -> dict:
    """The trained student on a Hugging Face engine against each exported GGUF on a GGUF engine, on
    the test split with the lora stage's prompts: token ids, answers, texts, and McNemar."""
    from lrl_harness.evaluation.parity import check_parity

    problems = run.problems("test")
    prompts = student_prompts(run.task, problems, run.prompt_strategy(), run.render())
    settings = GenerationSettings(max_new_tokens=run.generation_budget())
    export_block = run.results["export"]
    merged_dir = str(run.folder.root / export_block["merged_dir"])
    reference, gguf = engines(run)
    # nothing else runs in this process now: every usable core (llama.cpp's own default is half of
    # them, for machines where other work competes), for an engine with a thread option
    options = ({gguf.threads: machine.usable_cores() or 1}
               if gguf.threads and gguf.threads != "torch" else {})
    # an engine that decodes several prompts together does so here (parity compares greedy texts;
    # the latency of one prompt at a time is what ``lrl bench`` measures)
    if gguf.batches:
        options[gguf.batches] = PARITY_BATCH
    chosen = run.parity_quants()
    files = [entry for entry in export_block["files"].values() if entry.get("kind", "model") == "model"]
    left_out = [entry["quant"] for entry in files if entry["quant"].lower() not in chosen]
    with contextlib.ExitStack() as stack:
        backends = {reference.name: stack.enter_context(
            run.registry.open_backend(reference.name, ModelSpec(path=merged_dir)))}
        for entry in files:
            if entry["quant"].lower() in chosen:
                backends[f"{gguf.name}:{entry['quant']}"] = stack.enter_context(run.registry.open_backend(
                    gguf.name, ModelSpec(path=str(run.folder.root / entry["path"]), tokenizer=merged_dir), options))
        seen: dict[str, int] = {}
        label = f"parity ({reference.name} vs GGUF on {gguf.name})"
        with run.ui.task(label, len(backends) * len(problems)) as advance:
            def on_progress(name: str, done: int) -> None:  # ``done`` counts prompts so far
                advance(done - seen.get(name, 0), note=name)
                seen[name] = done

            block = check_parity(backends, prompts, problems, run.task, settings, progress=on_progress,
                                 answered=_lora_answers(run, reference.name, prompts, settings))
    if left_out:
        block["not_checked"] = left_out
    return block


def _lora_answers(run: Run, engine: str, prompts: list[str],
                  settings: GenerationSettings) -> dict[str, list[Completion]]:
    """The lora stage's answers as the reference of parity, when that stage ran the merged model on
    ``engine`` with these very prompts and settings; else nothing."""
    block = run.results["stages"].get("lora") or {}
    who, records = block.get("who") or {}, block.get("results") or []
    same = (who.get("backend") == engine and who.get("adapter_mode") == "merged"
            and not run.config.backend_options and who.get("settings") == settings.to_dict()
            and [r.get("prompt_sha256") for r in records] == [sha256_text(p) for p in prompts])
    if not same:
        return {}
    return {engine: [Completion(r["response"], prompt_tokens=r.get("prompt_tokens") or 0,
                                completion_tokens=r.get("completion_tokens") or 0,
                                latency_s=r.get("latency_s") or 0.0, meta={"finish_reason": r.get("finish_reason")})
                     for r in records]}
