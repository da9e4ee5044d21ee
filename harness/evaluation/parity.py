"""Do two engines give the same student? Same prompt token ids first, then per-problem answers and
texts, each engine's honest accuracy, and an exact McNemar test on the paired outcomes.

A prompt tokenised differently by two backends makes every later figure meaningless, so that check
fails fast and names the first differing position and both tokens.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lrl_harness.api.contract import Completion, GenerationSettings, Problem, sha256_text
from lrl_harness.api.errors import LrlError, TokenMismatchError
from lrl_harness.evaluation.ask import ask, make_records


def first_difference(a: Sequence[int], b: Sequence[int]) -> int | None:
    """The first index where ``a`` and ``b`` differ (a length difference counts), or None."""
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def check_prompt_tokens(backends: dict, prompts: Sequence[str], problems: Sequence[Problem],
                        reference: str) -> dict:
    """Raise TokenMismatchError at the first prompt a backend tokenises differently from ``reference``.

    Returns, per backend, whether it was checked (a backend without ``tokenize`` cannot be)."""
    ref = backends[reference]
    checked = {name: hasattr(b, "tokenize") for name, b in backends.items()}
    if not checked[reference]:
        return dict.fromkeys(backends, False)
    others = [n for n in backends if n != reference and checked[n]]
    if not others:
        return checked
    for problem, prompt in zip(problems, prompts, strict=True):
        want = list(ref.tokenize(prompt))
        for name in others:
            got = list(backends[name].tokenize(prompt))
            pos = first_difference(want, got)
            if pos is not None:
                a = want[pos] if pos < len(want) else "end of prompt"
                b = got[pos] if pos < len(got) else "end of prompt"
                raise TokenMismatchError(
                    f"prompt token ids differ for problem {problem.id}: {reference} and {name} first differ "
                    f"at position {pos} ({reference}: {a}, {name}: {b}; lengths {len(want)} and {len(got)})")
    return checked


def check_parity(backends: dict, prompts: Sequence[str], problems: Sequence[Problem], task,
                 settings: GenerationSettings | None = None, *, reference: str | None = None,
                 progress: Callable[[str, int], None] | None = None, examples: int = 3,
                 answered: dict[str, list[Completion]] | None = None) -> dict:
    """Compare every backend with ``reference`` (default: the first) on the same rendered prompts.

    ``answered`` holds completions a backend already gave for exactly these prompts and settings
    (the pipeline's lora stage ran the reference model just before): they are used instead of
    generating again, and the report says so. The backend is still loaded, for the token check."""
    from lrl_harness.evaluation.statistics import paired_comparison, score_block

    if not backends:
        raise LrlError("parity needs at least one backend")
    if len(prompts) != len(problems) or not prompts:
        raise LrlError(f"parity needs one prompt per problem and at least one ({len(prompts)} prompts, "
                       f"{len(problems)} problems)")
    settings = settings or GenerationSettings()
    reference = reference or next(iter(backends))
    if reference not in backends:
        raise LrlError(f"unknown reference backend {reference!r}; given: {', '.join(backends)}")
    checked = check_prompt_tokens(backends, prompts, problems, reference)
    runs, report = {}, {}
    for name, backend in backends.items():
        done = (lambda n, _name=name: progress(_name, n)) if progress else None
        reused = name in (answered or {})
        if reused:
            completions, elapsed = answered[name], None
            records = make_records(task, problems, prompts, completions)
            if done:
                done(len(prompts))
        else:
            [call] = ask(backend, task, problems, prompts, settings, progress=done)
            completions, records, elapsed = call.completions, call.records, call.wall_s
        runs[name] = records
        block = score_block(records)
        block.pop("recall", None)
        report[name] = {
            **block,
            "elapsed_s": None if elapsed is None else round(elapsed, 3),
            "prompt_tokens": sum(c.prompt_tokens for c in completions),
            "completion_tokens": sum(c.completion_tokens for c in completions),
            "mean_latency_s": round(sum(c.latency_s for c in completions) / len(completions), 6),
            "prompt_tokens_checked": checked[name],
            "info": backend.info(),
        }
        if reused:
            report[name]["answers_from"] = "the run's lora stage (same model, prompts and settings)"
    comparisons = {}
    for name in backends:
        if name == reference:
            continue
        ref_runs, other = runs[reference], runs[name]
        paired = paired_comparison(ref_runs, other)
        same_text = [a["response"] == b["response"] for a, b in zip(ref_runs, other, strict=True)]
        differing = [
            {"problem_id": a["problem_id"], reference: a["response"], name: b["response"]}
            for a, b, same in zip(ref_runs, other, same_text, strict=True) if not same][:examples]
        comparisons[name] = {
            "paired": paired["paired"],
            "answer_agreement": paired["answer_agreement"],
            "answers_agreeing": paired["agreements"],
            "text_agreement": sum(same_text) / len(same_text),
            "texts_identical": sum(same_text),
            f"only_{reference}_correct": paired["only_a_correct"],
            f"only_{name}_correct": paired["only_b_correct"],
            "mcnemar_p": paired["mcnemar_p"],
            "examples": differing,
        }
    return {
        "reference": reference,
        "problems": len(problems),
        "prompts_sha256": sha256_text("\n\x00".join(prompts)),
        "settings": settings.to_dict(),
        "backends": report,
        "comparisons": comparisons,
    }


# --- sources --------------------------------------------------------------------------------------


