"""Settings from the environment and YAML; unsafe or unusable configurations refuse to start."""

from __future__ import annotations

import pytest

from agent_server.app import create_app
from agent_server.config import ConfigError, Settings


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


@pytest.mark.parametrize(
    ("settings", "problem"),
    [
        ({"env": "production"}, "production refuses CITADEL_AUTH=off"),
        ({"env": "production", "cors_origins": ["*"]}, "CITADEL_CORS_ORIGINS=*"),
        ({"llm": "openai", "llm_model": "m"}, "needs CITADEL_LLM_URL"),
    ],
)
def test_unsafe_or_incomplete_settings_refuse_to_start(settings, problem):
    with pytest.raises(ConfigError, match=problem.replace("*", r"\*")):
        create_app(Settings(**settings))


def test_an_unknown_approval_tool_refuses_to_start():
    with pytest.raises(ConfigError, match="unknown tools: delete_everything"):
        create_app(Settings(approval_tools=["delete_everything"]))
