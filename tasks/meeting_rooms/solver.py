"""The exact solver: a sweep line over start/end events.

A meeting ending at T does not conflict with one starting at T, so at equal times ends are
processed before starts.
"""

from __future__ import annotations

from lrl_harness import InvalidProblemError

Meeting = tuple[int, int]


def validate(meetings, rooms) -> tuple[list[Meeting], int]:
    """Return (meetings, rooms) as plain ints, or raise InvalidProblemError saying what is wrong."""
    if not isinstance(meetings, (list, tuple)) or len(meetings) == 0:
        raise InvalidProblemError("invalid problem: meetings must be a non-empty list of [start, end] pairs")
    clean = []
    for i, m in enumerate(meetings):
        if not isinstance(m, (list, tuple)) or len(m) != 2:
            raise InvalidProblemError(f"invalid problem: meeting {i} is {m!r}, expected [start, end]")
        start, end = m
        for v in (start, end):
            if isinstance(v, bool) or not isinstance(v, int):
                raise InvalidProblemError(f"invalid problem: meeting {i} {list(m)!r} has a non-integer time")
        if start >= end:
            raise InvalidProblemError(f"invalid problem: meeting {i} [{start}, {end}] must start before it ends")
        clean.append((start, end))
    if isinstance(rooms, bool) or not isinstance(rooms, int) or rooms < 1:
        raise InvalidProblemError(f"invalid problem: rooms must be an integer >= 1, got {rooms!r}")
    return clean, rooms


def sweep_events(meetings: list[Meeting]) -> list[tuple[int, int, int]]:
    """Events in processing order as (time, delta, running count); ends (-1) before starts (+1)."""
    events = sorted([(s, +1) for s, _ in meetings] + [(e, -1) for _, e in meetings])
    out, current = [], 0
    for time, delta in events:
        current += delta
        out.append((time, delta, current))
    return out


def max_simultaneous(meetings: list[Meeting]) -> int:
    return max((count for _, _, count in sweep_events(meetings)), default=0)


def solve(meetings, rooms) -> str:
    meetings, rooms = validate(meetings, rooms)
    return "YES" if max_simultaneous(meetings) <= rooms else "NO"


def trace(meetings: list[Meeting], rooms: int) -> str:
    """The worked sweep-line trace the learned strategy describes, ending in the answer.

    Each event is written as time, ``+`` (start) or ``-`` (end), then the running count, e.g.
    ``10+2``. Events are comma-separated on their own line, so every number is written exactly as
    it is in the problem text (no leading space): a small model then copies tokens it has seen.
    """
    events = sweep_events(meetings)
    steps = ",".join(f"{t}{'+' if d > 0 else '-'}{c}" for t, d, c in events)
    peak = max(c for _, _, c in events)
    verdict = "YES" if peak <= rooms else "NO"
    relation = "<=" if peak <= rooms else ">"
    return f"Sweep:\n{steps}\nPeak:{peak} {relation} rooms: {rooms}\nAnswer: {verdict}"


def scan(meetings: list[Meeting], rooms: int) -> str:
    """A worked solution that needs no sorting: at each meeting's start time (in the order the
    problem lists them, each time once), the meetings running then (start <= t < end) are copied
    out and counted. The peak of those counts is the most meetings at once, since every overlap
    peaks at some start.

    Every step is a copy or a comparison of two small numbers, which suits a small pretrained
    model better than the sweep's sorted event list (whose order it tends to get wrong).
    """
    lines = []
    for start in _starts(meetings):
        running = [(s, e) for s, e in meetings if s <= start < e]
        lines.append(f"At {start}: {' '.join(f'[{s}-{e}]' for s, e in running)} = {len(running)}")
    peak = max_simultaneous(meetings)
    verdict, relation = _verdict(peak, rooms)
    return "\n".join(lines) + f"\nPeak {peak} {relation} rooms {rooms}\nAnswer: {verdict}"


def check(meetings: list[Meeting], rooms: int) -> str:
    """A worked solution in which every step is local: at each meeting's start time (in the order the
    problem lists them, each time once), every meeting is copied out and marked ``y`` when it runs
    then (start <= t < end) or ``n``, and the ``y`` are counted. The last line writes the peak and
    the rooms before comparing them, so the comparison is of two numbers just written.

    ``scan`` lists only the running meetings, and a small model trained on it leaves out running
    meetings listed later, or writes the comparison before it has copied the rooms; this format
    removes both steps, at about 1.6 times the length.
    """
    return _marked(meetings, rooms, lambda s, t, e: f"{s}-{e}")


def between(meetings: list[Meeting], rooms: int) -> str:
    """``check`` with the time written inside every mark: ``start time end`` then ``y`` when the time
    lies between them (start <= t < end), else ``n``. The decision then rests on three numbers side by
    side, not on the line's time written many tokens before.

    A SmolLM2 student trained on ``check`` got most marks wrong exactly where the time is strictly
    inside a meeting that started earlier (161 of 243 such marks in a 200-problem run); this format
    is about 1.4 times as long as ``check``.
    """
    return _marked(meetings, rooms, lambda s, t, e: f"{s} {t} {e}")


def tally(meetings: list[Meeting], rooms: int) -> str:
    """``between`` with every count kept as it goes: each mark ends in the number of running meetings
    so far (``y1``, ``n1``, ``y2``...), each line in its count and the peak so far (``= 2, peak 3``),
    and the last line copies that peak. Every number is then one step from a number just written.

    A SmolLM2 student trained on ``between`` got the marks mostly right but miscounted the ``y`` of a
    line in 70 of 215 lines and took a wrong peak in 22 of 60 answers (60-problem trial).
    """
    return _counted(meetings, rooms, line_tail=True)


def count(meetings: list[Meeting], rooms: int) -> str:
    """``tally`` without each line's tail (``= 2, peak 3``): a line's last mark already carries its
    count, and the last line takes the peak of those counts.

    The tail costs 11% of a SmolLM2 tally's tokens (206,759 -> 183,414 over 1,200 targets); trained
    on the same 1,200 targets without it, SmolLM2 answered 199 of 200 test problems right (HARD 67 of
    68), as on the full tally (199).
    """
    return _counted(meetings, rooms, line_tail=False)


def _counted(meetings: list[Meeting], rooms: int, line_tail: bool) -> str:
    """At each start time t, every meeting as ``start t end`` then ``y`` (running at t) or ``n`` and
    the running meetings so far; with ``line_tail``, each line ends in its count and the peak so far."""
    lines, peak = [], 0
    for t in _starts(meetings):
        running, marks = 0, []
        for s, e in meetings:
            running += s <= t < e
            marks.append(f"{s} {t} {e}{'y' if s <= t < e else 'n'}{running}")
        peak = max(peak, running)
        tail = f" = {running}, peak {peak}" if line_tail else ""
        lines.append(f"At {t}: {' '.join(marks)}{tail}")
    verdict, relation = _verdict(peak, rooms)
    return "\n".join(lines) + f"\nPeak {peak}, rooms {rooms}: {peak} {relation} {rooms}\nAnswer: {verdict}"


def _marked(meetings: list[Meeting], rooms: int, mark) -> str:
    """At each start time t, every meeting written by ``mark(start, t, end)`` then ``y`` (running at
    t) or ``n``, the ``y`` counted; then the peak and the rooms, and their comparison."""
    lines = []
    for t in _starts(meetings):
        marks = " ".join(f"{mark(s, t, e)}{'y' if s <= t < e else 'n'}" for s, e in meetings)
        running = sum(1 for s, e in meetings if s <= t < e)
        lines.append(f"At {t}: {marks} = {running}")
    peak = max_simultaneous(meetings)
    verdict, relation = _verdict(peak, rooms)
    return "\n".join(lines) + f"\nPeak {peak}, rooms {rooms}: {peak} {relation} {rooms}\nAnswer: {verdict}"


def _starts(meetings: list[Meeting]) -> list[int]:
    """Each meeting's start time, in the order the problem lists them, each time once."""
    return list(dict.fromkeys(start for start, _ in meetings))


def _verdict(peak: int, rooms: int) -> tuple[str, str]:
    """The answer and the relation a worked solution writes between the peak and the rooms."""
    return ("YES", "<=") if peak <= rooms else ("NO", ">")
