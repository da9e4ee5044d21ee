"""The pipeline: student baseline, teacher baseline, LRL bootstrap, teacher with the learned strategy,
transfer data, LoRA training and the trained student, then export.

Everything a run produces lives in its output folder. Each stage appends one line per finished batch
to ``checkpoints/<stage>.jsonl``; ``results.json`` is rewritten atomically after every stage. A re-run
with the same folder skips finished stages and resumes a stage at its first unfinished batch, so an
interrupted run loses at most the batch in flight (LoRA training: at most the steps since its last
training checkpoint).

Every input is checked before the folder is claimed (``_preflight``); one run at a time holds a
folder (an ``flock`` on ``.lock``, released by the kernel when a run dies, so a killed run never
leaves it stuck); a checkpoint never counts a problem twice; ``elapsed_s`` adds up every invocation.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

from . import machine
from .config import RunConfig
from .errors import ConfigError, LrlError, ResultsFileError, RunLockedError, path_error
from .evaluate import Render, ask, make_records, rendered, student_prompts, usage_of
from .plugins import Registry
from .progress import UI
from .results import (
    STAGE_LABELS,
    STAGES,
    atomic_write_text,
    check_writable,
    load_results,
    new_results,
    write_json,
)
from .types import (
    Completion,
    GenerationSettings,
    ModelSpec,
    PluginContext,
    Problem,
    StudentModel,
    TeacherRequest,
    call_factory,
    sha256_text,
)

TEACHER_STAGES = ("teacher_baseline", "bootstrap", "lrl")
STUDENT_STAGES = ("student_baseline", "lora")


class Checkpoint:
    """Append-only JSON lines, one per finished batch; a line cut short by a crash is dropped.

    Each line is written with one ``write`` and fsynced, so a crash leaves whole lines and at most
    one cut-short last line. Loading keeps batches 1, 2, 3... in order, each once, and never a
    problem twice: a repeated batch or problem (a file written by two runs at once, before runs
    took a lock) is dropped and the file rewritten without it."""

    def __init__(self, path: Path):
        self.path = path

    def load(self) -> list[dict]:
        if not self.path.exists():
            return []
        entries, good = [], []
        seen: set = set()
        for line in self.path.read_text(encoding="utf-8").splitlines(keepends=True):
            if not line.endswith("\n"):
                break
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                break
            if not isinstance(entry, dict) or not isinstance(entry.get("records"), list):
                break
            if entry.get("batch") != len(entries) + 1:
                continue  # a batch already held (or out of order): dropped
            ids = [r.get("problem_id") for r in entry["records"] if isinstance(r, dict)]
            if len(ids) != len(entry["records"]) or seen.intersection(ids) or len(set(ids)) != len(ids):
                continue
            seen.update(ids)
            entries.append(entry)
            good.append(line)
        if sum(len(line.encode("utf-8")) for line in good) != self.path.stat().st_size:
            atomic_write_text(self.path, "".join(good))
        return entries

    def append(self, entry: dict) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        data = (json.dumps(entry) + "\n").encode("utf-8")
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, data)
            os.fsync(fd)
        finally:
            os.close(fd)


class RunLock:
    """One ``lrl run`` per output folder: an exclusive ``flock`` on ``<out>/.lock``. The kernel drops
    it when the process ends, however it ends, so a killed run never leaves the folder locked."""

    NAME = ".lock"

    def __init__(self, out: Path):
        self.path = Path(out) / self.NAME
        self.fd: int | None = None

    def acquire(self) -> None:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise path_error(self.path.parent, exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 32).decode(errors="replace").strip() or "?"
            os.close(fd)
            raise RunLockedError(f"{self.path.parent} is in use by another lrl run (pid {holder}); wait for it "
                                 "to finish, or use another --out folder") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None


_BOOKKEEPING = {RunLock.NAME}
"""Files a folder may hold and still count as empty (a lock taken by a run refused afterwards)."""


def file_tree_sha256(root: Path) -> str:
    """One hash over every file under ``root`` (relative names and contents, sorted)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in Path(root).rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def default_out_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


class Pipeline:
    def __init__(self, config: RunConfig, registry: Registry, out_dir: Path, ui: UI | None = None,
                 cache_only: bool = False, pm=None, cache: str = "use"):
        if cache not in ("use", "off", "refresh"):
            raise ConfigError(f"cache must be use, off or refresh, got {cache!r}")
        self.cache = cache
        self.config = config
        self.registry = registry
        self.out = Path(out_dir).absolute()  # subprocesses (the GGUF converter) run elsewhere
        self.ui = ui or UI(quiet=True)
        self.cache_only = cache_only
        self.pm = pm if pm is not None else registry.pm
        self.task = registry.get("task", config.task).factory()
        self._teacher = None
        self._student: StudentModel | None = None
        self._tokenizer = None

    # --- set-up -----------------------------------------------------------------------------

    def _open_out_dir(self) -> dict:
        """Create the folder, or resume the run already in it when it has the same configuration."""
        results_path = self.out / "results.json"
        config_path = self.out / "config.json"
        if config_path.exists():
            self._check_recorded_config()
            if results_path.exists():
                try:
                    return load_results(results_path)
                except ResultsFileError as exc:
                    self.ui.say(f"[yellow]{exc}; rebuilding it from the checkpoints[/yellow]")
        else:
            self._refuse_foreign_folder()
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(config_path, {"config": self.config.identity(), "config_hash": self.config.identity_hash()})
        return new_results(
            task=self.config.task, preset=self.config.preset, split="test",
            config={**self.config.identity(), "prices": self.config.prices},
            config_hash=self.config.identity_hash(),
            provenance={
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine.fingerprint(),
                "seeds": {"seed": self.config.seed, "train": self._split_seed("train"),
                          "test": self._split_seed("test"), "transfer": self.config.transfer_seed},
                "prompt_version": self.task.prompt_version,
                "prompt_hashes": self.task.prompt_hashes(),
            },
        )

    def _check_recorded_config(self) -> None:
        """Refuse a folder that holds a run of another configuration (read only)."""
        config_path = self.out / "config.json"
        try:
            recorded = json.loads(config_path.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise LrlError(f"{config_path}: corrupt run configuration; use a new --out folder") from None
        except OSError as exc:
            raise path_error(config_path, exc, "read") from None
        if not isinstance(recorded, dict) or not isinstance(recorded.get("config", {}), dict):
            raise LrlError(f"{config_path}: corrupt run configuration; use a new --out folder")
        if recorded.get("config_hash") != self.config.identity_hash():
            changed = sorted(k for k, v in self.config.identity().items()
                             if recorded.get("config", {}).get(k) != v)
            raise ConfigError(
                f"{self.out} belongs to a different configuration (differs in: {', '.join(changed) or '?'}); "
                "use another --out folder")

    def _refuse_foreign_folder(self) -> None:
        if (self.out.exists() and not (self.out / "config.json").exists()
                and any(p.name not in _BOOKKEEPING for p in self.out.iterdir())):
            raise ConfigError(f"{self.out} is not empty and holds no lrl-harness run; use another --out folder")

    def _existing_results(self) -> dict | None:
        """The results already in the folder, read only (None when there are none or they are damaged)."""
        try:
            return load_results(self.out / "results.json") if (self.out / "results.json").is_file() else None
        except ResultsFileError:
            return None

    def _preflight(self) -> None:
        """Every check that needs no output folder, before one is claimed: plugin names and options,
        the student, LoRA settings, the teacher (its key), and that the folder can be written."""
        from .options import check_options

        if self.out.exists() and not self.out.is_dir():
            raise ConfigError(f"--out {self.out} is a file; give a folder")
        self._refuse_foreign_folder()
        if (self.out / "config.json").is_file():
            self._check_recorded_config()
        cfg = self.config
        for split in ("train", "test"):
            self._split_seed(split)  # an unknown preset fails here
        done = (self._existing_results() or {}).get("stages", {})
        wanted = [s for s in STAGES if s in cfg.stages and s not in done]
        teacher_reg = self.registry.get("teacher", cfg.teacher)
        if teacher_reg.option_spec is not None:
            check_options(f"teacher {cfg.teacher}", teacher_reg.option_spec,
                          {**cfg.teacher_options, "max_tokens": cfg.teacher_options.get(
                              "max_tokens", cfg.teacher_max_tokens)})
        if any(s in STUDENT_STAGES for s in cfg.stages):
            backend_reg = self.registry.get("backend", cfg.backend)
            if backend_reg.option_spec is not None:
                check_options(f"backend {cfg.backend}", backend_reg.option_spec, cfg.backend_options,
                              unknown_label=cfg.backend)
            if wanted and any(s in STUDENT_STAGES for s in wanted):
                student = self.student
                if "lora" in wanted:
                    from .training import resolve_settings

                    resolve_settings({**student.lora, **cfg.lora})
        elif cfg.lora:
            from .training import resolve_settings

            resolve_settings(cfg.lora)
        if cfg.export and "lora" in cfg.stages:
            from .converter import llama_cpp_version

            try:
                llama_cpp_version()  # export needs llama-cpp-python: say so now, not after training
            except LrlError as exc:
                raise ConfigError(f"{exc} (or skip the export with --export none)") from None
            self._engines()  # no engine for the parity of the exports: said now
        if any(s in TEACHER_STAGES for s in wanted) or (
                "lora" in wanted and cfg.transfer_source == "teacher"):
            self.teacher.info()  # a missing key or a bad option fails now
        check_writable(self.out, folder=True)

    def _split_seed(self, split: str) -> int:
        override = self.config.train_seed if split == "train" else self.config.test_seed
        return override if override is not None else self.task.splits(self.config.preset)[split][1]

    def _problems(self, split: str) -> list[Problem]:
        n = self.config.train_n if split == "train" else self.config.test_n
        return self.task.problems(self.config.preset, split, n, self._split_seed(split))

    def _context(self) -> PluginContext:
        from .paths import cache_dir

        return PluginContext(registry=self.registry, cache_dir=cache_dir(), cache_only=self.cache_only)

    @property
    def teacher(self):
        if self._teacher is None:
            reg = self.registry.get("teacher", self.config.teacher)
            options = {**self.config.teacher_options, "max_tokens": self.config.teacher_options.get(
                "max_tokens", self.config.teacher_max_tokens)}
            if self.config.prices:
                options.setdefault("prices", self.config.prices)
            teacher = call_factory(reg.factory, self._context(), task=self.task, options=options)
            if getattr(teacher, "is_language_model", False) and self.cache != "off":
                from .cache import CachedTeacher  # only language-model answers cost money or time

                teacher = CachedTeacher(teacher, _cache_root(), cache_only=self.cache_only,
                                        read=self.cache != "refresh")
            self._teacher = teacher
        return self._teacher

    @property
    def student(self) -> StudentModel:
        if self._student is None:
            from .paths import cache_dir

            name = self.config.student
            options = dict(self.config.student_options)
            if name not in self.registry.names("student") and name.lower().endswith(".gguf"):
                name, options = "gguf", {**options, "path": self.config.student}
            elif name not in self.registry.names("student") and ("/" in name or Path(name).exists()):
                name, options = "hf", {**options, "model": self.config.student}
            reg = self.registry.get("student", name)
            # a student that takes a recipe applies it under its own options (lora, transfer_examples)
            takes_recipe = "recipe" in (reg.option_spec or {})
            if self.config.recipe and takes_recipe:
                options["recipe"] = self.config.recipe
            with _status(self.ui, f"preparing student {self.config.student}"):
                student = call_factory(reg.factory, self._context(), task=self.task, options=options,
                                       cache_dir=cache_dir())
            if self.config.recipe and not takes_recipe:
                from .recipes import apply_recipe, get_recipe

                student = apply_recipe(student, get_recipe(self.config.recipe))
            self._student = student
        return self._student

    def _render(self) -> Render | None:
        """The one prompt rendering for every backend: the student's chat template for instruct
        students, else None (prompts as the task writes them)."""
        if not self.student.chat_template:
            return None
        from .evaluate import chat_template

        return chat_template(self._student_tokenizer())

    def _student_tokenizer(self):
        """The student's tokenizer, loaded once per run."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.student.path)
        return self._tokenizer

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> dict:
        self._preflight()
        lock = RunLock(self.out)
        lock.acquire()
        try:
            return self._run_locked()
        finally:
            lock.release()

    def _run_locked(self) -> dict:
        results = self._open_out_dir()
        self.results = results
        self._started = time.perf_counter()
        self._elapsed_before = max(float(results.get("elapsed_s") or 0.0), self._recorded_elapsed())
        self.pm.hook.run_started(config=self.config, out_dir=self.out)
        wanted = [s for s in STAGES if s in self.config.stages]
        if any(s in TEACHER_STAGES and s not in results["stages"] for s in wanted):
            results["teacher"] = self.teacher.info()  # fails early on a missing key or bad option
        for stage in wanted:
            if stage in results["stages"]:
                self.ui.say(f"[dim]{stage}: already done, skipped[/dim]")
                continue
            block = getattr(self, f"_stage_{stage}")()
            block = {"stage": stage, "label": STAGE_LABELS[stage], **block}
            results["stages"][stage] = block
            self._save()
            self.pm.hook.stage_finished(stage=stage, result=block)
            self.ui.say(_stage_line(block))
        if "lora" in results["stages"] and self.config.export and "export" not in results:
            results["export"] = self._export()
            self._save()
        if "export" in results and "parity" not in results:
            results["parity"] = self._parity()
            self._save()
            self.ui.say(_parity_line(results["parity"]))
        cost = self._cost_block()
        if cost:
            results["cost"] = cost
        self._save()
        self.pm.hook.run_finished(results=results, out_dir=self.out)
        return results

    def _save(self) -> None:
        self.results["elapsed_s"] = self._tick()
        write_json(self.out / "results.json", self.results)

    ELAPSED = "elapsed.json"

    def _recorded_elapsed(self) -> float:
        try:
            return float(json.loads((self.out / self.ELAPSED).read_text(encoding="utf-8"))["elapsed_s"])
        except (OSError, ValueError, KeyError, TypeError):
            return 0.0

    def _tick(self) -> float:
        """Seconds spent on this folder over every invocation so far, also kept in ``elapsed.json``
        after every batch, so time spent by an invocation that was killed still counts."""
        total = round(self._elapsed_before + time.perf_counter() - self._started, 3)
        atomic_write_text(self.out / self.ELAPSED, json.dumps({"elapsed_s": total}) + "\n")
        return total

    def _cost_block(self) -> dict | None:
        """Teacher usage per stage and the break-even the original experiment claimed (teacher cost per
        problem against the local student's, after the one-off cost of bootstrap and transfer data)."""
        stages = self.results["stages"]
        per_stage = {name: b["usage"] for name, b in stages.items() if b.get("usage")}
        if not per_stage:
            return None
        from .cost import break_even

        per_problem = next((per_stage[s].get("cost_per_problem_usd") for s in ("lrl", "teacher_baseline")
                            if s in per_stage), None)
        one_off = per_stage.get("bootstrap", {}).get("list_cost_usd")
        if one_off is not None and self.results.get("transfer", {}).get("usage"):
            one_off += self.results["transfer"]["usage"].get("list_cost_usd") or 0.0
        total = [u.get("cost_usd") for u in per_stage.values()]
        return {
            "per_stage": per_stage,
            "paid_usd": None if None in total else round(sum(total), 6),
            "break_even": break_even(per_problem, 0.0, one_off),
            "note": "the local student's cost per problem is taken as $0 (electricity and hardware not priced)",
        }

    # --- scoring ----------------------------------------------------------------------------

    BUDGET_MARGIN = 16
    BUDGET_FLOOR = 32

    def _generation_budget(self) -> int:
        """New tokens per student answer: the option, else the student's own figure, else the longest
        training target of the transfer format in the student's tokens plus a margin, so the verdict
        at the end of a worked answer is never cut off. Recorded in the provenance."""
        provenance = self.results.setdefault("provenance", {})
        recorded = provenance.get("generation_budget")
        if recorded and recorded.get("max_new_tokens"):
            return int(recorded["max_new_tokens"])
        cfg, student = self.config, self.student
        if cfg.max_new_tokens or student.max_new_tokens:
            budget = {"max_new_tokens": int(cfg.max_new_tokens or student.max_new_tokens),
                      "source": "option" if cfg.max_new_tokens else f"student {student.name}"}
        else:
            fmt = cfg.transfer_format or student.transfer_format
            examples = self.task.transfer_examples(None, fmt, 400, cfg.transfer_seed, cfg.preset)
            tokenizer = self._student_tokenizer()
            longest = max(len(tokenizer(e["target"], add_special_tokens=False)["input_ids"]) for e in examples)
            budget = {"max_new_tokens": max(self.BUDGET_FLOOR, longest + self.BUDGET_MARGIN),
                      "source": f"longest {fmt} target of 400 (in the student's tokens) + {self.BUDGET_MARGIN}",
                      "longest_target_tokens": longest, "transfer_format": fmt}
        provenance["generation_budget"] = budget
        return budget["max_new_tokens"]

    def _finish_stage(self, records: list[dict], who: dict, elapsed: float, extra_usage=()) -> dict:
        from .metrics import score_stage

        block = score_stage(records)
        block["who"] = who
        block["elapsed_s"] = round(elapsed, 3)
        usage = [r.get("usage") for r in records if r.get("usage")] + [u for u in extra_usage if u]
        if usage or who.get("is_language_model"):
            block["usage"] = self._usage_summary(usage, records)
        block["results"] = records
        return block

    def _usage_summary(self, usage: list[dict], records: list[dict]) -> dict:
        from .cost import load_prices, summarise_usage

        prices = load_prices(self.config.prices) if self.config.prices else None
        summary = summarise_usage(usage, prices)
        if summary.get("list_cost_usd") is not None and records:
            summary["cost_per_problem_usd"] = summary["list_cost_usd"] / len(records)
        return summary

    # --- teacher stages ---------------------------------------------------------------------

    def _teacher_batches(self, stage: str, problems: list[Problem], strategy_for_batch, after_batch=None):
        """Run the teacher over ``problems`` in batches, checkpointing each batch."""
        checkpoint = Checkpoint(self.out / "checkpoints" / f"{stage}.jsonl")
        done = checkpoint.load()
        records = [r for entry in done for r in entry["records"]]
        extra_usage = [u for entry in done for u in entry.get("usage", [])]
        state = done[-1].get("state", {}) if done else {}
        size = self.config.batch_size
        batches = [problems[i:i + size] for i in range(0, len(problems), size)]
        started = time.perf_counter() - sum(float(e.get("elapsed_s") or 0.0) for e in done)
        with self.ui.task(f"{stage} ({self.teacher.name})", len(problems)) as advance:
            advance(completed=len(records))
            for index in range(len(done), len(batches)):
                batch_started = time.perf_counter()
                batch = batches[index]
                strategy = strategy_for_batch(state)
                prompts = [self.task.teacher_prompt(p, strategy) for p in batch]
                completions = self.teacher.complete(
                    [TeacherRequest("solve", text, problem=p, context={"strategy": strategy})
                     for text, p in zip(prompts, batch)])
                batch_records = make_records(self.task, batch, prompts, completions)
                for r in batch_records:
                    self.pm.hook.problem_scored(stage=stage, record=r)
                entry = {"batch": index + 1, "records": batch_records}
                if after_batch is not None:
                    state, usage = after_batch(index + 1, batch_records, dict(state))
                    entry["state"], entry["usage"] = state, usage
                    extra_usage.extend(usage)
                entry["elapsed_s"] = round(time.perf_counter() - batch_started, 6)
                checkpoint.append(entry)
                self._tick()
                records.extend(batch_records)
                correct = sum(r["correct"] for r in records)
                advance(len(batch), note=f"{correct}/{len(records)} correct")
        return records, state, extra_usage, time.perf_counter() - started

    def _stage_teacher_baseline(self) -> dict:
        problems = self._problems("test")
        records, _, usage, elapsed = self._teacher_batches(
            "teacher_baseline", problems, lambda state: self.task.initial_strategy)
        return self._finish_stage(records, self.teacher.info(), elapsed, usage)

    def _stage_bootstrap(self) -> dict:
        """LRL: solve in batches, a journal entry every ``journal_every`` batches, a new strategy
        every ``distill_every`` batches from the last ``journal_chars`` characters of the journal."""
        cfg = self.config

        def learn(batch_no: int, batch_records: list[dict], state: dict):
            usage = []
            state.setdefault("strategy", self.task.initial_strategy)
            state.setdefault("journal", "")
            state.setdefault("entries", [])
            state.setdefault("evolution", [])
            if batch_no % cfg.journal_every == 0:
                prompt = self.task.journal_prompt(batch_no, batch_records)
                [entry] = self.teacher.complete([TeacherRequest(
                    "journal", prompt, context={"batch": batch_no, "records": batch_records})])
                usage.append(usage_of(entry))
                state["journal"] += f"\n\n=== BATCH {batch_no} ===\n{entry.text}"
                correct = sum(r["correct"] for r in batch_records)
                state["entries"].append({"batch": batch_no, "correct": correct, "total": len(batch_records),
                                         "examples": [r["problem"] for r in batch_records[:5]],
                                         "text": entry.text})
            if batch_no % cfg.distill_every == 0:
                tail = state["journal"][-cfg.journal_chars:]
                prompt = self.task.distill_prompt(tail, state["strategy"])
                [new] = self.teacher.complete([TeacherRequest(
                    "distill", prompt, context={"journal": tail, "strategy": state["strategy"]})])
                usage.append(usage_of(new))
                state["evolution"].append({"batch": batch_no, "old": state["strategy"], "new": new.text})
                state["strategy"] = new.text
            return state, usage

        problems = self._problems("train")
        records, state, usage, elapsed = self._teacher_batches(
            "bootstrap", problems, lambda st: st.get("strategy", self.task.initial_strategy), learn)
        strategy = state.get("strategy", self.task.initial_strategy)
        self._write_bootstrap_logs(state, strategy)
        self.results["provenance"]["strategy"] = strategy
        self.results["provenance"]["strategy_sha256"] = sha256_text(strategy)
        block = self._finish_stage(records, self.teacher.info(), elapsed, usage)
        block["split"] = "train"
        block["batches"] = {"size": cfg.batch_size, "journal_every": cfg.journal_every,
                            "distill_every": cfg.distill_every, "journal_chars": cfg.journal_chars,
                            "journal_entries": len(state.get("entries", [])),
                            "distillations": len(state.get("evolution", []))}
        return block

    def _write_bootstrap_logs(self, state: dict, strategy: str) -> None:
        bar = "#" * 80
        journal_log = "".join(
            f"\n{bar}\nBATCH {e['batch']} JOURNAL ENTRY\nAccuracy: {e['correct']}/{e['total']}\n{bar}\n\n"
            "EXAMPLES ANALYZED:\n" + "\n".join(f"- {x}" for x in e["examples"]) +
            f"\n\nREFLECTION:\n{e['text']}\n" for e in state.get("entries", []))
        stars = "*" * 80
        evolution = "".join(
            f"\n{stars}\nSTRATEGY DISTILLATION after batch {e['batch']}\n{stars}\n\nOLD STRATEGY:\n{e['old']}"
            f"\n\nNEW STRATEGY:\n{e['new']}\n" for e in state.get("evolution", []))
        atomic_write_text(self.out / "journal.log", journal_log)
        atomic_write_text(self.out / "journal.txt", f"=== BOOTSTRAP JOURNAL ==={state.get('journal', '')}\n")
        atomic_write_text(self.out / "strategy_evolution.log", evolution)
        atomic_write_text(self.out / "strategy.txt", strategy + "\n")

    def _learned_strategy(self) -> tuple[str, str]:
        path = self.out / "strategy.txt"
        if "bootstrap" in self.results["stages"] and path.exists():
            return path.read_text(encoding="utf-8").rstrip("\n"), "bootstrap"
        return self.task.initial_strategy, "initial (bootstrap not run)"

    def _stage_lrl(self) -> dict:
        strategy, source = self._learned_strategy()
        problems = self._problems("test")
        records, _, usage, elapsed = self._teacher_batches("lrl", problems, lambda state: strategy)
        block = self._finish_stage(records, self.teacher.info(), elapsed, usage)
        block["strategy_source"] = source
        block["strategy_sha256"] = sha256_text(strategy)
        return block

    # --- student stages ---------------------------------------------------------------------

    def _student_eval(self, stage: str, problems: list[Problem], strategy: str | None,
                      adapter: Path | None, merged: Path | None = None) -> tuple[list[dict], float, dict]:
        """The student on the run's backend: the base model, or with ``merged`` the base model with
        ``adapter`` folded in (a plain model: faster than applying the adapter at every step)."""
        student = self.student
        reg = self.registry.get("backend", self.config.backend)
        if merged is not None:
            spec = ModelSpec(path=str(merged), name=student.name)
        else:
            spec = ModelSpec(path=student.path, name=student.name, adapter=str(adapter) if adapter else None)
        checkpoint = Checkpoint(self.out / "checkpoints" / f"{stage}.jsonl")
        done = checkpoint.load()
        records = [r for entry in done for r in entry["records"]]
        settings = GenerationSettings(max_new_tokens=self._generation_budget())
        started = time.perf_counter() - sum(float(e.get("elapsed_s") or 0.0) for e in done)
        with _status(self.ui, f"loading {student.name} on {self.config.backend}"):
            backend = reg.factory(model=spec, options=dict(self.config.backend_options))
        try:
            info = {"student": student.name, "path": student.path, "backend": self.config.backend,
                    "backend_info": backend.info(), "adapter": str(adapter) if adapter else None,
                    "strategy_in_prompt": strategy is not None, "is_language_model": True}
            if merged is not None:
                info.update(adapter_mode="merged", merged=str(merged))
            size = max(self.config.batch_size, 50)
            prompts = student_prompts(self.task, problems, strategy, self._render())
            with self.ui.task(f"{stage} ({student.name} on {self.config.backend})", len(problems)) as advance:
                advance(completed=len(records))
                batch_started = time.perf_counter()
                for call in ask(backend, self.task, problems, prompts, settings, size=size, start=len(records)):
                    for r in call.records:
                        self.pm.hook.problem_scored(stage=stage, record=r)
                    checkpoint.append({"batch": call.start // size + 1, "records": call.records,
                                       "elapsed_s": round(time.perf_counter() - batch_started, 6)})
                    self._tick()
                    records.extend(call.records)
                    advance(len(call.records), note=f"{sum(r['correct'] for r in records)}/{len(records)} correct")
                    batch_started = time.perf_counter()
        finally:
            backend.close()
        info["settings"] = settings.to_dict()
        return records, time.perf_counter() - started, info

    def _stage_student_baseline(self) -> dict:
        records, elapsed, info = self._student_eval("student_baseline", self._problems("test"), None, None)
        block = self._finish_stage(records, info, elapsed)
        block["student"] = self.student.info
        return block

    def _stage_lora(self) -> dict:
        student = self.student
        strategy, source = self._learned_strategy()
        prompt_strategy = strategy if student.strategy_in_prompt else None
        test = self._problems("test")
        adapter_dir = self.out / "adapter"
        training_path = self.out / "training.json"
        if not training_path.exists() and (adapter_dir / "training.json").is_file():  # killed right after saving
            write_json(training_path, json.loads((adapter_dir / "training.json").read_text(encoding="utf-8")))
        if not (training_path.exists() and adapter_dir.exists()):
            examples, transfer = self._transfer_data(prompt_strategy, test)
            self.results["transfer"] = transfer
            write_json(self.out / "transfer.json", transfer)
            self.results["provenance"]["transfer_sha256"] = transfer["sha256"]
            self._save()
            from .training import train_lora

            settings = {**student.lora, **self.config.lora}
            steps_hint = settings.get("max_steps")
            with self.ui.task("lora training", steps_hint) as advance:
                last_tick = [time.perf_counter()]

                def progress(step, total, loss):
                    advance(completed=step, note=f"loss {loss:.3f}" if loss is not None else "")
                    if time.perf_counter() - last_tick[0] > 5:  # training time counts even if killed
                        self._tick()
                        last_tick[0] = time.perf_counter()

                training = train_lora(student.path, examples, adapter_dir, settings, progress=progress,
                                      seed=self.config.seed,
                                      checkpoint=self.out / "checkpoints" / "lora-training.pt")
            write_json(training_path, training)
        training = json.loads(training_path.read_text(encoding="utf-8"))
        if "transfer" not in self.results and (self.out / "transfer.json").is_file():  # results.json rebuilt
            transfer = json.loads((self.out / "transfer.json").read_text(encoding="utf-8"))
            self.results["transfer"] = transfer
            self.results["provenance"]["transfer_sha256"] = transfer.get("sha256")
        self.results["training"] = training
        self.results["provenance"]["adapter_sha256"] = training.get("adapter_sha256")
        records, elapsed, info = self._student_eval("lora", test, prompt_strategy, adapter_dir, self._merged())
        block = self._finish_stage(records, info, elapsed)
        block["strategy_source"] = source
        block["transfer_format"] = self.results.get("transfer", {}).get("format")
        block["recipe"] = student.info.get("recipe")
        block["student"] = student.info
        return block

    def _transfer_data(self, prompt_strategy: str | None, test: list[Problem]) -> tuple[list[dict], dict]:
        """Training pairs from the learned strategy; every label is checked by the solver."""
        student, cfg = self.student, self.config
        fmt = cfg.transfer_format or student.transfer_format
        n = cfg.transfer_n or student.transfer_examples
        examples = self.task.transfer_examples(prompt_strategy, fmt, n, cfg.transfer_seed, cfg.preset,
                                               exclude=test)
        dropped, usage = 0, None
        if cfg.transfer_source == "teacher":
            examples, dropped, usage = self._teacher_written(examples)
        prompts = rendered([e["prompt"] for e in examples], self._render())
        examples = [{**e, "prompt": p} for e, p in zip(examples, prompts)]
        text = "".join(json.dumps(e) + "\n" for e in examples)
        atomic_write_text(self.out / "transfer.jsonl", text)
        yes = sum(1 for e in examples if e["expected"] == "YES")
        extra = {"usage": self._usage_summary(usage, examples)} if usage else {}
        return examples, {**extra,
            "format": fmt, "source": cfg.transfer_source, "examples": len(examples), "yes": yes,
            "no": len(examples) - yes, "dropped_by_solver": dropped, "seed": cfg.transfer_seed,
            "strategy_in_prompt": prompt_strategy is not None, "sha256": sha256_text(text),
            "note": ("targets written by code from the task's reference procedure; labels from the solver"
                     if cfg.transfer_source == "code" else
                     "targets written by the teacher following its learned strategy; wrong ones dropped"),
        }

    def _teacher_written(self, examples: list[dict]) -> tuple[list[dict], int, list[dict]]:
        strategy, _ = self._learned_strategy()
        kept, dropped, usage = [], 0, []
        with self.ui.task("teacher-written transfer data", len(examples)) as advance:
            for e in examples:
                problem = Problem(e["id"], e["difficulty"], e["data"], e["expected"])
                [c] = self.teacher.complete([TeacherRequest("solve", self.task.teacher_prompt(problem, strategy),
                                                            problem=problem)])
                usage.append(usage_of(c))
                if self.task.check_solution(problem, c.text):
                    kept.append({**e, "target": c.text})
                else:
                    dropped += 1
                advance(1)
        return kept, dropped, usage

    # --- export -----------------------------------------------------------------------------

    def _export(self) -> dict:
        """Merge the adapter into the base model (kept in ``merged/``), write the GGUF files into
        ``export/``; paths in the record are relative to the run folder."""
        from .export import export_model

        merged = self._merged()
        with _status(self.ui, f"writing GGUF {', '.join(self.config.export)}"):
            info = export_model(merged, self.out / "export", quants=tuple(self.config.export),
                                progress=lambda message: self.ui.say(f"  {message}"))
        for entry in info["files"].values():
            entry["path"] = f"export/{entry['path']}"
        info["source"] = {"model": self.student.path, "adapter": "adapter", "adapter_mode": "merge"}
        info["merged_dir"] = "merged"
        info["merged_sha256"] = file_tree_sha256(merged)
        return info

    def _merged(self) -> Path:
        """``merged/``: the adapter folded into the student, written once (by the lora stage, or by
        the export when that stage ran in an earlier version)."""
        merged = self.out / "merged"
        if not (merged / "config.json").exists():
            from .training import merge_adapter

            with _status(self.ui, "merging the adapter into the student"):
                merge_adapter(self.student.path, self.out / "adapter", merged)
        return merged

    def _engines(self):
        """The parity engines: the run's own backend for the merged model when it loads Hugging Face
        folders (else one that does), and one that loads GGUF files (``gguf_backend`` when set)."""
        own = self.registry.get("backend", self.config.backend)
        reference = own if "hf" in own.runs else self.registry.engine_for("hf")
        return reference, self.registry.engine_for("gguf", self.config.gguf_backend)

    def _lora_answers(self, engine: str, prompts: list[str],
                      settings: GenerationSettings) -> dict[str, list[Completion]]:
        """The lora stage's answers as the reference of parity, when that stage ran the merged model on
        ``engine`` with these very prompts and settings; else nothing."""
        block = self.results["stages"].get("lora") or {}
        who, records = block.get("who") or {}, block.get("results") or []
        same = (who.get("backend") == engine and who.get("adapter_mode") == "merged"
                and not self.config.backend_options and who.get("settings") == settings.to_dict()
                and [r.get("prompt_sha256") for r in records] == [sha256_text(p) for p in prompts])
        if not same:
            return {}
        return {engine: [Completion(r["response"], prompt_tokens=r.get("prompt_tokens") or 0,
                                    completion_tokens=r.get("completion_tokens") or 0,
                                    latency_s=r.get("latency_s") or 0.0, meta={"finish_reason": r.get("finish_reason")})
                         for r in records]}

    def _parity(self) -> dict:
        """The trained student on a Hugging Face engine against each exported GGUF on a GGUF engine, on
        the test split with the lora stage's prompts: token ids, answers, texts, and McNemar."""
        from .parity import check_parity

        strategy, _ = self._learned_strategy()
        problems = self._problems("test")
        prompt_strategy = strategy if self.student.strategy_in_prompt else None
        prompts = student_prompts(self.task, problems, prompt_strategy, self._render())
        settings = GenerationSettings(max_new_tokens=self._generation_budget())
        merged = str(self.out / self.results["export"]["merged_dir"])
        reference, gguf = self._engines()
        # nothing else runs in this process now: every usable core (llama.cpp's own default is half of
        # them, for machines where other work competes), for an engine that takes a thread count
        threads = ({"n_threads": machine.usable_cores() or 1}
                   if "n_threads" in (gguf.option_spec or {}) else {})
        backends = {}
        try:
            backends[reference.name] = reference.factory(model=ModelSpec(path=merged), options={})
            for entry in self.results["export"]["files"].values():
                if entry.get("kind", "model") == "model":
                    backends[f"{gguf.name}:{entry['quant']}"] = gguf.factory(
                        model=ModelSpec(path=str(self.out / entry["path"]), tokenizer=merged), options=dict(threads))
            seen: dict[str, int] = {}
            label = f"parity ({reference.name} vs GGUF on {gguf.name})"
            with self.ui.task(label, len(backends) * len(problems)) as advance:
                def on_progress(name: str, done: int) -> None:  # ``done`` counts prompts so far
                    advance(done - seen.get(name, 0), note=name)
                    seen[name] = done

                report = check_parity(backends, prompts, problems, self.task, settings, progress=on_progress,
                                      answered=self._lora_answers(reference.name, prompts, settings))
        finally:
            for backend in backends.values():
                backend.close()
        return report


def _cache_root() -> Path:
    from .paths import cache_dir

    return cache_dir() / "teacher-responses"


class _status:
    """A one-line 'working on X' message around work that has no natural progress count."""

    def __init__(self, ui: UI, message: str):
        self.ui, self.message = ui, message

    def __enter__(self):
        self.start = time.perf_counter()
        self.ui.say(f"{self.message} ...")

    def __exit__(self, *exc):
        if exc[0] is None:
            self.ui.say(f"{self.message}: done in {time.perf_counter() - self.start:.1f} s")


def _parity_line(report: dict) -> str:
    parts = [f"{name} answers agree {c['answer_agreement']:.1%}, texts identical {c['text_agreement']:.1%}"
             for name, c in report["comparisons"].items()]
    return f"[bold]parity[/bold] vs {report['reference']}: " + "; ".join(parts)


def _stage_line(block: dict) -> str:
    lo, hi = block["ci95"]
    return (f"[bold]{block['stage']}[/bold]: accuracy {block['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}), "
            f"balanced {block['balanced_accuracy']:.3f}, majority baseline {block['majority_baseline']:.3f}, "
            f"unparsed {block['unparsed']}/{block['total']}")
