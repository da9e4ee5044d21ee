"""Checks a command runs on what it is given before it does any work: output paths it will write,
results files it will read. Each failure is one line (an ``LrlError``), never a traceback."""

from __future__ import annotations

import functools
from pathlib import Path


def writes(*params: str, folder: bool = False):
    """Refuse an unwritable output path given in any of ``params`` before the command body runs."""
    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            from lrl_harness.results.files import check_writable

            for name in params:
                if kwargs.get(name) is not None:
                    check_writable(Path(kwargs[name]), folder=folder)
            return command(*args, **kwargs)
        return wrapper
    return decorate


def reads_results(*params: str):
    """Read and check (schema, types) each results file given in ``params`` before the command body
    runs, so a malformed file is refused in one line naming the field and the file."""
    def decorate(command):
        @functools.wraps(command)
        def wrapper(*args, **kwargs):
            from lrl_harness.results.io import validate_any

            for name in params:
                if kwargs.get(name) is not None:
                    validate_any(Path(kwargs[name]))
            return command(*args, **kwargs)
        return wrapper
    return decorate
