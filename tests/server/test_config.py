"""Settings from the environment and YAML; unsafe or unusable configurations refuse to start."""

from __future__ import annotations

import base64

import pytest

from agent_server.app import create_app
from agent_server.config import ConfigError, Settings, frontend_api, parse_rate, read_settings


def test_defaults_need_no_configuration(monkeypatch):
    monkeypatch.delenv("CITADEL_CONFIG", raising=False)
    settings = Settings()
    assert (settings.llm, settings.auth, settings.host) == ("embedded", "off", "127.0.0.1")
    assert settings.problems() == []


def test_environment_lists_are_comma_separated(monkeypatch):
    monkeypatch.setenv("CITADEL_CORS_ORIGINS", "https://a.example, https://b.example")
    monkeypatch.setenv("CITADEL_APPROVAL_TOOLS", "calculate")
    settings = Settings()
    assert settings.cors_origins == ["https://a.example", "https://b.example"]
    assert settings.approval_tools == ["calculate"]


def test_yaml_file_sets_keys_and_the_environment_wins(monkeypatch, tmp_path):
    config = tmp_path / "citadel.yaml"
    config.write_text("CITADEL_LLM: ollama\nllm_url: http://gpu:11434\nport: 9000\n")
    monkeypatch.setenv("CITADEL_CONFIG", str(config))
    monkeypatch.setenv("CITADEL_PORT", "9100")
    settings = Settings()
    assert (settings.llm, settings.llm_url, settings.port) == ("ollama", "http://gpu:11434", 9100)
    assert settings.problems() == ["CITADEL_LLM=ollama needs CITADEL_LLM_MODEL"]


def test_an_unreadable_yaml_file_is_a_clear_error(monkeypatch, tmp_path):
    config = tmp_path / "broken.yaml"
    config.write_text("- just\n- a list\n")
    monkeypatch.setenv("CITADEL_CONFIG", str(config))
    with pytest.raises(ConfigError, match="must hold a mapping"):
        Settings()


def test_a_misspelt_file_key_is_named_with_the_setting_it_resembles(monkeypatch, tmp_path):
    config = tmp_path / "citadel.yaml"
    config.write_text("CITADEL_RATE_RUN: 5/min\nlog_levle: debug\nDATABSE_URL: postgresql://h/db\n")
    monkeypatch.setenv("CITADEL_CONFIG", str(config))
    with pytest.raises(ConfigError) as refused:
        read_settings()
    assert refused.value.problems == [
        "CITADEL_RATE_RUN: unknown setting (did you mean CITADEL_RATE_RUNS?)",
        "log_levle: unknown setting (did you mean log_level?)",
        "DATABSE_URL: unknown setting (did you mean DATABASE_URL?)",
    ]


def test_every_invalid_value_and_unknown_key_is_reported_at_once(monkeypatch, tmp_path):
    config = tmp_path / "citadel.yaml"
    config.write_text("port: 99999\nCITADEL_LOG_LEVEL: LOUD\nqdrant_api_key: [1]\nnonsense: 1\n")
    monkeypatch.setenv("CITADEL_CONFIG", str(config))
    with pytest.raises(ConfigError) as refused:
        read_settings()
    assert refused.value.problems == [
        "CITADEL_PORT: Input should be less than or equal to 65535",
        "CITADEL_LOG_LEVEL: Input should be 'debug', 'info', 'warning', 'error' or 'critical'",
        "QDRANT_API_KEY: Input should be a valid string",
        "nonsense: unknown setting",
    ]


def test_an_unknown_keyword_in_code_is_refused_like_a_file_key():
    with pytest.raises(ConfigError, match="rate_run: unknown setting"):
        read_settings(rate_run="5/min")


def test_the_log_level_is_checked_and_any_case_is_accepted(monkeypatch):
    monkeypatch.setenv("CITADEL_LOG_LEVEL", "WARNING")
    assert read_settings().log_level == "warning"


CLERK = {"clerk_issuer": "https://clerk.example.com", "clerk_jwt_key": "PEM"}


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"env": "production"}, "production refuses CITADEL_AUTH=off"),
        ({"env": "production", "cors_origins": ["*"]}, "CITADEL_CORS_ORIGINS=*"),
        ({"llm": "openai", "llm_model": "m"}, "needs CITADEL_LLM_URL"),
        (
            {"env": "production", "auth": "clerk", **CLERK},
            "production needs CLERK_AUTHORIZED_PARTIES",
        ),
        ({"auth": "clerk", "clerk_jwt_key": "PEM"}, "needs CLERK_ISSUER"),
        ({"auth": "clerk", "clerk_issuer": "https://clerk.example.com"}, "needs CLERK_JWT_KEY"),
        ({"auth": "clerk", **CLERK, "clerk_authorized_parties": ["*"]}, "exact origins, not"),
        ({"auth": "clerk", "clerk_publishable_key": "pk_live_bm9wZQ"}, "CLERK_PUBLISHABLE_KEY"),
        ({"auth": "clerk", **CLERK, "clerk_machine_id": "user_1"}, "CLERK_MACHINE_ID"),
        ({"auth": "clerk", **CLERK, "machine_auth_mode": "opaque"}, "needs CLERK_MACHINE_SECRET"),
        ({"rate_runs": "lots"}, "CITADEL_RATE_RUNS"),
        ({"rate_requests": "0/min"}, "CITADEL_RATE_REQUESTS"),
    ],
)
def test_unsafe_or_incomplete_settings_refuse_to_start(settings, problem):
    with pytest.raises(ConfigError, match=problem.replace("*", r"\*")):
        create_app(Settings(**settings))


def test_an_unknown_approval_tool_refuses_to_start():
    with pytest.raises(ConfigError, match="unknown tools: delete_everything"):
        create_app(Settings(approval_tools=["delete_everything"]))


def test_a_publishable_key_names_the_frontend_api():
    key = "pk_test_" + base64.b64encode(b"fit-eel-12.clerk.accounts.dev$").decode().rstrip("=")
    assert frontend_api(key) == "fit-eel-12.clerk.accounts.dev"
    assert Settings(auth="clerk", clerk_publishable_key=key).problems() == []
    assert parse_rate("30/min") == (30, 0.5) and parse_rate("5/s") == (5, 5.0)
