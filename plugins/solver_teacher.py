"""The ``solver`` teacher: the offline default. It is not a language model.

It answers every problem with the task's exact solver (written as the worked sweep-line trace),
writes its journal entries from each batch's actual results, and distils the task's reference
procedure as its strategy. It exercises every stage of the pipeline without an API key; its
accuracy is 100% by construction and says nothing about any language model.
"""

from __future__ import annotations

import time

from lrl_harness import Completion, Option, TeacherRequest, check_options, hookimpl


class SolverTeacher:
    name = "solver"
    model = "exact-solver"
    is_language_model = False

    def __init__(self, task):
        self.task = task

    def cache_identity(self) -> dict:
        return {"teacher": self.name, "model": self.model, "task": self.task.name}

    def info(self) -> dict:
        return {
            "teacher": self.name,
            "model": self.model,
            "is_language_model": False,
            "note": "not a language model: answers with the task's exact solver; its accuracy is 100% "
                    "by construction",
        }

    def complete(self, requests: list[TeacherRequest]) -> list[Completion]:
        return [self._one(r) for r in requests]

    def _one(self, request: TeacherRequest) -> Completion:
        start = time.perf_counter()
        if request.purpose == "solve":
            text = self.task.worked_solution(request.problem)
        elif request.purpose == "journal":
            text = self._journal(request.context)
        elif request.purpose == "distill":
            text = self.task.reference_strategy
        else:
            raise ValueError(f"unknown request purpose {request.purpose!r}")
        return Completion(text=text, latency_s=time.perf_counter() - start)

    @staticmethod
    def _journal(context: dict) -> str:
        records = context.get("records", [])
        correct = sum(1 for r in records if r["correct"])
        yes = sum(1 for r in records if r["expected"] == "YES")
        lines = [f"Batch {context.get('batch', '?')}: {correct}/{len(records)} correct; "
                 f"{yes} feasible, {len(records) - yes} infeasible."]
        tight = [r for r in records if r.get("max_simultaneous") == r.get("rooms")]
        if tight:
            lines.append(f"{len(tight)} problem(s) had a peak exactly equal to the rooms: feasible, because "
                         "a meeting ending at T frees its room for one starting at T.")
        wrong = [r for r in records if not r["correct"]]
        if wrong:
            lines.append("Mistakes: " + "; ".join(r["problem"] for r in wrong[:5]))
        else:
            lines.append("No mistakes: counting the peak with a sweep line (ends before starts) settles "
                         "every case.")
        return "\n".join(lines)


OPTIONS = {
    "max_tokens": Option(int, 1024, "accepted for symmetry with language-model teachers; unused", min=1),
    "prices": Option(str, None, "accepted for symmetry; the solver costs nothing", nullable=True),
}


def make_teacher(task, options: dict | None = None) -> SolverTeacher:
    check_options("teacher solver", OPTIONS, options)
    return SolverTeacher(task)


@hookimpl
def register_teachers(register):
    register("solver", make_teacher, options=OPTIONS,
             description="exact solver (not a language model; the offline default)")
