"""Ends a small model's answer cleanly when it starts to loop.

SmolLM2-135M answered "hello" with "a lightweight, lightweight, lightweight protocol…" until
its token limit. The guard holds back the last few words of the stream; when a run of
``SPAN`` words comes round for the ``MAX_REPEATS + 1``-th time, the held-back words (that
run among them) are dropped and the answer ends, so what was sent holds no run of ``SPAN``
words more than ``MAX_REPEATS`` times.
"""

from __future__ import annotations

import re
from collections import Counter, deque

SPAN = 4
MAX_REPEATS = 2
_WORD = re.compile(r"\S+\s*")
_NORMAL = re.compile(r"[^\w]+")


class RepetitionGuard:
    def __init__(self, span: int = SPAN, max_repeats: int = MAX_REPEATS) -> None:
        self._span = span
        self._max = max_repeats
        self._pending = ""  # text not yet split into finished words
        self._held: deque[str] = deque()  # finished words, with their trailing space
        self._recent: deque[str] = deque(maxlen=span)
        self._seen: Counter[tuple[str, ...]] = Counter()
        self.looping = False

    def feed(self, text: str) -> str:
        """What of the stream so far may be sent; "" once looping."""
        if self.looping:
            return ""
        self._pending += text
        words = _WORD.findall(self._pending)
        # The last piece may be a word still growing: keep it pending.
        if words and not words[-1][-1].isspace():
            self._pending = words.pop()
        else:
            self._pending = ""
        out = []
        for word in words:
            if self._count(word):
                self.looping = True
                self._held.clear()
                self._pending = ""
                return "".join(out)
            self._held.append(word)
            if len(self._held) > self._span:
                out.append(self._held.popleft())
        return "".join(out)

    def flush(self) -> str:
        """The rest, at the end of the answer."""
        if self.looping:
            return ""
        rest = "".join(self._held) + self._pending
        self._held.clear()
        self._pending = ""
        return rest

    def _count(self, word: str) -> bool:
        """Whether ``word`` completes a run seen too often already."""
        key = _NORMAL.sub("", word.lower())
        if not key:
            return False
        self._recent.append(key)
        if len(self._recent) < self._span:
            return False
        run = tuple(self._recent)
        self._seen[run] += 1
        return self._seen[run] > self._max
