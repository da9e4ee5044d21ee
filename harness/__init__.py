"""lrl-harness: teach a small local model a skill from a large one, and measure it honestly."""

import pluggy

__version__ = "0.1.0"

PROJECT = "lrl_harness"
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Decorator for plugin hook implementations: ``@hookimpl def register_backends(register): ...``"""
