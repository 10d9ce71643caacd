"""What of an answer is said aloud: the words, not the citation marks (``[2]``) nor the
list of sources the runtime appends; the thread keeps the whole answer."""

from __future__ import annotations

import re

CITATION = re.compile(r"\s*\[\d+\]")
SOURCES = "\n\nSources:"
LOOKAHEAD = len(SOURCES)  # what may still turn into a citation or the sources heading


class SpokenText:
    """Feed an answer's deltas; get the speakable text, in order, each part once."""

    def __init__(self) -> None:
        self._text = ""
        self._said = ""
        self._ended = False

    def feed(self, delta: str) -> str:
        self._text += delta
        return self._take(final=False)

    def end(self) -> str:
        return self._take(final=True)

    def _take(self, final: bool) -> str:
        if self._ended:
            return ""
        text = self._text
        cut = text.find(SOURCES)
        if cut >= 0:
            text, final = text[:cut], True
        if not final:
            tail = len(text) - LOOKAHEAD
            held = [i for i in (text.find("[", tail), text.find("\n", tail)) if i >= 0]
            text = text[: min(held)] if held else text
        speakable = CITATION.sub("", text)
        if not final:
            speakable = speakable.rstrip()  # a space may still precede a citation
        self._ended = final
        if not speakable.startswith(self._said):
            return ""  # cannot happen with the rules above; never repeat words
        new, self._said = speakable[len(self._said) :], speakable
        return new
