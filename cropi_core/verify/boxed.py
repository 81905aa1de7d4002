"""Find the final answer a model wrote inside `\\boxed{...}` (also `\\fbox{...}`, `\\boxed 5`)."""

from __future__ import annotations

_MARKERS = ("\\boxed", "\\fbox")


def extract_boxed(text: str) -> str | None:
    """Content of the LAST `\\boxed{...}` in `text` (nested braces allowed), stripped; None if absent.

    An unclosed last box (`\\boxed{12` at the end of a truncated response) counts as absent.
    `\\boxed 5` (space form, used by some solutions) yields "5".
    """
    start = max(text.rfind(m) for m in _MARKERS)
    while start >= 0:
        found = _content_at(text, start)
        if found is not None:
            return found
        # the last marker is malformed (e.g. truncated): try the one before it
        start = max(text.rfind(m, 0, start) for m in _MARKERS)
    return None


def _content_at(text: str, start: int) -> str | None:
    marker = next(m for m in _MARKERS if text.startswith(m, start))
    i = start + len(marker)
    if i < len(text) and text[i] == " ":  # "\boxed 5": the rest of the token up to a space or '$'
        j = i + 1
        while j < len(text) and text[j] not in " $\n":
            j += 1
        content = text[i + 1 : j].strip()
        return content or None
    if i >= len(text) or text[i] != "{":
        return None
    depth = 0
    for j in range(i, len(text)):
        c = text[j]
        if c == "{":
            depth += 1
        elif c == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1 : j].strip()
    return None
