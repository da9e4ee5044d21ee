"""Problem generators.

``seed`` reproduces the original experiment's splits draw for draw (one ``random.seed`` stream:
shuffle of difficulties, then per problem the meeting count, the rooms, and per meeting the start
and duration). ``balanced`` has as many YES as NO answers in every difficulty, half of each side
"tight" (peak equal to the rooms for YES, one above for NO).
"""

from __future__ import annotations

import random
from functools import cache
from math import factorial

from lrl_harness import LrlError, Problem

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
    refuse_beyond(n, "seed")
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
    exclude = exclude or set()
    refuse_beyond(n, "balanced", exclude)
    rng = random.Random(seed)
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


# --- how many problems a preset can draw -----------------------------------------------------

def _meeting_choices() -> list[tuple[int, int]]:
    return [(s, s + d) for s in range(START_RANGE[0], START_RANGE[1] + 1)
            for d in range(DURATION_RANGE[0], DURATION_RANGE[1] + 1)]


@cache
def fitting(k: int, rooms: int) -> int:
    """How many lists of ``k`` meetings (in order, each start and duration as the generators draw
    them) fit in ``rooms`` rooms. Counted, not enumerated (21**6 lists of six meetings): starts are
    taken in time order, keeping how many earlier meetings still run at the next few hours; a
    meeting [s-e] runs at the hours s..e-1, and the peak of the sweep line is the most at one hour."""
    first, last = START_RANGE
    longest = DURATION_RANGE[1]
    durations = range(DURATION_RANGE[0], longest + 1)
    # (meetings still running at each of the next longest-1 hours, meetings placed) -> ordered lists
    states = {((0,) * (longest - 1), 0): 1}
    for _start in range(first, last + 1):
        following: dict = {}
        for (running, placed), ways in states.items():
            for counts in _compositions(len(durations), k - placed):
                new = sum(counts)
                if running[0] + new > rooms:
                    continue
                ahead = tuple((running[j] if j < longest - 1 else 0)
                              + sum(c for d, c in zip(durations, counts) if d > j) for j in range(1, longest))
                # interleave the new meetings among the ones placed so far, in every order
                orders = factorial(placed + new) // factorial(placed)
                for c in counts:
                    orders //= factorial(c)
                key = (ahead, placed + new)
                following[key] = following.get(key, 0) + ways * orders
        states = following
    return sum(ways for (_, placed), ways in states.items() if placed == k)


def _compositions(parts: int, most: int):
    """Every tuple of ``parts`` non-negative counts adding up to at most ``most``."""
    if parts == 0:
        yield ()
        return
    for first in range(most + 1):
        for rest in _compositions(parts - 1, most - first):
            yield (first, *rest)


def _shapes(preset: str) -> dict:
    return ORIGINAL_SHAPES if preset == "seed" else BALANCED_SHAPES


def _pairs(shapes) -> set[tuple[int, int]]:
    """(meeting count, rooms) of every problem a preset draws, over all difficulties."""
    return {(k, rooms) for counts, rooms_choices in shapes.values() for k in counts for rooms in rooms_choices}


def _bucket(peak: int, rooms: int) -> tuple[str, bool]:
    return ("YES" if peak <= rooms else "NO"), peak in (rooms, rooms + 1)


def _buckets(counts, rooms_choices) -> dict[tuple[str, bool], int]:
    """Distinct problems of one difficulty by (answer, tight)."""
    out: dict[tuple[str, bool], int] = {}
    for k in counts:
        for rooms in rooms_choices:
            for peak in range(1, k + 1):
                n = fitting(k, peak) - fitting(k, peak - 1)
                if n:
                    key = _bucket(peak, rooms)
                    out[key] = out.get(key, 0) + n
    return out


def _quota(left: dict, label: str, unlimited: int) -> int:
    """The most problems of one answer a difficulty can take from what is ``left`` of its buckets:
    any number while a tight one is left, else one slack one (a quota of one has no tight half)."""
    if left.get((label, True), 0) > 0:
        return unlimited
    return 1 if left.get((label, False), 0) > 0 else 0


def most_problems(preset: str, exclude: set | frozenset = frozenset()) -> int:
    """The largest ``n`` that ``original`` (preset ``seed``) or ``balanced`` draws: no more than the
    distinct problems the preset has (a larger split must repeat problems), without the ``exclude``
    keys ``(tuple(meetings), rooms)``. ``balanced`` also needs, in every difficulty, as many YES as
    NO problems, half of them tight (slack ones may be replaced by tight ones, never the reverse):
    an answer whose problems are all excluded limits its difficulty to what needs none of it."""
    shapes = _shapes(preset)
    pairs = _pairs(shapes)
    choices = set(_meeting_choices())
    span = len(choices)
    inside = {key for key in exclude
              if (len(key[0]), key[1]) in pairs and all(tuple(m) in choices for m in key[0])}
    total = sum(span ** k for k, _ in pairs) - len(inside)
    if preset == "seed":  # draws with no balance and ignores exclude
        return sum(span ** k for k, _ in pairs)
    unlimited = total + 1
    limits = {}
    for diff, (counts, rooms_choices) in shapes.items():
        left = _buckets(counts, rooms_choices)
        for meetings, rooms in inside:
            if len(meetings) in counts and rooms in rooms_choices:
                left[_bucket(max_simultaneous(meetings), rooms)] -= 1

        limits[diff] = min(2 * _quota(left, "YES", unlimited), 2 * _quota(left, "NO", unlimited) + 1)

    def drawable(n: int) -> bool:  # the difficulty sizes of ``balanced``
        return (n <= total and n // 3 <= min(limits["EASY"], limits["MEDIUM"])
                and n - 2 * (n // 3) <= limits["HARD"])

    best = 0
    for rest in range(3):
        m = min(limits["EASY"], limits["MEDIUM"], limits["HARD"] - rest)
        if m < 0:
            continue
        top = min(3 * m + rest, total)
        best = max([best, *(n for n in range(max(top - 3, 0), top + 1) if drawable(n))])
    return best


def refuse_beyond(n: int, preset: str, exclude: set | frozenset = frozenset()) -> None:
    """An ``LrlError`` when ``n`` problems are more than the preset's generator can draw: a larger
    split would never finish (an answer left to none) or repeat problems."""
    most = most_problems(preset, exclude)
    if n > most:
        apart = f" apart from {len(exclude)} excluded ones" if exclude else ""
        raise LrlError(f"the number of problems must be at most {most}, the problems preset {preset} "
                       f"can draw{apart}, got {n}")
