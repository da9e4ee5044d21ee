"""Commands that live in their own modules, added to ``lrl`` through the public ``register_commands``
hook, the same way a third-party plugin adds one."""

from __future__ import annotations

import importlib

from . import hookimpl

COMMANDS = (
    ("lrl_harness.export", "export_command"),
    ("lrl_harness.parity", "parity_command"),
    ("lrl_harness.bench", "bench_command"),
    ("lrl_harness.check", "check_command"),
    ("lrl_harness.report", "report_command"),
    ("lrl_harness.cache_cli", "cache_command"),
)


@hookimpl
def register_commands(cli):
    for module_name, attr in COMMANDS:
        module = importlib.import_module(module_name)
        cli.add_command(getattr(module, attr))
