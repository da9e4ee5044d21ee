"""The anthropic teacher through the real ``anthropic`` SDK, and the cost figures of its answers.

The Anthropic API itself needs a key and the network, which the tests do not have; the SDK talks
instead to ``fake_anthropic.FakeAnthropic``, a Messages API stand-in on 127.0.0.1, so the SDK's own
retries, timeouts and error classes are exercised for real.
"""

from __future__ import annotations

import json

import pytest
from fake_anthropic import (
    FakeAnthropic,
    answer,
    malformed,
    overloaded,
    rate_limited,
    server_error,
    slow,
)
from lrl_harness import Completion, PluginContext, TeacherRequest
from lrl_harness.api.errors import ConfigError, LrlError
from lrl_harness.api.registry import Registry, make_plugin_manager
from lrl_harness.pipeline.cache import CachedTeacher, TeacherError
from lrl_harness.pipeline.cost import (
    DEFAULT_PRICES,
    Price,
    break_even,
    cost_usd,
    load_prices,
    price_of,
    summarise_usage,
)
from lrl_harness_plugins.anthropic_teacher import (
    DEFAULT_MODEL,
    ORIGINAL_MODEL,
    SAMPLING_API_VERSION,
    make_teacher,
)
from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask

KEY = "test-key"
TASK = MeetingRoomsTask()


@pytest.fixture
def fake(anthropic_server):
    """The Messages API stand-in of conftest, answering like a teacher."""
    return anthropic_server


def teacher(fake: FakeAnthropic, **options):
    return make_teacher(task=TASK, options={"base_url": fake.base_url, **options})


def solve_requests(n: int = 3) -> list[TeacherRequest]:
    problems = TASK.problems("balanced", "test", n=n)
    return [TeacherRequest("solve", TASK.teacher_prompt(p), problem=p) for p in problems]


def assert_one_line(exc: BaseException) -> str:
    text = str(exc)
    assert text and "\n" not in text
    return text


# --- setup errors come before any work ----------------------------------------------------------


def test_registered_through_the_entry_point_group():
    registry = Registry(make_plugin_manager())
    reg = registry.get("teacher", "anthropic")
    assert reg.factory is make_teacher
    assert DEFAULT_MODEL in reg.description


def test_missing_key_is_one_clear_line(monkeypatch):
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(ConfigError) as err:
        make_teacher(task=TASK, options={})
    assert "ANTHROPIC_API_KEY" in assert_one_line(err.value)
    # replaying a cache needs no key: the factory accepts it and nothing is sent
    assert make_teacher(task=TASK, options={}, context=PluginContext(cache_only=True)).model == DEFAULT_MODEL


@pytest.mark.parametrize("options, words", [
    ({"temprature": 0}, "unknown option 'temprature'"),
    ({"temperature": "hot"}, "temperature must be a number from 0 to 1 (or null)"),
    ({"temperature": 1.5}, "temperature must be a number from 0 to 1"),
    ({"max_tokens": 0}, "max_tokens must be a positive integer"),
    ({"max_tokens": 10.5}, "max_tokens must be a positive integer"),
    ({"base_url": "localhost:8000"}, "base_url must be an http(s) URL"),
    ({"max_retries": -1}, "max_retries must be a non-negative integer"),
])
def test_bad_options_fail_up_front(monkeypatch, options, words):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    with pytest.raises(LrlError) as err:
        make_teacher(task=TASK, options=options)
    assert words in assert_one_line(err.value)


def test_defaults_follow_the_original_sampling_settings(fake):
    t = teacher(fake)
    assert (t.model, t.temperature, t.max_tokens) == (DEFAULT_MODEL, 0.0, 1024)
    info = t.info()
    assert info["original_model"] == ORIGINAL_MODEL == "claude-3-5-haiku-20241022"
    assert info["is_language_model"] is True and fake.api_key not in json.dumps(info)
    assert t.cache_identity() == {"teacher": "anthropic", "model": DEFAULT_MODEL, "temperature": 0.0,
                                  "max_tokens": 1024, "system": None}


# --- answers ------------------------------------------------------------------------------------


def test_answers_carry_usage_and_request_metadata(fake):
    requests = solve_requests(3)
    completions = teacher(fake).complete(requests)
    assert len(completions) == 3 and len(fake.requests) == 3
    for request, completion, seen in zip(requests, completions, fake.requests, strict=True):
        assert TASK.extract_answer(completion.text) == request.problem.expected
        assert seen["body"]["messages"] == [{"role": "user", "content": request.prompt}]
        assert (seen["body"]["temperature"], seen["body"]["max_tokens"]) == (0.0, 1024)
        assert seen["headers"]["anthropic-version"] == SAMPLING_API_VERSION
        meta = completion.meta
        assert meta["model"] == meta["requested_model"] == DEFAULT_MODEL
        assert meta["input_tokens"] == completion.prompt_tokens == len(request.prompt.split())
        assert meta["output_tokens"] == completion.completion_tokens == len(completion.text.split())
        assert meta["retries"] == 0 and meta["stop_reason"] == "end_turn"
        assert meta["request_id"].startswith("req_") and meta["latency_s"] >= 0
        assert meta["api"] == "anthropic" and not completion.cached


def test_options_reach_the_request(fake):
    t = teacher(fake, model="claude-sonnet-4-6", max_tokens=5, temperature=0.5, system="Be brief.")
    [completion] = t.complete(solve_requests(1))
    body = fake.requests[0]["body"]
    assert (body["model"], body["max_tokens"], body["temperature"]) == ("claude-sonnet-4-6", 5, 0.5)
    assert body["system"] == "Be brief."
    assert completion.meta["stop_reason"] == "max_tokens" and completion.meta["output_tokens"] == 5


def test_without_temperature_the_sdk_api_version_is_used(fake):
    import anthropic

    t = teacher(fake, temperature=None)
    [completion] = t.complete(solve_requests(1))
    seen = fake.requests[0]
    assert "temperature" not in seen["body"]
    assert seen["headers"]["anthropic-version"] == anthropic._constants.ANTHROPIC_API_VERSION
    assert t.cache_identity()["temperature"] is None and completion.text


def test_a_model_that_takes_no_temperature_says_what_to_do(fake):
    fake.models_without_sampling.add("claude-opus-4-8")
    with pytest.raises(TeacherError) as err:
        teacher(fake, model="claude-opus-4-8").complete(solve_requests(1))
    line = assert_one_line(err.value)
    assert line.startswith("teacher anthropic: HTTP 400 invalid_request_error: `temperature` is deprecated")
    assert line.endswith("set the teacher option temperature=null")
    [completion] = teacher(fake, model="claude-opus-4-8", temperature=None).complete(solve_requests(1))
    assert completion.meta["model"] == "claude-opus-4-8"


def test_base_url_from_the_environment(fake, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_BASE_URL", fake.base_url)
    [completion] = make_teacher(task=TASK, options={}).complete(solve_requests(1))
    assert completion.text and len(fake.requests) == 1


def test_concurrent_requests_keep_their_order(fake):
    requests = solve_requests(8)
    completions = teacher(fake, concurrency=4).complete(requests)
    assert [TASK.extract_answer(c.text) for c in completions] == [r.problem.expected for r in requests]
    assert len(fake.requests) == 8


# --- the SDK's retries, and what the user sees when they run out --------------------------------


def test_rate_limit_then_success_counts_retries(fake):
    fake.script(rate_limited(retry_after_ms=5), rate_limited(retry_after_ms=5))
    [completion] = teacher(fake, max_retries=3).complete(solve_requests(1))
    assert completion.meta["retries"] == 2
    assert fake.retry_counts == [0, 1, 2]
    assert summarise_usage([completion])["retries"] == 2


def test_overloaded_until_retries_run_out(fake):
    fake.script(overloaded(5), overloaded(5), overloaded(5))
    with pytest.raises(TeacherError) as err:
        teacher(fake, max_retries=2).complete(solve_requests(1))
    line = assert_one_line(err.value)
    assert line.startswith("teacher anthropic: HTTP 529 overloaded_error: Overloaded")
    assert "gave up after 2 retries" in line and "request req_" in line
    assert fake.retry_counts == [0, 1, 2]
    assert isinstance(err.value, LrlError)


def test_server_error_is_retried(fake):
    fake.script(server_error(5))
    [completion] = teacher(fake, max_retries=1).complete(solve_requests(1))
    assert completion.meta["retries"] == 1


def test_timeout(fake):
    fake.script(slow(30), slow(30))
    with pytest.raises(TeacherError) as err:
        teacher(fake, timeout=0.2, max_retries=1).complete(solve_requests(1))
    assert assert_one_line(err.value) == (
        f"teacher anthropic: no answer within 0.2 s (model {DEFAULT_MODEL}, gave up after 1 retry)")
    assert fake.retry_counts == [0, 1]


def test_malformed_body(fake):
    fake.script(malformed())
    with pytest.raises(TeacherError) as err:
        teacher(fake).complete(solve_requests(1))
    assert "the API sent a body that is not a Messages API response" in assert_one_line(err.value)
    assert len(fake.requests) == 1


def test_invalid_key(fake, monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-wrong")
    with pytest.raises(TeacherError) as err:
        teacher(fake).complete(solve_requests(1))
    line = assert_one_line(err.value)
    assert line.startswith("teacher anthropic: HTTP 401 authentication_error: invalid x-api-key")
    assert line.endswith("check ANTHROPIC_API_KEY") and "gave up" not in line and "sk-wrong" not in line
    assert len(fake.requests) == 1  # a 401 is not retried


def test_failure_midway_loses_nothing_already_answered(fake, tmp_path):
    requests = solve_requests(4)
    fake.script(answer("Answer: YES"), answer("Answer: NO"), overloaded(5))
    cached = CachedTeacher(teacher(fake, max_retries=0), tmp_path)
    with pytest.raises(TeacherError):
        cached.complete(requests)
    assert len(list(tmp_path.rglob("*.json"))) == 2
    # the stage resumes: the two answers come from the cache, the other two are asked
    again = CachedTeacher(teacher(fake), tmp_path)
    completions = again.complete(requests)
    assert [c.cached for c in completions] == [True, True, False, False]
    assert [c.text for c in completions[:2]] == ["Answer: YES", "Answer: NO"]
    assert (again.hits, again.misses, again.requests_made) == (2, 2, 2)
    assert len(fake.requests) == 3 + 2


def test_concurrent_failure_keeps_the_answers_received(fake, tmp_path):
    requests = solve_requests(6)
    fake.script(*[answer("Answer: YES")] * 5, overloaded(5))
    cached = CachedTeacher(teacher(fake, max_retries=0, concurrency=2), tmp_path)
    with pytest.raises(TeacherError):
        cached.complete(requests)
    stored = len(list(tmp_path.rglob("*.json")))
    assert 1 <= stored <= 5
    completions = CachedTeacher(teacher(fake), tmp_path).complete(requests)
    assert sum(c.cached for c in completions) == stored


# --- cost figures -------------------------------------------------------------------------------


def test_cost_of_a_stage_and_of_its_replay(fake, tmp_path):
    requests = solve_requests(5)
    first = CachedTeacher(teacher(fake), tmp_path).complete(requests)
    summary = summarise_usage(first)
    tokens_in = sum(len(r.prompt.split()) for r in requests)
    tokens_out = sum(len(c.text.split()) for c in first)
    expected = (tokens_in * 1.00 + tokens_out * 5.00) / 1e6  # claude-haiku-4-5: $1 / $5 per million
    assert summary["requests"] == summary["made"] == 5 and summary["cached"] == 0
    assert (summary["input_tokens"], summary["output_tokens"]) == (tokens_in, tokens_out)
    assert summary["cost_usd"] == summary["list_cost_usd"] == pytest.approx(expected, abs=1e-6)
    assert summary["models"] == [DEFAULT_MODEL] and summary["unpriced_models"] == []

    as_dicts = [{**c.meta, "cached": c.cached} for c in first]  # what a results file keeps
    assert summarise_usage(as_dicts) == summary

    replay = summarise_usage(CachedTeacher(teacher(fake), tmp_path).complete(requests))
    assert replay["cached"] == 5 and replay["made"] == 0
    assert replay["cost_usd"] == 0.0 and replay["list_cost_usd"] == summary["list_cost_usd"]
    assert replay["retries"] == 0


def test_unknown_model_costs_none_never_zero(fake):
    completions = teacher(fake, model="claude-future-9").complete(solve_requests(2))
    summary = summarise_usage(completions)
    assert summary["cost_usd"] is None and summary["list_cost_usd"] is None
    assert summary["unpriced_models"] == ["claude-future-9"]


def test_price_lookup():
    assert price_of("claude-haiku-4-5-20251001") == DEFAULT_PRICES["claude-haiku-4-5"]
    assert price_of(ORIGINAL_MODEL) == Price(0.80, 4.00)
    assert price_of("claude-3-5-haiku-latest") == Price(0.80, 4.00)
    assert price_of("claude-opus-4-20250514") == Price(15.0, 75.0)
    assert price_of("claude-opus-4-5-20251101") == Price(5.0, 25.0)
    assert price_of("gpt-x") is None and cost_usd("gpt-x", 10, 10) is None
    assert cost_usd("claude-haiku-4-5", 1_000_000, 1_000_000) == pytest.approx(6.0)


def test_local_completions_cost_nothing():
    local = [Completion("Answer: YES", prompt_tokens=40, completion_tokens=3, meta={"model": "tiny"})]
    summary = summarise_usage(local)
    assert summary["cost_usd"] == 0.0 and summary["input_tokens"] == 40


def test_user_price_files(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps({"claude-haiku-4-5": {"input": 2, "output": 10},
                                                 "claude-new-1": [1, 2]}))
    prices = load_prices(tmp_path / "p.json")
    assert prices["claude-haiku-4-5"] == Price(2.0, 10.0) and prices["claude-new-1"] == Price(1.0, 2.0)
    assert prices["claude-sonnet-4-6"] == DEFAULT_PRICES["claude-sonnet-4-6"]
    assert cost_usd("claude-new-1-20270101", 1_000_000, 0, prices) == pytest.approx(1.0)
    (tmp_path / "p.toml").write_text('[models."claude-haiku-4-5"]\ninput = 0.5\noutput = 2.5\n')
    assert load_prices(tmp_path / "p.toml")["claude-haiku-4-5"] == Price(0.5, 2.5)


@pytest.mark.parametrize("content, words", [
    ('{"claude-haiku-4-5": {"input": -1, "output": 5}}', "model 'claude-haiku-4-5': expected"),
    ('{"claude-haiku-4-5": "cheap"}', "model 'claude-haiku-4-5': expected"),
    ("{not json", "not a valid JSON price file"),
    ("[1, 2]", "expected a table of model ids"),
])
def test_bad_price_files(tmp_path, content, words):
    path = tmp_path / "prices.json"
    path.write_text(content)
    with pytest.raises(ConfigError) as err:
        load_prices(path)
    assert words in assert_one_line(err.value)
    with pytest.raises(ConfigError, match="price file not found"):
        load_prices(tmp_path / "missing.json")


def test_break_even():
    # the original's figures: $0.005 per call against $0 local; ~100 calls means $0.50 one-off
    assert break_even(0.005, 0.0, 0.50)["break_even_problems"] == 100
    result = break_even(0.002, 0.0005, 0.30)
    assert result["break_even_problems"] == 200 and result["saving_per_problem"] == pytest.approx(0.0015)
    assert break_even(0.001, 0.002, 1.0)["break_even_problems"] is None
    assert break_even(None, 0.0, 1.0)["note"].startswith("unknown")
    assert break_even(0.01, 0.0, 0.0)["break_even_problems"] == 0
