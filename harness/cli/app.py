"""The ``lrl`` command. The plugin manager is built in ``main()``, never at import time, and commands
read it from the click context; heavy packages are imported only by the commands that need them."""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click
from lrl_harness.api.errors import LrlError, path_error
from lrl_harness.api.registry import Registry, make_plugin_manager
from lrl_harness.cli.inputs import reads_results, writes

DEBUG_ENV = "LRL_HARNESS_DEBUG"
"""Set to 1 to see the traceback behind an error (like ``--debug``)."""


class Context:
    def __init__(self, pm):
        self.pm = pm
        self._registry = None

    @property
    def registry(self) -> Registry:
        if self._registry is None:
            self._registry = Registry(self.pm)
        return self._registry

    def task(self, name: str):
        return self.registry.get("task", name).factory()


pass_ctx = click.make_pass_decorator(Context)


def build_cli(pm) -> click.Group:
    @click.group(context_settings={"help_option_names": ["-h", "--help"]})
    @click.version_option(package_name="lrl-harness", prog_name="lrl")
    @click.option("--debug", is_flag=True, help=f"Show the traceback behind an error (or set {DEBUG_ENV}=1).")
    @click.pass_context
    def cli(ctx, debug):
        """lrl-harness: teach a small local model a skill from a large one (LRL + LoRA), measured
        honestly: every accuracy comes with the majority baseline, balanced accuracy, the unparsed
        count and a 95% interval."""
        ctx.obj = Context(pm)

    for command in (run, problems, rescore_command, plugins_command, schema_command):
        cli.add_command(command)
    for impl in pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli=cli)
        except Exception as exc:  # one broken plugin must not take the others down
            pm.lrl_failures.append(_failure(pm, impl, exc))
    return cli


def _failure(pm, impl, exc):
    from lrl_harness.api.registry import PluginFailure

    name = pm.get_name(impl.plugin) or "?"
    return PluginFailure(name, getattr(impl.plugin, "__name__", "?"), f"{type(exc).__name__}: {exc}")


# --- run --------------------------------------------------------------------------------------


@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file with run settings (command-line options override it).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: runs/<timestamp>). Re-using a folder resumes that run.")
@click.option("--task", help="Task plugin (default: meeting-rooms).")
@click.option("--preset", help="Problem preset: balanced (default) or seed (the original splits).")
@click.option("--teacher", help="Teacher plugin (default: solver, which is not a language model).")
@click.option("--teacher-opt", multiple=True, metavar="KEY=VALUE", help="Teacher option (repeatable).")
@click.option("--student", help="Student plugin (default: tiny), or a Hugging Face model id or path.")
@click.option("--student-opt", multiple=True, metavar="KEY=VALUE", help="Student option (repeatable).")
@click.option("--backend", help="Inference backend for the student stages (default: transformers).")
@click.option("--backend-opt", multiple=True, metavar="KEY=VALUE", help="Backend option (repeatable).")
@click.option("--gguf-backend", help="Backend that parity runs the GGUF exports on (default: one that loads "
              "GGUF files, this project's own first).")
@click.option("--lora-opt", multiple=True, metavar="KEY=VALUE",
              help="Override a LoRA training setting, e.g. r=8 or max_steps=200 (repeatable).")
@click.option("--stages", help="Comma-separated stages to run (default: all).")
@click.option("--seed", type=int, help="Seed for model building and training (default 0).")
@click.option("--train-n", type=int, help="Problems in the train split (bootstrap).")
@click.option("--test-n", type=int, help="Problems in the test split.")
@click.option("--transfer-n", type=int, help="Transfer (training) examples for the student.")
@click.option("--recipe", help="Transfer recipe: seed (the original experiment's) or small (for small "
              "pretrained students); default: the student's. Single choices below override it.")
@click.option("--transfer-format",
              help="One of the task's transfer formats (checked against it). meeting-rooms: "
              "label: strategy+problem -> answer (the original); trace: the worked sweep-line trace, then "
              "the answer; scan: the meetings running at each start time, counted, then the answer (no "
              "sorting); check: every meeting marked running or not at each start time, counted; between: check "
              "with each mark written as start, time, end; tally: between with running counts and the peak so "
              "far; count: tally without each line's count and peak (the small recipe's).")
@click.option("--transfer-source", type=click.Choice(["code", "teacher"]),
              help="Transfer targets written by code (default) or by the teacher (checked by the solver).")
@click.option("--transfer-draw", type=click.Choice(["balanced", "original"]),
              help="Transfer problems drawn balanced (default: as many YES as NO per difficulty, half of them "
              "tight, never a test problem) or as the preset's source drew them (seed: the original "
              "experiment's generator, 90% YES, test problems not excluded).")
@click.option("--batch-size", type=int, help="LRL batch size (default 10).")
@click.option("--journal-every", type=int, help="Journal entry every N batches (default 1).")
@click.option("--distill-every", type=int, help="New strategy every N batches (default 5).")
@click.option("--journal-chars", type=int, help="Journal characters given to distillation (default 5000).")
@click.option("--export", "export_quants", help="GGUF files to write after training, comma-separated "
              "(default: the student's recipe's, else f32,q8_0,q4_k_m; 'none' to skip).")
@click.option("--parity", "parity_quants", help="Exported GGUF files parity compares with the merged model, "
              "comma-separated (default: the recipe's, else every exported file; 'all': every exported file).")
@click.option("--prices", type=click.Path(dir_okay=False), help="JSON/TOML price table for teacher cost.")
@click.option("--cache-only", is_flag=True, help="Replay teacher answers from the cache; fail on a miss.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the teacher response cache.")
@click.option("--refresh-cache", is_flag=True, help="Ask the teacher again and overwrite its cached answers.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@pass_ctx
def run(obj: Context, config_file, out, task, preset, teacher, teacher_opt, student, student_opt, backend,
        backend_opt, gguf_backend, lora_opt, stages, seed, train_n, test_n, transfer_n, recipe, transfer_format,
        transfer_source, transfer_draw, batch_size, journal_every, distill_every, journal_chars, export_quants,
        parity_quants, prices, cache_only, no_cache, refresh_cache, quiet):
    """Run the whole pipeline: student baseline, teacher baseline, LRL bootstrap, teacher with the
    learned strategy, LoRA training of the student, export. Offline by default."""
    from lrl_harness.pipeline.config import load_toml, make_config, parse_options
    from lrl_harness.pipeline.runner import Pipeline, default_out_dir
    from lrl_harness.util.progress import UI

    file_values = load_toml(config_file) if config_file else {}
    overrides = {
        "task": task, "preset": preset, "teacher": teacher, "student": student, "backend": backend,
        "teacher_options": parse_options(teacher_opt) or None,
        "student_options": parse_options(student_opt) or None,
        "backend_options": parse_options(backend_opt) or None, "gguf_backend": gguf_backend,
        "lora": parse_options(lora_opt) or None,
        "stages": [s.strip() for s in stages.split(",") if s.strip()] if stages else None,
        "seed": seed, "train_n": train_n, "test_n": test_n, "transfer_n": transfer_n,
        "recipe": recipe, "transfer_format": transfer_format, "transfer_source": transfer_source,
        "transfer_draw": transfer_draw,
        "batch_size": batch_size,
        "journal_every": journal_every, "distill_every": distill_every, "journal_chars": journal_chars,
        "export": ([] if export_quants.strip() == "none" else [q.strip() for q in export_quants.split(",")])
        if export_quants else None,
        "parity": [q.strip() for q in parity_quants.split(",") if q.strip()] if parity_quants else None,
        "prices": prices,
    }
    if sum((cache_only, no_cache, refresh_cache)) > 1:
        raise LrlError("--cache-only, --no-cache and --refresh-cache exclude each other: choose one")
    config = make_config(file_values, overrides)
    ui = UI(quiet=quiet)
    out = out or default_out_dir()
    cache = "off" if no_cache else "refresh" if refresh_cache else "use"
    pipeline = Pipeline(config, obj.registry, out, ui=ui, cache_only=cache_only, pm=obj.pm, cache=cache)
    results = pipeline.run()
    _print_summary(results, ui)
    ui.say(f"results: {out / 'results.json'}")


def _print_summary(results: dict, ui) -> None:
    if ui.quiet:
        return
    try:
        from lrl_harness.reporting.report import summary_table
    except ImportError:
        return
    ui.console.print(summary_table(results))


# --- problems ---------------------------------------------------------------------------------


@click.command()
@click.option("--task", "task_name", default="meeting-rooms", show_default=True)
@click.option("--preset", default="balanced", show_default=True)
@click.option("--split", default="test", show_default=True)
@click.option("--n", type=int, help="How many problems (default: the split's size).")
@click.option("--seed", type=int, help="Seed (default: the split's seed).")
@pass_ctx
def problems(obj: Context, task_name, preset, split, n, seed):
    """Print a split's problems as JSON lines."""
    task = obj.task(task_name)
    for problem in task.problems(preset, split, n, seed):
        click.echo(json.dumps(task.to_json(problem)))


# --- rescore ----------------------------------------------------------------------------------


@click.command("rescore")
@click.argument("results_file", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--task", "task_name", default="meeting-rooms", show_default=True)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the re-graded results (this project's format) here.")
@click.option("--explain", is_flag=True,
              help="Print every response whose answer or grade changed: problem, recorded and new answer, "
                   "deciding text.")
@pass_ctx
@writes("out")
@reads_results("results_file")
def rescore_command(obj: Context, results_file, task_name, out, explain):
    """Re-grade a results file (ours or the original experiment's, as published) with this project's
    extractor and solver, and show the corrected metrics next to the recorded ones."""
    from lrl_harness.evaluation.rescore import changed, explain_line, rescore
    from lrl_harness.reporting.report import rescore_data
    from lrl_harness.reporting.tables import print_tables
    from lrl_harness.results.io import as_results, write_results

    rescored = rescore(results_file, obj.task(task_name))
    if explain:
        for stage, record in changed(rescored):
            click.echo(explain_line(stage, record))
    typed = as_results(rescored, "re-graded results")
    extras = typed.provenance.source_metadata if typed.provenance else None
    facts = [f"{k}={v}" for extra in (extras or {}).values() if isinstance(extra, dict)
             for k, v in extra.items() if isinstance(v, (str, int, float))]
    if facts:
        click.echo("source metadata: " + ", ".join(facts))
    print_tables([rescore_data(typed, title=f"Re-graded: {results_file.name}")])
    if out:
        write_results(out, rescored)
        click.echo(f"wrote {out}")


# --- plugins ----------------------------------------------------------------------------------


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@pass_ctx
def plugins_command(obj: Context, as_json):
    """List every plugin: kind, name, module and distribution, and plugins that failed to load."""
    registry = obj.registry
    rows = [{"kind": r.kind, "name": r.name, "plugin": r.plugin, "module": r.module,
             "distribution": r.distribution, "description": r.description,
             **({"runs": list(r.runs), "threads": r.threads} if r.kind == "backend" else {})}
            for r in registry.all()]
    failures = [{"name": f.name, "module": f.module, "error": f.error} for f in registry.failures]
    if as_json:
        click.echo(json.dumps({"plugins": rows, "failed": failures}, indent=2))
        return
    from lrl_harness.reporting.tables import TableData
    from rich.console import Console

    columns = ("kind", "name", "plugin", "module", "distribution", "loads", "CPU threads", "description")
    cells = [[r["kind"], r["name"], r["plugin"], r["module"], r["distribution"] or "-",
              ", ".join(r.get("runs", [])) or "-", r.get("threads") or "-", r["description"]] for r in rows]
    console = Console()
    console.print(TableData("lrl-harness plugins", columns, cells, text_columns=len(columns), no_wrap=False).rich())
    console.print("To turn a plugin off, list its 'plugin' name in LRL_HARNESS_DISABLE_PLUGINS "
                  "(comma-separated).", highlight=False)
    for f in failures:
        console.print(f"[red]failed to load[/red] {f['name']} ({f['module']}): {f['error']}", highlight=False)


# --- schema -----------------------------------------------------------------------------------


@click.command("schema")
@click.option("--comparison", is_flag=True, help="The schema of `lrl compare --format json` instead.")
def schema_command(comparison):
    """Print the JSON Schema of a results file (schema version 2; version-1 files are read too)."""
    from lrl_harness.results.schema import Comparison, Results

    model = Comparison if comparison else Results
    click.echo(json.dumps(model.model_json_schema(by_alias=True), indent=2))


# --- entry point ------------------------------------------------------------------------------


class Terminated(BaseException):
    """SIGTERM, turned into an exception so that ``finally`` blocks (a converter subprocess, a
    temporary folder) clean up exactly as for Ctrl-C."""


def _on_sigterm(signum, frame):
    raise Terminated()


def _debug_wanted(args: list[str]) -> bool:
    return "--debug" in args or os.environ.get(DEBUG_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _command_of(args: list[str]) -> str | None:
    return next((a for a in args if not a.startswith("-")), None)


def _one_line(text: str) -> str:
    return "; ".join(line.strip() for line in str(text).splitlines() if line.strip()) or "unknown error"


def _error(message: str, code: int, debug: bool) -> int:
    if debug:
        import traceback

        traceback.print_exc()
    click.echo(f"lrl: error: {_one_line(message)}", err=True)
    return code


def _interrupted(args: list[str], code: int) -> int:
    if _command_of(args) == "run":
        click.echo("lrl: interrupted; re-run with the same --out to resume", err=True)
    else:
        click.echo("lrl: interrupted; nothing half-written was left behind", err=True)
    return code


def main(argv: list[str] | None = None) -> int:
    """Run ``lrl``. The one error boundary: every failure ends in one line on stderr and an exit
    status (2: bad input, 1: the work failed, 130/143: interrupted), a traceback only with
    ``--debug`` or ``LRL_HARNESS_DEBUG=1``."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_wanted(args)
    args = [a for a in args if a != "--debug"]
    previous = None
    try:
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    except ValueError:  # not the main thread: leave signals alone
        pass
    try:
        pm = make_plugin_manager()
        cli = build_cli(pm)
        result = cli.main(args=args, prog_name="lrl", standalone_mode=False)
        if isinstance(result, int) and not isinstance(result, bool) and result:
            return result
    except LrlError as exc:
        return _error(str(exc), exc.exit_code, debug)
    except click.exceptions.Abort as exc:
        if isinstance(exc.__context__, Terminated):
            return _interrupted(args, 143)
        return _interrupted(args, 130)
    except click.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "lrl"
        return _error(f"{exc.format_message()} (see '{where} --help')", exc.exit_code, debug)
    except click.ClickException as exc:
        return _error(exc.format_message(), exc.exit_code, debug)
    except click.exceptions.Exit as exc:
        return exc.exit_code
    except KeyboardInterrupt:
        return _interrupted(args, 130)
    except Terminated:
        return _interrupted(args, 143)
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except OSError as exc:
        where = exc.filename if exc.filename is not None else "a file"
        error = path_error(where, exc, "read or write")
        return _error(str(error), error.exit_code, debug)
    except MemoryError:
        return _error("out of memory; try smaller sizes or batches", 1, debug)
    except RecursionError:
        return _error("input nested too deeply to read", 2, debug)
    except Exception as exc:  # the boundary: a bug still ends in one line, with how to see more
        return _error(f"internal error: {type(exc).__name__}: {_one_line(exc)[:300]} "
                      f"(re-run with --debug or {DEBUG_ENV}=1 for the traceback)", 1, debug)
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
    return 0
