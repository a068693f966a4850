"""A scripted chat model for unit tests of graph logic (never the only test of a feature)."""

from __future__ import annotations

import functools
import re
import string
from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

from esc_agents.prompts import ROLES, available, load_prompt


def template_pattern(template: str) -> re.Pattern:
    """A prompt template as a regex that matches exactly the texts it renders to: its literal
    parts as they are, each {variable} as any text."""
    parts = []
    for literal, field, _, _ in string.Formatter().parse(template):
        parts.append(re.escape(literal))
        if field is not None:
            parts.append("(?s:.*?)")
    return re.compile("".join(parts))


@functools.cache
def shipped_templates() -> tuple[tuple[str, re.Pattern], ...]:
    """(role, system template) of every prompt file the project ships, read from the files, so
    rewording a prompt changes what is recognised along with what is sent."""
    return tuple((role, template_pattern(load_prompt(role, name).spec.system))
                 for role in ROLES for name in available(role))


def role_of(messages: list[BaseMessage], script: dict[str, Any],
            bound: tuple[tuple[str, re.Pattern], ...] = ()) -> str:
    """The role that sent a request: the one whose prompt (a shipped one, or one the test bound)
    rendered its system message; a request from no known prompt belongs to the script's only role."""
    system = messages[0].content
    roles = {role for role, pattern in (*bound, *shipped_templates()) if pattern.fullmatch(system)}
    if len(roles) == 1:
        return roles.pop()
    if not roles and len(script) == 1:
        return next(iter(script))
    raise AssertionError(f"which role sent this? system prompt {system[:80]!r} matches {sorted(roles) or 'no prompt'}")


class ScriptedChatModel(BaseChatModel):
    """Answers by role from a script: `script[role]` is a list consumed in order (the last entry
    repeats) or a function of the message list. Records every request it gets. The role is known
    by the prompt template its system message was rendered from (`prompts` binds a test's own
    prompt files to their roles), never by a phrase of one."""

    script: dict[str, Any]
    honour_n: bool = False
    prompts: dict[str, str] = Field(default_factory=dict)  # role -> a prompt file the test binds
    requests: list[dict[str, Any]] = Field(default_factory=list)

    @property
    def _llm_type(self) -> str:
        return "scripted"

    def _next(self, role: str, messages: list[BaseMessage]) -> str:
        entry = self.script[role]
        if isinstance(entry, Callable):
            return entry(messages)
        seen = sum(1 for request in self.requests if request["role"] == role)
        return entry[min(seen, len(entry) - 1)]

    def _generate(self, messages: list[BaseMessage], stop=None, run_manager=None, **kwargs: Any) -> ChatResult:
        role = role_of(messages, self.script, self._bound_templates())
        count = kwargs.get("n", 1) if self.honour_n else 1
        texts = []
        for _ in range(count):
            texts.append(self._next(role, messages))
            self.requests.append({"role": role, "messages": messages, "kwargs": kwargs})
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(content=text)) for text in texts],
            llm_output={"token_usage": {"prompt_tokens": 10 * count, "completion_tokens": 5 * count}},
        )

    def _bound_templates(self) -> tuple[tuple[str, re.Pattern], ...]:
        return tuple((role, template_pattern(load_prompt(role, path).spec.system))
                     for role, path in self.prompts.items())

    def calls(self, role: str) -> int:
        return sum(1 for request in self.requests if request["role"] == role)
