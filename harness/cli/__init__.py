"""The ``lrl`` command: ``app.py`` builds the group and the core commands in ``commands.py`` register on it."""

from lrl_harness.cli.app import main

__all__ = ["main"]
