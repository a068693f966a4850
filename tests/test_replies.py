import pytest

from esc_agents.roles.replies import clean_utterance, split_strategy, strip_think


@pytest.mark.parametrize("raw, speaker, expected", [
    ("I'm sorry to hear that. How long has it been?", "supporter", "I'm sorry to hear that. How long has it been?"),
    ("Supporter: I hear you.", "supporter", "I hear you."),
    ("I hear you.\nSeeker: thanks\nSupporter: anytime", "supporter", "I hear you."),
    ("I hear you. User: thanks", "supporter", "I hear you."),
    ("Seeker: I feel awful.", "supporter", ""),
    ("Therapist: tell me more", "seeker", ""),
    ("That sounds hard. I think you should", "supporter", "That sounds hard."),
    ("just one partial clause", "seeker", "just one partial clause"),
    ("I'm tired.<|im_end|>", "seeker", "I'm tired."),
    ("  Really?   Yes.  ", "seeker", "Really? Yes."),
    ("", "seeker", ""),
])
def test_clean_utterance(raw, speaker, expected):
    assert clean_utterance(raw, speaker).text == expected


@pytest.mark.parametrize("raw, expected", [
    ("<think>sad</think><response>I'm here.</response>", "I'm here."),
    ("<think>sad</think> I'm here.", " I'm here."),
    ("<think>never closed, rambling", ""),
    ("No tags at all.", "No tags at all."),
])
def test_strip_think(raw, expected):
    assert strip_think(raw) == expected


def test_strip_think_with_custom_tags():
    assert strip_think("<r>x</r><a>hello</a>", think_tag="r", response_tag="a") == "hello"


@pytest.mark.parametrize("raw, expected", [
    ("[Question] How are you?", ("Question", "How are you?")),
    ("[reflection of feelings] You sound hurt.", ("Reflection of feelings", "You sound hurt.")),
    ("(Strategy: Information) Many people feel this way.", ("Information", "Many people feel this way.")),
    ("No strategy here.", (None, "No strategy here.")),
])
def test_split_strategy(raw, expected):
    assert split_strategy(raw) == expected
