"""Test doubles for services that cannot run on our machines (see DESIGN.md, "Real parts").

Everything not listed here talks to the real thing: Postgres (local and embedded), Redis, the
embedded Qdrant engine, the embedded ONNX embedder, the embedded llama.cpp model, a real
``llama_cpp.server``, Clerk's own SDK, ``@ag-ui/client`` in Node and Chromium. Every double in
tests/ and bench/, what it stands in for, and the opt-in test of its real counterpart (run
when the environment variables are set, shown as SKIPPED otherwise; marked ``opt_in``):

Service doubles
---------------

``OllamaDouble`` (tests/doubles/ollama.py)
    An Ollama server: ``/api/chat`` replays scripted replies, ``/api/tags``, ``/api/show``,
    ``/api/embed`` with stand-in vectors. Used by the ``ollama`` chat backend's tests, every
    server scenario and the HTTP embedder's tests. Real: tests/models/test_ollama_live.py
    (``OLLAMA_URL``, ``OLLAMA_MODEL``) for chat, and ``test_a_real_ollama_server_embeds_by_meaning``
    in tests/knowledge/test_http_embedders.py (``OLLAMA_URL``, ``OLLAMA_EMBED_MODEL``).
``RerankDouble`` (tests/doubles/rerank.py)
    A Cohere/Jina/TEI-style rerank endpoint (``POST …/v1/rerank``), scoring by shared words.
    Real: ``test_a_real_rerank_endpoint`` in tests/server/test_rerank.py (``RERANK_URL``,
    ``RERANK_MODEL``).
``SpeechDouble`` (tests/doubles/speech.py)
    An OpenAI-compatible speech server: ``POST /v1/audio/transcriptions`` (transcribed by the
    real Whisper tiny.en) and ``POST /v1/audio/speech`` (24 kHz PCM made by espeak-ng),
    recording each request's model, voice, text and ``Authorization``. Used by
    tests/voice/test_remote_speech.py (``stt_url``, ``tts_url``). **No opt-in real test.**
``ClerkBackendDouble`` (tests/auth/test_opaque.py)
    Clerk's Backend API, ``POST /v1/m2m_tokens/verify`` (opaque machine tokens). Real:
    ``test_real_clerk_verifies_an_opaque_token`` in the same file (``CLERK_SECRET_KEY``,
    ``CLERK_TEST_M2M_TOKEN``, optionally ``CLERK_API_URL``).
``JwksServer`` (tests/auth/support.py)
    Clerk's JWKS endpoint (``/.well-known/jwks.json``), with faults on demand. The verifier's
    verdicts are compared offline with Clerk's own SDK (tests/auth/test_clerk_differential.py).
    Real: tests/web/test_clerk_sign_in.py (below) verifies a development instance's session
    tokens against its JWKS.
A token source in the page (``window.citadelTokenSource``, tests/web/test_signed_in.py)
    Clerk's sign-in in the browser (its Frontend API and React SDK): the web app is given
    session tokens signed against the tests' key. Real: tests/web/test_clerk_sign_in.py
    (``CLERK_PUBLISHABLE_KEY``, ``CLERK_SECRET_KEY`` of a development instance,
    ``CLERK_TEST_USER_ID``; optionally ``CLERK_API_URL``), signing in through ``ClerkGate``.
qdrant-client's ``:memory:`` mode (the ``qdrant-memory`` case of tests/knowledge/test_vectors.py)
    A Qdrant server, behind the same client API (a brute-force engine in process). Real:
    the ``qdrant-server`` case of every shared vector-store test, and
    ``test_real_server_roundtrip`` (``QDRANT_URL``, ``QDRANT_API_KEY``). No Qdrant server
    runs here: the server path has never met one (README, docs/knowledge-base.md).

Fault doubles (a real server cannot misbehave on demand)
--------------------------------------------------------

``Flaky`` (tests/models/test_resilience.py)
    An HTTP backend (model, embedder or reranker server) that fails its first requests as
    scripted: error statuses, ``Retry-After``, silence, a stall or a drop mid-stream. **No
    opt-in real test.**
Silent sockets (tests/auth/test_limits.py, tests/store/test_database.py,
tests/knowledge/test_vectors.py, tests/server/test_doctor.py)
    A Redis, Postgres, Qdrant or rerank server that accepts connections and never answers.
    **No opt-in real test.**
``httpx.MockTransport`` handlers (``scripted()`` in tests/models/test_openai.py)
    An OpenAI-compatible ``/v1/chat/completions`` sending what ``llama_cpp.server`` never
    does: usage chunks, reasoning deltas, garbage, in-stream errors. The common shapes are
    tested against a real ``llama_cpp.server`` in the same file, always; **no opt-in test
    covers these shapes from a real server** (vLLM, OpenAI).

Benchmark doubles (bench/; not tests, but named here)
-----------------------------------------------------

``ScriptedModel`` (bench/scripted.py), and pydantic-ai's ``FunctionModel`` playing the same script
    A chat model that answers as the prompt's script says, so benchmarks measure the server,
    not a model. **No real counterpart** (by design).
``openai_scripted`` (bench/servers.py)
    An OpenAI-compatible model server for the ``/v1/chat/completions`` benchmark. **No real
    counterpart** (by design).

Not doubles of a service
------------------------

Fake clocks (``FakeClock`` in tests/auth/support.py, tests/auth/test_limits.py,
tests/models/test_resilience.py; time-machine), ``Sleeps`` (records backoff delays),
spies and holds around real parts (``RecordingEmbedder`` in tests/knowledge/conftest.py, the
wrapped ``generate``/``infer`` in tests/models/test_embedded.py and
tests/knowledge/test_embedded_embedder.py) and ``TcpProxy`` (tests/support/proxy.py: the real
Postgres behind a connection the test can cut).
"""

from tests.doubles.ollama import (
    DEFAULT_MODEL,
    OllamaDouble,
    ScriptedReply,
    text_reply,
    thinking_reply,
    tool_call_reply,
)
from tests.doubles.rerank import RerankDouble, rerank_double
from tests.doubles.speech import Heard, SpeechDouble, Spoken, speech_double

__all__ = [
    "DEFAULT_MODEL",
    "Heard",
    "OllamaDouble",
    "RerankDouble",
    "ScriptedReply",
    "SpeechDouble",
    "Spoken",
    "rerank_double",
    "speech_double",
    "text_reply",
    "thinking_reply",
    "tool_call_reply",
]
