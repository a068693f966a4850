"""R_fmt: 1 only for exactly one non-empty think block followed by exactly one non-empty
response block and nothing else.

When the chat template already ends the prompt with the opening think tag, the completion
starts inside the think block; checking the completion alone would then fail every sample
and make the reward constant. `FormatSpec.prefilled` says so, and the opening tag is put back
before the check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from esc_agents.roles.replies import DEFAULT_GUARD, ReplyGuard, SupporterTurn, supporter_turn


@dataclass(frozen=True)
class FormatSpec:
    think_tag: str = "think"
    response_tag: str = "response"
    prefilled: bool = False  # the prompt already ends with <think>
    guard: ReplyGuard = DEFAULT_GUARD  # the run's critic's verdict sentences, removed from every reply

    @cached_property
    def _pattern(self) -> re.Pattern[str]:
        think, response = re.escape(self.think_tag), re.escape(self.response_tag)
        return re.compile(rf"\s*<{think}>(?P<think>.*?)</{think}>\s*<{response}>(?P<response>.*?)</{response}>\s*",
                          re.DOTALL)

    @cached_property
    def _any_tag(self) -> re.Pattern[str]:
        names = "|".join(re.escape(tag) for tag in (self.think_tag, self.response_tag))
        return re.compile(rf"</?(?:{names})>")

    def full_text(self, completion: str) -> str:
        return f"<{self.think_tag}>{completion}" if self.prefilled else completion

    def reward(self, completion: str) -> float:
        match = self._pattern.fullmatch(self.full_text(completion))
        # Reasoning first (method.md): an empty think block is the format without the thinking.
        if not match or not match.group("think").strip() or not match.group("response").strip():
            return 0.0
        # A tag inside either block means nested or repeated blocks.
        if self._any_tag.search(match.group("think")) or self._any_tag.search(match.group("response")):
            return 0.0
        return 1.0

    def response(self, completion: str) -> str:
        """The reply the seeker would see, cleaned exactly as an evaluated supporter turn is: the
        response block's text (else the completion without think blocks), cut where it starts
        speaking as anyone, without the critic's verdict sentences."""
        return self.turn(completion).content

    def turn(self, completion: str) -> SupporterTurn:
        return supporter_turn(self.full_text(completion), "think", self.think_tag, self.response_tag, self.guard)


def completion_text(completion: Any) -> str:
    """TRL hands conversational completions as [{"role": "assistant", "content": ...}]."""
    return completion[0]["content"] if isinstance(completion, list) else completion


class FormatReward:
    """R_fmt as a TRL reward function."""

    def __init__(self, spec: FormatSpec):
        self.spec = spec
        self.__name__ = "r_fmt"

    def __call__(self, prompts, completions, **_) -> list[float | None]:
        return [self.spec.reward(completion_text(c)) for c in completions]


def ends_with_open_tag(rendered_prompt: str, think_tag: str) -> bool:
    """Whether a chat template pre-fills the think tag after the generation prompt."""
    return rendered_prompt.rstrip().endswith(f"<{think_tag}>")
