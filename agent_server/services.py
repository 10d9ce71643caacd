"""The services one app shares between its requests, and how they are started and stopped."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import orjson

from agent_server import __version__
from agent_server.agent_ids import DEFAULT_AGENT
from agent_server.auth.access import Access, Rates, cookie_origins, open_access
from agent_server.backends.resilience import CircuitBreaker, CircuitState
from agent_server.config import ConfigError, Settings
from agent_server.knowledge.embedders import create_embedder, knowledge_client
from agent_server.knowledge.embedders.base import Embedder
from agent_server.knowledge.embedders.cache import CachedEmbedder
from agent_server.knowledge.ingest import IngestJobs, files_under, job_json
from agent_server.knowledge.library import ChunkingSettings, KnowledgeBase
from agent_server.knowledge.rerank import Reranker
from agent_server.models.base import ChatModel
from agent_server.observability.logs import reconfigure_logging
from agent_server.observability.metrics import Metrics
from agent_server.runs.bus import EventBus, LocalBus
from agent_server.runs.claims import LocalClaims, RunClaims
from agent_server.runs.manager import RunLimits, RunManager
from agent_server.runs.pump import LogPump
from agent_server.runs.service import Pacing, RunService
from agent_server.runtime.builtin_tools import BUILTIN_TOOLS
from agent_server.runtime.knowledge_tools import (
    CITATION_PROMPT,
    KNOWLEDGE_TOOL_NAMES,
    SEARCH_TOOL,
    knowledge_tools,
)
from agent_server.runtime.loop import DEFAULT_SYSTEM_PROMPT, Agent, AgentSettings
from agent_server.runtime.tools import ToolRegistry
from agent_server.store.api_keys import ApiKeyStore, MemoryApiKeyStore
from agent_server.store.base import Actor, StorageUnavailable, ThreadStore
from agent_server.store.documents import DocumentStore, IngestJob
from agent_server.store.memory import MemoryDocumentStore, MemoryThreadStore
from agent_server.urls import redact_url
from protocol.input import InputLimits

if TYPE_CHECKING:
    import asyncpg
    import redis.asyncio as redis

logger = logging.getLogger("citadel")


@dataclass
class Services:
    """Everything a request handler may use; one instance per app, built in the lifespan.

    A configuration reload (:mod:`agent_server.reload`) replaces ``settings`` (the settings in
    force), the agent (with its model and tools), the reranker, the embedder's backend and
    the limits, all at once in :meth:`reconfigure`."""

    settings: Settings
    store: ThreadStore
    embedder: CachedEmbedder
    knowledge: KnowledgeBase | None  # None: CITADEL_RETRIEVAL=off
    reranker: Reranker | None  # None: no CITADEL_RERANK_URL
    ingest_jobs: IngestJobs | None
    runs: RunService  # the run API every face uses
    bus: EventBus
    input_limits: InputLimits
    access: Access
    metrics: Metrics
    redis_client: redis.Redis | None  # the shared client (caches, rate limits); None: no REDIS_URL
    _resources: contextlib.AsyncExitStack
    # Each dependency's last failed check (GET /health/detailed): name -> error and when.
    last_errors: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def agent(self) -> Agent:
        """The default agent new runs start with (a run keeps the one it started with)."""
        return self.runs.manager.agent

    @property
    def model(self) -> ChatModel:
        return self.agent.model

    @property
    def tools(self) -> ToolRegistry:
        return self.agent.tools

    def backends(self) -> dict[str, Any]:
        """Each configured backend in use now, by its name in :data:`agent_server.checks.CHECKS`
        (what ``GET /health/detailed`` checks)."""
        backends: dict[str, Any] = {"model": self.model, "store": self.store}
        if self.knowledge is not None:
            backends["embedder"] = self.knowledge.embedder
            backends["vectors"] = self.knowledge.vectors
        if self.redis_client is not None:
            backends["redis"] = self.redis_client
        if self.reranker is not None:
            backends["reranker"] = self.reranker
        return backends

    def build_agents(self, settings: Settings, model: ChatModel) -> dict[str, Agent]:
        """The agents of ``settings`` on this app's store and knowledge base, their tool
        calls counted in the same metrics as the current ones'."""
        agents = build_agents(settings, model, self.store, self.knowledge)
        for agent in agents.values():
            agent.tool_calls = self.agent.tool_calls
        return agents

    def reconfigure(
        self,
        settings: Settings,
        agents: dict[str, Agent],
        reranker: Reranker | None,
        embedder: Embedder,
    ) -> None:
        """Put reloaded settings in force with what was built for them. Nothing here awaits,
        so every request and run begins entirely under the old configuration or the new one;
        the clients it replaces are the caller's to close (runs keep their agent)."""
        self.settings = settings
        self.runs.manager.agents = agents
        self.reranker = reranker
        if self.knowledge is not None:
            self.knowledge.reranker = reranker
        self.embedder.inner = embedder
        self.input_limits = input_limits(settings)
        self.access.rates = Rates.from_settings(settings)
        self.access.streams.per_principal = settings.max_streams_per_user
        if self.access.authenticator is not None:
            self.access.authenticator.allowed_origins = frozenset(cookie_origins(settings))
        reconfigure_logging(settings)

    async def aclose(self) -> None:
        """Stop runs first (their ends are stored), then what they wrote through, then the
        model and the reranker (those in use now: a reload may have replaced the first)."""
        await self.runs.manager.shutdown()
        try:
            await self._resources.aclose()
        finally:
            await _close_clients(self.model, self.reranker)

    def capabilities(self) -> dict[str, Any]:
        return {
            "identity": {
                "name": "citadel",
                "type": "citadel",
                "version": __version__,
                "provider": self.model.provider,
            },
            "transport": {
                "streaming": True,
                "websocket": True,
                "httpBinary": False,
                "pushNotifications": False,
                "resumable": True,
            },
            "tools": {
                "supported": True,
                "clientProvided": True,
                "parallelCalls": True,
                "items": [
                    {
                        "name": tool.name,
                        "description": tool.description,
                        "parameters": tool.parameters,
                    }
                    for tool in self.tools
                ],
            },
            "state": {"snapshots": True, "deltas": True, "memory": True, "persistentState": True},
            "reasoning": {"supported": True, "streaming": True},
            "execution": {"maxIterations": self.agent.settings.max_tool_rounds},
            "humanInTheLoop": {"supported": True, "approvals": True, "interrupts": True},
        }


def build_tools(
    settings: Settings,
    knowledge: KnowledgeBase | None = None,
    policy: str = "auto",
    agent_id: str = DEFAULT_AGENT,
) -> ToolRegistry:
    """The backend tools of agent ``agent_id``: the built-in ones, and its knowledge base's
    when it has one (under the "always" policy the runtime searches itself and the model is
    offered neither), narrowed to the profile's ``tools``. Without ``knowledge`` it only checks
    the configuration (approvals and profiles name known tools)."""
    profile = settings.agent_profiles()[agent_id]
    tools = [*BUILTIN_TOOLS]
    if knowledge is not None and profile.knowledge:
        base = profile.knowledge_base or settings.knowledge_base
        tools += knowledge_tools(knowledge, base, with_add=policy != "always")
    names = {tool.name for tool in BUILTIN_TOOLS} | set(KNOWLEDGE_TOOL_NAMES)
    unknown = sorted(set(settings.approval_tools) - names)
    if unknown:
        raise ConfigError(
            f"CITADEL_APPROVAL_TOOLS: approval configured for unknown tools: {', '.join(unknown)}"
        )
    if profile.tools is not None:
        unknown = sorted(set(profile.tools) - names)
        if unknown:
            raise ConfigError(f"agents.{agent_id}.tools: unknown tools: {', '.join(unknown)}")
        tools = [tool for tool in tools if tool.name in profile.tools]
    present = {tool.name for tool in tools}
    return ToolRegistry(tools).requiring_approval(set(settings.approval_tools) & present)


def check_agents(settings: Settings) -> None:
    """Raise :class:`ConfigError` if an agent's profile names what does not exist."""
    for agent_id in settings.agent_profiles():
        build_tools(settings, agent_id=agent_id)


def build_agents(
    settings: Settings, model: ChatModel, store: ThreadStore, knowledge: KnowledgeBase | None
) -> dict[str, Agent]:
    """Every configured agent by id on ``model`` (``default`` first), telling one list of
    their tool calls."""
    agents = {
        agent_id: build_agent(settings, model, store, knowledge, agent_id)
        for agent_id in settings.agent_profiles()
    }
    told = agents[DEFAULT_AGENT].tool_calls
    for agent in agents.values():
        agent.tool_calls = told
    return agents


def build_agent(
    settings: Settings,
    model: ChatModel,
    store: ThreadStore,
    knowledge: KnowledgeBase | None,
    agent_id: str = DEFAULT_AGENT,
) -> Agent:
    """Agent ``agent_id`` of ``settings`` on ``model``, with the backend tools of
    :func:`build_tools` (under the "always" retrieval policy the runtime searches itself
    before answering)."""
    profile = settings.agent_profiles()[agent_id]
    policy = retrieval_policy(settings, model)
    tools = build_tools(settings, knowledge, policy, agent_id)
    prompt = profile.instructions or settings.system_prompt or DEFAULT_SYSTEM_PROMPT
    searches = SEARCH_TOOL in tools
    return Agent(
        model,
        tools,
        store,
        AgentSettings(
            # Under "always" the model has no search tool to be told about.
            system_prompt=f"{prompt}\n\n{CITATION_PROMPT}"
            if policy == "auto" and searches
            else prompt,
            max_tool_rounds=settings.max_tool_rounds or default_tool_rounds(model),
            max_tokens=settings.llm_max_tokens,
            temperature=settings.llm_temperature,
            model=profile.model,
            retrieve_first=SEARCH_TOOL if policy == "always" and searches else None,
            guided=guided_policy(settings, model),
        ),
        similarity=knowledge.similarity if knowledge is not None else None,
    )


def guided_policy(settings: Settings, model: ChatModel) -> Literal["extract", "model"] | None:
    # A capable backend receives what it always did unless guiding is asked for.
    policy = settings.guided or ("extract" if model.provider == "embedded" else "off")
    return None if policy == "off" else policy


def input_limits(settings: Settings) -> InputLimits:
    return InputLimits(max_messages=settings.max_messages, max_tools=settings.max_tools)


def retrieval_policy(settings: Settings, model: ChatModel) -> str:
    # Small in-process models do not decide well when to search: search before every answer.
    return settings.retrieval or ("always" if model.provider == "embedded" else "auto")


def default_tool_rounds(model: ChatModel) -> int:
    # Small in-process models call a tool again on its own result: one round, then answer.
    return 1 if model.provider == "embedded" else 8


async def start_services(settings: Settings, model: ChatModel) -> Services:
    """Open the stores (starting an embedded Postgres if no URL is set), the knowledge base,
    then everything that runs on them. The model is the caller's; it is closed with the
    services."""
    resources = contextlib.AsyncExitStack()
    reranker = None
    try:
        store, documents, api_keys = await _open_stores(settings, resources)
        redis_client = open_redis(settings, resources)
        access = await open_access(settings, store, api_keys, redis_client, resources)
        writer = LogPump(
            "store", store.append_events, StorageUnavailable, interval=settings.event_flush_interval
        )
        writer.start()
        resources.push_async_callback(writer.close)
        bus, claims = open_spine(settings, redis_client, resources)
        embedder = await open_embedder(settings, resources, redis_client)
        reranker = create_reranker(settings)
        knowledge = jobs = None
        if retrieval_policy(settings, model) != "off":
            knowledge = await open_knowledge(settings, embedder, documents, resources, reranker)
            jobs = IngestJobs(knowledge, documents, announce=_announcer(bus))
            resources.push_async_callback(jobs.aclose)
            await _seed_demo_docs(settings, knowledge, jobs)
        agents = build_agents(settings, model, store, knowledge)
    except BaseException:
        try:
            await resources.aclose()
        finally:
            await _close_clients(model, reranker)
        raise
    runs = RunManager(
        agents,
        store,
        writer,
        RunLimits(
            disconnect_grace=settings.disconnect_grace,
            run_timeout=settings.run_timeout,
            write_timeout=settings.db_write_timeout,
            log_retention=settings.event_log_retention,
        ),
        bus=bus,
        claims=claims,
    )
    await runs.open()
    metrics = _metrics(runs, access, embedder, knowledge, store)
    pacing = Pacing(
        idle_timeout=settings.keepalive_interval,
        min_interval=settings.stream_flush_interval,
        poll=runs.limits.mirror_poll,
    )
    return Services(
        settings,
        store,
        embedder,
        knowledge,
        reranker,
        jobs,
        RunService(runs, store, pacing),
        bus,
        input_limits(settings),
        access,
        metrics,
        redis_client,
        resources,
    )


async def _close_clients(model: ChatModel, reranker: Reranker | None) -> None:
    try:
        await model.aclose()
    finally:
        if reranker is not None:
            await reranker.aclose()


def _metrics(
    runs: RunManager,
    access: Access,
    embedder: Embedder,
    knowledge: KnowledgeBase | None,
    store: ThreadStore,
) -> Metrics:
    """The app's metrics, wired to what keeps the numbers."""
    metrics = Metrics()
    runs.ended.append(metrics.run_ended)
    runs.timed.append(metrics.run_timed)
    metrics.labelled(
        "citadel_event_log_lag_seconds",
        "How long each copy of the run logs has been failing (0: up to date), by sink",
        "sink",
        lambda: {"store": runs.writer.lag, "bus": runs.publisher.lag},
        gauge=True,
    )
    metrics.labelled(
        "citadel_model_circuit_state",
        "The model backend's circuit breaker: 1 for its current state (none: in process)",
        "state",
        lambda: _circuit(runs.agent.model),  # the model in use now: a reload may replace it
        gauge=True,
    )
    pool_use = getattr(store, "pool_use", None)
    if pool_use is not None:  # Postgres
        metrics.labelled(
            "citadel_db_pool_connections",
            "Database pool connections by state (in_use, idle) and its max size",
            "state",
            pool_use,
            gauge=True,
        )
    runs.agent.tool_calls.append(metrics.tool_called)  # one list, shared by every agent
    if knowledge is not None:
        knowledge.searches.append(metrics.searched)
    metrics.gauge(
        "citadel_runs_active", "Runs in progress on this worker", lambda: runs.active_count
    )
    metrics.gauge(
        "citadel_streams_open", "Event streams open on this worker", lambda: access.streams.total
    )
    if isinstance(embedder, CachedEmbedder):
        stats = embedder.stats
        metrics.labelled(
            "citadel_embedding_cache_lookups",
            "Texts looked up in the embedding cache, by where they were found",
            "result",
            lambda: {
                "memory_hit": stats.memory_hits,
                "redis_hit": stats.redis_hits,
                "miss": stats.misses,
            },
        )
    return metrics


def _circuit(model: ChatModel) -> dict[str, float]:
    breaker: CircuitBreaker | None = getattr(model, "breaker", None)
    if breaker is None:  # the embedded model has no circuit
        return {}
    return {state.value: float(breaker.state is state) for state in CircuitState}


def _announcer(bus: EventBus) -> Callable[[IngestJob], Awaitable[None]]:
    """Ingestion jobs on the admin feed, as ``GET /rag/jobs/{id}`` shows them."""

    async def announce(job: IngestJob) -> None:
        await bus.note("ingest", orjson.dumps(job_json(job)), job.owner)

    return announce


def create_reranker(settings: Settings) -> Reranker | None:
    """The client of the configured rerank endpoint; None when there is none."""
    if not settings.rerank_url:
        return None
    http = knowledge_client(
        f"reranker at {redact_url(settings.rerank_url)}", settings.rerank_api_key, settings
    )
    return Reranker(settings.rerank_url, settings.rerank_model, http)


async def _seed_demo_docs(settings: Settings, knowledge: KnowledgeBase, jobs: IngestJobs) -> None:
    """A new knowledge base starts with Citadel's own docs, ingested in the background, so a
    newcomer can ask about Citadel at once. A base that has documents is left as it is."""
    folder = settings.demo_docs
    if folder is None or not folder.is_dir():
        return
    collection = knowledge.collection(settings.knowledge_base)
    if await knowledge.documents.list_documents(collection):
        return
    job = await jobs.submit(settings.knowledge_base, files_under([folder]), Actor("citadel"))
    logger.info("ingesting the demo knowledge base from %s (job %s)", folder, job.id)


async def open_knowledge(
    settings: Settings,
    embedder: Embedder,
    documents: DocumentStore,
    resources: contextlib.AsyncExitStack,
    reranker: Reranker | None = None,
) -> KnowledgeBase:
    from agent_server.knowledge.vectors import open_vector_store

    api_key = settings.qdrant_api_key.get_secret_value() if settings.qdrant_api_key else None
    vectors = open_vector_store(settings.qdrant_url, api_key, settings.data_dir)
    resources.push_async_callback(vectors.aclose)
    return KnowledgeBase(
        embedder,
        vectors,
        documents,
        ChunkingSettings(settings.chunk_size, settings.chunk_overlap, settings.max_file_bytes),
        reranker,
        hybrid=settings.hybrid_search,
    )


def open_redis(
    settings: Settings, resources: contextlib.AsyncExitStack, *, timeout: float = 0.5
) -> redis.Redis | None:
    """A Redis client with short timeouts: a Redis that is down costs each call ``timeout``
    at most, and every user of it degrades. The shared one (caches, rate limits, publishing)
    answers in half a second; readers that block in Redis get their own, longer one."""
    if settings.redis_url is None:
        return None
    import redis.asyncio as redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.from_url(  # redis-py retries 10 times by default: seconds, not 0.5 s
        settings.redis_url.get_secret_value(),
        socket_timeout=timeout,
        socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0),
    )
    resources.push_async_callback(client.aclose)
    return client


def open_spine(
    settings: Settings, redis_client: redis.Redis | None, resources: contextlib.AsyncExitStack
) -> tuple[EventBus, RunClaims]:
    """The event bus and the claims: Redis' when it is configured, else this process's."""
    if redis_client is None:
        return LocalBus(settings.feed_length), LocalClaims()
    from agent_server.runs.redis_bus import RedisBus
    from agent_server.runs.redis_claims import RedisClaims

    # Readers block up to the keep-alive interval (admin feed) or a second (mirrors).
    blocking = open_redis(settings, resources, timeout=settings.keepalive_interval + 5)
    assert blocking is not None
    retention, length = settings.event_log_retention, settings.feed_length
    bus = RedisBus(redis_client, blocking, retention=retention, feed_length=length)
    return bus, RedisClaims(redis_client, blocking, lease=settings.claim_lease)


async def open_embedder(
    settings: Settings,
    resources: contextlib.AsyncExitStack,
    redis_client: redis.Redis | None = None,
) -> CachedEmbedder:
    """The configured embedder behind the embedding cache (shared through Redis if set).
    Nothing is loaded or connected yet: an embedder that cannot serve fails its requests
    with ``retrieval_unavailable``, and chat goes on without it."""
    embedder = CachedEmbedder(
        create_embedder(settings),
        memory_entries=settings.embed_cache_entries,
        redis_client=redis_client,
        ttl=settings.embed_cache_ttl,
    )
    resources.push_async_callback(embedder.aclose)  # the backend in use then (reloads swap it)
    return embedder


async def _open_stores(
    settings: Settings, resources: contextlib.AsyncExitStack
) -> tuple[ThreadStore, DocumentStore, ApiKeyStore]:
    if settings.store == "memory":
        logger.warning("CITADEL_STORE=memory: threads are lost when the process stops")
        return MemoryThreadStore(), MemoryDocumentStore(), MemoryApiKeyStore()
    from agent_server.store.postgres_api_keys import PostgresApiKeyStore
    from agent_server.store.postgres_documents import PostgresDocumentStore
    from agent_server.store.postgres_threads import PostgresThreadStore

    pool = await open_database(settings, resources)
    store = PostgresThreadStore(pool, event_retention=settings.event_retention)
    await store.start()
    resources.push_async_callback(store.close)
    return store, PostgresDocumentStore(pool), PostgresApiKeyStore(pool)


async def open_database(settings: Settings, resources: contextlib.AsyncExitStack) -> asyncpg.Pool:
    """A pool on the configured database (the embedded one if no URL is set), migrated."""
    from agent_server.store.embedded import database_url
    from agent_server.store.migrations import upgrade
    from agent_server.store.postgres import open_pool

    url = await resources.enter_async_context(database_url(settings))
    pool = await open_pool(
        url,
        min_size=settings.db_pool_min,
        max_size=settings.db_pool_max,
        statement_timeout=settings.db_statement_timeout,
        connect_timeout=settings.db_connect_timeout,
    )
    resources.push_async_callback(pool.close)
    await upgrade(pool)
    return pool
