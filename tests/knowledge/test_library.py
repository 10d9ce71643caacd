"""The knowledge base end to end on real parts: ingest, re-ingest, change, tag, delete, search,
and batches with bad files."""

from __future__ import annotations

from pathlib import Path

import asyncpg
import pytest

from agent_server.knowledge.documents import DocumentError
from agent_server.knowledge.ingest import SourceFile, files_under, ingest_files
from agent_server.knowledge.library import KnowledgeBase, Outcome
from agent_server.knowledge.vectors.base import SearchFilter
from agent_server.store.base import Actor
from agent_server.store.documents import IngestJob, JobStatus

ACTOR = Actor("alice", "127.0.0.1")
BASE = "handbook"

GARDEN = """# Gardening

## Watering tomatoes
Tomatoes want deep watering twice a week rather than a little every day. Water the soil,
not the leaves, early in the morning so the plants dry before the evening.

## Pruning roses
Prune roses in late winter, just as the buds swell. Cut above an outward-facing bud at a
slant, and remove dead, damaged and crossing canes first.
"""

KITCHEN = """# Kitchen

## Sourdough starter
Feed the starter with equal weights of flour and water every day. It is ready to bake with
when it doubles within six hours of a feeding and smells pleasantly sour.

## Knife care
Hone the chef's knife before each use and sharpen it on a whetstone a few times a year. Never
put good knives in the dishwasher.
"""

TRAVEL = """# Travel

## Packing light
Pack for one week whatever the length of the trip, and plan to do laundry. Roll clothes
instead of folding them, and wear the heaviest shoes on the plane.
"""


def write_folder(root: Path) -> Path:
    folder = root / "handbook"
    folder.mkdir()
    (folder / "garden.md").write_text(GARDEN)
    (folder / "kitchen.md").write_text(KITCHEN)
    (folder / "travel.md").write_text(TRAVEL)
    return folder


async def ingest_folder(knowledge: KnowledgeBase, folder: Path) -> IngestJob:
    job = IngestJob("test", BASE, ACTOR.user_id)
    return await ingest_files(knowledge, job, files_under([folder]), ACTOR)


async def point_count(knowledge: KnowledgeBase, **filters: tuple[str, ...]) -> int:
    return await knowledge.vectors.count(knowledge.collection(BASE), SearchFilter(**filters))


async def audit_rows(pool: asyncpg.Pool) -> int:
    return await pool.fetchval("SELECT count(*) FROM audit_log")


async def test_search_finds_the_passage_that_answers(knowledge, tmp_path):
    await ingest_folder(knowledge, write_folder(tmp_path))
    hits = await knowledge.search(BASE, "when should I cut back my rose bushes?", top_k=3)
    assert hits[0].payload["source"].endswith("garden.md")
    assert hits[0].payload["headings"] == ["Gardening", "Pruning roses"]
    assert "late winter" in hits[0].payload["text"]
    assert hits[0].score > hits[-1].score or len(hits) == 1
    bread = await knowledge.search(BASE, "how do I keep my bread starter alive", top_k=1)
    assert bread[0].payload["headings"] == ["Kitchen", "Sourdough starter"]


async def test_reingesting_an_unchanged_folder_writes_nothing(knowledge, pool, tmp_path):
    folder = write_folder(tmp_path)
    first = await ingest_folder(knowledge, folder)
    assert first.status is JobStatus.SUCCEEDED and first.files_unchanged == 0
    embedded, points, audited = (
        len(knowledge.embedder.texts),
        await point_count(knowledge),
        (await audit_rows(pool)),
    )
    rows = await pool.fetch("SELECT * FROM kb_documents ORDER BY document_id")

    again = await ingest_folder(knowledge, folder)
    assert again.status is JobStatus.SUCCEEDED
    assert again.files_unchanged == 3 and again.chunks_embedded == 0
    assert len(knowledge.embedder.texts) == embedded  # nothing embedded
    assert await point_count(knowledge) == points
    assert await audit_rows(pool) == audited  # nothing recorded
    assert await pool.fetch("SELECT * FROM kb_documents ORDER BY document_id") == rows


async def test_changing_one_file_replaces_only_its_chunks(knowledge, pool, tmp_path):
    folder = write_folder(tmp_path)
    await ingest_folder(knowledge, folder)
    before = {r["source"]: r["chunk_ids"] for r in await pool.fetch("SELECT * FROM kb_documents")}
    garden = str(folder / "garden.md")
    (folder / "garden.md").write_text(GARDEN.replace("late winter", "early spring"))
    embedded = len(knowledge.embedder.texts)

    job = await ingest_folder(knowledge, folder)
    after = {r["source"]: r["chunk_ids"] for r in await pool.fetch("SELECT * FROM kb_documents")}
    assert job.files_unchanged == 2 and job.chunks_embedded == 1
    assert knowledge.embedder.texts[embedded:] == [
        text for text in knowledge.embedder.texts[embedded:] if "early spring" in text
    ]
    assert {s: ids for s, ids in after.items() if s != garden} == {
        s: ids for s, ids in before.items() if s != garden
    }
    changed = set(after[garden]) ^ set(before[garden])
    assert len(changed) == 2  # the roses chunk: the old id went, a new one came
    assert await point_count(knowledge) == sum(len(ids) for ids in after.values())
    [hit] = await knowledge.search(BASE, "when to prune roses", top_k=1)
    assert "early spring" in hit.payload["text"]


async def test_tags_filter_search_and_retagging_rewrites_payloads(knowledge, tmp_path):
    folder = write_folder(tmp_path)
    await ingest_files(
        knowledge, IngestJob("t", BASE, "alice"), files_under([folder / "kitchen.md"]), ACTOR,
        tags=["food"],
    )  # fmt: skip
    await ingest_files(
        knowledge, IngestJob("t", BASE, "alice"), files_under([folder / "garden.md"]), ACTOR
    )
    hits = await knowledge.search(BASE, "watering", filter=SearchFilter(tags=("food",)))
    assert hits and all(hit.payload["source"].endswith("kitchen.md") for hit in hits)

    job = await ingest_files(
        knowledge, IngestJob("t", BASE, "alice"), files_under([folder / "garden.md"]), ACTOR,
        tags=["food", "outdoors"],
    )  # fmt: skip
    assert job.files_unchanged == 0  # new tags are a change
    assert await point_count(knowledge, tags=("outdoors",)) == await point_count(
        knowledge, sources=(str(folder / "garden.md"),)
    )


async def test_deleting_a_document_removes_its_chunks(knowledge, tmp_path):
    folder = write_folder(tmp_path)
    await ingest_folder(knowledge, folder)
    [record] = [
        r
        for r in await knowledge.documents.list_documents(knowledge.collection(BASE))
        if r.source.endswith("travel.md")
    ]
    total = await point_count(knowledge)
    assert await knowledge.delete(BASE, record.document_id, ACTOR)
    assert await point_count(knowledge, document_ids=(record.document_id,)) == 0
    assert await point_count(knowledge) == total - len(record.chunk_ids)
    assert not await knowledge.delete(BASE, record.document_id, ACTOR)
    hits = await knowledge.search(BASE, "packing a suitcase", top_k=5)
    assert all(not hit.payload["source"].endswith("travel.md") for hit in hits)


def test_a_folder_walk_skips_hidden_and_unreadable_files_but_a_named_file_is_tried(tmp_path):
    folder = write_folder(tmp_path)
    (folder / "grafana").mkdir()
    (folder / "grafana" / "dashboard.json").write_text("{}")
    (folder / ".drafts").mkdir()
    (folder / ".drafts" / "secret.md").write_text("# Draft")
    (folder / "guides").mkdir()
    (folder / "guides" / "setup.txt").write_text("Plug it in.")
    named = [Path(file.name).relative_to(folder) for file in files_under([folder])]
    assert named == [Path(p) for p in ("garden.md", "guides/setup.txt", "kitchen.md", "travel.md")]
    dashboard = folder / "grafana" / "dashboard.json"
    assert [file.name for file in files_under([dashboard])] == [str(dashboard)]


async def test_bad_files_are_reported_and_the_batch_goes_on(knowledge, tmp_path):
    folder = write_folder(tmp_path)
    files = [
        *files_under([folder]),
        SourceFile.from_bytes("empty.md", b"   \n"),
        SourceFile.from_bytes("broken.pdf", b"%PDF-1.7 this is not a pdf"),
        SourceFile.from_bytes("slides.pptx", b"PK\x03\x04"),
        SourceFile.from_bytes("latin1.txt", "café".encode("latin-1")),
    ]
    job = await ingest_files(knowledge, IngestJob("t", BASE, "alice"), files, ACTOR)
    assert job.status is JobStatus.PARTIAL and job.files_done == 7
    assert {(e.file, e.code) for e in job.errors} == {
        ("empty.md", "empty"),
        ("broken.pdf", "corrupt"),
        ("slides.pptx", "unsupported_type"),
        ("latin1.txt", "corrupt"),
    }
    assert len(await knowledge.documents.list_documents(knowledge.collection(BASE))) == 3


async def test_an_oversized_file_is_refused_before_reading(knowledge):
    limit = knowledge.chunking.max_file_bytes
    with pytest.raises(DocumentError) as caught:
        await knowledge.ingest(BASE, "huge.txt", b"x" * (limit + 1), ACTOR)
    assert caught.value.code == "too_large"
    assert knowledge.embedder.texts == []


async def test_outcomes_say_what_happened(knowledge):
    added = await knowledge.ingest(
        BASE, "note.md", b"# Note\n\nThe wifi password is on the fridge.", ACTOR
    )
    same = await knowledge.ingest(
        BASE, "note.md", b"# Note\n\nThe wifi password is on the fridge.", ACTOR
    )
    changed = await knowledge.ingest(
        BASE, "note.md", b"# Note\n\nThe wifi password changed.", ACTOR
    )
    assert [r.outcome for r in (added, same, changed)] == [
        Outcome.ADDED,
        Outcome.UNCHANGED,
        Outcome.UPDATED,
    ]
    assert (changed.embedded, changed.removed, changed.chunks) == (1, 1, 1)
