"""The meeting-room task: can these integer-time meetings fit in N rooms?"""

from __future__ import annotations

import re

from lrl_harness import InvalidProblemError, LrlError, Problem, hookimpl, sha256_text

from . import generator, prompts
from .extract import Verdict, extract_answer, extract_verdict
from .solver import between, check, count, max_simultaneous, scan, solve, tally, trace, validate

REFERENCE_STRATEGY = """Sweep-line procedure:
1. Turn every meeting [s-e] into a start event at s and an end event at e.
2. Sort the events by time; at equal times take ends before starts, because a meeting ending at T
   frees its room for a meeting starting at T.
3. Walk the events keeping a running count: +1 at a start, -1 at an end. Write each event as the
   time, + or -, and the new count (e.g. 10+2).
4. The peak is the largest count reached.
5. If the peak is at most the number of rooms, answer YES; otherwise answer NO."""

_DESCRIPTION = re.compile(
    r"^\s*(?P<meetings>(?:\[\s*-?\d+\s*-\s*-?\d+\s*\]\s*,?\s*)+)\|\s*(?P<rooms>-?\d+)\s*rooms?\s*$")
_MEETING = re.compile(r"\[\s*(-?\d+)\s*-\s*(-?\d+)\s*\]")


class MeetingRoomsTask:
    name = "meeting-rooms"
    labels = ("YES", "NO")
    prompt_version = prompts.PROMPT_VERSION
    initial_strategy = prompts.INITIAL_STRATEGY
    reference_strategy = REFERENCE_STRATEGY
    presets = tuple(generator.SPLITS)

    # --- problems ---------------------------------------------------------------------------

    def splits(self, preset: str) -> dict:
        if preset not in generator.SPLITS:
            raise LrlError(f"unknown preset {preset!r} for task {self.name}; available: "
                           f"{', '.join(generator.SPLITS)}")
        return generator.SPLITS[preset]

    def problems(self, preset: str, split: str, n: int | None = None, seed: int | None = None,
                 exclude: list[Problem] = ()) -> list[Problem]:
        splits = self.splits(preset)
        if split not in splits:
            raise LrlError(f"unknown split {split!r}; available: {', '.join(splits)}")
        default_n, default_seed = splits[split]
        n = default_n if n is None else n
        seed = default_seed if seed is None else seed
        if n < 1:
            raise LrlError(f"the number of problems must be at least 1, got {n}")
        if preset == "seed":
            return generator.original(n, seed)
        keys = {self.key(p) for p in exclude}
        return generator.balanced(n, seed, exclude=keys)

    def max_problems(self, preset: str, split: str, exclude: list[Problem] = (), draw: str = "balanced") -> int:
        """The largest ``n`` that ``problems(preset, split)`` draws (for ``split="transfer"``:
        ``transfer_examples`` with ``exclude`` and ``draw``): the distinct problems of its generator
        (meetings start at whole hours 9 to 15 and last 1 to 3 hours, so they are finitely many), fewer
        where the balanced draw would need an answer of a difficulty that ``exclude`` leaves none of."""
        self.splits(preset)
        original = preset == "seed" and (split != "transfer" or draw == "original")
        if original:
            return generator.most_problems("seed")
        return generator.most_problems("balanced", {self.key(p) for p in exclude})

    @staticmethod
    def key(problem: Problem) -> tuple:
        return (tuple(tuple(m) for m in problem.data["meetings"]), problem.data["rooms"])

    def problem_from_dict(self, d: dict) -> Problem:
        """Build and validate a problem from ``{"meetings": [[s, e], ...], "rooms": n, ...}``."""
        if not isinstance(d, dict) or "meetings" not in d or "rooms" not in d:
            raise InvalidProblemError("invalid problem: expected an object with 'meetings' and 'rooms'")
        meetings, rooms = validate(d["meetings"], d["rooms"])
        peak = max_simultaneous(meetings)
        expected = "YES" if peak <= rooms else "NO"
        if d.get("expected") not in (None, expected):
            raise InvalidProblemError(
                f"invalid problem {d.get('id', '?')}: expected {d['expected']!r} but the solver says {expected}")
        return Problem(
            id=str(d.get("id", "problem")),
            difficulty=str(d.get("difficulty", "UNKNOWN")).upper(),
            data={"meetings": [list(m) for m in meetings], "rooms": rooms, "max_simultaneous": peak},
            expected=expected,
        )

    def describe(self, problem: Problem) -> str:
        """The original experiment's problem string: ``[10-13], [12-14] | 3 rooms``."""
        return f"{prompts.meetings_text(problem.data['meetings'])} | {problem.data['rooms']} rooms"

    def parse_description(self, text: str, **fields) -> Problem:
        m = _DESCRIPTION.match(text or "")
        if not m:
            raise InvalidProblemError(f"invalid problem string {text!r}: expected '[s-e], [s-e] | N rooms'")
        meetings = [[int(a), int(b)] for a, b in _MEETING.findall(m.group("meetings"))]
        return self.problem_from_dict({"meetings": meetings, "rooms": int(m.group("rooms")), **fields})

    def to_json(self, problem: Problem) -> dict:
        return {"id": problem.id, "difficulty": problem.difficulty, "meetings": problem.data["meetings"],
                "rooms": problem.data["rooms"], "max_simultaneous": problem.data["max_simultaneous"],
                "expected": problem.expected}

    def solve(self, problem: Problem) -> str:
        return solve(problem.data["meetings"], problem.data["rooms"])

    # --- prompts ----------------------------------------------------------------------------

    def teacher_prompt(self, problem: Problem, strategy: str | None = None) -> str:
        return prompts.solve_prompt(problem.data["meetings"], problem.data["rooms"],
                                    strategy or self.initial_strategy)

    def journal_prompt(self, batch: int, records: list[dict]) -> str:
        return prompts.journal_prompt(batch, records)

    def distill_prompt(self, journal_tail: str, strategy: str) -> str:
        return prompts.distill_prompt(journal_tail, strategy)

    def student_prompt(self, problem: Problem, strategy: str | None = None) -> str:
        return prompts.student_prompt(problem.data["meetings"], problem.data["rooms"], strategy)

    def prompt_hashes(self) -> dict:
        return {name: sha256_text(text) for name, text in prompts.TEMPLATES.items()}

    def extract_answer(self, text: str | None) -> str | None:
        return extract_answer(text)

    def extract_verdict(self, text: str | None) -> Verdict:
        """The answer with its evidence: the rule that decided and the span of the deciding text."""
        return extract_verdict(text)

    # --- what a non-LLM teacher and the transfer data need ----------------------------------

    transfer_formats = ("label", "trace", "scan", "check", "between", "tally", "count")
    transfer_format_help = {  # shown by ``lrl run --help``
        "label": "strategy+problem -> answer (the original)",
        "trace": "the worked sweep-line trace, then the answer",
        "scan": "the meetings running at each start time, counted, then the answer (no sorting)",
        "check": "every meeting marked running or not at each start time, counted",
        "between": "check with each mark written as start, time, end",
        "tally": "between with running counts and the peak so far",
        "count": "tally without each line's count and peak (the small recipe's)",
    }

    def worked_solution(self, problem: Problem, fmt: str = "trace") -> str:
        """A worked solution of one problem, as text ending in the answer: ``trace`` applies the
        reference (sweep-line) strategy; ``scan`` counts the meetings running at each start time;
        ``check`` marks every meeting running or not at each start time; ``between`` writes each
        mark as start, time, end before its ``y`` or ``n``; ``tally`` keeps the running count in every
        mark and the peak so far on every line; ``count`` is ``tally`` without each line's count and peak."""
        write = {"scan": scan, "check": check, "between": between, "tally": tally,
                 "count": count}.get(fmt, trace)
        return write(problem.data["meetings"], problem.data["rooms"])

    def check_solution(self, problem: Problem, text: str) -> bool:
        """A worked solution is right when its verdict matches the solver's."""
        return extract_answer(text) == self.solve(problem)

    transfer_draws = ("balanced", "original")

    def transfer_examples(self, strategy: str | None, fmt: str, n: int, seed: int, preset: str,
                          exclude: list[Problem] = (), draw: str = "balanced") -> list[dict]:
        """Training pairs built by code from the strategy; every label comes from the solver.

        ``draw="balanced"`` (every preset's default): as many YES as NO per difficulty, half of each
        side tight, never equal to a problem of ``exclude`` (the test split). ``draw="original"``:
        the preset's own generator; for ``seed`` that is the original experiment's draw, with its
        88% YES and its repeats of test problems (nothing excluded)."""
        if fmt not in self.transfer_formats:
            raise LrlError(f"unknown transfer format {fmt!r}; available: {', '.join(self.transfer_formats)}")
        if draw not in self.transfer_draws:
            raise LrlError(f"unknown transfer draw {draw!r}; available: {', '.join(self.transfer_draws)}")
        if draw == "original" and preset == "seed":
            problems = generator.original(n, seed)
        else:
            problems = generator.balanced(n, seed, exclude={self.key(p) for p in exclude})
        examples = []
        for p in problems:
            answer = self.solve(p)
            target = f"Answer: {answer}" if fmt == "label" else self.worked_solution(p, fmt)
            assert extract_answer(target) == answer
            examples.append({"id": p.id, "difficulty": p.difficulty, "expected": answer, "data": p.data,
                             "prompt": self.student_prompt(p, strategy), "target": target})
        return examples

    def corpus(self, n: int = 3000, seed: int = 7) -> list[str]:
        """Text in this task's language, for training a tokenizer (no labels needed)."""
        texts = [prompts.GROUND_RULES, prompts.INITIAL_STRATEGY, REFERENCE_STRATEGY]
        for p in generator.balanced(n, seed) + generator.original(n // 3, seed + 1):
            texts.append(self.student_prompt(p, None) + self.worked_solution(p))
            texts.append(self.describe(p))
        return texts


@hookimpl
def register_tasks(register):
    register("meeting-rooms", MeetingRoomsTask, description="Can integer-time meetings fit in N rooms?")
