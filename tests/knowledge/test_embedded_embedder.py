"""The embedded embedder on the real exported model (``make setup`` builds it once).

Parity with sentence-transformers is checked in full by the export itself; here the runtime
path is re-checked against the reference vectors the export stored next to the model.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from agent_server.knowledge.embedders import embedded
from agent_server.knowledge.embedders.base import Embedder
from agent_server.knowledge.embedders.embedded import (
    DIMENSIONS,
    MANIFEST_FILE,
    EmbeddedEmbedder,
    batch_size,
    default_model_dir,
)
from agent_server.knowledge.embedders.onnx_export import INT8_MEAN_COSINE, INT8_MIN_COSINE
from agent_server.knowledge.errors import RetrievalUnavailable

PASSAGES = [
    "The server keeps every conversation in Postgres, so a restart loses nothing.",
    "Set CITADEL_LLM=ollama to switch the chat backend to a local Ollama server.",
    "Photosynthesis converts light energy into chemical energy stored in glucose.",
    "東京は日本の首都です。",
    "",
]


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b)


class HeldRun:
    """After :meth:`hold_next`, the embedder's next model run waits on the worker thread
    (``running`` set) until :meth:`release`: what is queued meanwhile is then known, rather
    than whatever the loop managed to queue while the worker went on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.running = threading.Event()
        self._released = threading.Event()
        self._armed = False
        infer = embedded.infer

        def held_infer(session: object, rows: object) -> np.ndarray:
            if self._armed:
                self._armed = False
                self.running.set()
                self._released.wait()
            return infer(session, rows)

        monkeypatch.setattr(embedded, "infer", held_infer)

    def hold_next(self) -> None:
        self._armed = True

    def release(self) -> None:
        self._released.set()


@pytest.fixture
def held_run(monkeypatch: pytest.MonkeyPatch) -> HeldRun:
    return HeldRun(monkeypatch)


async def test_implements_the_protocol(embedded_embedder: EmbeddedEmbedder) -> None:
    assert isinstance(embedded_embedder, Embedder)
    assert (embedded_embedder.provider, embedded_embedder.model) == ("embedded", "all-minilm")
    assert embedded_embedder.dimensions == DIMENSIONS == 384
    await embedded_embedder.check()


async def test_vectors_are_unit_length_and_deterministic(
    embedded_embedder: EmbeddedEmbedder,
) -> None:
    first = await embedded_embedder.embed(PASSAGES)
    again = await embedded_embedder.embed(list(reversed(PASSAGES)))

    assert first.shape == (len(PASSAGES), 384)
    assert first.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(first, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(again[::-1], first, atol=1e-5)  # order kept, whatever the batch


async def test_stored_reference_vectors_match(embedded_embedder: EmbeddedEmbedder) -> None:
    """The vectors sentence-transformers gave at export time, through the runtime path."""
    model_dir = embedded_embedder.model_dir
    manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
    expected = np.load(model_dir / manifest["reference"]["file"])
    texts = manifest["reference"]["texts"]
    assert manifest["parity"]["min_cosine"] >= 0.9999
    assert len(texts) == len(expected) >= 5

    got = await embedded_embedder.embed(texts)

    assert (got * expected).sum(axis=1).min() >= 0.9999


async def test_the_int8_model_stays_close_to_the_reference() -> None:
    """CITADEL_EMBED_PRECISION=int8: another model name (its own collections), vectors near
    sentence-transformers' within the bounds the export checked."""
    embedder = EmbeddedEmbedder(precision="int8")
    try:
        manifest = json.loads((embedder.model_dir / MANIFEST_FILE).read_text())
        expected = np.load(embedder.model_dir / manifest["reference"]["file"])
        got = await embedder.embed(manifest["reference"]["texts"])
    finally:
        await embedder.aclose()
    cosines = (got * expected).sum(axis=1)
    assert embedder.model == "all-minilm-int8"
    assert cosines.min() >= INT8_MIN_COSINE and cosines.mean() >= INT8_MEAN_COSINE
    assert cosines.min() < 0.9999  # really the quantised model, not the fp32 one
    assert manifest["parity"]["int8"]["mean_cosine"] >= INT8_MEAN_COSINE


async def test_a_paraphrase_is_closer_than_an_unrelated_sentence(
    embedded_embedder: EmbeddedEmbedder,
) -> None:
    query, paraphrase, unrelated = await embedded_embedder.embed(
        [
            "How do I reset my password?",
            "What are the steps to change a forgotten login password?",
            "The recipe needs two cups of flour and three eggs.",
        ]
    )

    assert cosine(query, paraphrase) > cosine(query, unrelated) + 0.3


async def test_long_text_is_truncated_at_256_tokens(embedded_embedder: EmbeddedEmbedder) -> None:
    # "word" is one token: both texts keep the same first 254 words once truncated.
    long, longer = await embedded_embedder.embed(["word " * 300, "word " * 5000])

    np.testing.assert_allclose(long, longer, atol=1e-5)
    assert np.linalg.norm(longer) == pytest.approx(1.0, abs=1e-5)


async def test_no_texts_give_an_empty_matrix(embedded_embedder: EmbeddedEmbedder) -> None:
    vectors = await embedded_embedder.embed([])

    assert vectors.shape == (0, 384)
    assert vectors.dtype == np.float32


async def test_concurrent_calls_are_merged_into_fewer_batches(held_run: HeldRun) -> None:
    texts = [f"question {i}: " + "how does the server store runs? " * (i % 7) for i in range(64)]
    embedder = EmbeddedEmbedder()
    try:
        sequential = np.concatenate([await embedder.embed([text]) for text in texts])
        assert embedder.batches == embedder.requests == 64

        held_run.hold_next()  # the first run waits until all 64 calls are queued
        merged = asyncio.gather(*(embedder.embed([text]) for text in texts))
        assert await asyncio.to_thread(held_run.running.wait, 60)
        held_run.release()
        concurrent = await merged

        assert embedder.requests == 128
        assert embedder.batches - 64 <= 16  # 64 one-text requests: a handful of model runs
        np.testing.assert_allclose(np.concatenate(concurrent), sequential, atol=1e-5)
    finally:
        held_run.release()
        await embedder.aclose()


async def test_a_query_rides_along_with_a_large_request(held_run: HeldRun) -> None:
    embedder = EmbeddedEmbedder()
    try:
        held_run.hold_next()
        big = asyncio.ensure_future(embedder.embed([f"passage {i} " * 20 for i in range(100)]))
        assert await asyncio.to_thread(held_run.running.wait, 60)  # the big request is running
        asyncio.get_running_loop().call_soon(held_run.release)  # once the query is queued
        query = await embedder.embed(["a short question"])

        assert not big.done()  # served before the 100 passages were finished
        assert query.shape == (1, 384)
        assert (await big).shape == (100, 384)
    finally:
        held_run.release()
        await embedder.aclose()


async def test_a_cancelled_call_does_not_stop_the_others(held_run: HeldRun) -> None:
    embedder = EmbeddedEmbedder()
    try:
        held_run.hold_next()
        doomed = asyncio.ensure_future(embedder.embed(["passage " * 100] * 100))
        assert await asyncio.to_thread(held_run.running.wait, 60)  # its first run is under way
        doomed.cancel()
        with pytest.raises(asyncio.CancelledError):
            await doomed
        held_run.release()
        vectors = await embedder.embed(["still served"])

        assert vectors.shape == (1, 384)
        assert embedder.batches < 10  # the 100 passages needed 10 runs; the rest was dropped
    finally:
        held_run.release()
        await embedder.aclose()


async def test_a_missing_model_dir_says_how_to_build_it(tmp_path: Path) -> None:
    embedder = EmbeddedEmbedder(tmp_path / "nowhere")
    try:
        with pytest.raises(RetrievalUnavailable, match="make setup") as info:
            await embedder.check()
        assert "onnx_export" in str(info.value)
        with pytest.raises(RetrievalUnavailable, match="missing"):
            await embedder.embed(["text"])
    finally:
        await embedder.aclose()


async def test_a_corrupt_model_is_unavailable_not_a_crash(tmp_path: Path) -> None:
    source = default_model_dir()
    for name in ("tokenizer.json", MANIFEST_FILE):
        shutil.copy2(source / name, tmp_path / name)
    (tmp_path / "model.onnx").write_bytes(b"not an onnx model")
    embedder = EmbeddedEmbedder(tmp_path)
    try:
        with pytest.raises(RetrievalUnavailable, match="make setup"):
            await embedder.embed(["text"])
    finally:
        await embedder.aclose()


async def test_a_closed_embedder_refuses_work() -> None:
    embedder = EmbeddedEmbedder()
    await embedder.aclose()

    with pytest.raises(RetrievalUnavailable, match="closed"):
        await embedder.embed(["text"])
    await embedder.aclose()  # twice is fine


def test_the_model_dir_can_be_moved(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("CITADEL_EMBED_MODEL_PATH", str(tmp_path))
    assert default_model_dir() == tmp_path

    monkeypatch.delenv("CITADEL_EMBED_MODEL_PATH")
    assert default_model_dir() == Path.home() / ".cache/citadel/models/all-minilm-l6-v2-onnx"


def test_batches_are_bounded_by_rows_and_padded_tokens() -> None:
    assert batch_size([10] * 100, max_rows=32, max_tokens=1024) == 32
    assert batch_size([60] * 100, max_rows=32, max_tokens=1024) == 17
    assert batch_size([256] * 100, max_rows=32, max_tokens=1024) == 4
    # 4 x 500 > 1024: the long row waits for the next batch
    assert batch_size([10, 10, 10, 500], max_rows=32, max_tokens=1024) == 3
    assert batch_size([2000], max_rows=32, max_tokens=1024) == 1  # never empty
    assert batch_size([], max_rows=32, max_tokens=1024) == 0
