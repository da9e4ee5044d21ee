"""The one answer extractor: find the final YES/NO verdict, or report that there is none.

Rules, in order:
1. Explicit verdicts: "Answer: YES", "Final answer - no", "Conclusion: **YES**", "verdict is NO" ...
   and a verdict that opens the response ("YES, all meetings fit"). If these all agree, that is
   the answer; if they disagree the response is contradictory and unparsed.
2. Otherwise, upper-case YES/NO standing alone as words anywhere ("... so: **NO**"). All must agree.
3. Otherwise unparsed (None). Unparsed is its own outcome: it is never counted as NO.
"""

from __future__ import annotations

import re

_MARKER = re.compile(
    r"\b(?:final\s+answer|answer|conclusion|verdict|result)\b\s*(?:is|would\s+be|:|-|=|—)*\s*"
    r"[*_`\"'(\[]*\s*(yes|no)\b",
    re.IGNORECASE,
)
_LEADING = re.compile(r"^[\s*_`\"'#>(\[]*(yes|no)\b", re.IGNORECASE)
_STANDALONE = re.compile(r"(?<![A-Za-z])(YES|NO)(?![A-Za-z])")


def extract_answer(text: str | None) -> str | None:
    """Return "YES", "NO", or None when the response has no verdict or contradicts itself."""
    if not text:
        return None
    explicit = [m.group(1).upper() for m in _MARKER.finditer(text)]
    leading = _LEADING.match(text)
    if leading:
        explicit.append(leading.group(1).upper())
    if explicit:
        return explicit[0] if len(set(explicit)) == 1 else None
    loose = {m.group(1) for m in _STANDALONE.finditer(text)}
    if len(loose) == 1:
        return loose.pop()
    return None
