"""Progress display for long work (rich), quiet when asked or when nobody is watching."""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import contextmanager
from typing import Any

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
        if not self.console.is_terminal:  # a file or a CI log: a plain line every so often, no live bar
            with self._lines(description, total) as advance:
                yield advance
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

    LINE_EVERY_S = 30.0

    @contextmanager
    def _lines(self, description: str, total: int | None):
        """Progress as plain lines: at the start, every ``LINE_EVERY_S`` seconds, and at the end."""
        started = time.monotonic()
        state = {"done": 0, "note": "", "last": started}

        def line(word: str = "") -> None:
            elapsed = time.monotonic() - started
            count = f"{state['done']}/{total}" if total else str(state["done"])
            note = f"  {state['note']}" if state["note"] else ""
            self.console.print(f"{description}: {count}{word} [{elapsed:.0f} s]{note}", highlight=False,
                               markup=False)
            state["last"] = time.monotonic()

        def advance(n: int = 1, note: str | None = None, completed: int | None = None):
            state["done"] = completed if completed is not None else state["done"] + n
            if note is not None:
                state["note"] = note
            if time.monotonic() - state["last"] >= self.LINE_EVERY_S:
                line()

        line(" started")
        yield advance
        line(" done")


@contextmanager
def silent(description: str, total: int | None):
    """A progress display that shows nothing (same shape as ``UI.task``)."""
    yield lambda n=1, **_: None


ProgressFn = Callable[[str, int], Any]
"""``progress(description, total)``: a context manager yielding ``advance(n=1, note=None)``
(``UI.task`` is one, ``silent`` another)."""
