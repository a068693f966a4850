"""A scripted chat model for unit tests of graph logic (never the only test of a feature)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from pydantic import Field

ROLE_MARKERS = {
    "supporter": "emotional supporter",
    "user_simulator": "role-playing",
    "critic": "reviewing a conversation",
}


def role_of(messages: list[BaseMessage]) -> str:
    system = messages[0].content
    for role, marker in ROLE_MARKERS.items():
        if marker in system:
            return role
    raise AssertionError(f"unrecognised system prompt: {system[:80]}")


class ScriptedChatModel(BaseChatModel):
    """Answers by role from a script: `script[role]` is a list consumed in order (the last entry
    repeats) or a function of the message list. Records every request it gets."""

    script: dict[str, Any]
    honour_n: bool = False
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
        role = role_of(messages)
        count = kwargs.get("n", 1) if self.honour_n else 1
        texts = []
        for _ in range(count):
            texts.append(self._next(role, messages))
            self.requests.append({"role": role, "messages": messages, "kwargs": kwargs})
        return ChatResult(
            generations=[ChatGeneration(message=AIMessage(content=text)) for text in texts],
            llm_output={"token_usage": {"prompt_tokens": 10 * count, "completion_tokens": 5 * count}},
        )

    def calls(self, role: str) -> int:
        return sum(1 for request in self.requests if request["role"] == role)
