"""The ``model`` teacher with the real transformers backend and the real tiny student.

The tiny student is untrained, so its prose is nonsense; what is checked is the bookkeeping:
tokens, rendering, greedy determinism, identity and caching.
"""

from __future__ import annotations

import pytest
from lrl_harness import PluginContext, TeacherRequest
from lrl_harness.api.errors import ConfigError, UnknownPluginError
from lrl_harness.api.registry import Registry, make_plugin_manager
from lrl_harness.pipeline.cache import CachedTeacher
from lrl_harness.pipeline.cost import summarise_usage
from lrl_harness_plugins.tiny_student import build_tiny_student
from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask

TASK = MeetingRoomsTask()
MAX_TOKENS = 12


@pytest.fixture(scope="module")
def registry():
    return Registry(make_plugin_manager())


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return str(build_tiny_student(tmp_path_factory.mktemp("models"), TASK, seed=0))


@pytest.fixture(scope="module")
def teacher(registry, tiny):
    t = make(registry, model=tiny)
    yield t
    t.close()


def make(registry, **options):
    factory = registry.get("teacher", "model").factory
    return factory(task=TASK, options={"backend": "transformers", "max_tokens": MAX_TOKENS, **options},
                   context=PluginContext(registry=registry))


def solve_requests(n: int = 3) -> list[TeacherRequest]:
    return [TeacherRequest("solve", TASK.student_prompt(p), problem=p)
            for p in TASK.problems("balanced", "test", n=n)]


def test_answers_with_exact_bookkeeping(teacher):
    batch = solve_requests(3)
    completions = teacher.complete(batch)
    assert len(completions) == 3 and teacher.is_language_model
    assert teacher.chat_template is False  # the tiny student has no chat template
    for request, c in zip(batch, completions, strict=True):
        assert isinstance(c.text, str) and not c.cached
        assert c.prompt_tokens == len(teacher.backend.tokenize(request.prompt))
        assert 1 <= c.completion_tokens <= MAX_TOKENS
        assert (c.meta["input_tokens"], c.meta["output_tokens"]) == (c.prompt_tokens, c.completion_tokens)
        assert c.meta["backend"] == "transformers" and c.meta["retries"] == 0
        assert "api" not in c.meta and c.latency_s > 0
    summary = summarise_usage(completions)
    assert summary["cost_usd"] == 0.0 and summary["requests"] == 3
    assert summary["output_tokens"] == sum(c.completion_tokens for c in completions)


def test_greedy_answers_repeat(teacher):
    batch = solve_requests(2)
    assert [c.text for c in teacher.complete(batch)] == [c.text for c in teacher.complete(batch)]


def test_cached_model_answers_skip_the_backend(teacher, tmp_path, monkeypatch):
    batch = solve_requests(2)
    first = CachedTeacher(teacher, tmp_path).complete(batch)
    calls = []
    monkeypatch.setattr(teacher.backend, "generate", lambda *a, **k: calls.append(a) or [])
    again = CachedTeacher(teacher, tmp_path)
    assert [c.text for c in again.complete(batch)] == [c.text for c in first]
    assert calls == [] and again.hits == 2


def test_identity_covers_model_files_and_settings(teacher, registry, tiny):
    identity = teacher.cache_identity()
    assert identity["teacher"] == "model" and identity["model"] == tiny
    assert identity["backend"] == "transformers" and identity["files"]["model"]
    assert (identity["max_tokens"], identity["temperature"]) == (MAX_TOKENS, 0.0)
    info = teacher.info()
    assert info["backend"]["backend"] == "transformers" and info["is_language_model"] is True
    other = make(registry, model=tiny, max_tokens=MAX_TOKENS + 1, batch_size=4)
    try:
        changed = other.cache_identity()
        assert changed["max_tokens"] == MAX_TOKENS + 1 and changed["backend_options"] == {"batch_size": 4}
        assert changed != identity
    finally:
        other.close()


@pytest.mark.parametrize("options, error, words", [
    ({}, ConfigError, "teacher model needs a model"),
    ({"model": "x", "max_tokens": 0}, ConfigError, "max_tokens must be a positive integer"),
    ({"model": "x", "chat_template": "maybe"}, ConfigError, "chat_template must be auto, true or false"),
    ({"model": "x", "backend": "no-such-engine"}, UnknownPluginError, "unknown backend 'no-such-engine'"),
])
def test_bad_options_fail_before_loading(registry, options, error, words):
    with pytest.raises(error) as err:
        make(registry, **options)
    assert words in str(err.value) and "\n" not in str(err.value)


def test_registry_is_required():
    from lrl_harness_plugins.model_teacher import make_teacher

    with pytest.raises(ConfigError, match="needs the plugin registry"):
        make_teacher(task=TASK, options={"model": "x"})


def test_chat_template_asked_of_a_model_without_one(registry, tiny):
    with pytest.raises(ConfigError, match="has no chat template"):
        make(registry, model=tiny, chat_template=True)
