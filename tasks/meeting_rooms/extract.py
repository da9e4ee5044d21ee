"""The one answer extractor: find the final YES/NO verdict the way a careful reader does, or say there is none.

Every candidate verdict in the text is a *mention* with a rule and a character span:

- ``correction``: "the correct answer is NO", "the answer should actually be NO";
- ``answer-marker``: "Answer: YES", "Final answer - no", "Conclusion:\\n**YES**", "the answer is no";
- ``verdict-word``: YES or NO in capitals standing alone ("... so: **NO**", "YES, all meetings fit");
- ``concluding-phrase``: "cannot be scheduled", "not schedulable", "impossible", "all meetings can be
  scheduled", "the meetings fit", "feasible" ...;
- ``question-answer``: a bare Yes or No that answers the task's question restated just before it
  ("Can all meetings be scheduled with 2 rooms? No. At 10 three meetings overlap ...");
- ``opening-word``: a verdict that opens the response ("Yes, ...", "NO").

Mentions that decide nothing are dropped first: those in a conditional or an indirect question
("If the peak is at most the rooms, answer YES; otherwise, answer NO", "whether all meetings can be
scheduled", "NO, unless ..."), in a question, in quotes ('My initial "YES" was wrong'), "no" used as
a determiner ("NO overlap", "No meetings overlap", "No idea"), and the answer to a question other than
the task's ("Do [9-12] and [10-12] overlap? YES", "Is 3 > 2? YES").

When the response gives its verdict in a marked form (a correction, an answer marker or a
question-answer), a bare YES or NO that affirms an overlap ("YES, [9-12] and [10-12] overlap") or denies
one ("NO, [10-12] and [12-13] do not overlap") is a step of the reasoning and is dropped too. So "YES,
[9-12] and [10-12] overlap. ... Final answer: NO" reads NO. Without a marked verdict such a word is left
as it is: nothing else says where the verdict is.

Then the final verdict is chosen:

1. The last correction decides, unless a later explicit verdict contradicts it.
2. Otherwise the last explicit verdict (answer-marker, question-answer or verdict-word) decides;
   failing those, the last concluding phrase; failing those, the opening word. So a later conclusion outweighs an
   opening word ("YES ... this scenario is NOT schedulable" reads NO).
3. Two explicit verdicts (or two phrases) that disagree make the response ambiguous, unless a
   correction cue ("wait", "actually", "correction", "I apologize", "recounting" ...) stands between
   them; then the later one decides. An explicit verdict contradicted by a later concluding phrase,
   or a final sentence that holds both answers, is ambiguous too.

Ambiguous and verdict-less responses are unparsed (``None``): unparsed is its own outcome, never NO.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

OPEN = r"[*_`\"'(\[]*"
CLOSE = r"[*_`\"')\]]*"


@dataclass(frozen=True)
class Verdict:
    """What the extractor read: the answer (None = unparsed), the rule that decided, and the
    character span ``(start, end)`` of the deciding text (None when there is none)."""

    answer: str | None
    rule: str
    span: tuple[int, int] | None = None


@dataclass(frozen=True)
class _Mention:
    answer: str
    rule: str
    start: int  # of the whole deciding text
    end: int
    word: int  # position of the verdict word itself


_CORRECTION = re.compile(
    r"\b(?:(?:correct|right|actual|real|true)\s+answer\s+(?:is|would\s+be|should\s+be)"
    r"|answer\s+(?:should|would)\s+(?:actually\s+)?be|(?:is|be)\s+actually)"
    rf"\s*[:\-—]?\s*{OPEN}\s*(yes|no)\b",
    re.IGNORECASE,
)
_MARKER = re.compile(
    r"\b(?:final\s+answer|answer|conclusion|verdict|result|decision)\b\s*(?:is|would\s+be|:|-|=|—|\s)*"
    rf"{OPEN}\s*(yes|no)\b",
    re.IGNORECASE,
)
_VERDICT_WORD = re.compile(r"(?<![A-Za-z0-9'\"“‘])(YES|NO)(?![A-Za-z0-9'\"”’])")
_OPENING = re.compile(rf"^[\s#>]*{OPEN}\s*(yes|no)\b", re.IGNORECASE)
# A bare answer: Yes or No closed by punctuation or the line's end ("No.", "**Yes**", "No - at 10 ..."),
# not the start of a longer phrase ("Yes and no", "No way to tell").
_BARE = re.compile(
    rf"\b(yes|no)\b(?={CLOSE}(?:\s*[.,!:;—–-]|[ \t]*(?:\n|$)|\s+(?:because|since|as)\b))"
    r"(?![^.\n]{0,3}\b(?:and|or|but)\s+(?:yes|no)\b)",
    re.IGNORECASE,
)
# Just after a question: "?", closing markup, blank lines, a list or quote marker, opening markup.
_AFTER_QUESTION = re.compile(rf"\?{CLOSE}\s*(?:[-*>#]+[ \t]+)?{OPEN}[ \t]*$")
# The task's own question asks whether the meetings fit; another asks about a step (an overlap, a count).
_TASK_QUESTION = re.compile(r"\b(?:schedul\w*|accommodat\w*|fit|enough|suffic\w*|feasible)\b", re.IGNORECASE)
_NEGATION = re.compile(r"\b(?:not|never|cannot)\b|n't\b", re.IGNORECASE)
# What a step speaks of, and a denial of it; a verdict speaks of rooms or says what fits.
_OVERLAP = re.compile(
    r"\b(?:overlap\w*|conflict\w*|clash\w*|intersect\w*|coincid\w*|simultaneous\w*|concurrent\w*)", re.IGNORECASE
)
_DENIAL = re.compile(r"\b(?:not|no|never|without)\b|n't\b", re.IGNORECASE)
_ROOMS = re.compile(r"\brooms?\b", re.IGNORECASE)

_NO_PHRASES = re.compile(
    r"\b(?:can\s*not|can't|could\s*not|couldn't|won't|will\s+not|unable\s+to)\s+(?:all\s+)?(?:be\s+)?"
    r"(?:scheduled|schedule|accommodated|accommodate|fit)\b"
    r"|\bnot\s+all\s+(?:of\s+)?(?:the\s+)?(?:\w+\s+)?meetings\s+(?:can|could|will)\s+(?:be\s+)?"
    r"(?:scheduled|accommodated|fit)\b"
    r"|\b(?:not|never)\s+(?:be\s+)?(?:schedulable|solvable|feasible|possible)\b"
    r"|\b(?:do|does|did)\s*n[o']t\s+(?:all\s+)?fit\b"
    r"|\b(?:impossible|unsolvable|unschedulable|infeasible|not\s+enough\s+rooms|insufficient\s+rooms)\b",
    re.IGNORECASE,
)
_YES_PHRASES = re.compile(
    r"(?<!\bthat\s)(?<!\bwhich\s)\b(?:can|could|will)\s+(?:all\s+)?(?:be\s+)?(?:scheduled|accommodated)\b"
    r"|\b(?:schedulable|solvable|feasible|possible)\b"
    r"|\b(?:meetings|they)\s+(?:all\s+)?fit\b",
    re.IGNORECASE,
)

# Words after which "no" is a conjunction-like answer, not a determiner ("No because the peak is 3").
_AFTER_NO = {"because", "since", "as", "so", "not", "it", "they", "there", "we", "with", "due", "given"}
_NEXT_WORD = re.compile(r"[ \t]+([A-Za-z]+)")
_NEGATED_WORD = re.compile(r"\bnot\s+[*_`\"'(\[]*$", re.IGNORECASE)  # "NO, not YES": a rejected option
# "No meetings are unschedulable": a negative phrase whose subject is negated says nothing against scheduling
_NEGATED_SUBJECT = re.compile(r"\bno\s+\w+(?:\s+\w+)?\s+(?:is|are|was|were|remains?)\s+(?:\w+\s+)?$", re.IGNORECASE)
_HEDGE = re.compile(r"\b(?:if|whether|unless|otherwise|suppose|supposing)\b", re.IGNORECASE)
# An answer whose condition follows it, alone or with its alternative: "NO, unless ...", "YES if the peak is
# at most 2", "YES or NO, depending on ...", "No, it depends".
_CONDITION_AFTER = re.compile(
    rf"{CLOSE}(?:\s+(?:or|and)\s+{OPEN}(?:yes|no){CLOSE})?[\s,;:—–-]*"
    r"(?:if|unless|provided|assuming|depending|it\s+depends)\b",
    re.IGNORECASE,
)
_CLAUSE_END = re.compile(r"\n|[.;!?](?=\s|$)")
_SENTENCE_END = re.compile(r"\n|[.!?](?=\s|$)")
_CUE = re.compile(
    r"\b(?:wait|actually|however|correction|corrected|apologi[sz]e|mistake|incorrect|wrong|recount\w*|re-?check\w*"
    r"|re-?evaluat\w*|reconsider\w*|on\s+second\s+thought)\b",
    re.IGNORECASE,
)

_PRIORITY = {
    "correction": 0,
    "answer-marker": 1,
    "question-answer": 2,
    "opening-word": 3,
    "verdict-word": 4,
    "concluding-phrase": 5,
}
_EXPLICIT = ("answer-marker", "question-answer", "verdict-word")
_MARKED = ("correction", "answer-marker", "question-answer")


def extract_verdict(text: str | None) -> Verdict:
    """The final verdict of ``text`` with its evidence (see the module docstring for the rules)."""
    if not text:
        return Verdict(None, "no-verdict")
    mentions = _mentions(text)
    if any(m.rule in _MARKED for m in mentions):
        mentions = [m for m in mentions if not _step_answer(text, m)]
    if not mentions:
        return Verdict(None, "no-verdict")

    corrections = [m for m in mentions if m.rule == "correction"]
    if corrections:
        final = corrections[-1]
        against = [m for m in mentions if m.start >= final.end and m.rule in _EXPLICIT and m.answer != final.answer]
        return _ambiguous(final, against[-1]) if against else _verdict(final)

    explicit = [m for m in mentions if m.rule in _EXPLICIT]
    phrases = [m for m in mentions if m.rule == "concluding-phrase"]
    pool = explicit or phrases or [m for m in mentions if m.rule == "opening-word"]
    final = pool[-1]
    earlier = [m for m in pool if m.answer != final.answer]
    if earlier and not _CUE.search(text, earlier[-1].end, final.start):
        return _ambiguous(earlier[-1], final)
    if explicit:
        later = [m for m in phrases if m.start >= final.end and m.answer != final.answer]
        if later:
            return _ambiguous(final, later[-1])
    lo, hi = _bounds(text, final.word, _SENTENCE_END)
    clash = [m for m in mentions if lo <= m.word < hi and m.answer != final.answer]
    if clash:
        return _ambiguous(clash[0], final)
    return _verdict(final)


def extract_answer(text: str | None) -> str | None:
    """Return "YES", "NO", or None when the response has no verdict or its final verdict is ambiguous."""
    return extract_verdict(text).answer


def _verdict(m: _Mention) -> Verdict:
    return Verdict(m.answer, m.rule, (m.start, m.end))


def _ambiguous(a: _Mention, b: _Mention) -> Verdict:
    return Verdict(None, "ambiguous", (min(a.start, b.start), max(a.end, b.end)))


def _mentions(text: str) -> list[_Mention]:
    found: dict[int, _Mention] = {}

    def add(answer: str, rule: str, start: int, end: int, word: int) -> None:
        if not _counts(text, answer, rule, word):
            return
        old = found.get(word)
        if old is None or _PRIORITY[rule] < _PRIORITY[old.rule]:
            found[word] = _Mention(answer.upper(), rule, start, end, word)

    for m in _CORRECTION.finditer(text):
        add(m.group(1), "correction", m.start(), m.end(), m.start(1))
    for m in _MARKER.finditer(text):
        add(m.group(1), "answer-marker", m.start(), m.end(), m.start(1))
    for m in _BARE.finditer(text):
        question = _question_before(text, m.start())
        if question is not None and _is_task_question(question):
            add(m.group(1), "question-answer", m.start(), m.end(), m.start())
    opening = _OPENING.match(text)
    if opening:
        add(opening.group(1), "opening-word", opening.start(1), opening.end(1), opening.start(1))
    for m in _VERDICT_WORD.finditer(text):
        add(m.group(1), "verdict-word", m.start(), m.end(), m.start())
    no_spans = []
    for m in _NO_PHRASES.finditer(text):
        no_spans.append((m.start(), m.end()))
        add("NO", "concluding-phrase", m.start(), m.end(), m.start())
    for m in _YES_PHRASES.finditer(text):
        if not any(a <= m.start() < b for a, b in no_spans):
            add("YES", "concluding-phrase", m.start(), m.end(), m.start())
    return sorted(found.values(), key=lambda m: m.word)


def _counts(text: str, answer: str, rule: str, word: int) -> bool:
    """False for a mention that decides nothing: "no" as a determiner, a mention in a conditional, an
    indirect question or a question, or the answer to a question other than the task's."""
    if rule != "concluding-phrase" and answer.lower() == "no":
        nxt = _NEXT_WORD.match(text, word + 2)
        if nxt and nxt.group(1).lower() not in _AFTER_NO:
            return False
    if rule != "concluding-phrase" and _CONDITION_AFTER.match(text, word + len(answer)):
        return False
    if rule == "verdict-word":
        question = _question_before(text, word)
        if question is not None and not _is_task_question(question):
            return False
    lo, hi = _bounds(text, word, _CLAUSE_END)
    if _HEDGE.search(text, lo, word):
        return False
    if rule == "concluding-phrase" and answer == "NO" and _NEGATED_SUBJECT.search(text, lo, word):
        return False
    if rule != "concluding-phrase" and _NEGATED_WORD.search(text, lo, word):
        return False
    return not text[lo:hi + 1].rstrip().endswith("?")


def _question_before(text: str, pos: int) -> str | None:
    """The question that the text at ``pos`` directly answers (its sentence, without the "?"), or None."""
    after = _AFTER_QUESTION.search(text, max(0, pos - 80), pos)  # only markup and blank lines can stand between
    if after is None:
        return None
    lo, _ = _bounds(text, after.start(), _SENTENCE_END)
    return text[lo:after.start()]


def _is_task_question(question: str) -> bool:
    """True for the task's question restated ("Can all meetings be scheduled with 2 rooms?", "Are 2 rooms
    enough?"). A negated or conditional question ("Is it impossible ...?", "If we had 3 rooms, would they
    fit?") is not: its Yes or No would not be the verdict as it reads."""
    return bool(
        _TASK_QUESTION.search(question)
        and not _NEGATION.search(question)
        and not _NO_PHRASES.search(question)
        and not _HEDGE.search(question)
    )


def _step_answer(text: str, m: _Mention) -> bool:
    """True for a bare YES/NO whose sentence affirms an overlap ("YES, [9-12] and [10-12] overlap",
    "[9-12] and [10-12] overlap: YES") or denies one ("NO, [10-12] and [12-13] do not overlap"): it answers
    a step of the reasoning, not the task's question. A verdict given with its reason reads the other way
    round ("NO, three meetings overlap at 10", "YES, no two meetings overlap") or speaks of rooms or of
    what fits, so it stays."""
    if m.rule not in ("verdict-word", "opening-word"):
        return False
    lo, hi = _bounds(text, m.word, _SENTENCE_END)
    sentence = text[lo:m.word] + " " + text[m.word + len(m.answer):hi]
    overlap = _OVERLAP.search(sentence)
    if overlap is None or _ROOMS.search(sentence) or _NO_PHRASES.search(sentence) or _YES_PHRASES.search(sentence):
        return False
    denied = _DENIAL.search(sentence, 0, overlap.start()) is not None
    return denied == (m.answer == "NO")


def _bounds(text: str, pos: int, ends: re.Pattern) -> tuple[int, int]:
    """Start and end of the clause (or sentence) holding ``pos``."""
    lo = 0
    for m in ends.finditer(text, 0, pos):
        lo = m.end()
    nxt = ends.search(text, pos)
    return lo, (nxt.start() if nxt else len(text))
