"""A finished run's trained student, as ``lrl bench --run`` measures it: the engines it was exported
for, and the prompts, strategy and generation settings it was evaluated with. Everything is read from
the run's typed results (``read_results``) and its folder (``RunDir``)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import TYPE_CHECKING

from lrl_harness.api.contract import GenerationSettings, ModelSpec, Problem, sha256_text
from lrl_harness.api.errors import LrlError
from lrl_harness.bench.targets import Target
from lrl_harness.evaluation.ask import Render, chat_template, describe
from lrl_harness.pipeline.rundir import RunDir

if TYPE_CHECKING:
    from lrl_harness.results.schema import Results, StageBlock


def _lora(results: Results | None) -> StageBlock | None:
    return results.stages.get("lora") if results is not None else None


def run_targets(run_dir: Path, results: Results, registry, verify: bool = True, gguf_backend: str | None = None,
                engines: Sequence[str] = ()) -> list[Target]:
    """The run's trained student on every engine it was exported for: the merged Hugging Face model
    (or base model plus adapter) on the engine that loads Hugging Face folders, each exported GGUF
    model on the one that loads GGUF files (``gguf_backend`` when given). A run exported without GGUF
    files is benchmarked on the first only. Each of ``engines`` (other engines that load Hugging Face
    folders, e.g. ``vllm``) gets the merged model too, and the base model with the unmerged adapter
    (``ENGINE:adapter``) when the run kept both."""
    folder = RunDir(run_dir)
    hf = registry.engine_for("hf").name
    export, lora = results.export, _lora(results)
    who = lora.who if lora is not None else None
    merged = export.merged_dir if export is not None else None
    adapter_dir = None
    if who is not None and who.path and who.adapter:
        adapter_dir = folder.adapter if folder.adapter.is_dir() else folder.resolve(who.adapter)
    targets = []
    if merged:
        targets.append(Target(hf, hf, ModelSpec(str(folder.resolve(merged))), {}))
    elif adapter_dir is not None:
        targets.append(Target(hf, hf, ModelSpec(who.path, adapter=str(adapter_dir)), {}))
    for name in engines:
        engine = registry.engine_for("hf", name).name
        if merged:
            targets.append(Target(engine, engine, ModelSpec(str(folder.resolve(merged))), {}))
        if adapter_dir is not None:
            label = f"{engine}:adapter" if merged else engine
            targets.append(Target(label, engine, ModelSpec(who.path, adapter=str(adapter_dir)), {}))
    files = export.files if export is not None else {}
    adapters = [e for e in files.values() if e.kind == "lora"]
    adapter = str(_checked(folder, adapters[0].path, adapters[0].sha256, verify)) if adapters else None
    tokenizer = str(folder.resolve(merged)) if merged else None
    models = {name: entry for name, entry in files.items()
              if (entry.kind or "model") == "model" and entry.path.endswith(".gguf")}
    gguf = registry.engine_for("gguf", gguf_backend).name if models else None
    for name, entry in models.items():
        path = _checked(folder, entry.path, entry.sha256, verify)
        targets.append(Target(f"{gguf}:{entry.quant or name}", gguf,
                              ModelSpec(str(path), adapter=adapter, tokenizer=tokenizer), {}))
    if not targets:
        raise LrlError(f"{run_dir}: the run has no trained student to benchmark (no lora stage, no export)")
    return targets


def _checked(folder: RunDir, recorded: str, sha256: str | None, verify: bool) -> Path:
    path = folder.resolve(recorded)
    if verify and sha256:
        from lrl_harness.api.gguf import sha256_file

        if sha256_file(path) != sha256:
            raise LrlError(f"{path}: sha256 differs from the run's export record; the file changed since")
    return path


def run_render(run_dir: Path, results: Results) -> Render | None:
    """How the run's student saw its prompts: through its tokenizer's chat template when the run
    used one (an instruct student), else None (as the task writes them)."""
    blocks = [results.stages.get(s) for s in ("lora", "student_baseline")]
    student = next((b.student for b in blocks if b is not None and isinstance(b.student, dict)), {})
    if not student.get("chat_template"):
        return None
    lora = _lora(results)
    if results.export is not None and results.export.merged_dir:
        folder = RunDir(run_dir).resolve(results.export.merged_dir)
    else:
        folder = lora.who.path if lora is not None and lora.who is not None else None
    if not folder:
        raise LrlError(f"{run_dir}: the run's student used a chat template, but no tokenizer folder is recorded")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise LrlError(f"cannot load the run's tokenizer from {folder}: {str(exc).splitlines()[0]}") from None
    return chat_template(tokenizer)


def run_strategy(results: Results) -> str | None:
    """The strategy text the run's student saw in its prompt, or None when it saw none."""
    lora = _lora(results)
    config = results.config or {}
    flags = [config.get("strategy_in_prompt"),
             getattr(lora.who, "strategy_in_prompt", None) if lora is not None and lora.who is not None else None,
             results.transfer.strategy_in_prompt if results.transfer is not None else None]
    in_prompt = next((f for f in flags if f is not None), True)
    if not in_prompt:
        return None
    provenance = results.provenance
    strategy = provenance.strategy if provenance is not None else None
    if not isinstance(strategy, str):
        raise LrlError("the run's student saw the learned strategy in its prompt, but results.json does not "
                       "record the strategy text (provenance.strategy)")
    if provenance.strategy_sha256 and provenance.strategy_sha256 != sha256_text(strategy):
        raise LrlError("results.json is inconsistent: provenance.strategy does not match strategy_sha256")
    return strategy


def run_settings(results: Results | None) -> GenerationSettings:
    """The generation settings the run's trained student was evaluated with (defaults without a run)."""
    lora = _lora(results)
    recorded = dict((lora.who.settings if lora is not None and lora.who is not None else None) or {})
    config = (results.config if results is not None else None) or {}
    if not recorded and config.get("max_new_tokens"):
        recorded = {"max_new_tokens": config["max_new_tokens"]}
    known = {f.name for f in fields(GenerationSettings)}
    recorded = {k: v for k, v in recorded.items() if k in known}
    if "stop" in recorded:
        recorded["stop"] = tuple(recorded["stop"])
    return GenerationSettings(**recorded)


def check_prompts_match_run(results: Results, problems: Sequence[Problem], prompts: Sequence[str], task) -> int:
    """How many of ``prompts`` match the prompt the run's trained student was asked for the same problem;
    LrlError when any differs (a benchmark of other prompts would not measure that student)."""
    lora = _lora(results)
    recorded = {(r.problem_id, getattr(r, "problem", None)): r.prompt_sha256
                for r in (lora.results if lora is not None else [])}
    checked = differ = 0
    for problem, prompt in zip(problems, prompts, strict=True):
        sha = recorded.get((problem.id, describe(task, problem)))
        if sha is None:
            continue
        checked += 1
        differ += sha != sha256_text(prompt)
    if differ:
        raise LrlError(f"the prompts built here differ from the run's on {differ} of {checked} problems "
                       "(a chat template or another prompt version?); not benchmarking a different input")
    return checked
