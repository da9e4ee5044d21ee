"""``lrl cache list`` and ``lrl cache clear``: what the teacher response cache holds, and removing it
by teacher, by model, or all of it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import click

from .cache import _slug, default_cache_root
from .errors import LrlError


def cache_contents(root: Path) -> list[dict]:
    """One row per teacher and model folder: entries and bytes."""
    rows = []
    if not root.is_dir():
        return rows
    for teacher in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        for model in sorted(p for p in teacher.iterdir() if p.is_dir()):
            files = [f for f in model.rglob("*.json") if f.is_file()]
            rows.append({"teacher": teacher.name, "model": model.name, "entries": len(files),
                         "bytes": sum(f.stat().st_size for f in files), "path": str(model)})
    return rows


@click.group("cache")
def cache_command() -> None:
    """The teacher response cache: list what it holds, or clear part or all of it."""


@cache_command.command("list")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def list_command(as_json: bool) -> None:
    """Teachers and models with cached answers: entries and size."""
    root = default_cache_root()
    rows = cache_contents(root)
    if as_json:
        click.echo(json.dumps({"root": str(root), "entries": rows}, indent=2))
        return
    if not rows:
        click.echo(f"the teacher cache is empty ({root})")
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Teacher response cache ({root})")
    for column in ("teacher", "model", "entries", "MiB"):
        table.add_column(column, justify="right" if column in ("entries", "MiB") else "left")
    for row in rows:
        table.add_row(row["teacher"], row["model"], str(row["entries"]), f"{row['bytes'] / 2**20:.2f}")
    Console().print(table)


@cache_command.command("clear")
@click.option("--teacher", help="Clear this teacher's answers (a name from `lrl cache list`).")
@click.option("--model", help="With --teacher: clear only this model's answers.")
@click.option("--all", "clear_all", is_flag=True, help="Clear the whole teacher cache.")
def clear_command(teacher: str | None, model: str | None, clear_all: bool) -> None:
    """Remove cached teacher answers; the next run asks the teacher again."""
    root = default_cache_root()
    if clear_all and (teacher or model):
        raise LrlError("--all clears everything; give either --all or --teacher [--model]")
    if model and not teacher:
        raise LrlError("--model needs --teacher (a model's answers are kept per teacher)")
    if not clear_all and not teacher:
        raise LrlError("say what to clear: --teacher NAME [--model NAME], or --all")
    if clear_all:
        targets = [p for p in root.iterdir() if p.is_dir()] if root.is_dir() else []
    else:
        target = root / _slug(teacher)
        if model:
            target = target / _slug(model)
        if not target.is_dir():
            raise LrlError(f"nothing cached for teacher {teacher!r}{f' model {model!r}' if model else ''}; "
                           "`lrl cache list` shows what is")
        targets = [target]
    entries = sum(1 for t in targets for f in t.rglob("*.json") if f.is_file())
    for target in targets:
        shutil.rmtree(target)
    click.echo(f"cleared {entries} cached answer{'s' if entries != 1 else ''} from {root}")
