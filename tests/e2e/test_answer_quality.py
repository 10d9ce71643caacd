"""A slice of the answer-quality evaluation (bench/answer_quality.py) against the real
embedded default: ``citadel serve`` with no configuration (SmolLM2-135M, the ONNX embedder,
the in-process Qdrant engine, docs/ ingested), asked over ``POST /agui``. Each prompt's
answer must be correct by the evaluation's own scoring and free of repetition; the prompts
are the ones whose answers do not depend on sampling (written by the runtime) plus a
greeting, which the model answers greedily from a fixed seed."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bench.answer_quality import ROOT, Case, converse, load_cases, score, server

pytestmark = [pytest.mark.slow]

SLICE = [
    "hello",
    "What is 17 * 23?",
    "How do I allow a browser page on another origin to call the server?",
    "And what is that times 2?",
]


@pytest.fixture(scope="module")
def embedded_default() -> Iterator[str]:
    with server(ROOT, {}, timeout=300) as url:
        yield url


def case(last_turn: str) -> Case:
    return next(c for c in load_cases() if c.turns[-1] == last_turn)


@pytest.mark.timeout(600)
@pytest.mark.parametrize("last_turn", SLICE)
async def test_the_embedded_default_answers_correctly_without_repeating_itself(
    embedded_default, last_turn
):
    asked = case(last_turn)
    scored = score(asked, await converse(embedded_default, asked))
    assert scored.answer.error is None, scored.answer.error
    assert scored.correct, scored.answer.text
    assert not scored.degenerate, scored.answer.text
    assert not scored.needless_tool, scored.answer.calls
    if scored.grounded is not None:
        assert scored.grounded, scored.answer.text
