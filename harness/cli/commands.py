"""``lrl export``, ``parity``, ``bench``, ``check``, ``report`` and ``cache`` (``run``, ``problems``,
``rescore`` and ``plugins`` live in ``cli``). They are added to ``lrl`` through the
public ``register_commands`` hook, the same way a third-party plugin adds one.

Each command only reads its options, calls the module that does the work and prints the outcome;
those modules are imported inside the command bodies, so ``lrl --help`` stays fast.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click
from lrl_harness import hookimpl
from lrl_harness.api.errors import ConfigError, LrlError
from lrl_harness.pipeline.export import ADAPTER_MODES, DEFAULT_QUANTS, QUANT_FTYPES


@hookimpl
def register_commands(cli):
    for command in (export_command, parity_command, bench_command, check_command, report_command, compare_command,
                    cache_command):
        cli.add_command(command)


# --- export -----------------------------------------------------------------------------------


@click.command("export")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--adapter", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="LoRA adapter directory (default for a run directory: its adapter/).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Output folder (default: RUN_DIR/export, or MODEL_DIR-gguf beside the model).")
@click.option("--quant", "quants", multiple=True, type=click.Choice(list(QUANT_FTYPES)),
              help=f"Quantisation to write; repeat for several (default: {', '.join(DEFAULT_QUANTS)}).")
@click.option("--adapter-mode", type=click.Choice(ADAPTER_MODES), default="merge", show_default=True,
              help="merge: fold the adapter into the weights; gguf: base model plus a GGUF LoRA adapter.")
def export_command(source: Path, adapter: Path | None, out_dir: Path | None, quants: tuple[str, ...],
                   adapter_mode: str) -> None:
    """Export a run's trained student (or a Hugging Face model directory) to GGUF files."""
    from lrl_harness.pipeline.export import export_model, resolve_source
    from lrl_harness.reporting.tables import TableData, print_tables
    from lrl_harness.results.files import check_writable
    from rich.console import Console

    model_dir, run_adapter, default_out = resolve_source(source)
    out_dir = out_dir or default_out
    check_writable(out_dir, folder=True)
    console = Console(stderr=True)
    record = export_model(model_dir, out_dir, quants or DEFAULT_QUANTS, adapter or run_adapter,
                          progress=lambda m: console.print(f"{m} ...", highlight=False),
                          adapter_mode=adapter_mode)
    rows = [[fname, entry["kind"], entry["quant"], f"{entry['bytes'] / 2**20:.2f}", entry["sha256"][:16]]
            for fname, entry in record["files"].items()]
    print_tables([TableData(f"GGUF files in {out_dir} (llama.cpp converter {record['converter_version']})",
                            ("file", "kind", "quant", "MiB", "sha256"), rows,
                            text_columns=("file", "kind", "quant", "sha256"), no_wrap=False)])


# --- parity -----------------------------------------------------------------------------------


@click.command("parity")
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--gguf", "ggufs", multiple=True,
              type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="GGUF file to compare with transformers; repeat for several (default: the export's).")
@click.option("--adapter", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="LoRA adapter for the transformers side (default for a run directory: its adapter/).")
@click.option("--task", "task_name", default="meeting-rooms", show_default=True)
@click.option("--preset", default="balanced", show_default=True)
@click.option("--split", default="test", show_default=True)
@click.option("-n", "n", type=int, default=200, show_default=True, help="Number of problems.")
@click.option("--max-new-tokens", type=int, default=128, show_default=True)
@click.option("--threads", type=int, default=None, help="llama.cpp threads (default: half the cores).")
@click.option("--gguf-backend", help="Backend for the GGUF files (default: one that loads GGUF, this project's first).")
@click.option("--engine", "engines", multiple=True, metavar="BACKEND",
              help="Another engine that loads Hugging Face folders (e.g. vllm), compared with transformers on "
                   "the same model and adapter; repeatable.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the parity report (JSON) here.")
@click.pass_obj
def parity_command(obj, source: Path, ggufs: tuple[Path, ...], adapter: Path | None, task_name: str,
                   preset: str, split: str, n: int, max_new_tokens: int, threads: int | None,
                   gguf_backend: str | None, engines: tuple[str, ...], out_file: Path | None) -> None:
    """Compare a student on transformers with its GGUF exports on llama.cpp (and with the same model
    on other engines, --engine vllm): prompt tokens, answers, texts, accuracy and an exact McNemar test.

    SOURCE is a run directory (its student, adapter/ and export/) or a Hugging Face model directory.
    Prompts are the task's student prompts without a strategy and without a chat template: the
    same text for every engine, which is what parity needs."""
    from lrl_harness.api.contract import GenerationSettings, ModelSpec
    from lrl_harness.evaluation.ask import student_prompts
    from lrl_harness.evaluation.parity import check_parity
    from lrl_harness.pipeline.export import parity_sources
    from lrl_harness.reporting.tables import TableData, print_tables
    from lrl_harness.results.files import check_writable, write_json

    if n < 1:
        raise LrlError(f"-n must be a positive number of problems, got {n}")
    if max_new_tokens < 1:
        raise LrlError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    if threads is not None and threads < 1:
        raise LrlError(f"--threads must be a positive number of threads, got {threads}")
    if out_file is not None:
        check_writable(out_file)  # refused now, not after the measurement
    model_dir, adapter, ggufs = parity_sources(source, ggufs, adapter, optional=bool(engines))
    task = obj.task(task_name)
    problems = task.problems(preset, split, n=n)
    prompts = student_prompts(task, problems)
    registry = obj.registry
    hf_engine = registry.engine_for("hf")
    gguf_engine = registry.engine_for("gguf", gguf_backend) if ggufs else None
    others = [registry.engine_for("hf", name).name for name in engines]  # an unknown name fails before loading
    options = {"n_threads": threads} if threads else {}
    student = ModelSpec(path=str(model_dir), adapter=str(adapter) if adapter else None)
    with contextlib.ExitStack() as stack:
        backends = {hf_engine.name: stack.enter_context(registry.open_backend(hf_engine.name, student))}
        for name in others:
            if name != hf_engine.name:
                backends[name] = stack.enter_context(registry.open_backend(name, student))
        for gguf in ggufs:
            backends[gguf.stem] = stack.enter_context(
                registry.open_backend(gguf_engine.name, ModelSpec(path=str(gguf)), options))
        settings = GenerationSettings(max_new_tokens=max_new_tokens)
        report = check_parity(backends, prompts, problems, task, settings)
    if out_file:
        write_json(out_file, report)
    rows = []
    for name, block in report["backends"].items():
        cmp = report["comparisons"].get(name)
        rows.append([name, f"{block['accuracy']:.1%}", str(block["unparsed"]),
                     f"{cmp['answer_agreement']:.1%}" if cmp else "-",
                     f"{cmp['text_agreement']:.1%}" if cmp else "-",
                     f"{cmp['mcnemar_p']:.3g}" if cmp else "-", f"{block['elapsed_s']:.1f}"])
    columns = ("backend", "accuracy", "unparsed", "answers agree", "texts identical", "McNemar p", "time s")
    print_tables([TableData(f"Parity on {len(problems)} {preset}/{split} problems (reference: transformers)",
                            columns, rows, text_columns=1, no_wrap=False)])


# --- bench ------------------------------------------------------------------------------------


@click.command("bench")
@click.option("--task", "task_name", help="Task (default: the run's, else meeting-rooms).")
@click.option("--preset", help="Problem preset (default: the run's, else balanced).")
@click.option("--split", help="Split (default: the run's, else test).")
@click.option("--n", type=int, help="How many problems (default: the run's test size, else the split's).")
@click.option("--target", "target_texts", multiple=True, metavar="[LABEL:]BACKEND=MODEL[,k=v...]",
              help="A backend and model to measure (repeatable), e.g. llamacpp=model.gguf,n_threads=2.")
@click.option("--run", "run_dir", type=click.Path(file_okay=False, path_type=Path),
              help="A run folder: benchmark its trained student (merged model on transformers, GGUF files "
                   "on llamacpp) with the prompts it was trained on.")
@click.option("--out", "out_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Results JSON to write the 'benchmarks' section into (created, or updated in place).")
@click.option("--warmup", type=int, default=2, show_default=True,
              help="Uncounted warm-up prompts per target.")
@click.option("--repeats", type=int, default=1, show_default=True, help="Times each problem is asked.")
@click.option("--max-new-tokens", type=int, help="Generation limit (default: the run's, else 128).")
@click.option("--concurrency", metavar="N[,N...]",
              help="Load levels: requests in flight at once, e.g. 1,4,16 (every problem is sent at each level).")
@click.option("--request-rate", metavar="R[,R...]",
              help="Load levels: Poisson arrivals per second (seeded by --seed); one --concurrency value caps "
                   "the requests in flight.")
@click.option("--slo", metavar="KEY=S[,...]", help="Service-level objective for goodput, e.g. ttft=0.5,e2e=5 "
                                                   "(keys ttft, e2e, tpot, itl; seconds).")
@click.option("--threads", "threads_text", metavar="N[,N...]",
              help="CPU threads for every CPU target (a sweep when several; default: every usable core, "
                   "the same for all).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the target order and arrivals.")
@click.option("--order", type=click.Choice(["random", "given"]), default="random", show_default=True,
              help="Order in which the targets are measured (recorded in the results).")
@click.option("--isolate/--in-process", default=True, show_default=True,
              help="Measure each target in its own process (its own load time, peak RSS and warm state).")
@click.option("--engine", "engines", multiple=True, metavar="BACKEND",
              help="With --run: the trained student also on this engine that loads Hugging Face folders "
                   "(e.g. vllm): the merged model, and the unmerged adapter as ENGINE:adapter; repeatable.")
@click.option("--dataset-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the prompts as JSONL for `vllm bench serve --dataset-name custom "
                   "--skip-chat-template` (prompt as rendered, output_tokens = the generation limit); with no "
                   "target, only that file is written.")
@click.option("--quiet", "-q", is_flag=True, help="No progress display.")
@click.pass_context
def bench_command(ctx, task_name, preset, split, n, target_texts, run_dir, out_file, warmup, repeats,
                  max_new_tokens, concurrency, request_rate, slo, threads_text, seed, order, isolate, engines,
                  dataset_out, quiet):
    """Measure accuracy, latency, throughput and memory of one model on several backends."""
    from dataclasses import replace

    from lrl_harness.bench.load import parse_levels, parse_slo, positive_numbers
    from lrl_harness.bench.runner import results_to_update, run_bench
    from lrl_harness.bench.targets import parse_target
    from lrl_harness.bench.trained import check_prompts_match_run, run_render, run_settings, run_strategy, run_targets
    from lrl_harness.evaluation.ask import student_prompts
    from lrl_harness.pipeline.rundir import RunDir
    from lrl_harness.reporting.report import benchmark_tables, print_tables
    from lrl_harness.results import machine
    from lrl_harness.results.files import check_writable
    from lrl_harness.results.io import read_results, write_results
    from lrl_harness.util.progress import UI

    levels = parse_levels(concurrency, request_rate)  # every bad value fails here, before anything is loaded
    slo_limits = parse_slo(slo)
    if slo_limits and not levels:
        raise ConfigError("--slo needs a load: give --concurrency or --request-rate")
    threads = positive_numbers("--threads", threads_text, int) if threads_text else None
    if threads is None and isolate:
        threads = [machine.usable_cores() or 1]
    if warmup < 0 or repeats < 1:
        raise ConfigError(f"--warmup must be >= 0 and --repeats >= 1 (got {warmup} and {repeats})")
    if max_new_tokens is not None and max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    check_writable(out_file)
    registry = _registry(ctx)
    run = read_results(RunDir(run_dir).results) if run_dir else None
    config = (run.config if run else None) or {}
    task_name = task_name or (run.task if run else None) or "meeting-rooms"
    preset = preset or (run.preset if run else None) or "balanced"
    split = split or (run.split if run else None) or "test"
    results = results_to_update(out_file, task_name, preset, split)
    task = registry.get("task", task_name).factory()
    seeds = run.provenance.seeds if run and run.provenance else None
    seed_of_split = (seeds or {}).get(split)
    if n is not None and n < 1:
        raise ConfigError(f"--n must be at least 1, got {n}")
    if run:  # the run's own split, so its first n problems are the ones the run graded
        problems = task.problems(preset, split, config.get(f"{split}_n"), seed_of_split)[:n]
    else:
        problems = task.problems(preset, split, n, seed_of_split)
    targets = [parse_target(t) for t in target_texts]
    strategy = None
    if engines and not run_dir:
        raise ConfigError("--engine adds the run's student on another engine: give --run (or use --target)")
    if run_dir:
        targets = run_targets(run_dir, run, registry, gguf_backend=config.get("gguf_backend"),
                              engines=engines) + targets
        strategy = run_strategy(run)
    prompts = student_prompts(task, problems, strategy, run_render(run_dir, run) if run_dir else None)
    ui = UI(quiet=quiet)
    if run_dir:
        checked = check_prompts_match_run(run, problems, prompts, task)
        ui.say(f"prompts identical to the run's on {checked} of {len(problems)} problems" if checked else
               "prompts not checked against the run's (no common problems)")
    settings = run_settings(run)
    if max_new_tokens:
        settings = replace(settings, max_new_tokens=max_new_tokens)
    if dataset_out:
        write_serving_dataset(dataset_out, prompts, settings)
        ui.say(f"wrote {len(prompts)} prompts to {dataset_out} (vllm bench serve --dataset-name custom)")
        if not targets:
            return
    bench = run_bench(registry, task, problems, targets, warmup=warmup, repeats=repeats, progress=ui.task,
                      settings=settings, strategy=strategy, prompts=prompts, preset=preset, split=split,
                      levels=levels, slo=slo_limits, seed=seed, isolate=isolate, order=order, threads=threads)
    if run_dir:
        bench["run"] = str(run_dir)
    results["benchmarks"] = bench
    write_results(out_file, results)  # checked against the schema as it is written
    print_tables(benchmark_tables(results))
    click.echo(f"wrote {out_file}")


def write_serving_dataset(path: Path, prompts, settings) -> None:
    """The prompts as vLLM's benchmark reads a custom dataset: one JSON object a line, ``prompt`` as the
    model is given it (so ``--skip-chat-template``) and ``output_tokens``, the generation limit."""
    import json

    from lrl_harness.results.files import atomic_write_text

    atomic_write_text(path, "".join(json.dumps({"prompt": p, "output_tokens": settings.max_new_tokens}) + "\n"
                             for p in prompts))


def _registry(ctx: click.Context):
    """The registry of the ``lrl`` command this runs under, else one built from the installed plugins."""
    registry = getattr(ctx.find_root().obj, "registry", None)
    if registry is None:
        from lrl_harness.api.registry import Registry, make_plugin_manager

        registry = Registry(make_plugin_manager())
    return registry


# --- check ------------------------------------------------------------------------------------


@click.command("check")
@click.argument("results_file", metavar="RESULTS", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--baseline", "baseline_file", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="The reference results file to compare against.")
@click.option("--tolerance", type=float, default=0.02, show_default=True,
              help="Largest accuracy drop (absolute) that never fails.")
@click.option("--alpha", type=float, default=0.05, show_default=True,
              help="Significance level a larger drop must reach to fail.")
@click.option("--latency-ratio", type=float, default=None,
              help="Also fail when mean latency grows by more than this factor (e.g. 1.5).")
@click.option("--junit", "junit_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Write a JUnit XML report here (one testcase per stage or backend).")
def check_command(results_file, baseline_file, tolerance, alpha, latency_ratio, junit_file):
    """Compare RESULTS with a baseline: exit 0 when everything holds, 1 on a regression.

    A stage or backend fails when its accuracy or balanced accuracy fell by more than the tolerance
    and the fall is significant on the paired problems (exact one-sided McNemar), when more answers
    are unparsed, or (with --latency-ratio) when it got slower than the ratio allows.
    """
    from lrl_harness.reporting.check import check_arguments, check_files, item_label
    from lrl_harness.reporting.tables import print_tables
    from lrl_harness.results.files import check_writable

    check_arguments(tolerance, alpha, latency_ratio)
    if junit_file is not None:
        check_writable(junit_file)
    report = check_files(results_file, baseline_file, tolerance=tolerance, alpha=alpha,
                         latency_ratio=latency_ratio)
    for item in report.items:
        for warning in item.warnings:
            click.echo(f"warning: {warning}", err=True)
    print_tables([report.table()])
    for where, keys in (("results", report.only_in_results), ("baseline", report.only_in_baseline)):
        for kind, name in keys:
            click.echo(f"skipped {item_label(kind, name)}: only in the {where}")
    for note in report.notes + [f"{i.label}: {n}" for i in report.items for n in i.notes]:
        click.echo(f"note: {note}")
    if junit_file:
        report.write_junit(junit_file)
        click.echo(f"wrote {junit_file}")
    for line in report.failure_lines():
        click.echo(line)
    if not report.passed:
        raise SystemExit(1)
    count = len(report.items)
    click.echo(f"OK: {count} check{'s hold' if count != 1 else ' holds'}")


# --- report -----------------------------------------------------------------------------------


@click.command("report")
@click.argument("results_files", metavar="RESULTS...", nargs=-1, required=True,
                type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Folder for report.md, report.html and the PNG plots.")
@click.option("--label", "labels", multiple=True,
              help="With several files: a name for each, in order (default: its run and machine).")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json"]), default="table",
              show_default=True, help="How the tables are printed (the report files are written either way).")
def report_command(results_files, out_dir, labels, fmt):
    """Write a Markdown and HTML report with plots of RESULTS, and print its tables. With several
    files (machines, recipes, backends): one report, a row per file for every stage and bench target
    with the machine it ran on, plots with every file's targets, paired tests where the files
    answered the same problems, and a note where their comparability keys differ."""
    from lrl_harness.reporting.report import EXPLANATION, all_tables, write_report
    from lrl_harness.reporting.tables import print_tables, tables_csv, tables_json, tables_markdown
    from lrl_harness.results.files import check_writable
    from lrl_harness.results.io import load_results

    if len(results_files) == 1 and labels:
        raise LrlError("--label names the files of a report of several files")
    if len(results_files) == 1:
        results = load_results(results_files[0])
        tables, notes = all_tables(results), []
    else:
        from lrl_harness.reporting.multi import load_sources, multi_tables

        sources = load_sources(list(results_files), list(labels))
        tables, notes = multi_tables(sources)
    check_writable(out_dir, folder=True)
    if fmt == "markdown":
        click.echo(tables_markdown(tables))
    elif fmt == "csv":
        click.echo(tables_csv(tables), nl=False)
    elif fmt == "json":
        click.echo(tables_json(tables))
    else:
        print_tables(tables)
        click.echo(EXPLANATION)
        for note in notes:
            click.echo(f"note: {note}")
    if len(results_files) == 1:
        written = write_report(results, out_dir)
    else:
        from lrl_harness.reporting.multi import write_multi_report

        written = write_multi_report(sources, out_dir)
    for name, path in written.items():
        click.echo(f"wrote {name}: {path}", err=fmt != "table")


# --- compare ----------------------------------------------------------------------------------


@click.command("compare")
@click.argument("blocks", nargs=-1, required=True, metavar="FILE[:STAGE|TARGET] FILE[:STAGE|TARGET] ...")
@click.option("--label", "labels", multiple=True, help="A name for each block, in order (default: FILE:NAME).")
@click.option("--task", "task_name", help="Task (default: the one the files name, else meeting-rooms).")
@click.option("--format", "fmt", type=click.Choice(["table", "markdown", "csv", "json"]), default="table",
              show_default=True, help="Output: terminal tables, Markdown, CSV (one row per pair) or JSON.")
@click.option("--explain", is_flag=True, help="List every discordant problem: ids, both answers, the deciding text.")
@click.option("--resamples", type=int, default=10_000, show_default=True, help="Paired bootstrap resamples.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the paired bootstrap.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False, path_type=Path),
              help="Also write the comparison as JSON here (`lrl schema --comparison` describes it).")
@click.pass_context
def compare_command(ctx, blocks, labels, task_name, fmt, explain, resamples, seed, out_file):
    """Compare two or more systems problem by problem: each block is a stage or bench target
    (``bench/LABEL``) of a results file, ours or the original experiment's published file, re-graded
    on read. Problems are paired by content; for each pair of blocks: accuracy, balanced accuracy,
    majority baseline, unparsed, 95% intervals, the differences with a paired bootstrap interval and
    the exact two-sided McNemar p."""
    from lrl_harness.reporting.compare import (
        compare_files,
        comparison_csv,
        comparison_json,
        comparison_markdown,
        comparison_tables,
        explain_lines,
        pairing_lines,
    )
    from lrl_harness.reporting.tables import print_tables
    from lrl_harness.results.files import atomic_write_text, check_writable

    if out_file is not None:
        check_writable(out_file)
    registry = _registry(ctx)
    comparison = compare_files(list(blocks), lambda name: registry.get("task", name).factory(), list(labels),
                               task_name, resamples=resamples, seed=seed)
    if fmt == "json":
        click.echo(comparison_json(comparison))
    elif fmt == "csv":
        click.echo(comparison_csv(comparison), nl=False)
    elif fmt == "markdown":
        click.echo(comparison_markdown(comparison, explain=explain))
    else:
        print_tables(comparison_tables(comparison))
        for line in pairing_lines(comparison) + (explain_lines(comparison) if explain else []):
            click.echo(line)
    if out_file is not None:
        atomic_write_text(out_file, comparison_json(comparison) + "\n")
        click.echo(f"wrote {out_file}", err=True)


# --- cache ------------------------------------------------------------------------------------


@click.group("cache")
def cache_command() -> None:
    """The teacher response cache: list what it holds, or clear part or all of it."""


@cache_command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def cache_list_command(as_json: bool) -> None:
    """Teachers and models with cached answers: entries and size."""
    from lrl_harness.pipeline.cache import cache_contents, default_cache_root

    root = default_cache_root()
    rows = cache_contents(root)
    if as_json:
        click.echo(json.dumps({"root": str(root), "entries": rows}, indent=2))
        return
    if not rows:
        click.echo(f"the teacher cache is empty ({root})")
        return
    from lrl_harness.reporting.tables import TableData
    from rich.console import Console

    cells = [[row["teacher"], row["model"], str(row["entries"]), f"{row['bytes'] / 2**20:.2f}"] for row in rows]
    Console().print(TableData(f"Teacher response cache ({root})", ("teacher", "model", "entries", "MiB"), cells,
                              no_wrap=False).rich())


@cache_command.command("clear")
@click.option("--teacher", help="Clear this teacher's answers (a name from `lrl cache list`).")
@click.option("--model", help="With --teacher: clear only this model's answers.")
@click.option("--all", "clear_all", is_flag=True, help="Clear the whole teacher cache.")
def cache_clear_command(teacher: str | None, model: str | None, clear_all: bool) -> None:
    """Remove cached teacher answers; the next run asks the teacher again."""
    from lrl_harness.pipeline.cache import clear_cached, default_cache_root

    root = default_cache_root()
    if clear_all and (teacher or model):
        raise LrlError("--all clears everything; give either --all or --teacher [--model]")
    if model and not teacher:
        raise LrlError("--model needs --teacher (a model's answers are kept per teacher)")
    if not clear_all and not teacher:
        raise LrlError("say what to clear: --teacher NAME [--model NAME], or --all")
    entries = clear_cached(root, None if clear_all else teacher, model)
    click.echo(f"cleared {entries} cached answer{'s' if entries != 1 else ''} from {root}")
