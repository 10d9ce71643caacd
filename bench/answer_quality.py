"""Answer quality of the embedded default: ``python -m bench.answer_quality``.

Asks the labelled prompts of ``bench/data/answer_eval.yaml`` (what a first user types:
greetings, arithmetic, questions about the docs, the time, follow-ups, questions the docs do
not answer) of real ``citadel serve`` processes on embedded defaults (SmolLM2-135M, the ONNX
embedder, the in-process Qdrant engine, ``docs/`` ingested), over ``POST /agui`` as a chat
panel does, and scores each answer automatically:

* correct: the expected number or fact is in the answer (for the time: what the clock tool
  returned; for unanswerable questions: the answer says it does not know);
* grounded: a docs answer cites the expected page (a ``[n]`` of a hit from that page, or its
  name);
* degenerate: some run of 4 words comes more than twice;
* needless tool call: a tool the prompt does not need (any tool for a greeting);
* words, and time to the first token of the answer (from the request).

Variants, side by side in one run: ``before`` (the server at :data:`BEFORE_REF`: the model
routes, searches and answers alone), ``guided-model`` (the runtime routes and calls the
tools; the model writes knowledge answers from numbered passages) and ``guided`` (the
default: the runtime also writes knowledge answers, extracted from the passages).

A run that fails (an HTTP error, RUN_ERROR, a stream cut before RUN_FINISHED) in any variant
breaks the benchmark: it prints BROKEN lines and exits 1 (bench/verdicts.py); a goal missed is
a FAIL row. ``--smoke``: the default variant, the first prompt of each category; goals not
evaluated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import orjson
import yaml

from bench.baseline import checkout
from bench.servers import free_port, wait_ready
from bench.verdicts import EXIT_BROKEN, broken_lines, verdict
from protocol.framing import parse_sse_stream

ROOT = Path(__file__).resolve().parent.parent
CASES = ROOT / "bench" / "data" / "answer_eval.yaml"
# The last commit before the guided answers (issue 13): the model alone.
BEFORE_REF = "11e9072"
VARIANTS: dict[str, tuple[str | None, dict[str, str]]] = {
    "before": (BEFORE_REF, {}),
    "guided-model": (None, {"CITADEL_GUIDED": "model"}),
    "guided": (None, {}),
}
CATEGORIES = ("greeting", "arithmetic", "docs", "time", "follow-up", "unknown")
GOAL_CORRECT = 0.9  # arithmetic and docs (follow-ups included)
GOAL_TTFT = 1.5  # seconds, median over every prompt
DOCS_SUFFIXES = (".md", ".txt", ".html", ".pdf")
_DONT_KNOW = re.compile(
    r"\b(?:don't know|do not know|not sure|cannot (?:help|answer)|can't (?:help|answer)|"
    r"no information|nothing in the knowledge base)\b",
    re.IGNORECASE,
)
_CITATION = re.compile(r"\[(\d{1,2})\]")
_WORD = re.compile(r"[^\w]+")


@dataclass(frozen=True)
class Case:
    category: str
    turns: list[str]
    expect: dict[str, Any]


@dataclass
class Answer:
    text: str = ""
    calls: list[str] = field(default_factory=list)  # tool names, in order
    results: list[str] = field(default_factory=list)  # their results, in order
    ttft: float | None = None  # seconds from the request to the answer's first text
    seconds: float = 0.0
    error: str | None = None


@dataclass(frozen=True)
class Score:
    case: Case
    answer: Answer
    correct: bool
    grounded: bool | None  # None: the prompt needs no source
    degenerate: bool
    needless_tool: bool

    @property
    def words(self) -> int:
        return len(self.answer.text.split())


def load_cases(path: Path = CASES) -> list[Case]:
    return [
        Case(item["category"], item["turns"], item["expect"])
        for item in yaml.safe_load(path.read_text())
    ]


# Scoring ---------------------------------------------------------------------------------------


def score(case: Case, answer: Answer) -> Score:
    expect = case.expect
    text = answer.text
    allowed = set(expect.get("tools", ()))
    needless = any(name not in allowed for name in answer.calls)
    if answer.error is not None or not text.strip():
        correct = False
    elif expect.get("small_talk"):
        correct = len(text.split()) <= 60 and not _DONT_KNOW.search(text)
    elif expect.get("dont_know"):
        correct = _DONT_KNOW.search(text) is not None
    elif "clock" in expect:
        correct = _tells_the_time(text, answer.results, expect["clock"])
    else:
        correct = any(fact.lower() in text.lower() for fact in expect["any"])
    grounded = _cites(text, answer.results, expect["source"]) if "source" in expect else None
    return Score(case, answer, correct, grounded, is_degenerate(text), needless)


def is_degenerate(text: str, span: int = 4, most: int = 2) -> bool:
    """Whether some run of ``span`` words comes more than ``most`` times."""
    words = [w for w in (_WORD.sub("", word.lower()) for word in text.split()) if w]
    runs = Counter(tuple(words[i : i + span]) for i in range(len(words) - span + 1))
    return any(count > most for count in runs.values())


def _tells_the_time(text: str, results: Sequence[str], what: str) -> bool:
    for result in results:
        with contextlib.suppress(orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            now = datetime.fromisoformat(orjson.loads(result)["iso"])
            if what == "time":
                return f"{now:%H:%M}" in text or f"{now.hour % 12 or 12}:{now:%M}" in text
            if what == "weekday":
                return f"{now:%A}".lower() in text.lower()
            return (f"{now:%B}".lower() in text.lower() and str(now.day) in text) or (
                f"{now:%Y-%m-%d}" in text
            )
    return False


def _cites(text: str, results: Sequence[str], source: str) -> bool:
    if source in text:
        return True
    for result in results:
        with contextlib.suppress(orjson.JSONDecodeError, AttributeError, TypeError):
            hits = orjson.loads(result).get("hits") or []
            for number in _CITATION.findall(text):
                index = int(number) - 1
                if 0 <= index < len(hits) and hits[index].get("source", "").endswith(source):
                    return True
    return False


# Asking ----------------------------------------------------------------------------------------


async def ask(client: httpx.AsyncClient, url: str, thread_id: str, question: str) -> Answer:
    """One run of ``question`` on ``thread_id``, as a chat panel sends it."""
    body = {
        "threadId": thread_id,
        "runId": f"run_{uuid.uuid4().hex}",
        "protocolVersion": "1.0",
        "messages": [{"id": f"msg_{uuid.uuid4().hex}", "role": "user", "content": question}],
    }
    answer = Answer()
    started = time.perf_counter()
    finished = False
    async with client.stream("POST", f"{url}/agui", json=body) as response:
        if response.status_code != 200:
            answer.error = f"HTTP {response.status_code}: {(await response.aread())[:200]!r}"
            return answer
        async for event in parse_sse_stream(response.aiter_bytes()):
            kind = event["type"]
            if kind == "TEXT_MESSAGE_CONTENT":
                if answer.ttft is None:
                    answer.ttft = time.perf_counter() - started
                answer.text += event["delta"]
            elif kind == "TOOL_CALL_START":
                answer.calls.append(event["toolCallName"])
            elif kind == "TOOL_CALL_RESULT":
                answer.results.append(event["content"])
            elif kind == "RUN_ERROR":
                answer.error = f"{event.get('code')}: {event.get('message')}"
            elif kind == "RUN_FINISHED":
                finished = True
    if not finished and answer.error is None:
        answer.error = "the stream ended without RUN_FINISHED"
    answer.seconds = time.perf_counter() - started
    return answer


async def converse(url: str, case: Case) -> Answer:
    """Every turn of ``case`` on a new thread; the last turn's answer (with the tools every
    turn called, so a follow-up's routing is judged on its own turn only)."""
    thread_id = f"eval_{uuid.uuid4().hex}"
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, read=300)) as client:
        answer = Answer()
        for turn in case.turns:
            answer = await ask(client, url, thread_id, turn)
            if answer.error is not None:
                break
        return answer


async def evaluate(url: str, cases: Sequence[Case]) -> list[Score]:
    return [score(case, await converse(url, case)) for case in cases]


# Servers ---------------------------------------------------------------------------------------


@contextlib.contextmanager
def server(root: Path, env: dict[str, str], timeout: float = 600.0) -> Iterator[str]:
    """``citadel serve`` from ``root`` on embedded defaults (in-memory threads), with
    ``docs/`` ingested; its URL."""
    with tempfile.TemporaryDirectory(prefix="citadel-eval-") as data_dir:
        port = free_port()
        server_env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CITADEL_", "QDRANT_"))},
            "CITADEL_DATA_DIR": data_dir,
            "CITADEL_STORE": "memory",
            "CITADEL_LOG_LEVEL": "warning",
            **env,
        }
        command = [sys.executable, "-m", "agent_server.cli", "serve", "--port", str(port)]
        process = subprocess.Popen(command, cwd=root, env=server_env, stdout=sys.stderr)
        try:
            wait_ready(process, port, timeout)
            url = f"http://127.0.0.1:{port}"
            _wait_for_docs(url, root, timeout)
            yield url
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_for_docs(url: str, root: Path, patience: float) -> None:
    expected = sum(1 for p in (root / "docs").rglob("*") if p.suffix in DOCS_SUFFIXES)
    deadline = time.monotonic() + patience
    with httpx.Client(timeout=30) as client:
        while time.monotonic() < deadline:
            if len(client.get(f"{url}/rag/documents").json()["documents"]) >= expected:
                return
            time.sleep(0.5)
    raise TimeoutError(f"docs/ was not ingested within {patience:g} s")


def run_variant(name: str, cases: Sequence[Case]) -> list[Score]:
    ref, env = VARIANTS[name]
    with contextlib.ExitStack() as stack:
        root = Path(stack.enter_context(checkout(ref))) if ref else ROOT
        url = stack.enter_context(server(root, env))
        return asyncio.run(evaluate(url, cases))


# Report ----------------------------------------------------------------------------------------


def _share(values: Sequence[bool]) -> str:
    return f"{sum(values)}/{len(values)}" if values else "-"


def _median(values: Sequence[float]) -> str:
    return f"{statistics.median(values):.2f}" if values else "n/a"


def broken(results: dict[str, list[Score]]) -> list[str]:
    """Why the figures mean nothing: runs that failed, in any variant (empty: none)."""
    found = []
    for variant, scores in results.items():
        errors = [s for s in scores if s.answer.error is not None]
        if errors:
            found.append(
                f"{variant}: {len(errors)} of {len(scores)} prompts failed, e.g. "
                f"{errors[0].case.turns[-1]!r}: {errors[0].answer.error}"
            )
        if not scores:
            found.append(f"{variant}: no prompt asked")
    return found


def report(results: dict[str, list[Score]], smoke: bool = False) -> bool:
    """Print the tables; whether the default (the last variant) met every goal."""
    print(
        "| variant | category | prompts | correct | grounded | degenerate | needless tool |"
        " words median | TTFT median, s | errors |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for variant, scores in results.items():
        for category in (*CATEGORIES, "all"):
            chosen = [s for s in scores if category in ("all", s.case.category)]
            grounded = [s.grounded for s in chosen if s.grounded is not None]
            ttfts = [s.answer.ttft for s in chosen if s.answer.ttft is not None]
            print(
                f"| {variant} | {category} | {len(chosen)} | {_share([s.correct for s in chosen])}"
                f" | {_share(grounded)} | {sum(s.degenerate for s in chosen)}"
                f" | {sum(s.needless_tool for s in chosen)}"
                f" | {statistics.median([s.words for s in chosen]) if chosen else 0:g}"
                f" | {_median(ttfts)} | {sum(s.answer.error is not None for s in chosen)} |"
            )
    default = list(results)[-1]
    return _goals(default, results[default], bool(broken(results)), smoke)


def goal_rows(
    scores: list[Score], failed: bool = False, smoke: bool = False
) -> list[tuple[str, str, str, str]]:
    """``(goal, measured, target, verdict)``; a goal about categories none of ``scores``
    belongs to (``--category``) is left out. Any failed run fails every goal; a smoke run
    evaluates none but the failed runs."""
    checked = [s for s in scores if s.case.category in ("arithmetic", "docs", "follow-up")]
    degenerate = sum(s.degenerate for s in scores)
    greetings = [s for s in scores if s.case.category == "greeting"]
    greeting_tools = sum(bool(s.answer.calls) for s in greetings)
    ttfts = [s.answer.ttft for s in scores if s.answer.ttft is not None]
    ttft = statistics.median(ttfts) if ttfts and len(ttfts) == len(scores) else None
    errors = sum(s.answer.error is not None for s in scores)
    rows = []
    if checked:
        correct = sum(s.correct for s in checked) / len(checked)
        rows.append(
            (
                "correct, arithmetic and docs (with follow-ups)",
                f"{correct:.0%}",
                f">= {GOAL_CORRECT:.0%}",
                verdict(correct >= GOAL_CORRECT, broken=failed, smoke=smoke),
            )
        )
    shown = verdict(degenerate == 0, broken=failed, smoke=smoke)
    rows.append(("degenerate answers", str(degenerate), "0", shown))
    if greetings:
        shown = verdict(greeting_tools == 0, broken=failed, smoke=smoke)
        rows.append(("tool calls on greetings", str(greeting_tools), "0", shown))
    rows += [
        (
            "median time to first token, s",
            "n/a (an answer without text)" if ttft is None else f"{ttft:.2f}",
            f"< {GOAL_TTFT}",
            verdict(None if ttft is None else ttft < GOAL_TTFT, broken=failed, smoke=smoke),
        ),
        ("runs that failed", str(errors), "0", "FAIL" if errors or failed else "PASS"),
    ]
    return rows


def _goals(variant: str, scores: list[Score], failed: bool, smoke: bool) -> bool:
    rows = goal_rows(scores, failed, smoke)
    print(f"\nGoals ({variant}):\n")
    print("| goal | measured | target | |\n|---|---:|---:|---|")
    for goal, measured, target, shown in rows:
        print(f"| {goal} | {measured} | {target} | {shown} |")
    return all(shown != "FAIL" for *_, shown in rows)


def print_answers(results: dict[str, list[Score]]) -> None:
    for variant, scores in results.items():
        print(f"\nAnswers ({variant}):\n")
        for s in scores:
            marks = ("ok" if s.correct else "WRONG") + (" DEGENERATE" if s.degenerate else "")
            marks += " NEEDLESS-TOOL" if s.needless_tool else ""
            text = " ".join(s.answer.text.split())
            shown = text if len(text) <= 240 else text[:237] + "..."
            print(
                f"- [{s.case.category}] {' / '.join(s.case.turns)} -> {marks}; "
                f"tools {s.answer.calls or '-'}: {shown or s.answer.error}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--category", choices=CATEGORIES, help="only this category")
    parser.add_argument(
        "--answers",
        action="store_true",
        help="print every variant's answers (default: the default variant's only)",
    )
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="the default variant, one prompt per category: does it work? (no goals)",
    )
    options = parser.parse_args()
    cases = [c for c in load_cases() if options.category in (None, c.category)]
    variants = options.variants
    if options.smoke:
        variants = ["guided"]
        cases = [next(c for c in cases if c.category == name) for name in CATEGORIES]
    print(
        f"Answer quality: {len(cases)} prompts of bench/data/answer_eval.yaml, "
        f"embedded defaults, over POST /agui" + (" (smoke run)" if options.smoke else "") + "\n"
    )
    results = {name: run_variant(name, cases) for name in variants}
    report(results, options.smoke)  # a goal missed is a FAIL row, not a broken benchmark
    print_answers(results if options.answers else {variants[-1]: results[variants[-1]]})
    problems = broken(results)
    if problems:
        print("\n" + "\n".join(broken_lines(problems)))
    raise SystemExit(EXIT_BROKEN if problems else 0)


if __name__ == "__main__":
    main()
