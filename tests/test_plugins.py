"""The plugin core: entry-point discovery, registration, unknown and duplicate names, broken plugins."""

import json
import types

import pytest
from lrl_harness import hookimpl
from lrl_harness.api.errors import LrlError, UnknownPluginError
from lrl_harness.api.registry import Registry, make_plugin_manager
from lrl_harness.cli.app import main


def make_plugin(**hooks):
    module = types.ModuleType("third_party_plugin")
    for name, fn in hooks.items():
        setattr(module, name, hookimpl(fn))
    return module


def test_builtins_come_through_the_entry_point_group():
    registry = Registry(make_plugin_manager())
    assert "meeting-rooms" in registry.names("task")
    assert "solver" in registry.names("teacher")
    reg = registry.get("teacher", "solver")
    assert reg.distribution == "lrl-harness" and reg.module == "lrl_harness_plugins.solver_teacher"


def test_a_third_party_backend_is_one_small_module():
    class EchoBackend:
        name = "echo"

        def __init__(self, model, options):
            self.model = model

        def generate(self, prompts, settings, progress=None):
            return []

        def info(self):
            return {}

        def close(self):
            pass

    plugin = make_plugin(register_backends=lambda register: register("echo", EchoBackend, description="x"))
    registry = Registry(make_plugin_manager(plugins=[plugin]))
    assert registry.get("backend", "echo").factory is EchoBackend


def test_engines_are_chosen_by_what_they_load_not_by_name():
    registry = Registry(make_plugin_manager())
    assert registry.engine_for("hf").name == "transformers"  # this project's own, first by name
    assert registry.engine_for("gguf").name == "llamacpp"
    # a third-party GGUF engine joins: chosen when named, the project's own stays the default
    plugin = make_plugin(register_backends=lambda register: register(
        "ggml-other", lambda model, options: None, description="x", runs=("gguf",)))
    registry = Registry(make_plugin_manager(plugins=[plugin]))
    assert registry.engine_for("gguf", "ggml-other").name == "ggml-other"
    assert registry.engine_for("gguf").name == "llamacpp"
    with pytest.raises(UnknownPluginError, match="backend 'openai' does not load gguf models"):
        registry.engine_for("gguf", "openai")
    with pytest.raises(UnknownPluginError, match="no backend loads onnx models"):
        registry.engine_for("onnx")
    # alone, it is the one
    alone = Registry(make_plugin_manager(plugins=[plugin], blocked={"llamacpp-backend"}))
    assert alone.engine_for("gguf").name == "ggml-other"


def test_unknown_plugin_lists_the_available_ones():
    registry = Registry(make_plugin_manager())
    with pytest.raises(UnknownPluginError, match=r"unknown teacher 'gpt-9'; available: .*solver"):
        registry.get("teacher", "gpt-9")


def test_duplicate_names_name_both_plugins():
    a = make_plugin(register_teachers=lambda register: register("solver", object))
    with pytest.raises(LrlError, match="registered twice"):
        Registry(make_plugin_manager(plugins=[a]))


def test_a_broken_plugin_is_reported_and_the_others_work():
    def broken(register):
        raise RuntimeError("boom")

    registry = Registry(make_plugin_manager(plugins=[make_plugin(register_backends=broken)]))
    assert any("boom" in f.error for f in registry.failures)
    assert "solver" in registry.names("teacher")


def test_a_misspelt_hook_is_an_error():
    bad = types.ModuleType("bad")
    bad.register_backend = hookimpl(lambda register: None)  # missing "s"
    with pytest.raises(LrlError, match="unknown hook"):
        make_plugin_manager(plugins=[bad])


def test_blocking_a_plugin(monkeypatch):
    monkeypatch.setenv("LRL_HARNESS_DISABLE_PLUGINS", "solver-teacher")
    assert "solver" not in Registry(make_plugin_manager()).names("teacher")


def test_plugins_command_json(capsys):
    assert main(["plugins", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    kinds = {(p["kind"], p["name"]) for p in data["plugins"]}
    assert ("task", "meeting-rooms") in kinds and ("teacher", "solver") in kinds
    assert all({"module", "distribution"} <= set(p) for p in data["plugins"])


def test_the_public_api_resolves_and_the_task_meets_its_contract():
    import inspect

    import lrl_harness
    from lrl_harness import Backend, Task
    from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask

    for name in lrl_harness.__all__:
        assert getattr(lrl_harness, name) is not None
    task = MeetingRoomsTask()
    assert isinstance(task, Task)
    members = [n for n, _ in inspect.getmembers(Task) if not n.startswith("_")]
    members += list(Task.__annotations__)
    missing = [n for n in members if not hasattr(task, n)]
    assert not missing, f"the meeting-rooms task lacks {missing}"
    assert "progress" in inspect.signature(Backend.generate).parameters


def test_observer_hooks_receive_typed_objects(tmp_path):
    """problem_scored, stage_finished and run_finished get the declared types, still readable as mappings."""
    from lrl_harness.pipeline.config import RunConfig
    from lrl_harness.pipeline.runner import Pipeline
    from lrl_harness.results.records import Record, StageBlock
    from lrl_harness.results.schema import Results
    from lrl_harness.util.progress import UI

    seen = {"records": []}
    observer = make_plugin(problem_scored=lambda stage, record: seen["records"].append(record),
                           stage_finished=lambda stage, result: seen.setdefault("block", result),
                           run_finished=lambda results: seen.setdefault("results", results))
    pm = make_plugin_manager(plugins=[observer])
    config = RunConfig(stages=["teacher_baseline"], test_n=6).validate()
    Pipeline(config, Registry(pm), tmp_path / "run", ui=UI(quiet=True), pm=pm).run()
    assert len(seen["records"]) == 6 and all(isinstance(r, Record) for r in seen["records"])
    assert seen["records"][0]["correct"] == seen["records"][0].correct  # also a mapping, as the JSON is
    assert isinstance(seen["block"], StageBlock) and seen["block"]["total"] == 6
    assert isinstance(seen["results"], Results) and "teacher_baseline" in seen["results"].stages
