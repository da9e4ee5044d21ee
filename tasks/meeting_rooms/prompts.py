"""Every prompt of the meeting-room task, in one place, versioned.

``PROMPT_VERSION`` changes whenever any text here changes; the results record it and the hash of
each rendered template, so two runs with different prompts are never compared by accident.
"""

from __future__ import annotations

PROMPT_VERSION = "meeting-rooms/2"

GROUND_RULES = """Problem rules (nothing else exists):
- Each meeting is an integer time range [start-end], e.g. [9-11] runs from 9:00 to 11:00.
- Rooms are interchangeable and only counted.
- A meeting that ends at time T does not conflict with one that starts at time T."""

INITIAL_STRATEGY = """To decide whether the meetings fit:
1. Find which meetings overlap in time.
2. Count the largest number of meetings running at the same moment.
3. If that number is at most the number of rooms, answer YES; otherwise NO.
Remember: a meeting ending at T and one starting at T do not overlap."""

SOLVE_TEMPLATE = """{rules}

Current strategy:
{strategy}

Problem:
Meetings: {meetings}
Available rooms: {rooms}

Can all meetings be scheduled without conflicts? Explain briefly (overlaps, the largest number of
simultaneous meetings, the comparison with the rooms), then finish with a last line that reads
exactly "Answer: YES" or "Answer: NO"."""

JOURNAL_TEMPLATE = """{rules}

Batch {batch} results: {correct}/{total} correct ({accuracy:.0%}).

Examples:
{examples}

Write a short journal entry: which reasoning produced correct answers, what went wrong and why,
which edge cases need care, and how the strategy should change. Speak only of time ranges and
room counts."""

DISTILL_TEMPLATE = """{rules}

Current strategy:
{strategy}

Recent journal entries:
{journal}

Distil the journal into an improved strategy: a short numbered procedure that anyone can follow
step by step to decide YES or NO, covering how to detect overlaps, how to count simultaneous
meetings, and the boundary case. Reply with the procedure only."""

STUDENT_TEMPLATE = """{strategy_block}Problem:
Meetings: {meetings}
Available rooms: {rooms}

Can all meetings be scheduled?
"""

TEMPLATES = {
    "solve": SOLVE_TEMPLATE,
    "journal": JOURNAL_TEMPLATE,
    "distill": DISTILL_TEMPLATE,
    "student": STUDENT_TEMPLATE,
    "initial_strategy": INITIAL_STRATEGY,
    "rules": GROUND_RULES,
}


def meetings_text(meetings) -> str:
    return ", ".join(f"[{s}-{e}]" for s, e in meetings)


def solve_prompt(meetings, rooms: int, strategy: str) -> str:
    return SOLVE_TEMPLATE.format(rules=GROUND_RULES, strategy=strategy, meetings=meetings_text(meetings),
                                 rooms=rooms)


def journal_prompt(batch: int, records: list[dict], max_examples: int = 5) -> str:
    correct = sum(1 for r in records if r["correct"])
    examples = "\n".join(
        f"- Problem: {r['problem']}\n  Expected: {r['expected']}, Got: {r['answer'] or 'UNPARSED'}, "
        f"Correct: {r['correct']}, Peak: {r.get('max_simultaneous', '?')}"
        for r in records[:max_examples]
    )
    return JOURNAL_TEMPLATE.format(rules=GROUND_RULES, batch=batch, correct=correct, total=len(records),
                                   accuracy=correct / len(records) if records else 0.0, examples=examples)


def distill_prompt(journal_tail: str, strategy: str) -> str:
    return DISTILL_TEMPLATE.format(rules=GROUND_RULES, strategy=strategy, journal=journal_tail)


def student_prompt(meetings, rooms: int, strategy: str | None) -> str:
    block = f"Strategy:\n{strategy}\n\n" if strategy else ""
    return STUDENT_TEMPLATE.format(strategy_block=block, meetings=meetings_text(meetings), rooms=rooms)
