import pytest

from esc_agents.core.errors import UserError
from esc_agents.prompts import ROLES, available, load_prompt


def test_every_shipped_prompt_loads():
    for role in ROLES:
        assert available(role)
        for name in available(role):
            assert load_prompt(role, name).sha256


def test_personas_include_an_adversarial_one():
    assert {"cooperative", "resistant"} <= set(available("user_simulator"))
    assert {"vanilla", "think", "strategy"} <= set(available("supporter"))


def test_critic_classifies_the_four_verdicts_and_rejects_the_rest():
    critic = load_prompt("critic", "default")
    assert critic.classify("A) The seeker feels worse.").score == -1.0
    assert critic.classify("B").score == -0.5
    assert critic.classify("The seeker feels better now").score == 0.5
    assert critic.classify("D) The seeker's issue is solved.").score == 1.0
    assert critic.classify("banana") is None
    assert critic.classify("feels better or feels worse") is None  # ambiguous


def test_unknown_name_lists_the_available_ones():
    with pytest.raises(UserError, match="unknown user_simulator prompt 'grumpy'.*cooperative"):
        load_prompt("user_simulator", "grumpy")


def write(tmp_path, text):
    path = tmp_path / "p.yaml"
    path.write_text(text)
    return str(path)


def test_users_own_file_by_path(tmp_path):
    prompt = load_prompt("user_simulator", write(tmp_path, "system: 'You are a {emotion} student. {situation}'\n"))
    assert prompt.render("system", emotion="sad", problem="x", situation="Exams.") == "You are a sad student. Exams."


def test_unknown_template_variable_is_an_error(tmp_path):
    with pytest.raises(UserError, match=r"unknown template variable \{mood\}"):
        load_prompt("user_simulator", write(tmp_path, "system: 'Feel {mood}. {situation}'\n"))


def test_missing_required_variable_is_an_error(tmp_path):
    text = "system: judge\nuser: 'How is it going?'\nverdicts: [{label: a, score: 1, patterns: [a]}, {label: b, score: 0, patterns: [b]}]\n"
    with pytest.raises(UserError, match=r"\{conversation\} is required"):
        load_prompt("critic", write(tmp_path, text))


def test_unknown_key_and_missing_file(tmp_path):
    with pytest.raises(UserError, match="sytem: unknown key"):
        load_prompt("supporter", write(tmp_path, "sytem: hi\n"))
    with pytest.raises(UserError, match="not found"):
        load_prompt("supporter", str(tmp_path / "nope.yaml"))
