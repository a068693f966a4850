import pytest

from esc_agents.config import build_config
from esc_agents.core.errors import UserError


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_defaults_follow_the_method():
    config = build_config()
    assert config.episode.max_turns == 8 and config.episode.critic_samples == 10
    assert config.episode.success_threshold == 0.5 and config.critic.temperature == 1.1
    assert set(config.endpoints) >= {"local", "vllm", "openai"}
    assert config.endpoints["openai"].api_key_env == "OPENAI_API_KEY"


def test_yaml_then_cli_overrides(tmp_path):
    path = write(tmp_path, "endpoints:\n  mine: {base_url: 'http://h:1/v1', model: m}\n"
                           "critic: {endpoint: mine}\nepisode: {max_turns: 5}\n")
    config = build_config(path, {"episode": {"max_turns": 3, "critic_samples": None}})
    assert config.critic.endpoint == "mine" and config.critic.prompt == "default"
    assert config.episode.max_turns == 3 and config.episode.critic_samples == 10


@pytest.mark.parametrize("text, message", [
    ("episode: {max_turn: 3}\n", "episode.max_turn: unknown key"),
    ("episode: {max_turns: many}\n", "episode.max_turns: Input should be a valid integer"),
    ("supporter: {endpoint: nowhere}\n", "unknown endpoint profile 'nowhere'"),
    ("- a list\n", "must be a mapping"),
    ("episode: {max_turns: [\n", "not valid YAML"),
])
def test_broken_config_is_one_clear_error(tmp_path, text, message):
    with pytest.raises(UserError, match=message):
        build_config(write(tmp_path, text))


def test_config_holds_no_key_only_its_variable_name(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-secret")
    assert "sk-secret" not in build_config().model_dump_json()
