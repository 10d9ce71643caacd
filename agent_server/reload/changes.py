"""Which settings a reload puts in force, and which need a restart.

A setting is live when what uses it can be replaced between two requests without losing
anything: limits read per request, the CORS origins, the log level, and the clients and agent
built from the settings (a run in progress keeps the agent and model it started with). Every
other setting needs a restart, because it shapes something that lives as long as the process:

- where the server listens and keeps data: ``CITADEL_HOST``/``PORT``, ``CITADEL_DATA_DIR``;
- the stores and the shared spine: ``DATABASE_URL``, ``CITADEL_STORE``, ``CITADEL_DB_*``,
  ``REDIS_URL``, ``QDRANT_*``, the event and claim timings, the feed, the reload channel;
- what is stored in which shape: the embedder kind, model and precision name the vector
  collections, the chunking and hybrid search decide what ingestion writes, the knowledge base
  the tools use, the embedding cache; a retrieval policy switched to or from ``off`` opens or
  drops the whole knowledge base;
- who may call: ``CITADEL_ENV``, ``CITADEL_AUTH`` and every ``CLERK_*``/``MACHINE_AUTH_MODE``
  setting (the verifier and its key cache are built once), ``CITADEL_RATE_LIMIT_FAIL_OPEN``;
- run and stream timings held by the run manager and the Redis clients (disconnect grace, run
  timeout, keep-alive and flush intervals, retention), the log format (the log handler).

Settings not listed in :data:`LIVE` need a restart, so a setting added later is safe until
someone makes it live on purpose.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent_server.config import Settings, variable

# What create_chat_model reads: a change builds a new model client.
CHAT_MODEL = frozenset(
    {
        "llm",
        "llm_url",
        "llm_model",
        "llm_api_key",
        "llm_connect_timeout",
        "llm_idle_timeout",
        "llm_retries",
        "llm_keep_alive",
        "llm_max_tokens",
        "llm_threads",
        "llm_context",
    }
)
# What an embedding server's client is built from (the embedded embedder has no server).
EMBEDDING_SERVER = frozenset(
    {
        "embed_url",
        "embed_api_key",
        "embed_timeout",
        "embed_batch_size",
        "llm_connect_timeout",
        "llm_retries",
    }
)
# What the rerank endpoint's client is built from.
RERANKER = frozenset(
    {
        "rerank_url",
        "rerank_model",
        "rerank_api_key",
        "embed_timeout",
        "llm_connect_timeout",
        "llm_retries",
    }
)
LIVE = (
    CHAT_MODEL
    | EMBEDDING_SERVER
    | RERANKER
    | frozenset(
        {
            "log_level",
            # access and limits, read per request
            "cors_origins",
            "rate_runs",
            "rate_ingest",
            "rate_voice",
            "rate_requests",
            "rate_auth_failures",
            "max_streams_per_user",
            "stream_max_duration",
            "max_body_bytes",
            "max_upload_bytes",
            "max_messages",
            "max_tools",
            "admin_feed_max_lag",
            # the agent new runs start with
            "approval_tools",
            "retrieval",
            "guided",
            "system_prompt",
            "agents",
            "max_tool_rounds",
            "llm_temperature",
        }
    )
)


@dataclass(frozen=True, slots=True)
class Changes:
    """Settings whose value differs from the one in force, by field name."""

    live: frozenset[str]
    restart: frozenset[str]

    def in_force(self, running: Settings, new: Settings) -> Settings:
        """``running`` with the live changes of ``new``: what runs after the reload."""
        return running.model_copy(update={name: getattr(new, name) for name in self.live})

    def rebuilds(self, client: frozenset[str]) -> bool:
        """Whether a client built from the settings ``client`` must be built again."""
        return bool(self.live & client)


def variables(fields: frozenset[str]) -> list[str]:
    """The environment variables of ``fields``, in declaration order."""
    return [variable(name) for name in Settings.model_fields if name in fields]


def compare(running: Settings, new: Settings) -> Changes:
    changed = {
        name for name in Settings.model_fields if getattr(running, name) != getattr(new, name)
    }
    live = changed & LIVE
    if "retrieval" in live and "off" in (running.retrieval, new.retrieval):
        live.remove("retrieval")  # the knowledge base is opened at start, or not at all
    return Changes(frozenset(live), frozenset(changed - live))
