"""What every stage reads: :class:`Run` (configuration, task, teacher, student, run folder, results so
far, progress display) and what every stage returns: :class:`StageOutput`."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from lrl_harness.api.contract import PluginContext, Problem, StudentModel, call_factory
from lrl_harness.api.errors import ConfigError
from lrl_harness.api.registry import Registry
from lrl_harness.evaluation.ask import Render
from lrl_harness.pipeline.config import RunConfig
from lrl_harness.pipeline.rundir import RunDir
from lrl_harness.util.progress import UI


@dataclass
class StageOutput:
    """A stage's score block, and what else it adds to the results: top-level blocks (``transfer``,
    ``training``) and provenance entries (the learned strategy's hash, the adapter's)."""

    block: dict
    results: dict = field(default_factory=dict)
    provenance: dict = field(default_factory=dict)


class Run:
    """One ``lrl run``: its inputs, made once and shared by the stages (the teacher, the student and
    its tokenizer load on first use), and its bookkeeping (time spent, progress)."""

    def __init__(self, config: RunConfig, registry: Registry, folder: RunDir, ui: UI | None = None,
                 cache_only: bool = False, pm=None, cache: str = "use"):
        if cache not in ("use", "off", "refresh"):
            raise ConfigError(f"cache must be use, off or refresh, got {cache!r}")
        self.config = config
        self.registry = registry
        self.folder = folder
        self.ui = ui or UI(quiet=True)
        self.cache_only = cache_only
        self.cache = cache
        self.pm = pm if pm is not None else registry.pm
        self.task = registry.get("task", config.task).factory()
        self.results: dict = {}
        self._teacher = None
        self._student: StudentModel | None = None
        self._tokenizer = None
        self._started = time.perf_counter()
        self._elapsed_before = 0.0

    # --- inputs ------------------------------------------------------------------------------

    def split_seed(self, split: str) -> int:
        override = self.config.train_seed if split == "train" else self.config.test_seed
        return override if override is not None else self.task.splits(self.config.preset)[split][1]

    def problems(self, split: str) -> list[Problem]:
        n = self.config.train_n if split == "train" else self.config.test_n
        return self.task.problems(self.config.preset, split, n, self.split_seed(split))

    def context(self) -> PluginContext:
        from lrl_harness.util.paths import cache_dir

        return PluginContext(registry=self.registry, cache_dir=cache_dir(), cache_only=self.cache_only)

    @property
    def teacher(self):
        if self._teacher is None:
            reg = self.registry.get("teacher", self.config.teacher)
            options = {**self.config.teacher_options, "max_tokens": self.config.teacher_options.get(
                "max_tokens", self.config.teacher_max_tokens)}
            if self.config.prices:
                options.setdefault("prices", self.config.prices)
            teacher = call_factory(reg.factory, self.context(), task=self.task, options=options)
            if getattr(teacher, "is_language_model", False) and self.cache != "off":
                from lrl_harness.pipeline.cache import (  # only language-model answers cost
                    CachedTeacher,
                    default_cache_root,
                )

                teacher = CachedTeacher(teacher, default_cache_root(), cache_only=self.cache_only,
                                        read=self.cache != "refresh")
            self._teacher = teacher
        return self._teacher

    def student_plugin(self) -> tuple[str, dict]:
        """The student plugin and its options: ``--student`` names one, or a GGUF file (the ``gguf``
        student), or a Hugging Face model id or folder (the ``hf`` student)."""
        name = self.config.student
        options = dict(self.config.student_options)
        if name not in self.registry.names("student") and name.lower().endswith(".gguf"):
            name, options = "gguf", {**options, "path": self.config.student}
        elif name not in self.registry.names("student") and ("/" in name or Path(name).exists()):
            name, options = "hf", {**options, "model": self.config.student}
        reg = self.registry.get("student", name)
        # a student that takes a recipe applies it under its own options (lora, transfer_examples)
        if self.config.recipe and "recipe" in (reg.option_spec or {}):
            options["recipe"] = self.config.recipe
        return name, options

    def check_student_options(self) -> None:
        """The student's declared options checked, without preparing the student (no model loads)."""
        from lrl_harness.api.options import check_options

        name, options = self.student_plugin()
        spec = self.registry.get("student", name).option_spec
        if spec is not None:
            check_options(f"the {name} student", spec, options)

    @property
    def student(self) -> StudentModel:
        if self._student is None:
            from lrl_harness.util.paths import cache_dir

            name, options = self.student_plugin()
            reg = self.registry.get("student", name)
            takes_recipe = "recipe" in (reg.option_spec or {})
            with self.status(f"preparing student {self.config.student}"):
                student = call_factory(reg.factory, self.context(), task=self.task, options=options,
                                       cache_dir=cache_dir())
            if self.config.recipe and not takes_recipe:
                from lrl_harness.pipeline.recipes import apply_recipe, get_recipe

                student = apply_recipe(student, get_recipe(self.config.recipe))
            self._student = student
        return self._student

    def render(self) -> Render | None:
        """The one prompt rendering for every backend: the student's chat template for instruct
        students, else None (prompts as the task writes them)."""
        if not self.student.chat_template:
            return None
        from lrl_harness.evaluation.ask import chat_template

        return chat_template(self.tokenizer())

    def tokenizer(self):
        """The student's tokenizer, loaded once per run."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            self._tokenizer = AutoTokenizer.from_pretrained(self.student.path)
        return self._tokenizer

    def learned_strategy(self) -> tuple[str, str]:
        """The strategy the bootstrap wrote (and where it came from), else the task's initial one."""
        path = self.folder.strategy
        if "bootstrap" in self.results.get("stages", {}) and path.exists():
            return path.read_text(encoding="utf-8").rstrip("\n"), "bootstrap"
        return self.task.initial_strategy, "initial (bootstrap not run)"

    def prompt_strategy(self) -> str | None:
        """The strategy in the student's prompts: the learned one for students that read it, else none."""
        return self.learned_strategy()[0] if self.student.strategy_in_prompt else None

    BUDGET_MARGIN = 16
    BUDGET_FLOOR = 32

    def generation_budget(self) -> int:
        """New tokens per student answer: the option, else the student's own figure, else the longest
        training target of the transfer format in the student's tokens plus a margin, so the verdict
        at the end of a worked answer is never cut off. Recorded in the provenance, once."""
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
            tokenizer = self.tokenizer()
            longest = max(len(tokenizer(e["target"], add_special_tokens=False)["input_ids"]) for e in examples)
            budget = {"max_new_tokens": max(self.BUDGET_FLOOR, longest + self.BUDGET_MARGIN),
                      "source": f"longest {fmt} target of 400 (in the student's tokens) + {self.BUDGET_MARGIN}",
                      "longest_target_tokens": longest, "transfer_format": fmt}
        provenance["generation_budget"] = budget
        return budget["max_new_tokens"]

    def export_quants(self) -> list[str]:
        """The GGUF types to write after training: the run's, else the student's (its recipe's), else
        f32, q8_0 and q4_k_m."""
        from lrl_harness.pipeline.export import DEFAULT_QUANTS

        if self.config.export is not None:
            return list(self.config.export)
        return list(self.student.export or DEFAULT_QUANTS)

    def parity_quants(self) -> list[str]:
        """The exported GGUF types parity compares with the merged model: the run's (``all``: every
        exported one), else the student's (its recipe's) that are exported, else every exported one.
        A type the run names but does not export is a configuration error."""
        exported = [q.lower() for q in self.export_quants()]
        named = [q.lower() for q in self.config.parity or ()]
        if named and "all" not in named:
            missing = [q for q in named if q not in exported]
            if missing:
                raise ConfigError(f"parity names {missing[0]}, which the run does not export "
                                  f"(exported: {', '.join(exported) or 'none'})")
            return [q for q in exported if q in named]
        if not named and self.student.parity:
            chosen = [q for q in exported if q in {p.lower() for p in self.student.parity}]
            if chosen:
                return chosen
        return exported

    BASELINE_CAP = 256

    def baseline_budget(self) -> int:
        """New tokens per answer of the untrained student (student_baseline): the run's budget, but at
        most 256 unless set (``baseline_max_new_tokens``). The budget above is sized for the worked
        answers the student is trained to write; before training a pretrained instruct student
        answers in its own words (SmolLM2-135M: every answer it finished took at most 189 tokens)
        or rambles on to any limit (a third of its answers ran to 495), so a longer limit only
        buys rambling. Recorded beside the run's budget; cut answers are counted as truncated."""
        budget, cfg = self.generation_budget(), self.config
        recorded = self.results["provenance"]["generation_budget"]
        if cfg.baseline_max_new_tokens:
            value, source = cfg.baseline_max_new_tokens, "option"
        elif cfg.max_new_tokens:
            value, source = budget, "option max_new_tokens"
        else:
            value, source = min(budget, self.BASELINE_CAP), f"the run's budget, at most {self.BASELINE_CAP}"
        recorded.update(baseline_max_new_tokens=value, baseline_source=source)
        return value

    # --- scoring -----------------------------------------------------------------------------

    def finish_stage(self, records: list[dict], who: dict, elapsed: float, extra_usage=()) -> dict:
        """A stage's score block: the scores, who answered, the time, the usage, and the records."""
        from lrl_harness.evaluation.statistics import score_stage

        block = score_stage(records)
        block["who"] = who
        block["elapsed_s"] = round(elapsed, 3)
        usage = [r.get("usage") for r in records if r.get("usage")] + [u for u in extra_usage if u]
        if usage or who.get("is_language_model"):
            block["usage"] = self.usage_summary(usage, records)
        block["results"] = records
        return block

    def usage_summary(self, usage: list[dict], records: list[dict]) -> dict:
        from lrl_harness.pipeline.cost import load_prices, summarise_usage

        prices = load_prices(self.config.prices) if self.config.prices else None
        summary = summarise_usage(usage, prices)
        if summary.get("list_cost_usd") is not None and records:
            summary["cost_per_problem_usd"] = summary["list_cost_usd"] / len(records)
        return summary

    # --- bookkeeping -------------------------------------------------------------------------

    def start_clock(self) -> None:
        self._started = time.perf_counter()
        self._elapsed_before = max(float(self.results.get("elapsed_s") or 0.0), self.folder.recorded_elapsed())

    def scored(self, stage: str, records: list[dict]) -> None:
        """Tell the observers (``problem_scored``) of each record just made, as the typed ``Record``;
        nothing is built when no plugin observes."""
        hook = self.pm.hook.problem_scored
        if not hook.get_hookimpls():
            return
        from lrl_harness.results.records import Record

        for r in records:
            hook(stage=stage, record=Record.model_validate(r))

    def tick(self) -> float:
        """Seconds spent on this folder over every invocation so far, also kept in ``elapsed.json``
        after every batch, so time spent by an invocation that was killed still counts."""
        total = round(self._elapsed_before + time.perf_counter() - self._started, 3)
        self.folder.record_elapsed(total)
        return total

    def note_memory(self, step: str) -> None:
        """The process's peak resident memory so far (MiB), after ``step``: peaks only grow, so the
        step that raised the figure to its last value holds the run's peak. Steps skipped by a
        resumed run keep the figure of the invocation that ran them."""
        from lrl_harness.results.machine import peak_rss_mib

        self.results.setdefault("peak_rss_mib", {})[step] = peak_rss_mib()

    def save(self) -> None:
        from lrl_harness.results.io import write_results

        self.results["elapsed_s"] = self.tick()
        write_results(self.folder.results, self.results)  # checked against the schema as it is written

    def status(self, message: str) -> _Status:
        """A one-line 'working on X' message around work that has no natural progress count."""
        return _Status(self.ui, message)


class _Status:
    def __init__(self, ui: UI, message: str):
        self.ui, self.message = ui, message

    def __enter__(self):
        self.start = time.perf_counter()
        self.ui.say(f"{self.message} ...")

    def __exit__(self, *exc):
        if exc[0] is None:
            self.ui.say(f"{self.message}: done in {time.perf_counter() - self.start:.1f} s")
