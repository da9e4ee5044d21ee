"""Every hook lrl-harness calls. Plugins implement any subset with ``@lrl_harness.hookimpl``.

Registration hooks receive a ``register`` callback rather than returning objects, so new keyword
arguments can be added to ``register`` later without breaking existing plugins.
Observer hooks are called with keyword arguments; implement only the arguments you need.
"""

from __future__ import annotations

import pluggy
from lrl_harness import PROJECT

hookspec = pluggy.HookspecMarker(PROJECT)


# --- registration -------------------------------------------------------------------------------


@hookspec
def register_tasks(register):
    """Register task factories: ``register("meeting-rooms", factory)``; ``factory()`` returns a Task."""


@hookspec
def register_teachers(register):
    """Register teacher factories: ``register(name, factory)``; ``factory(task=..., options=...)``
    returns a Teacher. A factory that also takes ``context`` gets a ``PluginContext`` (the plugin
    registry, the cache folder, whether only cached answers may be used)."""


@hookspec
def register_students(register):
    """Register student factories: ``register(name, factory)``; ``factory(task=..., options=...,
    cache_dir=...)`` returns a StudentModel (a Hugging Face model directory or hub id, plus training
    defaults); one that also takes ``context`` gets a ``PluginContext``."""


@hookspec
def register_backends(register):
    """Register inference backends: ``register(name, factory, **capabilities)``; ``factory(model=ModelSpec,
    options=...)`` returns a Backend. Import heavy dependencies inside the factory, not at module level.

    A backend's capabilities are declared here, once, and the core reads them from the registration:
    ``runs`` (the kinds of model it loads: ``"hf"``, ``"gguf"``, ``"server"``), ``threads`` (the option
    that sets its CPU threads, or ``"torch"``), ``batches`` (the option that sets how many prompts it
    decodes together), ``concurrent=True`` (it has ``agenerate`` and ``run``: several requests at once),
    ``options`` (``{name: Option}``, checked before anything loads) and ``description``."""


@hookspec
def register_commands(cli):
    """Add click commands to the ``lrl`` group."""


# --- run lifecycle (observers) ------------------------------------------------------------------


@hookspec
def run_started(config, out_dir):
    """A pipeline run begins (``config`` is the resolved RunConfig)."""


@hookspec
def stage_finished(stage, result):
    """A stage finished; ``result`` is its score block (a typed ``StageBlock``, as written to results.json;
    ``result["accuracy"]`` reads it as a mapping too)."""


@hookspec
def problem_scored(stage, record):
    """One problem was answered and scored; ``record`` is its typed ``Record`` (``record.correct``, or
    ``record["correct"]`` as a mapping)."""


@hookspec
def run_finished(results, out_dir):
    """A pipeline run finished; ``results`` is the whole results file, typed (``Results``)."""
