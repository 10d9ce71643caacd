"""HTML to sections with the standard library's parser: ``h1`` to ``h6`` open sections.

Page furniture that is never the document's content (scripts, styles, navigation, footers) is
dropped. Block elements end paragraphs, list items and ``<br>`` end lines, ``<pre>`` keeps its
whitespace; everywhere else whitespace collapses as a browser would render it.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

from agent_server.knowledge.documents.model import Extracted, Section

_SKIPPED = frozenset(
    {"script", "style", "nav", "footer", "noscript", "template", "svg", "head", "iframe"}
)
_VOID = frozenset(
    {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "wbr"}
)
_HEADINGS = {f"h{level}": level for level in range(1, 7)}
_BLOCKS = frozenset(
    {
        "address", "article", "aside", "blockquote", "body", "caption", "dd", "details", "div",
        "dl", "fieldset", "figcaption", "figure", "form", "header", "hr", "html", "main", "ol",
        "p", "pre", "section", "summary", "table", "tbody", "tfoot", "thead", "ul",
    }
)  # fmt: skip
_LINES = frozenset({"br", "dt", "li", "tr"})
_CELLS = frozenset({"td", "th"})
_SPACES = re.compile(r"[ \t\n\f\r]+")


def read_html(text: str) -> Extracted:
    """Sections under their heading paths; the title is ``<title>``, else the first ``h1``."""
    parser = _Parser()
    parser.feed(text)
    parser.close()
    parser.end_section()
    return Extracted(parser.title or parser.first_h1, tuple(parser.sections))


class _Parser(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[Section] = []
        self.title: str | None = None
        self.first_h1: str | None = None
        self._path: list[tuple[int, str]] = []
        self._skipping: list[str] = []  # open skipped elements, innermost last
        self._pre = 0
        self._title_text: list[str] | None = None
        self._heading: tuple[int, list[str]] | None = None
        self._out: list[str] = []
        self._pending = 0  # newlines owed before the next text: 1 line break, 2 paragraph

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title" and self.title is None:
            self._title_text = []
        if tag in _VOID and tag != "br" and tag != "hr":
            return
        if tag == "body":  # ends a <head> whose end tag was left out
            self._skipping.clear()
        if self._skipping or tag in _SKIPPED or any(name == "hidden" for name, _ in attrs):
            if tag not in _VOID:
                self._skipping.append(tag)
            return
        if tag in _HEADINGS:
            self.end_section()
            self._heading = (_HEADINGS[tag], [])
        elif tag == "pre":
            self._pre += 1
            self._break(2)
        elif tag in _BLOCKS:
            self._break(2)
        elif tag in _LINES:
            self._break(1)
            if tag == "li":
                self._write("- ")
        elif tag in _CELLS and self._out and not self._pending and self._out[-1] != "\n":
            self._write(" | ")

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.handle_starttag(tag, attrs)
        if tag not in _VOID:
            self.handle_endtag(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag == "title" and self._title_text is not None:
            self.title = " ".join("".join(self._title_text).split()) or None
            self._title_text = None
        if self._skipping:
            if tag in self._skipping:  # close it and anything left open inside it
                del self._skipping[len(self._skipping) - 1 - self._skipping[::-1].index(tag) :]
            return
        if tag in _HEADINGS and self._heading is not None:
            level, parts = self._heading
            self._heading = None
            text = " ".join("".join(parts).split())
            while self._path and self._path[-1][0] >= level:
                self._path.pop()
            if text:
                self._path.append((level, text))
                if level == 1 and self.first_h1 is None:
                    self.first_h1 = text
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self._break(2)
        elif tag in _BLOCKS:
            self._break(2)
        elif tag in _LINES and tag != "br":
            self._break(1)

    def handle_data(self, data: str) -> None:
        if self._title_text is not None:
            self._title_text.append(data)
            return
        if self._skipping:
            return
        if self._heading is not None:
            self._heading[1].append(data)
            return
        if not self._pre:
            data = _SPACES.sub(" ", data)
            if self._pending or not self._out or self._out[-1].endswith("\n"):
                data = data.lstrip(" ")
        if data:
            self._write(data)

    def end_section(self) -> None:
        text = "".join(self._out)
        text = "\n".join(line.rstrip() for line in text.split("\n")).strip("\n")
        if text.strip():
            self.sections.append(Section(tuple(heading for _, heading in self._path), text))
        self._out = []
        self._pending = 0

    def _break(self, newlines: int) -> None:
        if self._out:
            self._pending = max(self._pending, newlines)

    def _write(self, text: str) -> None:
        if self._pending:
            self._out.append("\n" * self._pending)
            self._pending = 0
        self._out.append(text)
