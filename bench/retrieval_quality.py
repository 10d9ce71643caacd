"""Retrieval quality on Citadel's own docs: ``python -m bench.retrieval_quality``.

Ingests ``docs/`` with the embedded embedder into the in-process Qdrant engine (a temporary
directory), asks every labelled question of ``bench/data/docs_questions.yaml`` and reports
hit@1, hit@3, hit@5 (the labelled page among the top k chunks) and the mean reciprocal rank.
The same figures are asserted by tests/knowledge/test_retrieval_quality.py (hit@5 >= 0.9).

A question answered with fewer than 5 chunks breaks the benchmark: its goal lines say FAIL,
the process exits 1 (bench/verdicts.py). ``--smoke``: three small pages and their questions,
dense and hybrid search on the fp32 embedder; the goal is not evaluated.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
from dataclasses import dataclass
from pathlib import Path

import yaml

from agent_server.knowledge.embedders.embedded import EmbeddedEmbedder
from agent_server.knowledge.ingest import files_under, ingest_files
from agent_server.knowledge.library import KnowledgeBase
from agent_server.knowledge.vectors.edge import EdgeVectorStore
from agent_server.store.base import Actor
from agent_server.store.documents import IngestJob
from agent_server.store.memory import MemoryDocumentStore
from bench.verdicts import finish, verdict

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
QUESTIONS = ROOT / "bench" / "data" / "docs_questions.yaml"
GOAL_HIT_AT_5 = 0.9
TOP_K = 5
SMOKE_PAGES = ("getting-started.md", "durability.md", "models.md")  # small, quick to embed


@dataclass(frozen=True)
class Scored:
    question: str
    expected: str
    ranked: list[str]  # the source page of each hit, best first

    def rank(self) -> int | None:
        """1-based rank of the first hit from the expected page, if any."""
        return next((i for i, page in enumerate(self.ranked, 1) if page == self.expected), None)


@dataclass(frozen=True)
class Quality:
    scored: list[Scored]

    def hit_at(self, k: int) -> float:
        return sum((s.rank() or k + 1) <= k for s in self.scored) / len(self.scored)

    @property
    def mrr(self) -> float:
        return sum(1 / rank for s in self.scored if (rank := s.rank())) / len(self.scored)

    def misses(self, k: int = 5) -> list[Scored]:
        return [s for s in self.scored if (s.rank() or k + 1) > k]

    def short(self, k: int = TOP_K) -> list[Scored]:
        """Questions answered with fewer than ``k`` chunks: the search is broken."""
        return [s for s in self.scored if len(s.ranked) < k]


def broken(qualities: dict[str, Quality]) -> list[str]:
    if not qualities or not all(q.scored for q in qualities.values()):
        return ["no question was scored"]
    return [
        f"{mode}: {len(short)} questions answered with fewer than {TOP_K} chunks, "
        f"e.g. {short[0].question!r} ({len(short[0].ranked)})"
        for mode, quality in qualities.items()
        if (short := quality.short())
    ]


def load_questions(path: Path = QUESTIONS) -> list[tuple[str, str]]:
    return [(item["question"], item["source"]) for item in yaml.safe_load(path.read_text())]


async def score(
    embedder: EmbeddedEmbedder,
    docs: Path = DOCS,
    questions: Path = QUESTIONS,
    top_k: int = TOP_K,
    modes: tuple[str, ...] = ("dense",),
    pages: tuple[str, ...] | None = None,
) -> dict[str, Quality]:
    """Quality of each search mode (``dense``, ``hybrid``) over one ingestion of ``docs``, or
    of these ``pages`` of it and their questions alone."""
    with tempfile.TemporaryDirectory() as data_dir:
        vectors = EdgeVectorStore(Path(data_dir))
        try:
            knowledge = KnowledgeBase(embedder, vectors, MemoryDocumentStore())
            job = IngestJob("quality", "docs", "bench")
            paths = [docs] if pages is None else [docs / page for page in pages]
            await ingest_files(knowledge, job, files_under(paths), Actor("bench"))
            if job.errors:
                raise RuntimeError(f"docs/ did not ingest cleanly: {job.errors}")
            labelled = [
                (question, page)
                for question, page in load_questions(questions)
                if pages is None or page in pages
            ]
            found = {
                mode: await knowledge.search_many(
                    "docs", [q for q, _ in labelled], top_k=top_k, hybrid=mode == "hybrid"
                )
                for mode in modes
            }
        finally:
            await vectors.aclose()
    return {
        mode: Quality(
            [
                Scored(question, expected, [Path(hit.payload["source"]).name for hit in hits])
                for (question, expected), hits in zip(labelled, found[mode], strict=True)
            ]
        )
        for mode in modes
    }


def report(qualities: dict[str, Quality], smoke: bool = False) -> str:
    count = len(next(iter(qualities.values())).scored)
    problems = bool(broken(qualities))
    lines = [
        f"Retrieval on docs/: {count} labelled questions "
        f"({QUESTIONS.relative_to(ROOT)}), embedded all-MiniLM-L6-v2 (fp32 unless said), top 5 "
        "chunks; hybrid = dense + BM25 sparse, fused by reciprocal rank."
        + (" Smoke run: the goal is not evaluated." if smoke else ""),
        "",
        "| search | hit@1 | hit@3 | hit@5 | MRR | goal |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for mode, quality in qualities.items():
        shown = verdict(quality.hit_at(5) >= GOAL_HIT_AT_5, broken=problems, smoke=smoke)
        lines.append(
            f"| {mode} | {quality.hit_at(1):.2f} | {quality.hit_at(3):.2f} "
            f"| {quality.hit_at(5):.2f} | {quality.mrr:.2f} | hit@5 >= {GOAL_HIT_AT_5} {shown} |"
        )
    for mode, quality in qualities.items():
        for miss in quality.misses():
            lines.append(
                f"- {mode} missed: {miss.question!r} (want {miss.expected}, got {miss.ranked})"
            )
    return "\n".join(lines)


async def all_qualities() -> dict[str, Quality]:
    """Dense and hybrid search with the fp32 embedder, and hybrid with the int8 one."""
    qualities: dict[str, Quality] = {}
    for precision, modes in (("fp32", ("dense", "hybrid")), ("int8", ("hybrid",))):
        embedder = EmbeddedEmbedder(precision=precision)
        try:
            found = await score(embedder, modes=modes)
        finally:
            await embedder.aclose()
        suffix = "" if precision == "fp32" else f", {precision} embedder"
        qualities |= {f"{mode}{suffix}": quality for mode, quality in found.items()}
    return qualities


async def smoke_qualities() -> dict[str, Quality]:
    """A few pages and their questions, dense and hybrid, fp32: does the benchmark work?"""
    embedder = EmbeddedEmbedder()
    try:
        return await score(embedder, modes=("dense", "hybrid"), pages=SMOKE_PAGES)
    finally:
        await embedder.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--smoke", action="store_true", help="a few questions: does it work?")
    args = parser.parse_args()
    qualities = asyncio.run(smoke_qualities() if args.smoke else all_qualities())
    finish(report(qualities, args.smoke), broken(qualities))


if __name__ == "__main__":
    main()
