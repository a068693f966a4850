"""Turn a model's raw output into what the conversation shows.

Small models drift: they keep going as the other speaker ("Seeker: ..."), stop mid-sentence
at the token limit, or wrap the reply in think/strategy markup. These functions cut that back
to the utterance itself. Nothing here calls a model.
"""

from __future__ import annotations

import re

from esc_agents.datasets import ESCONV_STRATEGIES

SPEAKER_LABELS = {
    "seeker": ("seeker", "user", "patient", "client", "help-?seeker", "human"),
    "supporter": ("supporter", "assistant", "therapist", "counsel(?:l)?or", "listener", "ai", "system"),
}
_ANY_LABEL = r"(?:%s)" % "|".join(label for labels in SPEAKER_LABELS.values() for label in labels)
_SPEAKER_TURN = re.compile(rf"(?:^|\n|(?<=[.!?\"]) )\s*\**({_ANY_LABEL})\**\s*:\s*", re.IGNORECASE)
_SPECIAL_TOKENS = re.compile(r"<\|[^|>]*\|>")
_SENTENCE_END = re.compile(r"[.!?…](?:[\"')\]]*)(?=\s|$)")


def _is_own_label(label: str, speaker: str) -> bool:
    return any(re.fullmatch(pattern, label, re.IGNORECASE) for pattern in SPEAKER_LABELS[speaker])


def clean_utterance(text: str, speaker: str) -> str:
    """What `speaker` said: chat-template tokens and a leading label of its own removed, cut where
    the model starts speaking as anyone (a reply that opens as the other role is empty), and a
    trailing partial sentence dropped (kept if it is the only sentence)."""
    text = _SPECIAL_TOKENS.sub("", text).strip()
    turn = _SPEAKER_TURN.search(text)
    if turn and turn.start() == 0:
        if not _is_own_label(turn.group(1), speaker):
            return ""
        text = text[turn.end():]
        turn = _SPEAKER_TURN.search(text)
    if turn:
        text = text[: turn.start()]
    text = text.strip()
    ends = list(_SENTENCE_END.finditer(text))
    if ends and ends[-1].end() < len(text):
        text = text[: ends[-1].end()]
    return " ".join(text.split())


def tag_block(tag: str) -> re.Pattern[str]:
    return re.compile(rf"<{re.escape(tag)}>(.*?)</{re.escape(tag)}>", re.DOTALL)


def strip_think(text: str, think_tag: str = "think", response_tag: str = "response") -> str:
    """What the other roles may see of a think-format reply: the response block if there is one,
    else the text with think blocks (and a dangling unclosed one) removed."""
    if match := tag_block(response_tag).search(text):
        return match.group(1)
    text = tag_block(think_tag).sub("", text)
    text = re.sub(rf"<{re.escape(think_tag)}>.*", "", text, flags=re.DOTALL)
    return re.sub(rf"</?(?:{re.escape(think_tag)}|{re.escape(response_tag)})>", "", text)


def supporter_turn(raw: str, reply_format: str = "plain", think_tag: str = "think",
                   response_tag: str = "response") -> tuple[str | None, str]:
    """(strategy, what the seeker sees) of a supporter's raw output. Every path that turns policy
    text into a supporter turn (evaluation, stage-1 candidates, online futures, reward-model
    scoring) goes through here, so a reply that writes the seeker's next line itself
    ("...\nSeeker: my issue is solved!") is cut at that line everywhere alike."""
    strategy = None
    if reply_format == "think":
        raw = strip_think(raw, think_tag, response_tag)
    elif reply_format == "strategy":
        strategy, raw = split_strategy(raw)
    return strategy, clean_utterance(raw, "supporter")


_STRATEGY_PREFIX = re.compile(r"^\s*[\[(]\s*(?:strategy\s*:\s*)?([^\])]+?)\s*[\])]\s*", re.IGNORECASE)


def split_strategy(text: str) -> tuple[str | None, str]:
    """`[Question] How are you?` -> ("Question", "How are you?"); unknown names are kept as said."""
    match = _STRATEGY_PREFIX.match(text)
    if not match:
        return None, text
    said = match.group(1)
    known = {name.lower(): name for name in ESCONV_STRATEGIES}
    return known.get(said.lower(), said), text[match.end():]
