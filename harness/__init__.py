"""lrl-harness: teach a small local model a skill from a large one, and measure it honestly.

The public API for plugins is what this package exports (``__all__``): the ``hookimpl`` marker, the
contract a plugin implements (``Task``, ``Teacher``, ``Backend``; a student factory returns a
``StudentModel``), the values that cross it, option declarations and the errors to raise. Names
imported from the submodules directly may change between versions.
"""

import pluggy

__version__ = "0.1.0"

PROJECT = "lrl_harness"
hookimpl = pluggy.HookimplMarker(PROJECT)
"""Decorator for plugin hook implementations: ``@hookimpl def register_backends(register): ...``"""

__all__ = [
    "hookimpl", "__version__",
    # the contract
    "Task", "Teacher", "Backend", "StudentModel",
    # what crosses it
    "Problem", "Completion", "GenerationSettings", "ModelSpec", "TeacherRequest",
    # plugin options and errors
    "Option", "check_options", "LrlError", "ConfigError", "BackendUnavailableError",
]


def __getattr__(name):  # the contract is imported on first use, so ``lrl --help`` stays fast
    if name in ("Task", "Teacher", "Backend", "StudentModel", "Problem", "Completion", "GenerationSettings",
                "ModelSpec", "TeacherRequest"):
        from . import types

        return getattr(types, name)
    if name in ("Option", "check_options"):
        from . import options

        return getattr(options, name)
    if name in ("LrlError", "ConfigError", "BackendUnavailableError"):
        from . import errors

        return getattr(errors, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
