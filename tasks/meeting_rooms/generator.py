"""Problem generators.

``seed`` reproduces the original experiment's splits draw for draw (one ``random.seed`` stream:
shuffle of difficulties, then per problem the meeting count, the rooms, and per meeting the start
and duration). ``balanced`` has as many YES as NO answers in every difficulty, half of each side
"tight" (peak equal to the rooms for YES, one above for NO).
"""

from __future__ import annotations

import random

from lrl_harness import Problem

from .solver import max_simultaneous

DIFFICULTIES = ("EASY", "MEDIUM", "HARD")
# (meeting counts, room choices) per difficulty
ORIGINAL_SHAPES = {"EASY": ([2], [2, 3]), "MEDIUM": ([3, 4], [2, 3]), "HARD": ([4, 5, 6], [2, 3, 4])}
# Two meetings never need three rooms: the balanced preset allows one room so EASY has NO answers.
BALANCED_SHAPES = {"EASY": ([2], [1, 2]), "MEDIUM": ([3, 4], [1, 2, 3]), "HARD": ([4, 5, 6], [2, 3, 4])}
START_RANGE = (9, 15)
DURATION_RANGE = (1, 3)

SPLITS = {
    # preset -> split -> (count, seed)
    "seed": {"train": (100, 42), "test": (150, 123), "transfer": (100, 999)},
    "balanced": {"train": (100, 42), "test": (200, 123), "transfer": (6000, 999)},
}


def _draw(rng: random.Random, difficulty: str, shapes) -> tuple[list[tuple[int, int]], int]:
    counts, rooms_choices = shapes[difficulty]
    n = rng.choice(counts) if len(counts) > 1 else counts[0]
    rooms = rng.choice(rooms_choices)
    meetings = []
    for _ in range(n):
        start = rng.randint(*START_RANGE)
        meetings.append((start, start + rng.randint(*DURATION_RANGE)))
    return meetings, rooms


def _make(difficulty: str, index: int, meetings, rooms) -> Problem:
    peak = max_simultaneous(meetings)
    return Problem(
        id=f"{difficulty.lower()}_{index}",
        difficulty=difficulty,
        data={"meetings": [list(m) for m in meetings], "rooms": rooms, "max_simultaneous": peak},
        expected="YES" if peak <= rooms else "NO",
    )


def original(n: int, seed: int) -> list[Problem]:
    """The original experiment's generator, draw for draw."""
    rng = random.Random(seed)
    difficulties = ["EASY"] * (n // 3) + ["MEDIUM"] * (n // 3) + ["HARD"] * (n - 2 * (n // 3))
    rng.shuffle(difficulties)
    problems = []
    for i, diff in enumerate(difficulties):
        meetings, rooms = _draw(rng, diff, ORIGINAL_SHAPES)
        problems.append(_make(diff, i, meetings, rooms))
    return problems


def balanced(n: int, seed: int, exclude: set | None = None) -> list[Problem]:
    """Equal YES and NO within every difficulty; half of each side tight. ``exclude`` holds
    ``(tuple(meetings), rooms)`` keys that must not appear (e.g. test problems in training data)."""
    rng = random.Random(seed)
    exclude = exclude or set()
    per_diff = {"EASY": n // 3, "MEDIUM": n // 3, "HARD": n - 2 * (n // 3)}
    chosen: list[tuple[str, list, int]] = []
    for diff in DIFFICULTIES:
        want = per_diff[diff]
        quota = {"YES": want // 2 + want % 2, "NO": want // 2}
        tight_left = {k: v // 2 for k, v in quota.items()}
        slack_left = {k: quota[k] - tight_left[k] for k in quota}
        misses = 0
        while any(tight_left[k] + slack_left[k] for k in quota):
            meetings, rooms = _draw(rng, diff, BALANCED_SHAPES)
            if (tuple(meetings), rooms) in exclude:
                continue
            peak = max_simultaneous(meetings)
            label = "YES" if peak <= rooms else "NO"
            tight = peak == rooms or peak == rooms + 1
            if tight and tight_left[label] > 0:
                tight_left[label] -= 1
            elif not tight and slack_left[label] > 0:
                slack_left[label] -= 1
            else:
                misses += 1
                if misses > 5000:  # some buckets cannot be filled (two meetings, one room): let tight fill
                    for k in quota:
                        tight_left[k] += slack_left[k]
                        slack_left[k] = 0
                continue
            misses = 0
            chosen.append((diff, meetings, rooms))
    rng.shuffle(chosen)
    return [_make(diff, i, meetings, rooms) for i, (diff, meetings, rooms) in enumerate(chosen)]
