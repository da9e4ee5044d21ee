"""The meeting-room task: generators, solver, validation and prompts (the extractor: test_extract.py)."""

from collections import Counter

import pytest
from lrl_harness.api.errors import InvalidProblemError, LrlError
from lrl_harness_tasks.meeting_rooms.solver import between, check, count, max_simultaneous, scan, solve, tally, trace


def test_seed_preset_reproduces_the_original_splits(task):
    test = task.problems("seed", "test")
    assert len(test) == 150
    # first problems of the original test split (seed 123), in order
    assert [p.id for p in test[:3]] == ["medium_0", "hard_1", "easy_2"]
    assert test[0].data["meetings"] == [[9, 12], [14, 15], [12, 13], [14, 17]]
    yes = Counter(p.expected for p in test)
    assert yes["YES"] == 132  # 88% YES: answering YES always scores 88.0%
    by_diff = {d: [p for p in test if p.difficulty == d] for d in ("EASY", "MEDIUM", "HARD")}
    assert [len(v) for v in by_diff.values()] == [50, 50, 50]
    assert sum(p.expected == "YES" for p in by_diff["EASY"]) == 50
    assert sum(p.expected == "YES" for p in by_diff["MEDIUM"]) == 45
    assert sum(p.expected == "YES" for p in by_diff["HARD"]) == 37
    train = task.problems("seed", "train")
    assert len(train) == 100 and sum(p.expected == "YES" for p in train) == 90


def test_balanced_preset_is_balanced_in_every_difficulty(task):
    problems = task.problems("balanced", "test")
    assert len(problems) == 200
    for diff in ("EASY", "MEDIUM", "HARD"):
        sub = [p for p in problems if p.difficulty == diff]
        yes = sum(p.expected == "YES" for p in sub)
        assert yes == len(sub) - yes
        tight_yes = [p for p in sub if p.data["max_simultaneous"] == p.data["rooms"]]
        assert tight_yes, f"{diff} has no tight YES case"
    assert task.problems("balanced", "test") == problems  # deterministic


def test_transfer_data_excludes_test_problems_and_is_solver_checked(task):
    test = task.problems("balanced", "test")
    examples = task.transfer_examples(None, "trace", 300, 999, "balanced", exclude=test)
    test_keys = {task.key(p) for p in test}
    assert all((tuple(map(tuple, e["data"]["meetings"])), e["data"]["rooms"]) not in test_keys for e in examples)
    for e in examples:
        assert task.extract_answer(e["target"]) == e["expected"]
    labels = task.transfer_examples("S", "label", 10, 999, "seed")
    assert labels[0]["prompt"].startswith("Strategy:\nS\n")
    assert labels[0]["target"] in ("Answer: YES", "Answer: NO")


def test_solver_boundary_and_trace():
    assert max_simultaneous([(9, 10), (10, 11)]) == 1  # ending at T does not conflict with starting at T
    assert solve([[9, 10], [10, 11]], 1) == "YES"
    assert solve([[9, 11], [10, 12]], 1) == "NO"
    text = trace([(9, 11), (10, 12), (11, 13)], 2)
    assert text.splitlines()[:2] == ["Sweep:", "9+1,10+2,11-1,11+2,12-1,13-0"]
    assert text.endswith("Answer: YES")


def test_scan_and_check_count_the_meetings_running_at_each_start():
    meetings = [(10, 12), (9, 10), (11, 13), (10, 11)]
    assert scan(meetings, 2).splitlines() == [
        "At 10: [10-12] [10-11] = 2", "At 9: [9-10] = 1", "At 11: [10-12] [11-13] = 2",
        "Peak 2 <= rooms 2", "Answer: YES"]
    # every meeting marked at each start (the one ending at 10 is not running at 10), then the
    # peak and the rooms both written before they are compared
    assert check(meetings, 1).splitlines() == [
        "At 10: 10-12y 9-10n 11-13n 10-11y = 2", "At 9: 10-12n 9-10y 11-13n 10-11n = 1",
        "At 11: 10-12y 9-10n 11-13y 10-11n = 2", "Peak 2, rooms 1: 2 > 1", "Answer: NO"]
    # the same marks, each with the time written between the meeting's start and end
    assert between(meetings, 1).splitlines() == [
        "At 10: 10 10 12y 9 10 10n 11 10 13n 10 10 11y = 2", "At 9: 10 9 12n 9 9 10y 11 9 13n 10 9 11n = 1",
        "At 11: 10 11 12y 9 11 10n 11 11 13y 10 11 11n = 2", "Peak 2, rooms 1: 2 > 1", "Answer: NO"]
    # and with the running count after every mark and the peak so far after every line
    assert tally(meetings, 1).splitlines() == [
        "At 10: 10 10 12y1 9 10 10n1 11 10 13n1 10 10 11y2 = 2, peak 2",
        "At 9: 10 9 12n0 9 9 10y1 11 9 13n1 10 9 11n1 = 1, peak 2",
        "At 11: 10 11 12y1 9 11 10n1 11 11 13y2 10 11 11n2 = 2, peak 2", "Peak 2, rooms 1: 2 > 1", "Answer: NO"]
    # count: the tally without each line's count and peak (a line's last mark carries its count)
    assert count(meetings, 1).splitlines() == [
        "At 10: 10 10 12y1 9 10 10n1 11 10 13n1 10 10 11y2", "At 9: 10 9 12n0 9 9 10y1 11 9 13n1 10 9 11n1",
        "At 11: 10 11 12y1 9 11 10n1 11 11 13y2 10 11 11n2", "Peak 2, rooms 1: 2 > 1", "Answer: NO"]


@pytest.mark.parametrize("fmt", ["trace", "scan", "check", "between", "tally", "count"])
def test_every_worked_format_ends_in_the_solvers_answer(task, fmt):
    for problem in task.problems("balanced", "test"):
        text = task.worked_solution(problem, fmt)
        assert task.extract_answer(text) == problem.expected, text


@pytest.mark.parametrize("meetings,rooms,message", [
    ([], 2, "non-empty"),
    ([[10, 9]], 2, "must start before it ends"),
    ([[9, 9]], 2, "must start before it ends"),
    ([[9.5, 11]], 2, "non-integer"),
    ([[9, 11]], 0, "rooms must be an integer >= 1"),
    ([[9, 11]], True, "rooms must be an integer >= 1"),
    ([[9, 11, 12]], 1, "expected [start, end]"),
])
def test_invalid_problems_are_clear_errors(task, meetings, rooms, message):
    with pytest.raises(InvalidProblemError, match=message.replace("[", r"\[").replace("]", r"\]")):
        task.problem_from_dict({"meetings": meetings, "rooms": rooms})


def test_problem_strings_round_trip(task):
    p = task.parse_description("[10-13], [12-14] | 3 rooms", id="x")
    assert p.data["meetings"] == [[10, 13], [12, 14]] and p.data["rooms"] == 3
    assert task.describe(p) == "[10-13], [12-14] | 3 rooms"
    with pytest.raises(InvalidProblemError):
        task.parse_description("10-13 and 12-14, three rooms")


def test_unknown_preset_and_split(task):
    with pytest.raises(LrlError, match="unknown preset 'nope'"):
        task.problems("nope", "test")
    with pytest.raises(LrlError, match="unknown split"):
        task.problems("seed", "validation")


def test_prompts_are_versioned_and_hashed(task):
    hashes = task.prompt_hashes()
    assert set(hashes) >= {"solve", "journal", "distill", "student"}
    assert task.prompt_version == "meeting-rooms/2"
    p = task.problems("seed", "test")[0]
    prompt = task.teacher_prompt(p)
    assert "[9-12], [14-15], [12-13], [14-17]" in prompt and "Answer: YES" in prompt
    assert task.student_prompt(p).startswith("Problem:\nMeetings: [9-12]")


def test_the_problems_a_preset_can_draw_are_counted_exactly():
    import itertools

    from lrl_harness_tasks.meeting_rooms import generator

    meetings = [(s, s + d) for s in range(9, 16) for d in range(1, 4)]
    for k in (1, 2, 3):  # the count against every list of k meetings
        peaks = Counter(max_simultaneous(list(m)) for m in itertools.product(meetings, repeat=k))
        for rooms in range(k + 1):
            assert generator.fitting(k, rooms) == sum(n for peak, n in peaks.items() if peak <= rooms)
    assert generator.fitting(6, 6) == 21**6
    # every (meeting count, rooms) a preset draws, each with 21**count lists of meetings
    assert generator.most_problems("balanced") == 21**2 * 2 + 21**3 * 3 + 21**4 * 4 + 21**5 * 3 + 21**6 * 3
    assert generator.most_problems("seed") == 21**2 * 2 + 21**3 * 2 + 21**4 * 3 + 21**5 * 3 + 21**6 * 3


def test_a_split_larger_than_the_preset_can_draw_is_refused_at_once(task):
    most = task.max_problems("balanced", "test")
    assert most == 270357255
    with pytest.raises(LrlError, match=f"must be at most {most}, the problems preset balanced can draw, got"):
        task.problems("balanced", "test", n=10**23)
    with pytest.raises(LrlError, match="must be at most 270153513"):
        task.problems("seed", "train", n=270153514)
    with pytest.raises(LrlError, match="must be at most"):
        task.transfer_examples(None, "label", 10**23, 999, "seed")
    assert task.max_problems("seed", "transfer") == most  # drawn balanced unless draw="original"
    assert task.max_problems("seed", "transfer", draw="original") == task.max_problems("seed", "test")


def test_transfer_data_that_the_excluded_problems_leave_unbalanceable_is_refused_not_looped(task):
    # every EASY problem answered NO (two overlapping meetings, one room) is a test problem: a
    # balanced draw can then hold at most one EASY problem (a YES), so at most 5 problems in all
    easy_no = [task.problem_from_dict({"meetings": [list(a), list(b)], "rooms": 1})
               for a in [(s, s + d) for s in range(9, 16) for d in range(1, 4)]
               for b in [(s, s + d) for s in range(9, 16) for d in range(1, 4)]
               if max_simultaneous([a, b]) == 2]
    assert len(easy_no) == 165
    assert task.max_problems("balanced", "transfer", exclude=easy_no) == 5
    assert len(task.transfer_examples(None, "label", 5, 999, "balanced", exclude=easy_no)) == 5
    with pytest.raises(LrlError, match="at most 5, the problems preset balanced can draw apart from 165 excluded"):
        task.transfer_examples(None, "label", 6, 999, "balanced", exclude=easy_no)
    assert task.max_problems("balanced", "transfer", exclude=easy_no[:-1]) == task.max_problems(
        "balanced", "transfer") - 164  # one left: any size again, less the excluded ones
