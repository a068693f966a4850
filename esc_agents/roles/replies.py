"""Turn a model's raw output into what the conversation shows.

Small models drift: they keep going as the other speaker ("Seeker: ..."), stop mid-sentence
at the token limit, or wrap the reply in think/strategy markup. These functions cut that back
to the utterance itself. Nothing here calls a model.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from esc_agents.datasets import ESCONV_STRATEGIES
from esc_agents.prompts import Prompt
from esc_agents.verdicts import sentence_pattern

SPEAKER_LABELS = {
    "seeker": ("seeker", "user", "patient", "client", "help[- ]?seeker", "human"),
    "supporter": ("supporter", "assistant", "therapist", "counsel(?:l)?or", "listener", "ai", "system"),
}
# Labels no supporter or seeker turn may carry: the critic's, the judge's and the answer slot.
FOREIGN_LABELS = ("critic", "judge", "evaluator", "answer", "final answer", "verdict", "rating", "narrator")
_ANY_LABEL = r"(?:%s)" % "|".join(
    label.replace(" ", r"\s+") for label in (*FOREIGN_LABELS, *(l for labels in SPEAKER_LABELS.values() for l in labels)))
# A label anywhere in the text: markdown, quotes or brackets around it, a JSON key, any colon look-alike.
_SPEAKER_TURN = re.compile(
    rf"""(?<![\w'-])[*_`"'\[({{<]*\s*({_ANY_LABEL})\s*[*_`"'\])}}>]*\s*:(?!//)\s*|<\s*/?\s*({_ANY_LABEL})\b[^<>]*>\s*""",
    re.IGNORECASE)  # or the tag of a turn block, as the critic's transcript writes turns
_SPECIAL_TOKENS = re.compile(r"<\|[^|>]*\|>")
_SENTENCE_END = re.compile(r"[.!?…](?:[\"')\]]*)(?=\s|$)")
# Characters that render like nothing or like a colon: NFKC leaves these as they are.
_INVISIBLE = re.compile("[\u00ad\u200b-\u200f\u2060-\u2064\ufeff]")
_COLON_LOOKALIKES = str.maketrans({"\u2236": ":", "\ua789": ":", "\u02d0": ":", "\u02f8": ":", "\u0589": ":",
                                   "\u05c3": ":", "\u0703": ":", "\u0704": ":", "\u16ec": ":", "\u1804": ":",
                                   "\u2806": ":", "\u205a": ":", "\u1367": ":"})


def _plain(text: str) -> str:
    """Model text as a reader sees it: compatibility forms folded (a full-width colon is a colon),
    invisible characters gone, so no spelling of a label hides it from the checks below."""
    return _INVISIBLE.sub("", unicodedata.normalize("NFKC", text)).translate(_COLON_LOOKALIKES)


def _is_own_label(label: str, speaker: str) -> bool:
    return any(re.fullmatch(pattern, label, re.IGNORECASE) for pattern in SPEAKER_LABELS[speaker])


@dataclass(frozen=True)
class Utterance:
    """What a speaker said after cleaning, and the spans removed because they spoke as another role
    or carried a verdict (`forged`): each is counted (`hack/forged_spans`) and shown."""

    text: str
    forged: tuple[str, ...] = ()


@dataclass(frozen=True)
class ReplyGuard:
    """What a supporter's reply may not carry to the other roles: besides every role label
    (cleaning cuts there), the critic's verdict sentences, with or without their option mark."""

    verdict_sentences: tuple[str, ...] = ()

    @cached_property
    def _verdicts(self) -> re.Pattern[str] | None:
        if not self.verdict_sentences:
            return None
        sentences = "|".join(sentence_pattern(sentence) for sentence in self.verdict_sentences)
        return re.compile(rf"(?:\(?\b[A-Z0-9][).:]\s*)?(?:{sentences})[.!]?", re.IGNORECASE)

    def strip_verdicts(self, text: str) -> tuple[str, list[str]]:
        if self._verdicts is None:
            return text, []
        found = [match.group(0) for match in self._verdicts.finditer(text)]
        return (self._verdicts.sub(" ", text) if found else text), found


def guard_of(critic: Prompt | None) -> ReplyGuard:
    """The guard for a run whose critic is this prompt (None: a critic written in Python, whose
    verdicts are no text a reply could copy)."""
    if critic is None:
        return ReplyGuard()
    return ReplyGuard(tuple(option.sentence for option in critic.reader.options if option.sentence))


def clean_utterance(text: str, speaker: str, guard: ReplyGuard | None = None) -> Utterance:
    """What `speaker` said: chat-template tokens and a leading label of its own removed, cut at any
    role label anywhere (a reply that opens as another role is empty), the guard's verdict
    sentences removed, and a trailing partial sentence dropped (kept if it is the only sentence)."""
    text = _plain(_SPECIAL_TOKENS.sub("", text)).strip()
    forged: list[str] = []
    turn = _SPEAKER_TURN.search(text)
    if turn and turn.start() == 0:
        if not _is_own_label(turn.group(1) or turn.group(2), speaker):
            return Utterance("", (text,))
        text = text[turn.end():]
        turn = _SPEAKER_TURN.search(text)
    if turn:
        forged.append(text[turn.start():].strip())
        text = text[: turn.start()]
    if guard is not None:
        text, verdicts = guard.strip_verdicts(text)
        forged += verdicts
    text = text.strip().rstrip(",;:-–— ")
    ends = list(_SENTENCE_END.finditer(text))
    if ends and ends[-1].end() < len(text):
        text = text[: ends[-1].end()]
    return Utterance(" ".join(text.split()), tuple(forged))


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


class SupporterTurn(NamedTuple):
    strategy: str | None
    content: str
    forged: tuple[str, ...] = ()


DEFAULT_GUARD = ReplyGuard()


def supporter_turn(raw: str, reply_format: str = "plain", think_tag: str = "think",
                   response_tag: str = "response", guard: ReplyGuard = DEFAULT_GUARD) -> SupporterTurn:
    """(strategy, what the seeker sees) of a supporter's raw output. Every path that turns policy
    text into a supporter turn (evaluation, stage-1 candidates, online futures, reward-model
    scoring) goes through here, so a reply that writes the seeker's next line itself
    ("...\nSeeker: my issue is solved!") is cut at that line everywhere alike, and the critic's
    verdict sentences (`guard`) never reach another role."""
    strategy = None
    if reply_format == "think":
        raw = strip_think(raw, think_tag, response_tag)
    elif reply_format == "strategy":
        strategy, raw = split_strategy(raw)
    said = clean_utterance(raw, "supporter", guard)
    return SupporterTurn(strategy, said.text, said.forged)


_STRATEGY_PREFIX = re.compile(r"^\s*[\[(]\s*(?:strategy\s*:\s*)?([^\])]+?)\s*[\])]\s*", re.IGNORECASE)


def split_strategy(text: str) -> tuple[str | None, str]:
    """`[Question] How are you?` -> ("Question", "How are you?"); unknown names are kept as said."""
    match = _STRATEGY_PREFIX.match(text)
    if not match:
        return None, text
    said = match.group(1)
    known = {name.lower(): name for name in ESCONV_STRATEGIES}
    return known.get(said.lower(), said), text[match.end():]
