"""Documents to chunks: the units that are embedded, stored and retrieved.

Sizes are in characters, not tokens: the chunker stays independent of the embedder, and its
output is the same whichever model embeds it. all-MiniLM-L6-v2 truncates at 256 word pieces,
about 1,000 characters of English prose (code and non-Latin text need more pieces per
character), so the default 800-character chunk plus its at most ``CONTEXT_LIMIT``-character
heading line stays under the limit.

A chunk never spans two sections (so never two headings or two pages), and its overlap with
the previous chunk never reaches into another section. Within a section a chunk ends at the
best boundary in its second half: a paragraph, else a sentence or code line, else a line,
else a word; only an unbroken run of ``size`` characters is cut. A fenced code block that fits
is kept whole; one that does not is split between lines.

Ids: a chunk's id is a UUID5 under its document's id of (section headings, page, which
section with those, position within the section, sha256 of ``embed_text``). So the same id
always means the same vector; re-reading unchanged bytes gives the same ids; an edit inside
one section changes only that section's ids (and a renamed heading those under it; a new
title, shown in every ``embed_text``, all). The caller keeps a document's ``content_hash``
and chunk ids: an unchanged hash means nothing to do; otherwise it upserts the new chunks
(embedding only ids it does not hold) and deletes the old ids missing from the new list.
"""

from __future__ import annotations

import hashlib
import json
import re
import uuid
from bisect import bisect_left, bisect_right
from collections import Counter
from dataclasses import dataclass
from typing import Any

from agent_server.knowledge.documents.model import Document, Section

DEFAULT_SIZE = 800
DEFAULT_OVERLAP = 100
CONTEXT_LIMIT = 150  # characters of "Title > Heading > Subheading" before a chunk's text

# Break priorities: a chunk ends at the highest one available.
_WORD, _LINE, _SENTENCE, _PARAGRAPH = 1, 2, 3, 4
_PATTERNS = {
    _PARAGRAPH: re.compile(r"\n[ \t]*\n(?:[ \t]*\n)*"),
    # . ! ? … then closing quotes or brackets and a space; or a CJK full stop, ! or ?
    _SENTENCE: re.compile("[.!?\u2026][\"'\u201d\u2019\u00bb)\\]]*\\s+|[\u3002\uff01\uff1f]\\s*"),
    _LINE: re.compile(r"\n(?:[ \t]*\n)*"),
    _WORD: re.compile(r"\s+"),
}
_FENCE_OPEN = re.compile(r"^ {0,3}(`{3,}|~{3,})([^\n]*)$", re.M)
_NEWLINE = re.compile(r"\n")


@dataclass(frozen=True, slots=True)
class Chunk:
    """One piece of one section. ``text`` is what is shown and cited, and is exactly
    ``document.sections[section].text[start:end]``; ``embed_text`` is what is embedded: the
    title and heading path, a blank line, then ``text``. ``index`` orders a document's chunks.
    """

    id: str
    document_id: str
    index: int
    text: str
    embed_text: str
    source: str
    title: str
    headings: tuple[str, ...]
    page: int | None
    section: int
    start: int
    end: int

    @property
    def metadata(self) -> dict[str, Any]:
        """JSON-ready fields to store with the vector (the text is the caller's to add)."""
        return {
            "document_id": self.document_id,
            "source": self.source,
            "title": self.title,
            "headings": list(self.headings),
            "page": self.page,
            "chunk_index": self.index,
            "section": self.section,
            "start": self.start,
            "end": self.end,
        }


def chunk(
    document: Document, *, size: int = DEFAULT_SIZE, overlap: int = DEFAULT_OVERLAP
) -> list[Chunk]:
    """Split ``document`` into chunks of at most ``size`` characters of ``text``, consecutive
    chunks of a section sharing up to ``overlap`` characters. Needs ``size > overlap >= 0``."""
    _check(size, overlap)
    chunks: list[Chunk] = []
    seen: Counter[tuple[tuple[str, ...], int | None]] = Counter()
    for number, section in enumerate(document.sections):
        key = (section.headings, section.page)
        occurrence = seen[key]
        seen[key] += 1
        context = _context(document.title, section.headings)
        for ordinal, (start, end) in enumerate(split(section.text, size=size, overlap=overlap)):
            text = section.text[start:end]
            embed_text = f"{context}\n\n{text}" if context else text
            chunks.append(
                Chunk(
                    id=_chunk_id(document.id, section, occurrence, ordinal, embed_text),
                    document_id=document.id,
                    index=len(chunks),
                    text=text,
                    embed_text=embed_text,
                    source=document.source,
                    title=document.title,
                    headings=section.headings,
                    page=section.page,
                    section=number,
                    start=start,
                    end=end,
                )
            )
    return chunks


def split(text: str, *, size: int, overlap: int) -> list[tuple[int, int]]:
    """``(start, end)`` spans of ``text``: each at most ``size`` long, neither starting nor
    ending with whitespace (a line's indentation excepted), together covering every
    non-whitespace character, each starting at most ``overlap`` before the previous end."""
    _check(size, overlap)
    limit = len(text.rstrip())
    breaks = _breaks(text)
    spans: list[tuple[int, int]] = []
    start = _trim(text, 0, limit)[0]
    floor = _skip_space(text, start)  # the first character the chunk must hold
    while start < limit:
        if start + size <= floor:  # a run of whitespace longer than the step: jump it
            start = floor
        end = limit if limit - start <= size else _end(breaks, start, size, floor)
        spans.append(_trim(text, start, end))
        if end >= limit:
            break
        floor = _skip_space(text, spans[-1][1])
        start = _next_start(breaks, spans[-1][0], end, overlap)
    return spans


def _check(size: int, overlap: int) -> None:
    if not 0 <= overlap < size:
        raise ValueError(f"need size > overlap >= 0, got size={size}, overlap={overlap}")


def _breaks(text: str) -> dict[int, list[int]]:
    """Positions a chunk may end at (and the next start at), sorted, by priority.

    Inside a code fence only line ends count (as sentences do in prose), then words.
    """
    breaks = {
        priority: [match.end() for match in pattern.finditer(text)]
        for priority, pattern in _PATTERNS.items()
    }
    fences = _fences(text)
    if not fences:
        return breaks
    for priority in (_PARAGRAPH, _SENTENCE, _LINE):
        breaks[priority] = [b for b in breaks[priority] if not _inside(fences, b)]
    for fence_start, fence_end in fences:
        breaks[_PARAGRAPH].extend((fence_start, fence_end))
        breaks[_SENTENCE].extend(
            match.end() for match in _NEWLINE.finditer(text, fence_start, fence_end - 1)
        )
    for priority in (_PARAGRAPH, _SENTENCE):
        breaks[priority].sort()
    return breaks


def _fences(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each fenced code block: opening line start to closing line end."""
    if "```" not in text and "~~~" not in text:
        return []
    fences: list[tuple[int, int]] = []
    position = 0
    while opening := _FENCE_OPEN.search(text, position):
        run = opening.group(1)
        if run[0] == "`" and "`" in opening.group(2):  # inline code, not a fence
            position = opening.end() + 1
            continue
        closing = re.compile(rf"^ {{0,3}}{re.escape(run[0])}{{{len(run)},}}[ \t]*$", re.M)
        found = closing.search(text, opening.end())
        end = len(text) if found is None else found.end()
        fences.append((opening.start(), end))
        position = end + 1
    return fences


def _inside(fences: list[tuple[int, int]], position: int) -> bool:
    at = bisect_right(fences, position, key=lambda fence: fence[0]) - 1
    return at >= 0 and fences[at][0] < position < fences[at][1]


def _end(breaks: dict[int, list[int]], start: int, size: int, floor: int) -> int:
    """Where a chunk starting at ``start`` ends: the furthest best break within ``size``,
    preferring one that fills at least half the chunk; always past ``floor`` (progress)."""
    high = start + size
    for low in (max(start + size // 2, floor), max(start, floor)):
        for priority in (_PARAGRAPH, _SENTENCE, _LINE, _WORD):
            positions = breaks[priority]
            at = bisect_right(positions, high) - 1
            if at >= 0 and positions[at] > low:
                return positions[at]
    return high


def _next_start(breaks: dict[int, list[int]], start: int, end: int, overlap: int) -> int:
    """Where the chunk after ``[start, end)`` starts: the earliest sentence (or line,
    paragraph) start in the last ``overlap`` characters, else the earliest word start."""
    if overlap == 0:
        return end
    low = max(end - overlap, start + 1)
    candidates = [
        positions[bisect_left(positions, low)]
        for priority, positions in breaks.items()
        if priority >= _LINE and bisect_left(positions, low) < len(positions)
    ]
    clean = min((b for b in candidates if b < end), default=end)
    if end - clean >= overlap // 2:
        return clean
    words = breaks[_WORD]
    at = bisect_left(words, low)
    return min(clean, words[at]) if at < len(words) and words[at] < end else clean


def _skip_space(text: str, position: int) -> int:
    while position < len(text) and text[position].isspace():
        position += 1
    return position


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while end > start and text[end - 1].isspace():
        end -= 1
    while start < end and text[start].isspace():
        if text[start] != "\n" and (start == 0 or text[start - 1] == "\n"):
            line_end = text.find("\n", start, end)
            if text[start : end if line_end < 0 else line_end].strip():
                break  # the indentation of a line with text: code keeps it
        start += 1
    return start, end


def _context(title: str, headings: tuple[str, ...]) -> str:
    parts = list(headings) if headings and headings[0] == title else [title, *headings]
    context = " > ".join(part for part in parts if part)
    return context if len(context) <= CONTEXT_LIMIT else "…" + context[1 - CONTEXT_LIMIT :]


def _chunk_id(
    document_id: str, section: Section, occurrence: int, ordinal: int, embed_text: str
) -> str:
    digest = hashlib.sha256(embed_text.encode()).hexdigest()
    key = json.dumps(
        [list(section.headings), section.page, occurrence, ordinal, digest], ensure_ascii=False
    )
    return str(uuid.uuid5(uuid.UUID(document_id), key))
