"""Which tool answers a message, and with what arguments, decided from the user's words.

Under the guided policy (the default for the embedded model) the runtime routes instead of
the model: a 135M-parameter model called ``calculate`` with ``"17.25}}; 17.25 = 17 * 23"``
and searched the knowledge base for "hello". Routing is by rules a person can read:
arithmetic goes to ``calculate`` with the expression taken from the question, questions about
the time or date to ``get_current_time``, greetings and small talk to no tool, everything
else to the knowledge base. A short follow-up ("and times 2?", "which file types does it
take?") borrows what it refers to from the previous turn.
"""

from __future__ import annotations

import re
import zoneinfo
from collections.abc import Container, Sequence
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import orjson

from agent_server.runtime.prompt import user_text

Intent = Literal["chat", "arithmetic", "time", "knowledge"]

# Passages a knowledge answer is chosen from: the section that answers is not always among
# the search's first five (measured with bench/answer_quality.py: 5 → 16/20, 8 → 17/20).
PASSAGES = 8
CALCULATE = "calculate"
CURRENT_TIME = "get_current_time"


@dataclass(frozen=True, slots=True)
class Route:
    intent: Intent
    question: str  # the user's words (for a follow-up: with the question it refers to)
    tool: str | None = None
    arguments: dict[str, Any] = field(default_factory=dict)
    said: str = ""  # this turn's words alone
    small_talk: str | None = None  # the kind, for small talk


def route(messages: Sequence[dict[str, Any]], tools: Container[str], search_tool: str) -> Route:
    """The route for the conversation's last user message."""
    asked = [user_text(m["content"]).strip() for m in messages if m["role"] == "user"]
    question = asked[-1] if asked else ""
    if not question:
        return Route("chat", question)
    if (kind := small_talk(question)) is not None:
        return Route("chat", question, said=question, small_talk=kind)
    if CALCULATE in tools:
        expression = arithmetic(question, previous_result(messages))
        if expression is not None:
            return Route("arithmetic", question, CALCULATE, {"expression": expression})
    if CURRENT_TIME in tools and _TIME.search(question):
        zone = time_zone(question)
        return Route("time", question, CURRENT_TIME, {"timezone": zone} if zone else {})
    if search_tool in tools:
        query = question
        if len(asked) > 1 and is_follow_up(question):
            query = f"{asked[-2]} {question}"
        arguments = {"query": query[:1000], "top_k": PASSAGES}
        return Route("knowledge", query, search_tool, arguments, question)
    return Route("chat", question)


# Small talk ------------------------------------------------------------------------------------

_TAIL = r"(?:[\s,]+(?:there|citadel|again|friend|everyone|all|so much|very much))*[\s!.?,:)]*$"
# The formulas of small talk, by what they are: a closed set, so a person can read it.
_SMALL_TALK = [
    (kind, re.compile(rf"^(?:{words}){_TAIL}", re.IGNORECASE))
    for kind, words in (
        (
            "greeting",
            r"hi|hello|hey|hiya|howdy|yo|greetings|good (?:morning|afternoon|evening|day)",
        ),
        ("thanks", r"thanks?(?: you)?|thank you|thx|cheers"),
        ("farewell", r"bye|goodbye|good night|see you"),
        ("wellbeing", r"how are you(?: doing| today)?|how's it going|what's up"),
        ("identity", r"who are you|what are you|what is your name|what's your name"),
        ("abilities", r"what can you do|what do you do|how can you help(?: me)?|help"),
        ("acknowledgement", r"ok(?:ay)?|cool|great|nice|got it|i see"),
    )
]


def small_talk(text: str) -> str | None:
    """What kind of small talk ``text`` is ("greeting", "thanks", …), or None."""
    stripped = text.strip()
    return next((kind for kind, pattern in _SMALL_TALK if pattern.match(stripped)), None)


# Arithmetic ------------------------------------------------------------------------------------

# Spoken operators, longest first, as the calculator writes them.
_WORDS = [
    (r"multiplied by|times|x|\u00d7|\u22c5", "*"),
    (r"divided by|over|\u00f7", "/"),
    (r"plus|added to", "+"),
    (r"minus|less", "-"),
    (r"to the power of|raised to(?: the power of)?|\^", "**"),
    (r"modulo|mod", "%"),
]
_OPERATOR_WORDS = [
    (re.compile(rf"(?<=[\d\s)])(?:{words})(?=[\s\d(.])", re.IGNORECASE), symbol)
    for words, symbol in _WORDS
]
_SQUARED = re.compile(r"(\d(?:[\d.]*)|\))\s*(squared|cubed)\b", re.IGNORECASE)
_ROOT = re.compile(r"(?:the\s+)?square\s+root\s+of\s+", re.IGNORECASE)
_PERCENT_OF = re.compile(r"(\d+(?:\.\d+)?)\s*(?:%|percent)\s+of\s+", re.IGNORECASE)
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}\b)")
# The calculator's functions of one argument, then a run of what an expression is made of.
_FUNCTION = r"sqrt|abs|round|log10|log|exp|sin|cos|tan"
_EXPRESSION = re.compile(rf"(?:{_FUNCTION}|pi|[\d.]+|\*\*|[-+*/%()]|\s)+", re.IGNORECASE)
_OPERATOR = re.compile(rf"\*\*|[-+*/%]|{_FUNCTION}", re.IGNORECASE)
_BARE_ARGUMENT = re.compile(rf"\b({_FUNCTION})\s+([\d.]+)")
_NUMBER = re.compile(r"\d")
_LEADING_OPERATOR = re.compile(r"^\s*(?:\*\*|[-+*/%])")
_REF = r"(?:it|that|this|the result|the answer|the previous result)"
_REFERENCE = re.compile(rf"\b{_REF}\b", re.IGNORECASE)
# Verbs on the previous result ("double it", "divide that by 7"), as operators on it.
_ON_PREVIOUS = [
    (re.compile(rf"\bdouble {_REF}\b", re.IGNORECASE), r"_ * 2"),
    (re.compile(rf"\bhalve {_REF}\b", re.IGNORECASE), r"_ / 2"),
    (re.compile(rf"\bsquare {_REF}\b", re.IGNORECASE), r"_ ** 2"),
    (re.compile(rf"\badd ([\d.]+)(?: to {_REF})?", re.IGNORECASE), r"_ + \1"),
    (re.compile(rf"\bsubtract ([\d.]+)(?: from {_REF})?", re.IGNORECASE), r"_ - \1"),
    (re.compile(rf"\bmultiply {_REF} by ([\d.]+)", re.IGNORECASE), r"_ * \1"),
    (re.compile(rf"\bdivide {_REF} by ([\d.]+)", re.IGNORECASE), r"_ / \1"),
]


def arithmetic(question: str, previous: str | None = None) -> str | None:
    """The arithmetic expression in ``question``, if it asks for one; ``previous`` (the last
    result) stands in for "that" and completes a leading operator ("and times 2?")."""
    text = _THOUSANDS.sub("", question)
    if previous is not None:
        for pattern, operation in _ON_PREVIOUS:
            text = pattern.sub(operation.replace("_", previous), text)
        text = _REFERENCE.sub(f" {previous} ", text)
    text = _PERCENT_OF.sub(r"\1 / 100 * ", text)
    text = _ROOT.sub("sqrt ", text)
    text = _SQUARED.sub(lambda m: f"{m[1]} ** {2 if m[2].lower() == 'squared' else 3}", text)
    for pattern, symbol in _OPERATOR_WORDS:
        text = pattern.sub(f" {symbol} ", text)
    spans = [m for m in _EXPRESSION.finditer(text) if m.group().strip()]
    if not spans:
        return None
    chosen = max(spans, key=lambda m: _weight(m.group()))
    best = chosen.group().strip()
    rest = text[: chosen.start()] + " " + text[chosen.end() :]
    if not _NUMBER.search(best) or not set(_ASKING.findall(rest.lower())) <= _ARITHMETIC_WORDS:
        return None  # numbers inside a question about something else
    if previous is not None and _LEADING_OPERATOR.match(best):
        best = f"{previous} {best}"
    best = _BARE_ARGUMENT.sub(r"\1(\2)", best)
    if not _OPERATOR.search(best):
        return None
    return " ".join(best.split())


_ASKING = re.compile(r"[a-z']+")
_ARITHMETIC_WORDING = """what what's whats is are calculate compute evaluate work out how much many
    equals equal to does do make the result of please can you tell me and so then now i get if
    answer value solve find give quick question hey ok okay"""
_ARITHMETIC_WORDS = frozenset(_ARITHMETIC_WORDING.split())


def _weight(candidate: str) -> tuple[int, int]:
    return (len(_OPERATOR.findall(candidate)) + len(_NUMBER.findall(candidate)), len(candidate))


def previous_result(messages: Sequence[dict[str, Any]]) -> str | None:
    """The last ``calculate`` result in the conversation, as the calculator wrote it."""
    calls = {
        call["id"]
        for message in messages
        if message["role"] == "assistant"
        for call in message.get("toolCalls") or ()
        if call["function"]["name"] == CALCULATE
    }
    for message in reversed(messages):
        if message["role"] == "tool" and message.get("toolCallId") in calls:
            try:
                result = orjson.loads(user_text(message["content"]))["result"]
            except (orjson.JSONDecodeError, KeyError, TypeError):
                return None
            return format_number(result)
    return None


def format_number(value: float | int) -> str:
    """A number as a person writes it: no float noise, at most 6 decimals."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    if isinstance(value, float):
        return f"{value:.6f}".rstrip("0").rstrip(".")
    return str(value)


# Time ------------------------------------------------------------------------------------------

_TIME = re.compile(
    r"\b(?:what(?:'s| is)? the (?:time|date)|what time|current (?:time|date)|time is it|"
    r"today's date|what day|which day|what date|the date today|day of the week|"
    r"time (?:in|at)|what year|what month)\b",
    re.IGNORECASE,
)


@cache
def _zones() -> dict[str, str]:
    """City or zone name (lower case, spaces) -> IANA zone."""
    zones: dict[str, str] = {}
    for name in sorted(zoneinfo.available_timezones()):
        if "/" in name and not name.startswith(("Etc/", "SystemV/", "US/")):
            zones.setdefault(name.rsplit("/", 1)[1].replace("_", " ").lower(), name)
    zones.update({"utc": "UTC", "gmt": "UTC"})
    return zones


def time_zone(question: str) -> str | None:
    """The IANA zone of a city named after "in" ("the time in Tokyo"), if known."""
    match = re.search(r"\bin\s+([A-Za-z][A-Za-z .'-]{1,40}?)\s*[?.!]*$", question.strip())
    if not match:
        return None
    return _zones().get(match[1].strip().lower())


# Follow-ups ------------------------------------------------------------------------------------

_FOLLOW_UP = re.compile(
    r"^(?:and|also|what about|how about|then|so)\b|\b(?:it|its|that|this|them|they|those|one)\b",
    re.IGNORECASE,
)


def is_follow_up(question: str) -> bool:
    """A short question that leans on the previous one ("and how do I configure it?")."""
    return len(question.split()) <= 8 and _FOLLOW_UP.search(question) is not None
