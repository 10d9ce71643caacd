"""Settings: environment variables, optionally a YAML file named by ``CITADEL_CONFIG``.

Every setting has an embedded default, so an empty environment runs fully offline. Names
follow DESIGN.md: ``CITADEL_*`` for our own, the conventional names (``DATABASE_URL``,
``REDIS_URL``, ...) for shared infrastructure. The YAML file may use either the variable
names or the field names; the environment wins over the file. A key of the file that names
no setting is an error (a misspelt key would otherwise leave its default in force), and so is
an unknown keyword given in code; unknown environment variables are not read at all.
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from agent_server.agent_ids import AGENT_ID_PATTERN, DEFAULT_AGENT


class ConfigError(RuntimeError):
    """The configuration cannot work; each of ``problems`` says what to change."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


def _clerk(default: Any, name: str, **constraints: Any) -> Any:
    """A setting read from ``name`` (no CITADEL_ prefix), as Clerk's own libraries name it."""
    return Field(default, validation_alias=AliasChoices(name, name.lower()), **constraints)


class AgentProfile(BaseModel):
    """An agent a client names by id (CopilotKit's ``agentId``, ``/agui/agents/{id}``): the
    same runtime with its own instructions, backend tools, knowledge base and model. What a
    profile leaves unset comes from the settings (``CITADEL_SYSTEM_PROMPT``, every tool,
    ``CITADEL_KNOWLEDGE_BASE``, ``CITADEL_LLM_MODEL``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    description: str = Field("", max_length=500)
    instructions: str | None = None  # the system prompt
    tools: list[str] | None = None  # the backend tools offered, by name
    knowledge_base: str | None = Field(None, min_length=1, max_length=64)
    knowledge: bool = True  # false: no knowledge-base tools at all
    model: str | None = Field(None, min_length=1)  # a model of the same CITADEL_LLM server


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CITADEL_", populate_by_name=True, extra="forbid", case_sensitive=False
    )

    env: Literal["development", "production"] = "development"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    data_dir: Path = Path("data")
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    log_format: Literal["json", "text"] | None = None  # default: json in production, else text
    log_buffer_lines: int = Field(5000, ge=10, le=100_000)  # kept for GET /admin/logs
    web_dir: Path | None = None  # the built web app served at /; default: web-demo/dist

    # Chat model
    llm: Literal["embedded", "ollama", "openai"] = "embedded"
    llm_url: str | None = None
    llm_model: str | None = None  # model name; for "embedded", a GGUF path (default: packaged)
    llm_api_key: SecretStr | None = None
    llm_connect_timeout: float = Field(5.0, gt=0)
    llm_idle_timeout: float = Field(60.0, gt=0)  # longest silence allowed inside a stream
    llm_retries: int = Field(2, ge=0, le=10)
    llm_keep_alive: str = "5m"  # Ollama: how long the model stays loaded
    llm_max_tokens: int | None = Field(None, gt=0)
    llm_temperature: float | None = Field(None, ge=0, le=2)
    llm_threads: int = Field(2, ge=1)  # embedded: llama.cpp threads
    llm_context: int = Field(4096, ge=512)  # embedded: context window in tokens

    # Knowledge base: embeddings
    embedder: Literal["embedded", "ollama", "openai"] = "embedded"
    embed_url: str | None = None  # Ollama root, or an OpenAI-compatible /v1 base
    embed_model: str | None = None  # embedded: all-minilm (the exported ONNX model)
    embed_api_key: SecretStr | None = None
    embed_precision: Literal["fp32", "int8"] = "fp32"  # embedded: int8 is ~1.5x faster
    embed_batch_size: int = Field(64, ge=1, le=2048)  # texts per request to a server
    embed_timeout: float = Field(30.0, gt=0)  # one batch's whole answer
    embed_cache_entries: int = Field(10_000, ge=0)  # in-process cache; 0: none
    embed_cache_ttl: float = Field(30 * 24 * 3600.0, gt=0)  # Redis cache entries live this long

    # Knowledge base: documents and retrieval
    knowledge_base: str = "docs"  # the base the agent's tools search and add to
    demo_docs: Path | None = Path("docs")  # ingested into an empty knowledge base at start
    retrieval: Literal["auto", "always", "off"] | None = None  # default: always for embedded
    # The runtime routes questions to tools and writes answers from their results; the model
    # only makes small talk. Default: "extract" for the embedded model, "off" for others.
    guided: Literal["extract", "model", "off"] | None = None
    hybrid_search: bool = True  # fuse dense and BM25 sparse candidates (RRF); false: dense only
    chunk_size: int = Field(800, ge=100, le=8000)  # characters of text per chunk
    chunk_overlap: int = Field(100, ge=0)
    max_file_bytes: int = Field(32 * 1024 * 1024, ge=1024)  # one ingested file
    max_upload_bytes: int = Field(64 * 1024 * 1024, ge=1024)  # one POST /rag/ingest
    rerank_url: str | None = None  # a /rerank endpoint's base (…/v1); unset: no reranking
    rerank_model: str | None = None
    rerank_api_key: SecretStr | None = None
    qdrant_url: str | None = Field(None, validation_alias=AliasChoices("QDRANT_URL", "qdrant_url"))
    qdrant_api_key: SecretStr | None = Field(
        None, validation_alias=AliasChoices("QDRANT_API_KEY", "qdrant_api_key")
    )

    # Shared infrastructure
    redis_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("REDIS_URL", "redis_url")
    )  # unset: in-process caches only

    # Agent
    system_prompt: str | None = None
    # Agents by id, besides "default" (which a profile of that id may adjust); see AgentProfile
    agents: dict[str, AgentProfile] = {}
    # Model <-> tool rounds per run; default 8, and 1 for the embedded model, which loops.
    max_tool_rounds: int | None = Field(None, ge=1, le=64)
    # Backend tools that need a person's approval to run (comma-separated names)
    approval_tools: Annotated[list[str], NoDecode] = []

    # Runs and streams
    disconnect_grace: float = Field(30.0, ge=0)
    run_timeout: float = Field(600.0, gt=0)
    keepalive_interval: float = Field(15.0, gt=0)
    # Events closer together than this share one write (a burst, not a token stream).
    stream_flush_interval: float = Field(0.005, ge=0, le=1)
    event_log_retention: float = Field(300.0, ge=0)  # replayed from memory; later, from the store

    # Across workers (REDIS_URL) and the admin feed
    feed_length: int = Field(100_000, ge=100)  # feed entries kept (Redis trims about there)
    claim_lease: float = Field(15.0, gt=0)  # a dead worker's threads are free after this
    admin_feed_max_lag: float = Field(5.0, gt=0)  # a reader further behind skips ahead
    # Where configuration reloads reach every worker (pub/sub ignores the database number:
    # deployments sharing a Redis need a channel each).
    reload_channel: str = Field("citadel:config-reload", min_length=1)

    # Thread store
    store: Literal["postgres", "memory"] = "postgres"  # memory: nothing survives the process
    database_url: SecretStr | None = Field(
        None, validation_alias=AliasChoices("DATABASE_URL", "database_url")
    )  # unset: an embedded Postgres under the data dir
    db_pool_min: int = Field(1, ge=0)
    db_pool_max: int = Field(10, ge=1)
    db_statement_timeout: float = Field(30.0, ge=0)
    db_connect_timeout: float = Field(10.0, gt=0)
    db_write_timeout: float = Field(10.0, gt=0)  # a run's end waits this long for the store
    event_flush_interval: float = Field(0.1, gt=0)  # events reach the store this often
    event_retention: float = Field(7 * 24 * 3600.0, gt=0)  # stored events are kept this long

    # Requests
    max_body_bytes: int = Field(4 * 1024 * 1024, ge=1024)
    max_messages: int = Field(1000, ge=1)
    max_tools: int = Field(128, ge=0)

    # Access
    auth: Literal["off", "clerk"] = "off"
    cors_origins: Annotated[list[str], NoDecode] = []
    # Clerk (Clerk's own variable names; see docs/security.md)
    clerk_issuer: str | None = _clerk(None, "CLERK_ISSUER")
    clerk_jwt_key: SecretStr | None = _clerk(None, "CLERK_JWT_KEY")  # PEM: no network at all
    clerk_jwks_url: str | None = _clerk(None, "CLERK_JWKS_URL")
    clerk_publishable_key: str | None = _clerk(None, "CLERK_PUBLISHABLE_KEY")  # gives the two above
    clerk_authorized_parties: Annotated[list[str], NoDecode] = _clerk(
        [], "CLERK_AUTHORIZED_PARTIES"
    )
    clerk_clock_skew_s: float = _clerk(5.0, "CLERK_CLOCK_SKEW_S", ge=0, le=60)
    clerk_max_token_lifetime_s: int = _clerk(600, "CLERK_MAX_TOKEN_LIFETIME_S", ge=60)
    clerk_max_token_bytes: int = _clerk(8192, "CLERK_MAX_TOKEN_BYTES", ge=1024, le=65536)
    clerk_jwks_cache_ttl_s: float = _clerk(300.0, "CLERK_JWKS_CACHE_TTL_S", gt=0)
    clerk_jwks_refresh_cooldown_s: float = _clerk(30.0, "CLERK_JWKS_REFRESH_COOLDOWN_S", ge=0)
    clerk_jwks_timeout_s: float = _clerk(3.0, "CLERK_JWKS_TIMEOUT_S", gt=0, le=30)
    clerk_accept_cookie: bool = _clerk(False, "CLERK_ACCEPT_COOKIE")
    clerk_reject_pending_sessions: bool = _clerk(True, "CLERK_REJECT_PENDING_SESSIONS")
    clerk_admin_org_role: str | None = _clerk("org:admin", "CLERK_ADMIN_ORG_ROLE")
    clerk_admin_claim_path: str | None = _clerk(None, "CLERK_ADMIN_CLAIM_PATH")
    clerk_admin_claim_value: str = _clerk("admin", "CLERK_ADMIN_CLAIM_VALUE")
    clerk_admin_max_fva_min: int | None = _clerk(None, "CLERK_ADMIN_MAX_FVA_MIN", ge=0)
    clerk_secret_key: SecretStr | None = _clerk(None, "CLERK_SECRET_KEY")
    clerk_machine_id: str | None = _clerk(None, "CLERK_MACHINE_ID")  # our mch_…
    clerk_machine_secret_key: SecretStr | None = _clerk(None, "CLERK_MACHINE_SECRET_KEY")
    clerk_api_url: str = _clerk("https://api.clerk.com", "CLERK_API_URL")
    machine_auth_mode: Literal["jwt", "opaque", "off"] = _clerk("jwt", "MACHINE_AUTH_MODE")
    # Voice (docs/voice.md): a LiveKit server for rooms; speech offline unless URLs are set
    livekit_url: str | None = Field(
        None, validation_alias=AliasChoices("LIVEKIT_URL", "livekit_url")
    )
    livekit_api_key: str | None = Field(
        None, validation_alias=AliasChoices("LIVEKIT_API_KEY", "livekit_api_key")
    )
    livekit_api_secret: SecretStr | None = Field(
        None, validation_alias=AliasChoices("LIVEKIT_API_SECRET", "livekit_api_secret")
    )
    voice_agent_name: str = Field("citadel", min_length=1, max_length=64)  # explicit dispatch
    voice_token_ttl: float = Field(600.0, ge=60, le=3600)  # seconds a room token lives
    voice_silence: float = Field(0.3, ge=0.1, le=2.0)  # seconds of silence that end a turn
    stt_url: str | None = None  # an OpenAI-compatible /v1/audio/transcriptions server
    stt_model: str = "whisper-1"
    tts_url: str | None = None  # an OpenAI-compatible /v1/audio/speech server
    tts_model: str = "tts-1"
    tts_voice: str = "alloy"
    speech_api_key: SecretStr | None = None
    # Limits per principal (count per period: "30/min", "5/s", "100/h"); the IP bucket counts
    # failed authentications only, and an IP that empties it is refused before verification.
    rate_runs: str = "30/min"
    rate_ingest: str = "10/min"
    rate_voice: str = "10/min"  # voice tokens and voice sockets
    rate_requests: str = "600/min"
    rate_auth_failures: str = "60/min"
    rate_limit_fail_open: bool = False  # Redis down: fall back to in-process buckets
    max_streams_per_user: int = Field(8, ge=1)
    stream_max_duration: float = Field(900.0, gt=0)  # an SSE or WebSocket stream, then reconnect

    @field_validator("demo_docs", mode="before")
    @classmethod
    def _empty_is_none(cls, value: Any) -> Any:
        return None if value == "" else value

    @field_validator("log_level", mode="before")
    @classmethod
    def _lower_case(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("approval_tools", "cors_origins", "clerk_authorized_parties", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [item.strip() for item in value.split(",") if item.strip()]
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _YamlSource(settings_cls)

    def problems(self) -> list[str]:
        """What makes this configuration unsafe or unusable; empty when it is fine."""
        found = []
        if self.llm in ("ollama", "openai") and not self.llm_url:
            found.append(f"CITADEL_LLM={self.llm} needs CITADEL_LLM_URL")
        if self.llm in ("ollama", "openai") and not self.llm_model:
            found.append(f"CITADEL_LLM={self.llm} needs CITADEL_LLM_MODEL")
        if self.embedder in ("ollama", "openai") and not (self.embed_url and self.embed_model):
            found.append(
                f"CITADEL_EMBEDDER={self.embedder} needs CITADEL_EMBED_URL and CITADEL_EMBED_MODEL"
            )
        if self.chunk_overlap >= self.chunk_size:
            found.append("CITADEL_CHUNK_OVERLAP must be smaller than CITADEL_CHUNK_SIZE")
        for rate in (
            "rate_runs",
            "rate_ingest",
            "rate_voice",
            "rate_requests",
            "rate_auth_failures",
        ):
            try:
                parse_rate(getattr(self, rate))
            except ValueError as error:
                found.append(f"CITADEL_{rate.upper()}: {error}")
        if self.auth == "clerk":
            found.extend(self._clerk_problems())
        found.extend(self._agent_problems())
        if self.env == "production":
            if self.auth == "off":
                found.append("production refuses CITADEL_AUTH=off")
            if "*" in self.cors_origins:
                found.append("production refuses CITADEL_CORS_ORIGINS=*; list exact origins")
            if self.auth == "clerk" and not self.clerk_authorized_parties:
                found.append(
                    "production needs CLERK_AUTHORIZED_PARTIES: the exact origins of your app"
                )
        return found

    def agent_profiles(self) -> dict[str, AgentProfile]:
        """Every agent by id, ``default`` first (it always exists)."""
        return {DEFAULT_AGENT: self.agents.get(DEFAULT_AGENT, AgentProfile()), **self.agents}

    def _agent_problems(self) -> list[str]:
        found = []
        for agent_id, profile in self.agents.items():
            if not re.match(AGENT_ID_PATTERN, agent_id):
                found.append(f"agents: {agent_id!r} is not an agent id (letters, digits, _.-)")
            if profile.model is not None and self.llm == "embedded":
                found.append(
                    f"agents.{agent_id}.model needs CITADEL_LLM=ollama or openai "
                    "(the embedded backend runs one model file)"
                )
        return found

    def missing_livekit(self) -> list[str]:
        """The LiveKit variables left unset, by name (rooms need all three)."""
        fields = ("livekit_url", "livekit_api_key", "livekit_api_secret")
        return [variable(name) for name in fields if not getattr(self, name)]

    def _clerk_problems(self) -> list[str]:
        found = []
        if not self.clerk_issuer and not self.clerk_publishable_key:
            found.append("CITADEL_AUTH=clerk needs CLERK_ISSUER (or CLERK_PUBLISHABLE_KEY)")
        if not (self.clerk_jwt_key or self.clerk_jwks_url or self.clerk_publishable_key):
            found.append(
                "CITADEL_AUTH=clerk needs CLERK_JWT_KEY (PEM), CLERK_JWKS_URL "
                "or CLERK_PUBLISHABLE_KEY"
            )
        if self.clerk_publishable_key:
            try:
                frontend_api(self.clerk_publishable_key)
            except ValueError as error:
                found.append(f"CLERK_PUBLISHABLE_KEY: {error}")
        if "*" in self.clerk_authorized_parties:
            found.append("CLERK_AUTHORIZED_PARTIES takes exact origins, not *")
        if self.clerk_machine_id is not None and not self.clerk_machine_id.startswith("mch_"):
            found.append("CLERK_MACHINE_ID is a machine id (mch_…)")
        if self.machine_auth_mode == "opaque" and not (
            self.clerk_machine_secret_key or self.clerk_secret_key
        ):
            found.append(
                "MACHINE_AUTH_MODE=opaque needs CLERK_MACHINE_SECRET_KEY or CLERK_SECRET_KEY"
            )
        return found


_PERIODS = {"s": 1.0, "sec": 1.0, "min": 60.0, "m": 60.0, "h": 3600.0, "hour": 3600.0}


def parse_rate(text: str) -> tuple[int, float]:
    """``"30/min"`` -> (30, 0.5): a bucket of 30 that refills 30 per minute."""
    count, _, period = text.strip().partition("/")
    seconds = _PERIODS.get(period.strip().lower())
    if not count.strip().isdigit() or int(count) < 1 or seconds is None:
        raise ValueError(f"{text!r} is not a rate such as 30/min, 5/s or 100/h")
    return int(count), int(count) / seconds


def frontend_api(publishable_key: str) -> str:
    """The Frontend API host a Clerk publishable key names (``pk_test_`` + base64 of it + $)."""
    import base64
    import binascii

    prefix, _, encoded = publishable_key.partition("_")[2].partition("_")
    if publishable_key[:3] != "pk_" or prefix not in ("test", "live") or not encoded:
        raise ValueError("not a Clerk publishable key (pk_test_… or pk_live_…)")
    try:
        host = base64.b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError):
        raise ValueError("not a Clerk publishable key (its body is not base64)") from None
    if not host.endswith("$") or "/" in host or len(host) < 3:
        raise ValueError("not a Clerk publishable key (no Frontend API host in it)")
    return host[:-1]


def read_settings(**overrides: Any) -> Settings:
    """The settings of the environment and the file, ``overrides`` winning over both; a
    :class:`ConfigError` names every key that is unknown or holds an invalid value."""
    try:
        return Settings(**overrides)
    except ValidationError as error:
        raise ConfigError(*(_described(problem) for problem in error.errors())) from None


def variable(field: str) -> str:
    """The environment variable of a setting: ``CITADEL_PORT``, ``DATABASE_URL``, ..."""
    alias = Settings.model_fields[field].validation_alias
    if isinstance(alias, AliasChoices):
        return str(alias.choices[0])
    return f"CITADEL_{field.upper()}"


def _field_name(key: str) -> str | None:
    """The setting a file key or variable names (either spelling, any case), if any."""
    name = key.lower().removeprefix("citadel_")
    return name if name in Settings.model_fields else None


def _described(problem: Any) -> str:
    key = str(problem["loc"][0]) if problem["loc"] else "the configuration"
    if problem["type"] == "extra_forbidden":
        wanted = key.lower().removeprefix("citadel_")
        close = difflib.get_close_matches(wanted, list(Settings.model_fields), n=1)
        if not close:
            return f"{key}: unknown setting"
        # Suggested in the spelling the key was written in: a variable name, or a field name.
        suggestion = variable(close[0]) if key.isupper() else close[0]
        return f"{key}: unknown setting (did you mean {suggestion}?)"
    name = _field_name(key)
    message = str(problem["msg"]).removeprefix("Value error, ")
    return f"{variable(name) if name else key}: {message}"


class _YamlSource(PydanticBaseSettingsSource):
    """Values from the YAML file at ``$CITADEL_CONFIG``, keyed by env var or field name. A key
    that names no setting is passed on as it is written, for validation to refuse by name."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        path = os.environ.get("CITADEL_CONFIG")
        self._values: dict[str, Any] = {}
        if path:
            try:
                loaded = yaml.safe_load(Path(path).read_text()) or {}
            except (OSError, yaml.YAMLError) as error:
                raise ConfigError(f"cannot read CITADEL_CONFIG={path}: {error}") from None
            if not isinstance(loaded, dict):
                raise ConfigError(f"CITADEL_CONFIG={path} must hold a mapping of settings")
            for key, value in loaded.items():
                self._values[_field_name(str(key)) or str(key)] = value

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return self._values.get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(self._values)
