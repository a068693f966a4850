"""Turn a model's raw output into what the conversation shows.

Small models drift: they keep going as the other speaker ("Seeker: ..."), stop mid-sentence
at the token limit, or wrap the reply in think/strategy markup. These functions cut that back
to the utterance itself. Nothing here calls a model.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import NamedTuple

from esc_agents.core.plaintext import fold
from esc_agents.datasets import ESCONV_STRATEGIES
from esc_agents.prompts import Prompt
from esc_agents.verdicts import sentence_pattern

SPEAKER_LABELS = {
    "seeker": ("seeker", "user", "patient", "client", "help[- ]?seeker", "human", "usr"),
    "supporter": ("supporter", "assistant", "therapist", "counsel(?:l)?or", "listener", "ai"),
}
# Labels no supporter or seeker turn may carry: the critic's, the judge's, the answer slot, narration.
FOREIGN_LABELS = ("critic", "judge", "evaluator", "answer", "final answer", "verdict", "rating", "narrator", "system",
                  "person", "speaker", "bot", "model")
_ANY_LABEL = r"(?:%s)" % "|".join(
    label.replace(" ", r"\s+") for label in (*FOREIGN_LABELS, *(l for labels in SPEAKER_LABELS.values() for l in labels)))
# A label word (numbered too: "Seeker 2", "Seeker_1"), then what may follow it before the separator:
# "'s reply", a speech verb ("The seeker replies:"), an aside ("(smiling)"), closing markup.
_LABEL_WORD = re.compile(rf"(?<![\w/@-])({_ANY_LABEL})(?:[ _]?\d{{1,2}})?(?!\w)", re.IGNORECASE)
_AFTER_LABEL = re.compile(
    r"(?:'s\s+(?:reply|answer|response|turn|message|verdict|words))?"
    r"(?:\s+(?:said|says|replies|replied|responds|responded|answers|answered|writes|wrote|adds|added))?"
    r"\s{0,2}(?:\([^()\n]{0,30}\)\s{0,2})?(?P<close>[*_`\"'\])}>|]{0,4})"
    r"\s{0,2}(?P<separator>:(?![)(/\\]|[DPp3]\b)|[-|>;](?=\s))?", re.IGNORECASE)
_OPENING = re.compile(r"[*_`\"'\[({<#|>\s]{0,6}$")
_DETERMINERS = {"a", "an", "the", "your", "my", "our", "their", "his", "her", "its", "own", "this", "that", "every",
                "any", "as", "no", "some", "one", "another", "each", "good", "great", "best", "harshest", "inner"}
_TURN_TAG = re.compile(rf"<\s*/?\s*({_ANY_LABEL})\b[^<>]*>\s*", re.IGNORECASE)  # a block as the critic reads turns
_SPECIAL_TOKENS = re.compile(r"<\|[^|>]*\|>")
_SENTENCE_END = re.compile(r"[.!?…](?:[\"')\]]*)(?=\s|$)")
# A sentence about "the seeker" in the third person: narration or a verdict, never something said to her.
_NARRATION = re.compile(r"[^.!?\n]*\bthe\s+(?:help[- ]?)?seekers?(?:'s)?\b[^.!?\n]*[.!?]?", re.IGNORECASE)


@dataclass(frozen=True)
class _Label:
    start: int  # where the cut goes: before any markup, "the" or quote that opens the label
    end: int  # where the labelled words begin
    word: str


def find_label(text: str, start: int = 0) -> _Label | None:
    """The first role label at or after `start`: a label word followed by a separator (`:`, ` - `,
    `|`, `>`, `;`), or closed by markup on its own (`[Seeker]`, `**Critic**`, `### Seeker`), or a turn
    tag (`<seeker>`). It counts where it opens a line, a sentence or a clause, follows markup or a
    quote, or is capitalised after a word other than a determiner ("and Seeker:", not "your
    own therapist:" or "a counselor:")."""
    tag = _TURN_TAG.search(text, start)
    for word in _LABEL_WORD.finditer(text, start):
        if tag is not None and tag.start() < word.start():
            break
        after = _AFTER_LABEL.match(text, word.end())
        opening = _OPENING.search(text, 0, word.start())
        wrapped = opening is not None and (  # "[Seeker]", "**Critic**", "| Seeker |", "### Seeker"
            bool(after.group("close")) and bool(re.search(r"[\[*_|(<]", opening.group(0)))
            or "#" in opening.group(0))
        if not (after.group("separator") or after.group("close").endswith((">", "|")) or wrapped):
            continue
        cut = opening.start() if opening else word.start()
        the = re.search(r"\bthe\s+$", text[:word.start()], re.IGNORECASE)
        if the is not None and after.group(0).strip(" :").strip():  # "The seeker replies:", "the user's reply:"
            cut = the.start()
        before = text[:cut].rstrip()
        previous = re.search(r"([\w']+)$", before)
        strong = not before or before[-1] in ".!?…,;:-\n\"'*_`[(<#|>" or before.endswith(("--", "\u2026"))
        capitalised = word.group(1)[0].isupper()
        if strong or (previous and capitalised and previous.group(1).lower() not in _DETERMINERS):
            return _Label(cut, after.end(), word.group(1))
    if tag is not None:
        return _Label(tag.start(), tag.end(), tag.group(1))
    return None


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
    (cleaning cuts there), any sentence about "the seeker" in the third person (a supporter speaks
    to her, never about her: such a sentence is narration or a verdict), and the critic's verdict
    sentences of three words or more, with or without their option mark."""

    verdict_sentences: tuple[str, ...] = ()

    @cached_property
    def _verdicts(self) -> re.Pattern[str] | None:
        sentences = [sentence_pattern(sentence) for sentence in self.verdict_sentences
                     if len(re.findall(r"[\w']+", sentence)) >= 3]
        if not sentences:
            return None
        return re.compile(rf"(?:\(?\b[A-Z0-9][).:]\s*)?(?:{'|'.join(sentences)})[.!]?", re.IGNORECASE)

    def strip_verdicts(self, text: str) -> tuple[str, list[str]]:
        found: list[str] = []
        for pattern in (self._verdicts, _NARRATION):
            if pattern is not None and (spans := [m.group(0).strip() for m in pattern.finditer(text) if m.group(0).strip()]):
                found += spans
                text = pattern.sub(" ", text)
        return text, found


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
    text = fold(_SPECIAL_TOKENS.sub("", text)).strip()
    forged: list[str] = []
    label = find_label(text)
    if label and label.start == 0:
        if not _is_own_label(label.word, speaker):
            return Utterance("", (text,))
        text = text[label.end:].lstrip()
        label = find_label(text)
    if label:
        forged.append(text[label.start:].strip())
        text = text[: label.start]
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
