"""What a report shows of a results file, shared by its tables and its plots: stages in pipeline order,
the bench entries measured one at a time and under load, and table titles naming where a figure was measured.
"""

from __future__ import annotations

from lrl_harness.reporting.tables import print_tables as print_tables  # re-exported: bench imports it from here
from lrl_harness.results.format import STAGES
from lrl_harness.results.io import as_results
from lrl_harness.results.schema import BenchEntry, Identity, LevelBlock, Results, StageBlock


def ordered_stages(results: Results | dict) -> list[tuple[str, StageBlock]]:
    """The stages in pipeline order, then any others in the file's order."""
    stages = as_results(results).stages
    names = [s for s in STAGES if s in stages] + [s for s in stages if s not in STAGES]
    return [(name, stages[name]) for name in names]


def sequential_backends(results: Results) -> dict[str, BenchEntry]:
    return {k: v for k, v in results.backends.items() if v.levels is None}


def load_backends(results: Results) -> dict[str, BenchEntry]:
    return {k: v for k, v in results.backends.items() if v.levels is not None}


def measured_levels(entry: BenchEntry) -> list[tuple[str, LevelBlock]]:
    """The load levels of ``entry`` that were measured (not skipped), in order."""
    return [(key, block) for key, block in (entry.levels or {}).items() if block.load is not None]


def table_title(base: str, where: Identity | None, sep: str = " ") -> str:
    """``base`` and what was measured: ``Accuracy by stage (meeting-rooms, balanced preset, test split)``."""
    if where is None:
        return base
    parts = [where.task] if where.task else []
    parts += [f"{value} {key}" for key, value in (("preset", where.preset), ("split", where.split)) if value]
    return f"{base}{sep}({', '.join(parts)})" if parts else base
