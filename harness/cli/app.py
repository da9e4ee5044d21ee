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


class _TaskFormatsOption(click.Option):
    """``--transfer-format``: its help lists each installed task's formats, as the task describes them."""

    def get_help_record(self, ctx):
        record = super().get_help_record(ctx)
        obj = ctx.find_root().obj
        if record is None or not isinstance(obj, Context):
            return record
        described = []
        for name in obj.registry.names("task"):
            try:
                task = obj.registry.get("task", name).factory()
            except Exception:  # noqa: BLE001 - a broken task must not break --help
                continue
            help_of = getattr(task, "transfer_format_help", None) or {}
            formats = [f"{fmt}: {help_of[fmt]}" if fmt in help_of else fmt
                       for fmt in getattr(task, "transfer_formats", ())]
            if formats:
                described.append(f"{name}: " + "; ".join(formats) + ".")
        return record[0], " ".join([record[1], *described])


def _setting_option(f) -> click.Option:
    """The ``lrl run`` option of a declared run setting (``pipeline/config.py``)."""
    meta = f.metadata
    if meta["cli"] == "options":
        return click.Option([meta["flag"], f.name], multiple=True, metavar="KEY=VALUE", help=meta["help"])
    if meta["cli"] == "path":
        return click.Option([meta["flag"], f.name], type=click.Path(dir_okay=False), help=meta["help"])
    if meta["cli"] == "format":
        return _TaskFormatsOption([meta["flag"], f.name], help=meta["help"])
    kind = click.Choice(list(meta["choices"])) if meta["choices"] else int if "int" in str(f.type) else str
    return click.Option([meta["flag"], f.name], type=kind, help=meta["help"])


def _with_run_settings(command: click.Command) -> click.Command:
    """Every declared run setting as an option, after ``--config`` and ``--out``, before the run's switches."""
    from lrl_harness.pipeline.config import command_line_settings

    after_out = next(i for i, param in enumerate(command.params) if param.name == "out") + 1
    command.params[after_out:after_out] = [_setting_option(f) for f in command_line_settings()]
    return command


@_with_run_settings
@click.command()
@click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path),
              help="TOML file with run settings (command-line options override it).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: runs/<timestamp>). Re-using a folder resumes that run.")
@click.option("--cache-only", is_flag=True, help="Replay teacher answers from the cache; fail on a miss.")
@click.option("--no-cache", is_flag=True, help="Neither read nor write the teacher response cache.")
@click.option("--refresh-cache", is_flag=True, help="Ask the teacher again and overwrite its cached answers.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@pass_ctx
def run(obj: Context, config_file, out, cache_only, no_cache, refresh_cache, quiet, **settings):
    """Run the whole pipeline: student baseline, teacher baseline, LRL bootstrap, teacher with the
    learned strategy, LoRA training of the student, export. Offline by default."""
    from lrl_harness.pipeline.config import from_command_line, load_toml, make_config
    from lrl_harness.pipeline.runner import Pipeline, default_out_dir
    from lrl_harness.util.progress import UI

    file_values = load_toml(config_file) if config_file else {}
    if sum((cache_only, no_cache, refresh_cache)) > 1:
        raise LrlError("--cache-only, --no-cache and --refresh-cache exclude each other: choose one")
    config = make_config(file_values, from_command_line(settings))
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
