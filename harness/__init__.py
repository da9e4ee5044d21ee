"""lrl-harness: teach a small local model a skill from a large one, and measure it honestly.

The public API is what this package exports (``__all__``); it is all a plugin needs, and the
built-in plugins (``lrl_harness_plugins``, ``lrl_harness_tasks``) use nothing else: a contract in
tox (import-linter) keeps it so. Sub-packages are the implementation, and their names may change:

    api/         the plugin contract: hook specs, values that cross it, options, errors, registry
    util/        where things are kept on disk, progress display
    results/     the results file: declared schema, records, atomic reads and writes
    evaluation/  asking a model, grading, accuracy statistics, rescoring, parity between engines
    pipeline/    ``lrl run``: configuration, run folder, stages, cache, recipes, training, export
    bench/       ``lrl bench``: targets, one-at-a-time and load measurement, performance statistics
    reporting/   ``lrl check``/``report``: regression gate, tables, plots
    cli/         the ``lrl`` command

Names are imported on first use, so that ``lrl --help`` stays fast.
"""

import pluggy

__version__ = "0.1.0"

PROJECT = "lrl_harness"
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Decorator for plugin hook implementations: ``@hookimpl def register_backends(register): ...``"""

# public name -> the module (under lrl_harness) that defines it
_PUBLIC = {
    # the contract a plugin implements, and the values that cross it
    **dict.fromkeys(("Task", "Teacher", "Backend", "StudentModel", "Problem", "Completion", "GenerationSettings",
                     "ModelSpec", "TeacherRequest", "PluginContext", "sha256_text"), "api.contract"),
    # plugin options, declared once and checked by one helper
    **dict.fromkeys(("Option", "check_options", "parse_flag"), "api.options"),
    # errors: each becomes one line on stderr and exit 2 (LrlError) in the CLI
    **dict.fromkeys(("LrlError", "ConfigError", "BackendUnavailableError", "InvalidProblemError", "TeacherError",
                     "ServerError", "GGUFError", "UnknownPluginError"), "api.errors"),
    # finding plugins (also what a plugin's own tests use)
    **dict.fromkeys(("Registry", "make_plugin_manager"), "api.registry"),
    # helpers the built-in backends, students and teachers share
    **dict.fromkeys(("render_prompt", "encode_prompt", "ChatTemplate"), "api.prompting"),
    **dict.fromkeys(("read_gguf_header", "sha256_file"), "api.gguf"),
    "import_torch": "api.deps",
    "cache_dir": "util.paths",
    **dict.fromkeys(("RECIPES", "DEFAULT_SETTINGS", "apply_recipe"), "pipeline.recipes"),
    **dict.fromkeys(("gguf_for", "validate_gguf"), "pipeline.export"),
    "load_prices": "pipeline.cost",
}
__all__ = ["hookimpl", "__version__", "PROJECT", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(__all__)
