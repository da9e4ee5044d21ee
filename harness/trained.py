"""A finished run's trained student, as ``lrl bench --run`` measures it: the engines it was exported
for, and the prompts, strategy and generation settings it was evaluated with."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

from .bench import Target
from .errors import LrlError
from .evaluate import Render, chat_template, describe
from .types import GenerationSettings, ModelSpec, Problem, sha256_text


def run_targets(run_dir: Path, results: dict, registry, verify: bool = True, gguf_backend: str | None = None
                ) -> list[Target]:
    """The run's trained student on every engine it was exported for: the merged Hugging Face model
    (or base model plus adapter) on the engine that loads Hugging Face folders, each exported GGUF
    model on the one that loads GGUF files (``gguf_backend`` when given). A run exported without GGUF
    files is benchmarked on the first only."""
    hf = registry.engine_for("hf").name
    export = results.get("export") if isinstance(results.get("export"), dict) else {}
    targets = []
    merged = export.get("merged_dir")
    lora_who = ((results.get("stages") or {}).get("lora") or {}).get("who") or {}
    if merged:
        targets.append(Target(hf, hf, ModelSpec(str(_resolve(run_dir, merged))), {}))
    elif lora_who.get("path") and lora_who.get("adapter"):
        in_run = run_dir / "adapter"
        adapter_dir = str(in_run if in_run.is_dir() else _resolve(run_dir, lora_who["adapter"]))
        spec = ModelSpec(lora_who["path"], adapter=adapter_dir)
        targets.append(Target(hf, hf, spec, {}))
    files = export.get("files") or {}
    adapters = [e for e in files.values() if e.get("kind") == "lora"]
    adapter = str(_checked(run_dir, adapters[0], verify)) if adapters else None
    tokenizer = str(_resolve(run_dir, merged)) if merged else None
    models = {name: entry for name, entry in files.items()
              if entry.get("kind", "model") == "model" and str(entry.get("path", "")).endswith(".gguf")}
    gguf = registry.engine_for("gguf", gguf_backend).name if models else None
    for name, entry in models.items():
        path = _checked(run_dir, entry, verify)
        targets.append(Target(f"{gguf}:{entry.get('quant') or name}", gguf,
                              ModelSpec(str(path), adapter=adapter, tokenizer=tokenizer), {}))
    if not targets:
        raise LrlError(f"{run_dir}: the run has no trained student to benchmark (no lora stage, no export)")
    return targets


def _resolve(run_dir: Path, path: str) -> Path:
    """Export paths are relative to the run folder or its ``export`` folder; other recorded paths may be
    relative to where the run was started."""
    candidates = [Path(path)] if Path(path).is_absolute() else [run_dir / path, run_dir / "export" / path,
                                                                  Path(path)]
    for candidate in candidates:
        if candidate.exists():
            return candidate
    raise LrlError(f"{run_dir}: exported file {path} is missing")


def _checked(run_dir: Path, entry: dict, verify: bool) -> Path:
    path = _resolve(run_dir, entry["path"])
    if verify and entry.get("sha256"):
        from .export import sha256_file

        if sha256_file(path) != entry["sha256"]:
            raise LrlError(f"{path}: sha256 differs from the run's export record; the file changed since")
    return path


def run_render(run_dir: Path, results: dict) -> Render | None:
    """How the run's student saw its prompts: through its tokenizer's chat template when the run
    used one (an instruct student), else None (as the task writes them)."""
    stages = results.get("stages") or {}
    student = next((b["student"] for b in (stages.get("lora"), stages.get("student_baseline"))
                    if isinstance(b, dict) and isinstance(b.get("student"), dict)), {})
    if not student.get("chat_template"):
        return None
    export = results.get("export") if isinstance(results.get("export"), dict) else {}
    lora_who = (stages.get("lora") or {}).get("who") or {}
    folder = _resolve(run_dir, export["merged_dir"]) if export.get("merged_dir") else lora_who.get("path")
    if not folder:
        raise LrlError(f"{run_dir}: the run's student used a chat template, but no tokenizer folder is recorded")
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder))
    except (OSError, ValueError) as exc:
        raise LrlError(f"cannot load the run's tokenizer from {folder}: {str(exc).splitlines()[0]}") from None
    return chat_template(tokenizer)


def run_strategy(results: dict) -> str | None:
    """The strategy text the run's student saw in its prompt, or None when it saw none."""
    lora = (results.get("stages") or {}).get("lora") or {}
    flags = [(section or {}).get("strategy_in_prompt")
             for section in (results.get("config"), lora.get("who"), results.get("transfer"))]
    in_prompt = next((f for f in flags if f is not None), True)
    if not in_prompt:
        return None
    provenance = results.get("provenance") or {}
    strategy = provenance.get("strategy")
    if isinstance(strategy, dict):
        strategy = strategy.get("text")
    if not isinstance(strategy, str):
        raise LrlError("the run's student saw the learned strategy in its prompt, but results.json does not "
                       "record the strategy text (provenance.strategy)")
    recorded = provenance.get("strategy_sha256")
    if recorded and recorded != sha256_text(strategy):
        raise LrlError("results.json is inconsistent: provenance.strategy does not match strategy_sha256")
    return strategy


def run_settings(results: dict) -> GenerationSettings:
    """The generation settings the run's trained student was evaluated with (defaults without a run)."""
    lora = (results.get("stages") or {}).get("lora") or {}
    recorded = dict((lora.get("who") or {}).get("settings") or {})
    if not recorded and (results.get("config") or {}).get("max_new_tokens"):
        recorded = {"max_new_tokens": results["config"]["max_new_tokens"]}
    known = {f.name for f in fields(GenerationSettings)}
    recorded = {k: v for k, v in recorded.items() if k in known}
    if "stop" in recorded:
        recorded["stop"] = tuple(recorded["stop"])
    return GenerationSettings(**recorded)


def check_prompts_match_run(results: dict, problems: Sequence[Problem], prompts: Sequence[str], task) -> int:
    """How many of ``prompts`` match the prompt the run's trained student was asked for the same problem;
    LrlError when any differs (a benchmark of other prompts would not measure that student)."""
    lora = (results.get("stages") or {}).get("lora") or {}
    recorded = {(r.get("problem_id"), r.get("problem")): r.get("prompt_sha256")
                for r in lora.get("results") or []}
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
