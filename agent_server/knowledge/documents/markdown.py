"""Markdown to sections: ATX (``#``) and setext headings, fenced code kept verbatim.

A line-based reader, not a full CommonMark parser: it needs only where headings are, and it
must never take a ``#`` comment inside a code fence for one. Inline markup stays in the text
(the embedder copes; stripping it would lose code); headings lose links and backticks.
"""

from __future__ import annotations

import re

from agent_server.knowledge.documents.model import Extracted, Section

_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")
_ATX = re.compile(r"^ {0,3}(#{1,6})(?:[ \t]+(.*?))?(?:[ \t]+#+)?[ \t]*$")
_SETEXT = re.compile(r"^ {0,3}(=+|-+)[ \t]*$")
_THEMATIC_BREAK = re.compile(r"^ {0,3}([-*_])(?:[ \t]*\1){2,}[ \t]*$")
# A paragraph starting like this is a list, quote or indented code: no setext heading.
_NOT_SETEXT_TEXT = re.compile(r"^(?: {4}|\t| {0,3}(?:[-+*>]|\d{1,9}[.)])(?:[ \t]|$))")
_FRONT_MATTER_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.M)
_LINK = re.compile(r"!?\[([^\]]*)\]\([^)]*\)")
_EMPHASIS = re.compile(r"`+|\*\*|__")


def read_markdown(text: str) -> Extracted:
    """Sections under their heading paths; the title is the first level-1 heading."""
    text, front_title = _split_front_matter(text)
    reader = _Reader()
    for line in text.split("\n"):
        reader.feed(line)
    reader.flush()
    return Extracted(reader.title or front_title, tuple(reader.sections))


class _Reader:
    def __init__(self) -> None:
        self.sections: list[Section] = []
        self.title: str | None = None
        self._path: list[tuple[int, str]] = []  # (level, heading), outermost first
        self._body: list[str] = []
        self._paragraph = 0  # lines at the end of _body that form the open paragraph
        self._fence: re.Pattern[str] | None = None  # what closes the open code fence

    def feed(self, line: str) -> None:
        if self._fence is not None:
            self._body.append(line)
            if self._fence.fullmatch(line):
                self._fence = None
            return
        fence = _FENCE_OPEN.match(line)
        if fence and not (fence.group(1)[0] == "`" and "`" in fence.group(2)):  # inline code
            run = fence.group(1)
            self._fence = re.compile(rf" {{0,3}}{re.escape(run[0])}{{{len(run)},}}[ \t]*")
            self._body.append(line)
            self._paragraph = 0
            return
        if heading := _ATX.match(line):
            self._heading(len(heading.group(1)), heading.group(2) or "")
            return
        if self._paragraph and (underline := _SETEXT.match(line)):
            lines = self._body[-self._paragraph :]
            if not _NOT_SETEXT_TEXT.match(lines[0]):
                del self._body[-self._paragraph :]
                level = 1 if underline.group(1)[0] == "=" else 2
                self._heading(level, " ".join(part.strip() for part in lines))
                return
        if not line.strip() or (not self._paragraph and _THEMATIC_BREAK.match(line)):
            self._paragraph = 0
            if self._body and self._body[-1]:  # one blank line ends a paragraph; more add nothing
                self._body.append("")
        else:
            self._paragraph += 1
            self._body.append(line)

    def flush(self) -> None:
        lines = self._body
        while lines and not lines[-1].strip():
            lines.pop()
        start = next((i for i, line in enumerate(lines) if line.strip()), len(lines))
        if start < len(lines):
            body = "\n".join(line.rstrip() for line in lines[start:])
            self.sections.append(Section(tuple(text for _, text in self._path), body))
        self._body = []
        self._paragraph = 0

    def _heading(self, level: int, raw: str) -> None:
        self.flush()
        text = _plain(raw)
        while self._path and self._path[-1][0] >= level:
            self._path.pop()
        if text:
            self._path.append((level, text))
            if level == 1 and self.title is None:
                self.title = text


def _plain(heading: str) -> str:
    return " ".join(_EMPHASIS.sub("", _LINK.sub(r"\1", heading)).split())


def _split_front_matter(text: str) -> tuple[str, str | None]:
    """Drop a leading YAML front matter block; keep its ``title:`` if it has one."""
    if not text.startswith("---\n"):
        return text, None
    end = re.search(r"^(?:---|\.\.\.)[ \t]*$", text[4:], re.M)
    if end is None:
        return text, None
    block = text[4 : 4 + end.start()]
    title = _FRONT_MATTER_TITLE.search(block)
    value = title.group(1).strip("\"'").strip() if title else None
    return text[4 + end.end() :], value or None
