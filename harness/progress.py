"""Progress display for long work (rich), quiet when asked or when nobody is watching."""

from __future__ import annotations

from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn


class UI:
    def __init__(self, quiet: bool = False, console: Console | None = None):
        self.quiet = quiet
        if console is None:
            console = Console(stderr=True)
            if not console.is_terminal:  # logs and CI: print tables in full rather than at 80 columns
                console = Console(stderr=True, width=160)
        self.console = console

    def say(self, message: str) -> None:
        if not self.quiet:
            self.console.print(message, highlight=False)

    @contextmanager
    def task(self, description: str, total: int | None):
        """Yield ``advance(n=1, **fields)``; shows a bar with count and elapsed time."""
        if self.quiet:
            yield lambda n=1, **_: None
            return
        columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   TextColumn("{task.fields[note]}")]
        with Progress(*columns, console=self.console, transient=False) as progress:
            task_id = progress.add_task(description, total=total, note="")

            def advance(n: int = 1, note: str | None = None, completed: int | None = None):
                kwargs = {"note": note} if note is not None else {}
                if completed is not None:
                    progress.update(task_id, completed=completed, **kwargs)
                else:
                    progress.update(task_id, advance=n, **kwargs)

            yield advance
