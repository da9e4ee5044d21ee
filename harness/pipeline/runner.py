"""The pipeline: the order of the stages, resuming, and the hooks.

The stages themselves live in ``stages/`` (one function each, ``stage(run) -> StageOutput``); the
layout of the output folder in ``rundir.py``. Each stage appends one line per finished batch to
``checkpoints/<stage>.jsonl``; ``results.json`` is rewritten atomically after every stage. A re-run
with the same folder skips finished stages and resumes a stage at its first unfinished batch, so an
interrupted run loses at most the batch in flight (LoRA training: at most the steps since its last
training checkpoint).

Every input is checked before the folder is claimed (``_preflight``); one run at a time holds a
folder (an ``flock`` on ``.lock``, released by the kernel when a run dies, so a killed run never
leaves it stuck); a checkpoint never counts a problem twice; ``elapsed_s`` adds up every invocation.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from lrl_harness.api.contract import StudentModel
from lrl_harness.api.errors import ConfigError, LrlError, ResultsFileError
from lrl_harness.api.registry import Registry
from lrl_harness.pipeline.config import RunConfig
from lrl_harness.pipeline.rundir import RunDir
from lrl_harness.pipeline.stages import STAGE_FUNCTIONS, Run, export, parity
from lrl_harness.pipeline.stages.gguf import engines
from lrl_harness.results import machine
from lrl_harness.results.files import check_writable
from lrl_harness.results.format import STAGE_LABELS, STAGES
from lrl_harness.results.io import as_results, load_results, new_results
from lrl_harness.results.records import StageBlock
from lrl_harness.util.progress import UI

TEACHER_STAGES = ("teacher_baseline", "bootstrap", "lrl")
STUDENT_STAGES = ("student_baseline", "lora")


MAX_PROBLEMS = 10**9
"""The most problems any split may hold (far beyond what a run can ask and score); a task's own
limit (``Task.max_problems``) is checked under it."""


def default_out_dir() -> Path:
    return Path("runs") / datetime.now().strftime("%Y%m%d-%H%M%S")


class Pipeline:
    """``lrl run``: check every input, claim the folder, run the wanted stages not yet done, in order,
    then export and parity; results saved after each."""

    def __init__(self, config: RunConfig, registry: Registry, out_dir: Path, ui: UI | None = None,
                 cache_only: bool = False, pm=None, cache: str = "use"):
        self.config = config
        self.registry = registry
        self.folder = RunDir(out_dir)
        self.out = self.folder.root
        self.run_state = Run(config, registry, self.folder, ui=ui, cache_only=cache_only, pm=pm, cache=cache)
        self.ui = self.run_state.ui
        self.pm = self.run_state.pm
        self.task = self.run_state.task

    @property
    def student(self) -> StudentModel:
        return self.run_state.student

    @property
    def teacher(self):
        return self.run_state.teacher

    # --- set-up -----------------------------------------------------------------------------

    def _preflight(self) -> None:
        """Every check that needs no output folder, before one is claimed: plugin names and options,
        the student, LoRA settings, the teacher (its key), and that the folder can be written."""
        from lrl_harness.api.options import check_options

        cfg, folder = self.config, self.folder
        folder.refuse_foreign()
        if folder.config.is_file():
            folder.check_config(cfg.identity(), cfg.identity_hash())
        for split in ("train", "test"):
            self.run_state.split_seed(split)  # an unknown preset fails here
        if cfg.transfer_format is not None:
            self._check_transfer_format(cfg.transfer_format)  # before a student is prepared
        done = (folder.existing_results() or {}).get("stages", {})
        wanted = [s for s in STAGES if s in cfg.stages and s not in done]
        self._check_sizes()  # before any problem is drawn
        teacher_reg = self.registry.get("teacher", cfg.teacher)
        if teacher_reg.option_spec is not None:
            check_options(f"teacher {cfg.teacher}", teacher_reg.option_spec,
                          {**cfg.teacher_options, "max_tokens": cfg.teacher_options.get(
                              "max_tokens", cfg.teacher_max_tokens)})
        # every option given is checked, whichever stages run; no model is loaded for it
        defaults = RunConfig()
        if any(s in STUDENT_STAGES for s in cfg.stages) or cfg.backend_options or cfg.backend != defaults.backend:
            backend_reg = self.registry.get("backend", cfg.backend)
            if backend_reg.option_spec is not None:
                check_options(f"backend {cfg.backend}", backend_reg.option_spec, cfg.backend_options,
                              unknown_label=cfg.backend)
        if cfg.gguf_backend is not None:
            self.registry.engine_for("gguf", cfg.gguf_backend)  # known, and one that loads GGUF files
        from lrl_harness.pipeline.recipes import resolve_settings

        student = self.student if any(s in STUDENT_STAGES for s in wanted) else None
        if student is not None:
            self._check_transfer_format(cfg.transfer_format or student.transfer_format)
        elif cfg.student_options or cfg.student != defaults.student:
            self.run_state.check_student_options()
        if cfg.lora or (student is not None and "lora" in wanted):
            resolve_settings({**(student.lora if student is not None else {}), **cfg.lora})
        if student is not None and "lora" in wanted:
            self._check_transfer_size(student)
        if "lora" in cfg.stages and self.run_state.export_quants():
            from lrl_harness.pipeline.converter import llama_cpp_version

            try:
                llama_cpp_version()  # export needs llama-cpp-python: say so now, not after training
            except LrlError as exc:
                raise ConfigError(f"{exc} (or skip the export with --export none)") from None
            engines(self.run_state)  # no engine for the parity of the exports: said now
            self.run_state.parity_quants()  # parity of a file the run does not export: said now
        if any(s in TEACHER_STAGES for s in wanted) or (
                "lora" in wanted and cfg.transfer_source == "teacher"):
            self.teacher.info()  # a missing key or a bad option fails now
        check_writable(self.out, folder=True)

    def _problem_limit(self, split: str, exclude: list = ()) -> tuple[int, str]:
        """The most problems of ``split`` the task can draw (apart from ``exclude``), and whose limit
        it is: the task's (``Task.max_problems``), never above the core's ceiling."""
        cfg = self.config
        most = getattr(self.task, "max_problems", None)
        if most is None:
            return MAX_PROBLEMS, "the most problems a split may hold"
        draw = getattr(cfg, "transfer_draw", None) if split == "transfer" else None
        kwargs = {"draw": draw} if draw else {}
        limit = most(cfg.preset, split, exclude, **kwargs)
        if limit >= MAX_PROBLEMS:
            return MAX_PROBLEMS, "the most problems a split may hold"
        apart = (f" apart from the test split's {len(exclude)}"
                 if exclude and limit < most(cfg.preset, split, (), **kwargs) else "")
        return limit, f"the problems preset {cfg.preset} of task {cfg.task} can draw{apart}"

    def _check_sizes(self) -> None:
        """A split size the task cannot draw never finishes: refused, naming the largest it can."""
        for name, split in (("test_n", "test"), ("train_n", "train"), ("transfer_n", "transfer")):
            n = getattr(self.config, name)
            if n is not None:
                limit, what = self._problem_limit(split)
                if n > limit:
                    raise ConfigError(f"{name} must be at most {limit} ({what}), got {n}")

    def _check_transfer_size(self, student: StudentModel) -> None:
        """The transfer data never holds a test problem: its size against what the rest allows."""
        cfg = self.config
        n = cfg.transfer_n or student.transfer_examples
        limit, what = self._problem_limit("transfer", self.run_state.problems("test"))
        if n > limit:
            given = "" if cfg.transfer_n else f" (student {student.name}'s default; set a smaller --transfer-n)"
            raise ConfigError(f"transfer_n must be at most {limit} ({what}), got {n}{given}")

    def _check_transfer_format(self, fmt: str) -> None:
        """The transfer format must be one the task declares (``Task.transfer_formats``)."""
        formats = self.run_state.task.transfer_formats
        if fmt not in formats:
            raise ConfigError(f"transfer format {fmt!r} is not one of the formats of task {self.config.task}: "
                              f"{', '.join(formats)}")

    def _open_out_dir(self) -> dict:
        """Create the folder, or resume the run already in it when it has the same configuration."""
        cfg, folder = self.config, self.folder
        if folder.config.exists():
            folder.check_config(cfg.identity(), cfg.identity_hash())
            if folder.results.exists():
                try:
                    return load_results(folder.results)
                except ResultsFileError as exc:
                    self.ui.say(f"[yellow]{exc}; rebuilding it from the checkpoints[/yellow]")
        else:
            folder.refuse_foreign()
        folder.claim(cfg.identity(), cfg.identity_hash())
        run = self.run_state
        return new_results(
            task=cfg.task, preset=cfg.preset, split="test",
            config={**cfg.identity(), "prices": cfg.prices},
            config_hash=cfg.identity_hash(),
            provenance={
                "created": datetime.now(UTC).isoformat(timespec="seconds"),
                "machine": machine.fingerprint(),
                "seeds": {"seed": cfg.seed, "train": run.split_seed("train"),
                          "test": run.split_seed("test"), "transfer": cfg.transfer_seed},
                "prompt_version": self.task.prompt_version,
                "prompt_hashes": self.task.prompt_hashes(),
            },
        )

    # --- the run ----------------------------------------------------------------------------

    def run(self) -> dict:
        self._preflight()
        with self.folder.lock():
            return self._run_locked()

    def _run_locked(self) -> dict:
        run = self.run_state
        results = run.results = self._open_out_dir()
        run.start_clock()
        self.pm.hook.run_started(config=self.config, out_dir=self.out)
        wanted = [s for s in STAGES if s in self.config.stages]
        if any(s in TEACHER_STAGES and s not in results["stages"] for s in wanted):
            results["teacher"] = self.teacher.info()  # fails early on a missing key or bad option
        for stage in wanted:
            if stage in results["stages"]:
                self.ui.say(f"[dim]{stage}: already done, skipped[/dim]")
                continue
            output = STAGE_FUNCTIONS[stage](run)
            block = {"stage": stage, "label": STAGE_LABELS[stage], **output.block}
            results.update(output.results)
            results["provenance"].update(output.provenance)
            results["stages"][stage] = block
            run.note_memory(stage)
            run.save()
            self.pm.hook.stage_finished(stage=stage, result=StageBlock.model_validate(block))
            self.ui.say(_stage_line(block))
        if "lora" in results["stages"] and "export" not in results and run.export_quants():
            results["export"] = export(run)
            run.note_memory("export")
            run.save()
        if "export" in results and "parity" not in results:
            results["parity"] = parity(run)
            run.note_memory("parity")
            run.save()
            self.ui.say(_parity_line(results["parity"]))
        cost = self._cost_block()
        if cost:
            results["cost"] = cost
        run.save()
        self.pm.hook.run_finished(results=as_results(results), out_dir=self.out)
        return results

    def _cost_block(self) -> dict | None:
        """Teacher usage per stage and the break-even the original experiment claimed (teacher cost per
        problem against the local student's, after the one-off cost of bootstrap and transfer data)."""
        results = self.run_state.results
        per_stage = {name: b["usage"] for name, b in results["stages"].items() if b.get("usage")}
        if not per_stage:
            return None
        from lrl_harness.pipeline.cost import break_even

        per_problem = next((per_stage[s].get("cost_per_problem_usd") for s in ("lrl", "teacher_baseline")
                            if s in per_stage), None)
        one_off = per_stage.get("bootstrap", {}).get("list_cost_usd")
        if one_off is not None and results.get("transfer", {}).get("usage"):
            one_off += results["transfer"]["usage"].get("list_cost_usd") or 0.0
        total = [u.get("cost_usd") for u in per_stage.values()]
        return {
            "per_stage": per_stage,
            "paid_usd": None if None in total else round(sum(total), 6),
            "break_even": break_even(per_problem, 0.0, one_off),
            "note": "the local student's cost per problem is taken as $0 (electricity and hardware not priced)",
        }


def _parity_line(report: dict) -> str:
    parts = [f"{name} answers agree {c['answer_agreement']:.1%}, texts identical {c['text_agreement']:.1%}"
             for name, c in report["comparisons"].items()]
    if report.get("not_checked"):
        parts.append(f"not checked: {', '.join(report['not_checked'])} (--parity all, or lrl bench)")
    return f"[bold]parity[/bold] vs {report['reference']}: " + "; ".join(parts)


def _stage_line(block: dict) -> str:
    lo, hi = block["ci95"]
    return (f"[bold]{block['stage']}[/bold]: accuracy {block['accuracy']:.3f} (95% CI {lo:.3f}-{hi:.3f}), "
            f"balanced {block['balanced_accuracy']:.3f}, majority baseline {block['majority_baseline']:.3f}, "
            f"unparsed {block['unparsed']}/{block['total']}")
