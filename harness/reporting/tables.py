"""Tables: one table's cells rendered in the terminal (rich), in Markdown and in HTML, and printed
without cutting figures short. Every table the commands print goes through ``TableData``."""

from __future__ import annotations

import html
from dataclasses import dataclass


@dataclass
class TableData:
    """One table, rendered three ways (terminal, Markdown, HTML) from the same cells.

    Text columns are left-aligned, the rest are figures, right-aligned: ``text_columns`` is how many of
    the first columns hold text, or the names of the columns that do. ``no_wrap``: in the terminal, the
    text columns stay on one line (the figures give way instead)."""

    title: str
    columns: tuple[str, ...]
    rows: list[list[str]]
    text_columns: int | tuple[str, ...] = 2
    no_wrap: bool = True

    def is_text(self, index: int) -> bool:
        if isinstance(self.text_columns, int):
            return index < self.text_columns
        return self.columns[index] in self.text_columns

    def rich(self):
        from rich.table import Table

        table = Table(title=self.title)
        for i, col in enumerate(self.columns):
            text = self.is_text(i)
            table.add_column(col, justify="left" if text else "right", no_wrap=text and self.no_wrap)
        for row in self.rows:
            table.add_row(*row)
        return table

    def markdown(self) -> str:
        rule = ("---" if self.is_text(i) else "---:" for i in range(len(self.columns)))
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |", "|" + "|".join(rule) + "|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in self.rows]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        def cls(i: int) -> str:
            return ' class="t"' if self.is_text(i) else ""

        head = "".join(f"<th{cls(i)}>{html.escape(c)}</th>" for i, c in enumerate(self.columns))
        body = "".join("<tr>" + "".join(f"<td{cls(i)}>{html.escape(cell)}</td>" for i, cell in enumerate(row))
                       + "</tr>\n" for row in self.rows)
        return (f"<h3>{html.escape(self.title)}</h3>\n<table>\n<thead><tr>{head}</tr></thead>\n"
                f"<tbody>\n{body}</tbody>\n</table>\n")


def tables_csv(tables: list[TableData]) -> str:
    """The tables as CSV: one section per table (a ``# title`` line, the header, the rows), a blank
    line between sections."""
    import csv
    import io

    out = io.StringIO()
    for i, table in enumerate(tables):
        if i:
            out.write("\n")
        out.write(f"# {table.title}\n")
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(table.columns)
        writer.writerows(table.rows)
    return out.getvalue()


def tables_json(tables: list[TableData]) -> str:
    """The tables as JSON: ``[{"title", "columns", "rows": [{column: cell}]}]``."""
    import json

    return json.dumps([{"title": t.title, "columns": list(t.columns),
                        "rows": [dict(zip(t.columns, row, strict=True)) for row in t.rows]} for t in tables], indent=2)


def tables_markdown(tables: list[TableData]) -> str:
    return "\n".join(t.markdown() for t in tables)


def print_tables(tables, console=None) -> None:
    """Print rich tables (or TableData) without cutting figures short: where the output is not a
    terminal (a CI log, a pipe), a table wider than the console gets the width it needs."""
    from rich.console import Console
    from rich.measure import Measurement

    console = console or Console()
    for table in tables:
        table = table.rich() if isinstance(table, TableData) else table
        needed = Measurement.get(console, console.options.update_width(10_000), table).maximum
        if console.is_terminal or needed <= console.width:
            console.print(table)
            continue
        width = console.width
        console.width = needed
        try:
            console.print(table)
        finally:
            console.width = width
