"""`rlff-esc prompts render`: the exact messages a role sends for a dataset case, so a prompt's
author sees what the model receives before paying for a run. The messages are built by the
roles' own code; only the replies a real run would have are placeholders."""

from __future__ import annotations

from pathlib import Path

from esc_agents.config import build_config
from esc_agents.core.errors import UserError
from esc_agents.core.types import Case, Message
from esc_agents.datasets import load_cases
from esc_agents.prompts import ROLES, load_prompt
from esc_agents.roles.llm import Critic, Judge, UserSimulator, supporter_messages


def role_of(prompt: str, role: str | None) -> str:
    """The role named, or the one whose folder holds the file (prompts/<role>/NAME.yaml)."""
    role = role or Path(prompt).resolve().parent.name
    if role not in ROLES:
        raise UserError(f"which role is {prompt} for? give --role ({', '.join(ROLES)})")
    return role


def find_case(dataset: str, case_id: str) -> Case:
    cases = load_cases(dataset)
    for case in cases:
        if case.id == case_id:
            return case
    raise UserError(f"{dataset} has no case {case_id!r} (its ids run {cases[0].id} ... {cases[-1].id})")


def render_messages(prompt: str, role: str, case: Case) -> list[dict[str, str]]:
    """The chat `role` would send at the case's first exchange: the supporter answers the
    seeker's opening; the user simulator and the critic see one supporter reply."""
    config = build_config()
    loaded = load_prompt(role, prompt)
    opening = [Message(speaker="seeker", content=case.situation)]

    def replied(who: str) -> list[Message]:
        return [*opening, Message(speaker="supporter", content=f"<{who}'s reply>")]

    if role == "supporter":
        return supporter_messages(loaded, opening, config.supporter.context_window)
    if role == "judge":
        judge = Judge("judge", None, loaded, config.critic)
        return judge.chat(case.situation, replied("supporter A"), replied("supporter B"))
    speaker = {"user_simulator": UserSimulator, "critic": Critic}[role](role, None, loaded, getattr(config, role))
    return speaker.chat(case, replied("the supporter"))
