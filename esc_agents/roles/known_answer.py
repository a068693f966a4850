"""A known-answer environment: a seeker and a critic written in Python whose preferences are
stated here, so a training run can be checked against the right answer. Only the supporter is
an LLM, so it is cheap, and both roles ship as plugins (`known-answer-seeker`,
`known-answer-critic` in the `rlff_esc.roles` entry points), bound like any user's:

    user_simulator: {factory: known-answer-seeker}
    critic: {factory: known-answer-critic}

What the seeker wants from each supporter turn (`turn_effect`):
  +0.5  the reply reflects a feeling ("that sounds exhausting", "you feel ...", the case's emotion);
  +0.5  it asks an open question (what / how / why / tell me ..., ending in "?");
  -0.75 it lectures before understanding (advice such as "you should", "try to" while no open
        question has been asked yet in the conversation);
  -0.75 it is dismissive or empty ("don't worry", "calm down", fewer than four words).
The two credits are for what a sentence says, not for the cue words in it; otherwise a policy
learns to emit the cues alone ("You feel... what... ?", "anxiety anxiety anxiety what?"). So a
reply earns neither credit (`stuffed`) when, with each repeated sentence counted once (saying a
sentence twice adds no cue), its words are mostly repeats (at most half of them distinct), or it
has fewer distinct non-cue words than credits it claims: each cue needs at least one word of a
sentence around it. Cue words are those the detectors key on: what / how / why / tell,
feel... / seem... / sound..., the hardship words of "that's hard", and the emotion words.
Penalties still apply, and its question does not excuse later advice. Over all 15,325 ESConv
supporter turns this changes the effect of four, the bare one-word "Why?" / "What?" (already
empty). It is a floor, not a grammar: a reply padded with enough filler words still passes.
How the seeker feels now is -1 ("worse": it came in distressed) plus the effects of the last two
supporter turns, clipped to [-1, 1]. Each of the critic's l samples is that state plus Gaussian noise (sd 0.4),
rounded to the nearest verdict (-1 worse, -0.5 same, 0.5 better, 1 solved); with eta = 0.5 an
episode succeeds once two consecutive replies both reflect and ask, rarely otherwise. The seeker
opens up (shares more of its situation) after a reply with a positive effect and withdraws after
a negative one. A generic 135M policy seldom does both in one reply, so it is far from optimal,
and the behaviour that separates good and bad supporters is countable in the transcripts.
"""

from __future__ import annotations

import re

from esc_agents.core.types import Case, CriticScore, Message
from esc_agents.roles.plugins import PythonRole, transcript_key

VERDICTS = ((-1.0, "feels worse"), (-0.5, "feels the same"), (0.5, "feels better"), (1.0, "issue solved"))
START = -1.0
MEMORY = 2  # supporter turns the seeker's state remembers

_HARDSHIPS = ("hard", "tough", "difficult", "painful", "scary", "frustrating", "upsetting", "overwhelming",
              "exhausting", "stressful", "lonely")
_FEELING_VERBS = ("feel", "seem", "sound")
_FEELING = re.compile(
    r"\b(?:you(?:'re| are)? (?:feel|feeling|seem|sound)\w*|sounds? (?:like|really|so|very|incredibly)|"
    rf"must (?:be|feel)|that(?:'s| is| must be| sounds) (?:\w+ )?(?:{'|'.join(_HARDSHIPS)})|"
    r"i can (?:hear|imagine|understand|see how))",
    re.IGNORECASE)
_EMOTION_STEMS = ("anxi", "depress", "sad", "anger", "angr", "fear", "afraid", "scar", "shame", "asham", "disgust",
                  "jealous", "nervous", "pain", "hurt", "guilt", "lonel", "frustrat", "stress", "upset", "worr")
_OPEN_QUESTION = re.compile(r"\b(?:what|how|why|tell me|could you (?:tell|share|say)|would you (?:like to )?"
                            r"(?:tell|share|talk))\b[^?]*\?", re.IGNORECASE)
_LECTURE = re.compile(r"\b(?:you should|you need to|you have to|you must|try to|have you tried|i suggest|"
                      r"i recommend|my advice|make sure)\b", re.IGNORECASE)
_DISMISSIVE = re.compile(r"\b(?:calm down|don'?t worry|get over it|not a big deal|everything will be (?:fine|ok)|"
                         r"cheer up|just relax)\b", re.IGNORECASE)
_QUESTION_WORDS = ("what", "how", "why", "tell")
_WORD = re.compile(r"[a-z]+(?:['’][a-z]+)*")
_SENTENCE_END = re.compile(r"(?<=[.!?…])\s+")


def emotion_stems(case: Case) -> list[str]:
    """The emotion words the feeling detector reads: the case's own, or any when it names none."""
    return [stem for stem in _EMOTION_STEMS if stem in case.emotion.lower()] or list(_EMOTION_STEMS)


def reflects_feeling(reply: str, case: Case) -> bool:
    lowered = reply.lower()
    return bool(_FEELING.search(reply)) or any(stem in lowered for stem in emotion_stems(case))


def asks_open_question(reply: str) -> bool:
    return bool(_OPEN_QUESTION.search(reply))


def stuffed(reply: str, case: Case, credits: int) -> bool:
    """Mostly repeats, or cue words without a sentence around them (the module docstring's rule)."""
    words: list[str] = []
    sentences: set[tuple[str, ...]] = set()
    for sentence in _SENTENCE_END.split(reply.strip()):
        found = tuple(_WORD.findall(sentence.lower()))
        if found and found not in sentences:
            sentences.add(found)
            words.extend(found)
    stems = emotion_stems(case)
    plain = {word for word in words if not (word in _QUESTION_WORDS or word in _HARDSHIPS
                                           or word.startswith(_FEELING_VERBS) or any(stem in word for stem in stems))}
    return 2 * len(set(words)) <= len(words) or len(plain) < credits


def credits(reply: str, case: Case) -> tuple[bool, bool]:
    """(reflects a feeling, asks an open question), both false for a stuffed reply."""
    reflects, asks = reflects_feeling(reply, case), asks_open_question(reply)
    if stuffed(reply, case, reflects + asks):
        return False, False
    return reflects, asks


def turn_effect(reply: str, case: Case, asked_before: bool) -> float:
    """How one supporter reply moves the seeker (see the module docstring)."""
    reflects, asks = credits(reply, case)
    effect = 0.5 * reflects + 0.5 * asks
    if _LECTURE.search(reply) and not asked_before and not asks:
        effect -= 0.75
    if _DISMISSIVE.search(reply) or len(reply.split()) < 4:
        effect -= 0.75
    return effect


def turn_effects(case: Case, history: list[Message]) -> list[float]:
    """The effect of every supporter turn of the conversation, in order."""
    effects, asked = [], False
    for message in history:
        if message.speaker == "supporter":
            effects.append(turn_effect(message.content, case, asked))
            asked = asked or credits(message.content, case)[1]
    return effects


def seeker_state(case: Case, history: list[Message]) -> float:
    return max(-1.0, min(1.0, START + sum(turn_effects(case, history)[-MEMORY:])))


class KnownAnswerCritic(PythonRole):
    """Known-answer critic: the seeker state of the last two supporter turns, l noisy verdicts."""

    score_range = (-1.0, 1.0)

    def __init__(self, noise: float = 0.4):
        super().__init__(noise=noise)
        self.noise = noise

    async def judge(self, case: Case, history: list[Message], samples: int) -> CriticScore:
        state = seeker_state(case, history)
        rng = self.rng(transcript_key(case, history))
        scores, labels = [], []
        for _ in range(samples):
            noisy = state + rng.gauss(0.0, self.noise)
            score, label = min(VERDICTS, key=lambda verdict: abs(verdict[0] - noisy))
            scores.append(score)
            labels.append(label)
        return CriticScore(samples=scores, verdicts=labels, mean=sum(scores) / len(scores))


OPENING_UP = ("Yes, that's it exactly. {detail}", "Thank you for asking. {detail}", "I think so. {detail}")
WITHDRAWING = ("I don't know.", "Maybe. I don't really want to talk about it.", "I guess.", "Okay.")
NEUTRAL = ("It's just a lot right now.", "I'm not sure what to say.", "Yeah.")


class KnownAnswerSeeker(PythonRole):
    """Known-answer seeker: opens up after a reply that helps, withdraws after one that hurts."""

    async def reply(self, case: Case, history: list[Message]) -> Message:
        effects = turn_effects(case, history)
        last = effects[-1] if effects else 0.0
        rng = self.rng(transcript_key(case, history))
        if last > 0:
            sentences = [s.strip() for s in re.split(r"(?<=[.!?])\s+", case.situation) if s.strip()]
            detail = sentences[min(len(effects) - 1, len(sentences) - 1)] if sentences else case.problem
            text = rng.choice(OPENING_UP).format(detail=detail)
        else:
            text = rng.choice(WITHDRAWING if last < 0 else NEUTRAL)
        return Message(speaker="seeker", content=text)
