"""The labelled questions about docs/ find their page in the top 5 chunks (hit@5 >= 0.9), with
the real embedder and the real Qdrant engine. ``python -m bench.retrieval_quality`` prints the
same figures."""

from __future__ import annotations

import pytest

from bench.retrieval_quality import DOCS, GOAL_HIT_AT_5, all_qualities, load_questions, report


def test_the_labelled_set_is_large_enough_and_points_at_real_pages():
    questions = load_questions()
    assert len(questions) >= 30
    pages = {path.name for path in DOCS.glob("*.md")}
    assert {source for _, source in questions} <= pages


@pytest.mark.slow
async def test_hit_at_5_on_the_docs():
    """fp32 dense and hybrid search, and hybrid search on the int8 embedder."""
    qualities = await all_qualities()
    assert len(qualities) == 3
    for quality in qualities.values():
        assert quality.hit_at(5) >= GOAL_HIT_AT_5, report(qualities)
