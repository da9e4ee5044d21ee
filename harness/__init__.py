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

# the public names beyond the marker, and the module each lives in: imported on first use, so that
# ``lrl --help`` stays fast
_PUBLIC = {
    # the contract
    "Task": "contract", "Teacher": "contract", "Backend": "contract", "StudentModel": "contract",
    # what crosses it
    "Problem": "contract", "Completion": "contract", "GenerationSettings": "contract", "ModelSpec": "contract",
    "TeacherRequest": "contract", "PluginContext": "contract", "sha256_text": "contract",
    # plugin options and errors
    "Option": "options", "check_options": "options",
    "LrlError": "errors", "ConfigError": "errors", "BackendUnavailableError": "errors",
}
__all__ = ["hookimpl", "__version__", *_PUBLIC]


def __getattr__(name):
    if name in _PUBLIC:
        from importlib import import_module

        return getattr(import_module(f"{__name__}.{_PUBLIC[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
