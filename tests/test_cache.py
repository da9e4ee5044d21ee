"""The teacher-response cache: full-identity keys, resume, --cache-only, crash safety.

Requests go through the real ``anthropic`` SDK to ``fake_anthropic.FakeAnthropic`` on 127.0.0.1
(the real API needs a key and the network), so "zero requests" is counted at the server.
"""

from __future__ import annotations

import json

import pytest
from fake_anthropic import FakeAnthropic
from lrl_harness import PluginContext, TeacherRequest, sha256_text
from lrl_harness.api.errors import CacheMissError, LrlError
from lrl_harness.pipeline.cache import CachedTeacher, request_key
from lrl_harness.pipeline.cost import summarise_usage
from lrl_harness_plugins.anthropic_teacher import make_teacher
from lrl_harness_plugins.solver_teacher import SolverTeacher
from lrl_harness_tasks.meeting_rooms import MeetingRoomsTask

KEY = "test-key"
TASK = MeetingRoomsTask()


@pytest.fixture
def fake(monkeypatch):
    monkeypatch.setenv("ANTHROPIC_API_KEY", KEY)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)
    answers = iter(range(10**6))
    with FakeAnthropic(lambda prompt: f"answer {next(answers)}\nAnswer: YES", api_key=KEY) as server:
        yield server


def cached(fake, root, cache_only=False, **options) -> CachedTeacher:
    teacher = make_teacher(task=TASK, options={"base_url": fake.base_url, **options})
    return CachedTeacher(teacher, root, cache_only=cache_only)


def requests(n: int = 4, sample: int = 0) -> list[TeacherRequest]:
    problems = TASK.problems("balanced", "test", n=n)
    return [TeacherRequest("solve", TASK.teacher_prompt(p), problem=p, context={"sample": sample})
            for p in problems]


def entries(root) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(root.rglob("*.json"))]


def test_a_second_identical_run_makes_no_request(fake, tmp_path):
    first = cached(fake, tmp_path)
    answers = first.complete(requests())
    assert (first.hits, first.misses, first.requests_made) == (0, 4, 4)
    assert len(fake.requests) == 4 and not any(c.cached for c in answers)

    second = cached(fake, tmp_path)
    again = second.complete(requests())
    assert len(fake.requests) == 4
    assert (second.hits, second.misses, second.requests_made) == (4, 0, 0)
    assert all(c.cached for c in again)
    assert [c.text for c in again] == [c.text for c in answers]
    assert [c.meta for c in again] == [c.meta for c in answers]
    assert summarise_usage(again)["cost_usd"] == 0.0
    assert second.info()["cache"] == {"root": str(tmp_path), "cache_only": False, "hits": 4, "misses": 0,
                                      "requests_made": 0}


@pytest.mark.parametrize("change", [
    {"model": "claude-sonnet-4-6"},
    {"temperature": 0.7},
    {"temperature": None},
    {"max_tokens": 512},
    {"system": "You are terse."},
])
def test_any_change_of_identity_is_a_miss(fake, tmp_path, change):
    cached(fake, tmp_path).complete(requests(2))
    other = cached(fake, tmp_path, **change)
    answers = other.complete(requests(2))
    assert (other.hits, other.misses) == (0, 2) and len(fake.requests) == 4
    assert not any(c.cached for c in answers)
    assert len(entries(tmp_path)) == 4


def test_settings_that_do_not_change_answers_still_hit(fake, tmp_path):
    cached(fake, tmp_path).complete(requests(2))
    other = cached(fake, tmp_path, timeout=30, max_retries=1, concurrency=2)
    other.complete(requests(2))
    assert other.hits == 2 and len(fake.requests) == 2


def test_sample_index_is_part_of_the_key(fake, tmp_path):
    teacher = cached(fake, tmp_path)
    first = teacher.complete(requests(2, sample=0))
    second = teacher.complete(requests(2, sample=1))
    assert teacher.misses == 4 and len(fake.requests) == 4
    assert [c.text for c in first] != [c.text for c in second]
    assert sorted(e["sample"] for e in entries(tmp_path)) == [0, 0, 1, 1]


def test_the_key_is_never_the_prompt_alone():
    request = requests(1)[0]
    a = {"teacher": "anthropic", "model": "claude-haiku-4-5", "temperature": 0.0, "max_tokens": 1024}
    b = {**a, "model": "claude-sonnet-4-6"}
    assert request_key(a, request) != request_key(b, request)
    journal = TeacherRequest("journal", request.prompt)
    assert request_key(a, request) != request_key(a, journal)


def test_cache_only_names_the_missing_request(fake, tmp_path, monkeypatch):
    batch = requests(3)
    cached(fake, tmp_path).complete(batch[:2])
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    # a replay needs no key, and sends nothing
    replay = CachedTeacher(make_teacher(task=TASK, options={"base_url": fake.base_url},
                                        context=PluginContext(cache_only=True)),
                           tmp_path, cache_only=True)
    assert all(c.cached for c in replay.complete(batch[:2]))
    with pytest.raises(CacheMissError) as err:
        replay.complete(batch)
    line = str(err.value)
    assert "\n" not in line and isinstance(err.value, LrlError)
    assert line.startswith("not in the teacher cache (--cache-only): anthropic model claude-haiku-4-5, "
                           f"solve request for problem {batch[2].problem.id}, "
                           f"prompt sha256 {sha256_text(batch[2].prompt)[:16]} (cache: ")
    assert len(fake.requests) == 2


def test_entries_are_whole_and_self_describing(fake, tmp_path):
    teacher = cached(fake, tmp_path)
    [request] = requests(1)
    [completion] = teacher.complete([request])
    [entry] = entries(tmp_path)
    assert entry["schema"] == "lrl-harness/teacher-cache" and entry["schema_version"] == 1
    assert entry["identity"] == teacher.cache_identity()
    assert (entry["purpose"], entry["problem_id"], entry["sample"]) == ("solve", request.problem.id, 0)
    assert entry["prompt"] == request.prompt and entry["completion"]["text"] == completion.text
    assert teacher.path_for(request).parts[-4:-2] == ("anthropic", "claude-haiku-4-5")
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]


def test_a_damaged_entry_is_asked_again_and_rewritten(fake, tmp_path):
    teacher = cached(fake, tmp_path)
    [request] = requests(1)
    teacher.complete([request])
    path = teacher.path_for(request)
    path.write_text(path.read_text()[:40])  # as if cut short by hand: the writer itself never does this
    again = cached(fake, tmp_path)
    [completion] = again.complete([request])
    assert not completion.cached and again.misses == 1 and len(fake.requests) == 2
    assert json.loads(path.read_text())["completion"]["text"] == completion.text


def test_identical_requests_in_one_batch_are_asked_once(fake, tmp_path):
    teacher = cached(fake, tmp_path)
    [request] = requests(1)
    answers = teacher.complete([request, request, request])
    assert len(fake.requests) == 1 and teacher.requests_made == 1 and teacher.misses == 3
    assert len({c.text for c in answers}) == 1


def test_any_teacher_with_a_cache_identity_can_be_cached(tmp_path):
    solver = CachedTeacher(SolverTeacher(TASK), tmp_path)
    batch = requests(3)
    first = solver.complete(batch)
    second = CachedTeacher(SolverTeacher(TASK), tmp_path).complete(batch)
    assert [c.text for c in first] == [c.text for c in second] and all(c.cached for c in second)
    assert summarise_usage(first)["cost_usd"] == 0.0
    with pytest.raises(LrlError, match="has no cache_identity"):
        CachedTeacher(object(), tmp_path)
