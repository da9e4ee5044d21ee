"""The plugin manager and the registry of named teachers, students, backends and tasks.

One entry-point group, ``lrl_harness``, finds every plugin; the built-ins are registered through it
exactly as a third-party package would be. A plugin that fails to import is recorded and reported,
and the others keep working.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any

import pluggy
from lrl_harness import PROJECT
from lrl_harness.api import hookspecs
from lrl_harness.api.contract import Backend, ModelSpec
from lrl_harness.api.errors import LrlError, UnknownPluginError

KINDS = ("task", "teacher", "student", "backend")
_HOOK_FOR_KIND = {
    "task": "register_tasks",
    "teacher": "register_teachers",
    "student": "register_students",
    "backend": "register_backends",
}
DISABLE_ENV = "LRL_HARNESS_DISABLE_PLUGINS"
"""Comma-separated entry-point names not to load (like pytest's ``-p no:NAME``)."""


@dataclass
class PluginFailure:
    name: str
    module: str
    error: str


@dataclass
class Registration:
    kind: str
    name: str
    factory: Callable[..., Any]
    plugin: str
    module: str
    distribution: str | None
    options: dict = field(default_factory=dict)
    description: str = ""
    runs: tuple[str, ...] = ()
    """For a backend: the kinds of model it loads (``"hf"``: a Hugging Face folder, ``"gguf"``: a GGUF
    file, ``"server"``: a model behind an endpoint). The core picks engines by these, never by name."""
    threads: str | None = None
    """For a backend that computes on this machine's CPU: the option that sets its thread count, or
    ``"torch"`` when it uses the process's torch threads. None (GPU and server backends): ``lrl bench
    --threads`` leaves it alone."""
    batches: str | None = None
    """For a backend that decodes several prompts together: the option that sets how many (e.g.
    ``"batch_size"``). Parity sets it; None: one prompt at a time."""
    concurrent: bool = False
    """For a backend that answers several requests at once: it has ``agenerate(prompt, settings)`` (a
    coroutine) and ``run(coroutine)`` (its event loop), and ``lrl bench --concurrency`` drives it so."""

    @property
    def option_spec(self) -> dict | None:
        """The options the plugin declared (``register(..., options={name: Option})``), or None."""
        spec = self.options.get("options")
        return spec if isinstance(spec, dict) else None


class Registry:
    """Name -> factory, per kind, collected once per plugin manager."""

    def __init__(self, pm: pluggy.PluginManager):
        self.pm = pm
        self.failures: list[PluginFailure] = list(getattr(pm, "lrl_failures", []))
        self._items: dict[str, dict[str, Registration]] = {k: {} for k in KINDS}
        dists = getattr(pm, "lrl_distributions", {})
        for kind, hook_name in _HOOK_FOR_KIND.items():
            hook = getattr(pm.hook, hook_name)
            for impl in hook.get_hookimpls():
                plugin_name = pm.get_name(impl.plugin) or repr(impl.plugin)
                module = getattr(impl.plugin, "__name__", type(impl.plugin).__module__)

                def register(name, factory, *, description="", runs=(), threads=None, batches=None,
                             concurrent=False, _kind=kind, _plugin=plugin_name, _module=module, **options):
                    self._add(Registration(_kind, name, factory, _plugin, _module, dists.get(_plugin), options,
                                           description, tuple(runs), threads, batches, bool(concurrent)))

                try:
                    impl.function(register=register)
                except LrlError:
                    raise
                except Exception as exc:  # a broken plugin must not break the others
                    self.failures.append(PluginFailure(plugin_name, module, f"{type(exc).__name__}: {exc}"))

    def _add(self, reg: Registration) -> None:
        existing = self._items[reg.kind].get(reg.name)
        if existing is not None:
            raise LrlError(
                f"{reg.kind} {reg.name!r} is registered twice: by plugin {existing.plugin!r} "
                f"({existing.module}) and by plugin {reg.plugin!r} ({reg.module})"
            )
        self._items[reg.kind][reg.name] = reg

    def names(self, kind: str) -> list[str]:
        return sorted(self._items[kind])

    def all(self) -> Iterable[Registration]:
        for kind in KINDS:
            yield from (self._items[kind][n] for n in sorted(self._items[kind]))

    def get(self, kind: str, name: str) -> Registration:
        try:
            return self._items[kind][name]
        except KeyError:
            available = ", ".join(self.names(kind)) or "none"
            hint = ""
            broken = [f.name for f in self.failures]
            if broken:
                hint = f" (plugins that failed to load: {', '.join(broken)}; see `lrl plugins`)"
            raise UnknownPluginError(f"unknown {kind} {name!r}; available: {available}{hint}") from None

    @contextmanager
    def open_backend(self, name: str, model: ModelSpec, options: dict | None = None) -> Iterator[Backend]:
        """The backend ``name`` loaded with ``model``, closed when the block ends (also on error).

        The one way the core opens a backend: the name is looked up (an unknown one lists those that
        exist), the factory checks the options it declared before loading anything, and ``close``
        always runs, so a failed stage never leaves a server or a model behind.
        """
        backend = self.get("backend", name).factory(model=model, options=dict(options or {}))
        try:
            yield backend
        finally:
            backend.close()

    def engine_for(self, runs: str, name: str | None = None) -> Registration:
        """The backend that loads models of kind ``runs`` (``"hf"``, ``"gguf"``): ``name`` when given
        (it must declare that kind), else this project's own, else the first other by name."""
        if name is not None:
            reg = self.get("backend", name)
            if runs not in reg.runs:
                raise UnknownPluginError(f"backend {name!r} does not load {runs} models (it loads: "
                                         f"{', '.join(reg.runs) or 'nothing it declares'})")
            return reg
        able = [self._items["backend"][n] for n in self.names("backend") if runs in self._items["backend"][n].runs]
        if not able:
            raise UnknownPluginError(f"no backend loads {runs} models; install one (see `lrl plugins`)")
        return min(able, key=lambda r: (r.distribution != "lrl-harness", r.name))


def make_plugin_manager(
    *, load_entry_points: bool = True, plugins: Iterable[Any] = (), blocked: Iterable[str] = ()
) -> pluggy.PluginManager:
    """A fresh manager: hook specs, entry-point plugins (minus blocked ones), then ``plugins``."""
    pm = pluggy.PluginManager(PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.lrl_failures = []
    pm.lrl_distributions = {}
    from_env = {b.strip() for b in os.environ.get(DISABLE_ENV, "").split(",") if b.strip()}
    blocked = set(blocked) | from_env
    if load_entry_points:
        found = sorted(entry_points(group=PROJECT), key=lambda e: e.name)
        unknown = sorted(from_env - {ep.name for ep in found})
        if unknown:
            raise LrlError(f"{DISABLE_ENV}: no plugin is named {unknown[0]!r}; the names it takes (the 'plugin' "
                           f"column of `lrl plugins`): {', '.join(ep.name for ep in found)}")
        for ep in found:
            if ep.name in blocked or pm.get_plugin(ep.name) is not None:
                continue
            try:
                plugin = ep.load()
            except Exception as exc:
                pm.lrl_failures.append(PluginFailure(ep.name, ep.value, f"{type(exc).__name__}: {exc}"))
                continue
            pm.register(plugin, name=ep.name)
            pm.lrl_distributions[ep.name] = ep.dist.name if ep.dist else None
    for plugin in plugins:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise LrlError(f"plugin {exc.plugin!r} implements an unknown hook: {exc}") from None
    return pm
