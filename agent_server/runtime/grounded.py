"""Answers the runtime writes itself from tool results, under the guided policy.

A small model handed the right passage still wrote "The document also contains a list of
documents…" until its token limit. Here a knowledge answer is taken from the passages: the
sentences that share the most (and the rarest) words with the question, each cited by the
number of its passage, with the sources listed below. When no sentence covers enough of the
question the answer says so instead of guessing. Calculator and clock results become one
plain sentence. ``bench/answer_quality.py`` measures this against the model's own answers.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson

from agent_server.models.base import ChatMessage, ChatRequest
from agent_server.runtime.routing import Route, format_number
from agent_server.runtime.tools import is_error_result

DONT_KNOW = "I don't know from the documents: nothing in the knowledge base answers that."
# Share of the question's weighted words a sentence must hold to be an answer.
MIN_COVERAGE = 0.6
# Or its cosine with the question (all-MiniLM-L6-v2; unrelated sentences measure < 0.25)
# and some of its words.
MIN_SIMILARITY = 0.25
MIN_SHARED = 0.1
WORDS_WEIGHT = 1.0  # a sentence's score: cosine + WORDS_WEIGHT * share of the question's words
# "How do I…", "Which variable…": a sentence naming a command, setting or file (in code
# quotes) is likelier the answer than one about the same words in general.
CODE_BONUS = 0.15
HEADING_WEIGHT = 0.2
SECOND_SHARE = 0.8  # another sentence joins when it scores this share of the best
MAX_SENTENCES = 3
MAX_ANSWER_WORDS = 70

_WORD = re.compile(r"[a-z0-9][a-z0-9_]*(?:[-'][a-z0-9_]+)*")
_STOP_WORDS = """a about above after again all also am an and any are as at be been before being
    below between both but by can could did do does doing done down during each either else ever
    few for from further get gets got had has have having he her here hers him his how i if
    in into is it its itself just let like me might more most must my myself need no nor not
    now of off on once one only or other our out over own please same shall she should show so
    some such tell than that the their them then there these they this those through to too
    under until up us use used using very want was way we were what when where whether which
    while who whom why will with would you your yours citadel"""
_STOP = frozenset(_STOP_WORDS.split())
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[A-Z`\"(\[])")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_EMPHASIS = re.compile(r"\*\*|__")
_TABLE_RULE = re.compile(r"^\|?\s*:?-{3,}")
_PRACTICAL = re.compile(r"\s*(?:how|which|what|where)\b", re.IGNORECASE)
_PAGE_LINK = re.compile(r"\[[^\]]+\]\([^)]*\.md[^)]*\)")


@dataclass(frozen=True, slots=True)
class Passage:
    number: int  # its place in the search result, from 1: what the answer cites
    source: str
    title: str
    text: str
    heading: str = ""  # the section the text starts in


@dataclass(frozen=True, slots=True)
class _Unit:
    passage: Passage
    position: int
    text: str
    stems: frozenset[str]  # of the text and its heading
    in_context: str  # "heading: text", what its meaning is measured on
    heading_stems: frozenset[str]


async def written_answer(route: Route, result: str, similarity: Similarity | None) -> str:
    """The answer to a routed question, from its tool's result."""
    if route.intent == "arithmetic":
        return calculation_answer(result)
    if route.intent == "time":
        return time_answer(result)
    return await knowledge_answer(route.question, result, similarity, route.said)


ABILITIES = (
    "I answer questions from the documents in my knowledge base, citing the passages I use, "
    "do arithmetic and tell the time."
)
_SMALL_TALK_REPLIES = {
    "greeting": f"Hello! {ABILITIES} What would you like to know?",
    "thanks": "You're welcome!",
    "farewell": "Goodbye!",
    "wellbeing": "I'm well, thank you. What would you like to know?",
    "identity": f"I'm Citadel's assistant. {ABILITIES}",
    "abilities": f"{ABILITIES} Try: What is 17 * 23?",
    "acknowledgement": "Glad to help. Anything else?",
}


def small_talk_reply(kind: str, said: str) -> str:
    """The reply to a formula of small talk; a "good morning" is answered in kind."""
    reply = _SMALL_TALK_REPLIES[kind]
    opening = re.match(r"\s*good (morning|afternoon|evening|day)\b", said, re.IGNORECASE)
    if kind == "greeting" and opening:
        return f"Good {opening[1].lower()}!" + reply.removeprefix("Hello!")
    return reply


PASSAGE_INSTRUCTIONS = (
    "Answer the question in one or two short sentences, using only the numbered passages. "
    "Cite the passage you use as [1] or [2]. If the passages do not answer it, say: "
    "I don't know from the documents."
)
MAX_PASSAGES = 3
MAX_PASSAGE_CHARS = 500


def passage_request(question: str, result: str) -> ChatRequest:
    """A request for the model to answer from the search result's passages, numbered."""
    passages = parse_hits(result)[:MAX_PASSAGES]
    numbered = "\n\n".join(
        f"[{p.number}] ({p.source}) {p.text[:MAX_PASSAGE_CHARS]}" for p in passages
    )
    return ChatRequest(
        [
            ChatMessage("system", PASSAGE_INSTRUCTIONS),
            ChatMessage("user", f"Passages:\n\n{numbered}\n\nQuestion: {question}"),
        ],
        tool_choice="none",
        temperature=0,
    )


Similarity = Callable[[str, Sequence[str]], Awaitable[Sequence[float]]]


async def knowledge_answer(
    question: str, result: str, similarity: Similarity | None, said: str = ""
) -> str:
    """The answer to ``question`` from a ``search_knowledge_base`` result (its JSON).

    Each sentence is scored by the share of the question's words it holds (its section
    heading's included), by whether its heading is the question's topic and, with
    ``similarity`` (the embedder's cosine), by how close it is in meaning to what was
    ``said`` (this turn's words; ``question`` may include those of the question a follow-up
    refers to). The best sentences answer, unless even the best is far from the question.
    """
    if is_error_result(result):
        return f"I could not search the knowledge base: {orjson.loads(result)['error']}."
    units = [unit for passage in parse_hits(result) for unit in _units(passage)]
    asked = _stems(said or question)
    if not units or not asked:
        return DONT_KNOW
    # A follow-up's own words count fully, those of the question it refers to by half.
    weights = dict.fromkeys(_stems(question) - asked, 0.5) | dict.fromkeys(asked, 1.0)
    total = sum(weights.values())
    coverage = [_covered(unit, weights) / total for unit in units]
    meaning: Sequence[float] = [0.0] * len(units)
    if similarity is not None:
        with contextlib.suppress(Exception):  # the embedder is down: words alone
            meaning = await similarity(said or question, [unit.in_context for unit in units])
    practical = _PRACTICAL.match(said or question) is not None
    scores = [
        c * WORDS_WEIGHT
        + m
        + (CODE_BONUS if practical and "`" in unit.text else 0.0)
        + HEADING_WEIGHT * _on_topic(unit, asked)
        for c, m, unit in zip(coverage, meaning, units, strict=True)
    ]
    order = sorted(range(len(units)), key=lambda i: (-scores[i], units[i].passage.number))
    best = order[0]
    if not _relevant(coverage[best], meaning[best], similarity is not None):
        return DONT_KNOW
    chosen = [units[best]]
    for index in order[1:]:
        if len(chosen) == MAX_SENTENCES or scores[index] < scores[best] * SECOND_SHARE:
            break
        # From passages not quoted yet: another part of the docs, not the next sentence.
        if _fits(chosen, units[index]) and all(
            unit.passage.number != units[index].passage.number for unit in chosen
        ):
            chosen.append(units[index])
    chosen.sort(key=lambda u: (u.passage.number, u.position))
    body = " ".join(f"{unit.text} [{unit.passage.number}]" for unit in chosen)
    cited = sorted({unit.passage.number: unit.passage for unit in chosen}.items())
    sources = "\n".join(
        f"[{number}] {passage.title or passage.source} ({passage.source})"
        for number, passage in cited
    )
    return f"{body}\n\nSources:\n{sources}"


def _relevant(coverage: float, meaning: float, semantic: bool) -> bool:
    """Close in meaning and sharing some of the question's words, or sharing most of them:
    "What is Citadel's share price?" is close in meaning to any sentence naming Citadel."""
    if semantic and meaning >= MIN_SIMILARITY and coverage >= MIN_SHARED:
        return True
    return coverage >= MIN_COVERAGE


def parse_hits(result: str) -> list[Passage]:
    try:
        hits = orjson.loads(result).get("hits") or []
    except (orjson.JSONDecodeError, AttributeError):
        return []
    return [
        Passage(
            number,
            str(hit.get("source", "")),
            str(hit.get("title", "")),
            hit["snippet"],
            str((hit.get("headings") or [""])[-1]),
        )
        for number, hit in enumerate(hits, 1)
        if isinstance(hit, dict) and isinstance(hit.get("snippet"), str)
    ]


def _units(passage: Passage) -> list[_Unit]:
    """The passage's sentences, list items and table rows, each with the heading it sits
    under; a code block joins the sentence that introduces it (``…line: `the command```)."""
    pieces: list[tuple[str, str]] = []  # (heading, text)
    # A section's heading says what its sentences are about; the page title, under which
    # everything is, would only add the same words to all of them.
    heading = "" if passage.heading == passage.title else passage.heading
    paragraph: list[str] = []

    def end_paragraph() -> None:
        pieces.extend((heading, sentence) for sentence in _sentences(" ".join(paragraph)))
        paragraph.clear()

    lines = iter(passage.text.removesuffix("…").splitlines())
    for raw in lines:
        line = raw.strip()
        if line.startswith("```"):
            end_paragraph()
            code = []
            for inner in lines:
                if inner.strip().startswith("```"):
                    break
                code.append(inner.strip())
            command = "; ".join(c for c in code if c)
            if command:
                intro = pieces.pop()[1] if pieces and pieces[-1][1].endswith(":") else ""
                pieces.append((heading, f"{intro} `{command}`".strip()))
        elif line.startswith("#"):
            end_paragraph()
            heading = line.lstrip("#").strip()
        elif _TABLE_RULE.match(line):
            end_paragraph()
            if pieces and pieces[-1][1].endswith("|"):  # the table's header row
                pieces.pop()
        elif line.startswith("|") or (" | " in line and line.endswith("|")):
            # A table row (the chunk may start inside one, after its first "|").
            end_paragraph()
            cells = [cell.strip() for cell in line.strip("|").split("|") if cell.strip()]
            if cells and not _PAGE_LINK.fullmatch(cells[0]):  # a table of contents row
                pieces.append((heading, _table_row(cells) + "|"))
        elif not line:
            end_paragraph()
        elif line.startswith(("- ", "* ")) or re.match(r"\d+\. ", line):
            end_paragraph()
            paragraph.append(line.split(" ", 1)[1] if " " in line else "")
        else:
            paragraph.append(line)
    end_paragraph()
    units = []
    for position, (under, piece) in enumerate(pieces):
        text = _EMPHASIS.sub("", _LINK.sub(r"\1", piece.removesuffix("|"))).strip()
        # Cut off by the snippet's end, begun before the chunk's start, or a stub.
        if text.endswith("…") or text.count("`") % 2 or len(text.split()) < 4:
            continue
        heading = frozenset(_stems(under))
        in_context = f"{under}: {text}" if under else text
        units.append(_Unit(passage, position, text, heading | _stems(text), in_context, heading))
    return units


def _sentences(paragraph: str) -> list[str]:
    return [s.strip() for s in _SENTENCE_END.split(paragraph.strip()) if s.strip()]


def _table_row(cells: list[str]) -> str:
    if len(cells) >= 3:
        return f"{cells[0]}: {cells[1]} (default {cells[2]})."
    return ": ".join(cells) + "."


def _stems(text: str) -> set[str]:
    words = (word.removesuffix("'s") for word in _WORD.findall(text.lower()))
    return {_stem(word) for word in words if word not in _STOP}


def _stem(word: str) -> str:
    """Crude, but enough to match "configured" with "configuration", "drops" with
    "dropped": a common suffix off, a doubled last consonant undone, then 6 letters."""
    for suffix in ("ing", "ed", "es", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            word = word[: -len(suffix)]
            if len(word) > 3 and word[-1] == word[-2] and word[-1] not in "aeiouls":
                word = word[:-1]
            break
    return word[:6]


def _on_topic(unit: _Unit, asked: set[str]) -> float:
    """The share of its section heading's words the question holds: a sentence under
    "Adding documents" is about "How do I add documents?" more than one that names both."""
    heading = unit.heading_stems
    return len(heading & asked) / len(heading) if heading else 0.0


def _covered(unit: _Unit, weights: dict[str, float]) -> float:
    return sum(weight for stem, weight in weights.items() if stem in unit.stems)


def _fits(chosen: list[_Unit], unit: _Unit) -> bool:
    return sum(len(u.text.split()) for u in chosen) + len(unit.text.split()) <= MAX_ANSWER_WORDS


# Tool results as sentences ---------------------------------------------------------------------


def calculation_answer(result: str) -> str:
    """``17 x 23 = 391.`` (with a multiplication sign) from a ``calculate`` result."""
    try:
        value: Any = orjson.loads(result)
        expression, number = value["expression"], value["result"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        return _tool_error(result)
    shown = expression.replace("**", "^").replace("*", "\u00d7")
    return f"{shown} = {format_number(number)}."


def time_answer(result: str) -> str:
    """``It is 14:05 on Sunday, 6 December 2026 (Europe/Paris).`` from ``get_current_time``."""
    try:
        value: Any = orjson.loads(result)
        now = datetime.fromisoformat(value["iso"])
        zone = value["timezone"]
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return _tool_error(result)
    return f"It is {now:%H:%M} on {now:%A}, {now.day} {now:%B %Y} ({zone})."


def _tool_error(result: str) -> str:
    try:
        error = orjson.loads(result).get("error")
    except (orjson.JSONDecodeError, AttributeError):
        error = None
    return f"I could not work that out: {error}." if error else "I could not work that out."
