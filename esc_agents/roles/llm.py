"""The three roles of a rollout: supporter, user simulator (the seeker), critic.

Each builds its messages from the conversation and its prompt, calls its endpoint, and cleans
or parses the answer. No graph logic lives here: `graphs.episode` decides who speaks when.
"""

from __future__ import annotations

import html
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from esc_agents.config import RoleConfig
from esc_agents.core.errors import JobFailure
from esc_agents.core.types import Case, CriticScore, Message, windowed
from esc_agents.datasets import ESCONV_STRATEGIES
from esc_agents.models.endpoints import Endpoint
from esc_agents.prompts import Prompt
from esc_agents.roles.replies import DEFAULT_GUARD, ReplyGuard, clean_utterance, supporter_turn

T = TypeVar("T")


class EmptyReplyError(JobFailure):
    """A role kept producing nothing usable after its regenerations."""


def render_transcript(messages: list[Message]) -> str:
    """A dialogue for a person to read (annotation sheets)."""
    return "\n".join(f"{m.speaker.capitalize()}: {m.content}" for m in messages)


def delimited_transcript(messages: list[Message]) -> str:
    """A dialogue for a model that judges it (critic, judge): each turn one escaped block on one
    line, so no text inside a turn can close it, open another speaker's, or reach the answer slot
    that follows the transcript."""
    return "\n".join(f"<{m.speaker}>{html.escape(' '.join(m.content.split()), quote=False)}</{m.speaker}>"
                     for m in messages)


def supporter_messages(prompt: Prompt, history: list[Message], window: int | None = None) -> list[dict[str, str]]:
    """The supporter's chat: its system prompt, then the latest `window` messages with the seeker
    as `user` and itself as `assistant`. The GRPO prompts are built by this same function."""
    system = prompt.render("system", strategies="\n".join(f"- {s}" for s in ESCONV_STRATEGIES))
    turns = [{"role": "user" if m.speaker == "seeker" else "assistant", "content": m.content}
             for m in windowed(history, window)]
    return [{"role": "system", "content": system}, *turns]


@dataclass
class Role:
    name: str
    endpoint: Endpoint
    prompt: Prompt
    settings: RoleConfig
    seed: int = 0
    use_cache: bool = True
    regenerations: int = 2

    async def _sample(self, messages: list[dict[str, str]], indices: list[int], attempt: int = 0) -> list[str]:
        completions = await self.endpoint.complete(
            self.name,
            messages,
            temperature=self.settings.temperature,
            max_tokens=self.settings.max_tokens,
            indices=indices,
            attempt=attempt,
            seed=self.seed,
            use_cache=self.use_cache,
        )
        return [completion.text for completion in completions]

    def _case_variables(self, case: Case) -> dict[str, str]:
        return {"emotion": case.emotion, "problem": case.problem, "situation": case.situation}

    def _parse(self, raw: str) -> Message | None:
        raise NotImplementedError

    async def _sample_parsed(
        self, chat: list[dict[str, str]], samples: list[int], parse: Callable[[str], T | None]
    ) -> dict[int, tuple[str, T | None]]:
        """Sample each index and parse it; an unusable answer is asked again (a new attempt of the
        same index, so the cache keeps both) up to `regenerations` times. Returns the last raw
        answer and its parse (None if it never parsed) per index."""
        answers = {index: (raw, parse(raw)) for index, raw in zip(samples, await self._sample(chat, samples))}
        for attempt in range(1, self.regenerations + 1):
            unusable = [index for index, (_, parsed) in answers.items() if parsed is None]
            if not unusable:
                break
            for index, raw in zip(unusable, await self._sample(chat, unusable, attempt)):
                answers[index] = (raw, parse(raw))
        return answers

    async def _speak(self, chat: list[dict[str, str]], samples: list[int]) -> list[Message]:
        """One utterance per sample index; a reply empty after cleaning is never passed on."""
        answers = await self._sample_parsed(chat, samples, self._parse)
        if any(message is None for _, message in answers.values()):
            raise EmptyReplyError(f"{self.name} gave no usable reply in {self.regenerations + 1} tries")
        return [answers[index][1] for index in samples]


@dataclass
class Supporter(Role):
    """Sees the seeker as `user` and itself as `assistant`. `guard`: what its replies may not carry
    to the other roles (the run's critic's verdict sentences; role labels always)."""

    guard: ReplyGuard = DEFAULT_GUARD

    def chat(self, case: Case, history: list[Message]) -> list[dict[str, str]]:
        return supporter_messages(self.prompt, history, self.settings.context_window)

    def _parse(self, raw: str) -> Message | None:
        spec = self.prompt.spec
        turn = supporter_turn(raw, spec.reply_format, spec.think_tag, spec.response_tag, self.guard)
        if not turn.content:
            return None
        return Message(speaker="supporter", content=turn.content, raw=raw, strategy=turn.strategy,
                       forged=list(turn.forged))

    async def reply(self, case: Case, history: list[Message]) -> Message:
        (message,) = await self._speak(self.chat(case, history), [0])
        return message

    async def candidates(self, case: Case, history: list[Message], count: int) -> list[Message]:
        """m alternative replies to the same context: sample indices 0..m-1 of one prompt, one
        request with `n` where the endpoint honours it."""
        return await self._speak(self.chat(case, history), list(range(count)))


class UserSimulator(Role):
    """Plays the seeker: sees the conversation from its own side, roles swapped."""

    def chat(self, case: Case, history: list[Message]) -> list[dict[str, str]]:
        system = self.prompt.render("system", **self._case_variables(case))
        turns = [
            {"role": "assistant" if m.speaker == "seeker" else "user", "content": m.content} for m in history
        ]
        return [{"role": "system", "content": system}, *turns]

    def _parse(self, raw: str) -> Message | None:
        content = clean_utterance(raw, "seeker").text
        return Message(speaker="seeker", content=content, raw=raw) if content else None

    async def reply(self, case: Case, history: list[Message]) -> Message:
        (message,) = await self._speak(self.chat(case, history), [0])
        return message


class Critic(Role):
    """l sampled verdicts; unparsable ones are re-asked, then recorded as invalid."""

    def chat(self, case: Case, history: list[Message]) -> list[dict[str, str]]:
        variables = self._case_variables(case)
        return [
            {"role": "system", "content": self.prompt.render("system", **variables)},
            {"role": "user", "content": self.prompt.render("user", conversation=delimited_transcript(history), **variables)},
        ]

    async def judge(self, case: Case, history: list[Message], samples: int) -> CriticScore:
        answers = await self._sample_parsed(self.chat(case, history), list(range(samples)), self.prompt.classify)
        parsed = [verdict for _, verdict in answers.values() if verdict is not None]
        scores = [verdict.score for verdict in parsed]
        return CriticScore(
            samples=scores,
            verdicts=[verdict.label for verdict in parsed],
            invalid=[raw for raw, verdict in answers.values() if verdict is None],
            mean=sum(scores) / len(scores) if scores else None,
        )


Preference = str  # "A", "B" or "tie"


class Judge(Role):
    """Compares two supporters' conversations with one seeker on the prompt's criteria. Answers
    missing a criterion are re-asked, then recorded as None."""

    def chat(self, situation: str, a: list[Message], b: list[Message]) -> list[dict[str, str]]:
        criteria = ", ".join(self.prompt.spec.criteria)
        return [
            {"role": "system", "content": self.prompt.render("system", situation=situation, criteria=criteria)},
            {"role": "user", "content": self.prompt.render(
                "user", situation=situation, conversation_a=delimited_transcript(a),
                conversation_b=delimited_transcript(b), criteria=criteria)},
        ]

    def preferences(self, answer: str) -> dict[str, Preference] | None:
        found = {}
        for criterion in self.prompt.spec.criteria:
            match = re.search(rf"^\W*{re.escape(criterion)}\W*[:\-]\s*\**\s*(A|B|tie)\b", answer,
                              flags=re.IGNORECASE | re.MULTILINE)
            if match is None:
                return None
            said = match.group(1)
            found[criterion] = "tie" if said.lower() == "tie" else said.upper()
        return found

    async def compare(self, situation: str, a: list[Message], b: list[Message]) -> dict[str, Preference] | None:
        (answer,) = (await self._sample_parsed(self.chat(situation, a, b), [0], self.preferences)).values()
        return answer[1]
