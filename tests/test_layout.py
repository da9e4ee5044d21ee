"""The architecture holds: no import cycles between modules, plugins and tasks on the public API only,
one way to open a backend, capabilities read from the registration."""

import types

import grimp
import lrl_harness
import pytest
from lrl_harness import ConfigError, ModelSpec, Registry, UnknownPluginError, hookimpl, make_plugin_manager


def test_no_module_imports_itself_back():
    graph = grimp.build_graph("lrl_harness", "lrl_harness_plugins", "lrl_harness_tasks")
    cycles = {tuple(sorted((a, b))) for a in graph.modules for b in graph.find_modules_directly_imported_by(a)
              if graph.find_shortest_chain(importer=b, imported=a)}
    assert not cycles


def test_plugins_and_tasks_import_only_the_top_level_package():
    graph = grimp.build_graph("lrl_harness", "lrl_harness_plugins", "lrl_harness_tasks")
    private = [(m, i) for m in graph.modules if m.startswith(("lrl_harness_plugins", "lrl_harness_tasks"))
               for i in graph.find_modules_directly_imported_by(m) if i.startswith("lrl_harness.")]
    assert not private


def test_every_public_name_resolves():
    for name in lrl_harness.__all__:
        assert getattr(lrl_harness, name) is not None, name


class Recorder:
    """A backend that records what happened to it."""

    events: list = []

    def __init__(self, model, options):
        if options.get("fail_on_load"):
            raise ConfigError("backend recorder: cannot load")
        self.events.append(("open", model.path))

    def generate(self, prompts, settings, progress=None):
        return []

    def info(self):
        return {}

    def close(self):
        self.events.append(("close",))


def _registry(**capabilities):
    module = types.ModuleType("recorder_plugin")
    module.register_backends = hookimpl(lambda register: register("recorder", Recorder, **capabilities))
    return Registry(make_plugin_manager(plugins=[module]))


def test_open_backend_closes_also_when_the_work_fails():
    Recorder.events = []
    registry = _registry()
    with pytest.raises(RuntimeError), registry.open_backend("recorder", ModelSpec(path="m")):
        raise RuntimeError("the work failed")
    assert Recorder.events == [("open", "m"), ("close",)]


def test_open_backend_refuses_unknown_names_and_bad_options_before_anything_opens():
    Recorder.events = []
    registry = _registry()
    with pytest.raises(UnknownPluginError, match="available: .*recorder"):
        with registry.open_backend("no-such", ModelSpec(path="m")):
            pass
    with pytest.raises(ConfigError, match="cannot load"):
        with registry.open_backend("recorder", ModelSpec(path="m"), {"fail_on_load": True}):
            pass
    assert Recorder.events == []


def test_capabilities_are_declared_at_registration():
    reg = _registry(runs=("hf",), threads="torch", batches="batch_size", concurrent=True).get("backend", "recorder")
    assert (reg.runs, reg.threads, reg.batches, reg.concurrent) == (("hf",), "torch", "batch_size", True)
    plain = _registry().get("backend", "recorder")
    assert (plain.batches, plain.concurrent) == (None, False)
    builtins = Registry(make_plugin_manager())
    assert builtins.get("backend", "openai").concurrent and not builtins.get("backend", "llamacpp").concurrent
    assert builtins.get("backend", "llamacpp").batches == "batch_size"
