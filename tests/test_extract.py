"""The answer extractor: the final verdict with its evidence, held to a labelled set of real LLM text."""

import json
from pathlib import Path

import pytest
from lrl_harness_tasks.meeting_rooms.extract import Verdict, extract_verdict

LABELLED = Path(__file__).parent / "data" / "labelled_responses.jsonl"


@pytest.mark.parametrize("text,expected", [
    ("YES", "YES"),
    ("NO", "NO"),
    ("Yes, all three meetings fit.", "YES"),
    ("no - the peak is 3", "NO"),
    ("Answer: YES", "YES"),
    ("answer: no", "NO"),
    # the original parser's blind spot: the verdict after character 50
    ("Let me check the overlaps. [9-11] and [10-12] overlap, peak 2 with 2 rooms.\n\nConclusion: YES, all "
     "meetings can be scheduled.", "YES"),
    ("Step 1 ... step 4: the peak is 3 but only 2 rooms.\nFinal answer: **NO**", "NO"),
    ("The maximum number of simultaneous meetings is 2. So the answer is YES.", "YES"),
    ("Peak 2 <= 3 rooms. Therefore: **YES**", "YES"),
    ("Sweep:\n9+1,10+2,11-1\nPeak:2 <= rooms: 2\nAnswer: YES", "YES"),
    # no verdict at all: unparsed, never silently NO
    ("", None),
    ("The meetings overlap between 10 and 11.", None),
    ("Sweep: 9+1 10+2 11-1 11+2", None),
    ("there are no conflicts here", None),  # lower-case "no" in prose is not a verdict
    # contradictory final verdicts: unparsed
    ("Answer: YES\n...\nAnswer: NO", None),
    ("Maybe YES or maybe NO.", None),
    # a correction ("Wait, recounting") then an explicit conclusion outweighs the opening word (issue 10;
    # this case read None before the extractor looked for the final verdict)
    ("YES. Wait, recounting: Conclusion: NO", "NO"),
])
def test_extractor(task, text, expected):
    assert task.extract_answer(text) == expected


@pytest.mark.parametrize("text,expected", [
    # the examples, from the original experiment's published file
    ('YES\n\nExplanation: ... 3 simultaneous meetings exceed the 2 available rooms.\n\n'
     'Correction: My initial "YES" was incorrect. The correct answer is NO.', "NO"),
    ("YES\n\nExplanation:\n- Available rooms: 2\n- Simultaneous meetings: 3\n\nSince 3 simultaneous meetings "
     "exceed the 2 available rooms, this scenario is NOT schedulable", "NO"),
    ("YES\n\n- 3 > 2, so this is NOT schedulable\n\nCorrection: I apologize. The answer should actually be NO."
     "\n\nNO\n\nExplanation: ...", "NO"),
    # concluding phrases are verdicts
    ("The peak is 3 and there are 2 rooms, so the meetings cannot be scheduled.", "NO"),
    ("Peak 3 > 2 rooms: impossible.", "NO"),
    ("With a peak of 2 and 3 rooms, all meetings can be scheduled.", "YES"),
    ("Conclusion: Cannot schedule all meetings without conflicts.", "NO"),
    ("No, not all meetings can be scheduled.", "NO"),
    # what decides nothing: a conditional, an indirect question, a question, "no" as a determiner, quotes
    ("If the peak is at most the rooms, answer YES; otherwise, answer NO.\n\nThe answer is yes.", "YES"),
    ("We must determine whether all meetings can be scheduled without conflicts.", None),
    ("Can all meetings be scheduled?", None),
    ("[9-11] and [12-13]: NO OVERLAP\nNo meetings overlap at all.", None),
    ('My first thought was "YES".', None),
    # a final statement that is itself ambiguous
    ("1. Yes, all meetings can be scheduled.\n2. No, not all meetings can be scheduled.", None),
    ("Yes, all meetings cannot be scheduled.", None),
    ("Answer: YES. Since 3 > 2 rooms, the meetings cannot be scheduled.", None),
    # found in the held-out part of the labelled set
    ("Conclusion:\nYES, all meetings can be scheduled.\n- No meetings are completely unschedulable", "YES"),
    ("Therefore, NO, these meetings CANNOT be scheduled.\n\nCorrection: My previous answer was NO, not YES.", "NO"),
    ("3 > 2, so normally this would be impossible\n\nHowever, a meeting ending at T does not conflict with one "
     "starting at T.\n\nTherefore, all meetings CAN be accommodated using the 2 available rooms.", "YES"),
])
def test_final_verdict(text, expected):
    assert extract_verdict(text).answer == expected


def test_verdict_evidence():
    text = "YES\n\nSince 3 > 2 rooms ...\n\nCorrection: My initial \"YES\" was incorrect. The correct answer is NO."
    v = extract_verdict(text)
    assert v == Verdict("NO", "correction", v.span)
    assert text[v.span[0]:v.span[1]] == "correct answer is NO"
    v = extract_verdict("Peak 2 <= 3.\nConclusion:\n**YES**, all meetings can be scheduled.")
    assert v.rule == "answer-marker" and v.span[0] == 13
    assert extract_verdict("Yes").rule == "opening-word"
    assert extract_verdict("no idea") == Verdict(None, "no-verdict", None)
    v = extract_verdict("Answer: YES\nAnswer: NO")
    assert v.answer is None and v.rule == "ambiguous" and v.span == (0, 22)


@pytest.mark.parametrize("text,expected,deciding", [
    # issue 24: YES/NO used for a step of the reasoning, then an explicit final answer
    ("Checking pairs. YES, [9-12] and [10-12] overlap. At 10-11 three meetings run with 2 rooms.\n\nFinal answer: NO",
     "NO", "Final answer: NO"),
    ("Do [9-12] and [10-12] overlap? YES, from 10 to 12.\nPeak 3 > 2 rooms.\n\n**Answer:** NO", "NO", "Answer:** NO"),
    ("[9-12] and [10-12] overlap: YES.\nIs 3 > 2? YES.\nTherefore, the answer is NO.", "NO", "answer is NO"),
    ("Step 1: NO, [10-12] and [12-13] do not overlap (one ends as the other starts).\nPeak 1 <= 2.\n"
     "Final Answer: YES", "YES", "Final Answer: YES"),
    # issue 24: the question restated and answered with a bare Yes/No, then the reason
    ("Can all meetings be scheduled with 2 rooms? No. At 10 three meetings overlap.", "NO", "No"),
    ("**Can all four meetings fit in 2 rooms?**\n\n**No.** Four run at 15.", "NO", "No"),
    ("Are 3 rooms enough?\nYes - the peak is 2.", "YES", "Yes"),
    ("Meetings: [9-12], [11-12]\nAvailable rooms: 2\n\nCan all meetings be scheduled?\nYes, because the peak is 2.",
     "YES", "Yes"),
])
def test_step_answers_and_restated_question(text, expected, deciding):
    v = extract_verdict(text)
    assert v.answer == expected
    assert text[v.span[0]:v.span[1]] == deciding


@pytest.mark.parametrize("text", [
    # a verdict with its reason is not a step: the two verdicts still contradict each other
    "Check: NO, [9-12], [10-12] and [10-11] overlap at 10.\nFinal answer: YES",
    "Check: YES, no two meetings overlap.\nFinal answer: NO",
    "Looking at it: YES, the meetings can be arranged in the 2 rooms.\n\nFinal answer: NO",
    # step answers alone say nothing about where the verdict is
    "Do [9-12] and [10-12] overlap? YES.\nDo [10-12] and [12-13] overlap? NO.",
    # the restated question's answer contradicted by a later final answer
    "Can all meetings be scheduled? No. Three meetings overlap at 10.\nFinal answer: YES",
    # not a bare answer to the task's question
    "Can all meetings be scheduled? No idea.",
    "Can all meetings be scheduled? No way to tell yet.",
    "Can all meetings be scheduled? Yes and no: it depends on the boundary.",
    "Can all meetings be scheduled? No, unless meetings that touch may share a room.",
    "Can all meetings be scheduled? Possibly.",
    "If there were 4 rooms, could all meetings be scheduled? Yes.",
    "Is it impossible to schedule them? Yes.",
    "Is there a conflict at 10? YES.\nIs 3 > 2? YES.",
    # a conditional answer, with or without its alternative
    "Final answer: YES or NO, depending on whether [13-16] meetings can share a room.",
    "Answer YES if the peak is at most the rooms, otherwise NO.",
])
def test_step_and_question_near_misses_stay_unparsed(text):
    assert extract_verdict(text).answer is None


def test_task_keeps_both_entry_points(task):
    assert task.extract_answer("Answer: NO") == "NO"
    assert task.extract_verdict("Answer: NO") == Verdict("NO", "answer-marker", (0, 10))


def _labelled():
    return [json.loads(line) for line in LABELLED.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_labelled_set_is_real_and_sourced():
    rows = _labelled()
    assert len(rows) >= 150
    assert all(r["label"] in ("YES", "NO", None) and r["source"] and r["where"] and r["text"] for r in rows)
    models = {r["model"] for r in rows}
    assert any("Claude" in m for m in models) and any("SmolLM2" in m for m in models)
    # responses written for the set (not model output) say so in their source and model
    written = [r for r in rows if r["source"].startswith("written for this set")]
    assert all(r["model"].startswith("none (written") for r in written)
    assert len(rows) - len(written) >= 150


# Responses labelled with no verdict that the extractor still reads one in, each with the reason. Reading
# them would take the meaning of the words, not their form: they are listed, not special-cased.
KNOWN_MISREADS = {
    "answer 146 of 250": "says 'the answer is YES, indicating a scheduling conflict exists': "
                         "YES in form, NO in meaning",
}


def test_labelled_set():
    """Zero wrong verdicts on the clear responses, at most 2% of them unparsed; responses labelled
    with no verdict stay unparsed (but for the known misreads above)."""
    rows = _labelled()
    clear = [r for r in rows if r["label"] is not None]
    wrong, unparsed, invented = [], [], []
    for r in rows:
        answer = extract_verdict(r["text"]).answer
        if r["label"] is None:
            if answer is not None and not any(r["where"].startswith(k) for k in KNOWN_MISREADS):
                invented.append((r["where"], answer))
        elif answer is None:
            unparsed.append(r["where"])
        elif answer != r["label"]:
            wrong.append((r["where"], r["label"], answer))
    assert wrong == []
    assert len(unparsed) <= 0.02 * len(clear), unparsed
    assert invented == []
