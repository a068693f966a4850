"""`rlff-esc prompts render`: the exact messages a role sends for a dataset case, so a prompt's
author sees what the model receives before paying for a run. The messages are built by the
roles' own code; only the replies a real run would have are placeholders."""

from __future__ import annotations

import string
from pathlib import Path

from esc_agents.config import build_config
from esc_agents.core.errors import UserError
from esc_agents.core.types import Case, Message
from esc_agents.core.yamlfile import load_yaml
from esc_agents.datasets import load_cases
from esc_agents.prompts import PROMPTS_DIR, ROLES, TEMPLATE_VARIABLES, USED_FIELDS, load_prompt
from esc_agents.roles.llm import Critic, Judge, UserSimulator, supporter_messages

# Fields of a prompt file that one role alone reads: `verdicts` the critic's, `criteria` the
# judge's, and those of USED_FIELDS no other role shares (a supporter's reply format, a persona's axes).
OWN_FIELDS = {"verdicts": "critic", "criteria": "judge"} | {
    field: role for role, fields in USED_FIELDS.items() for field in fields
    if sum(field in others for others in USED_FIELDS.values()) == 1}


def role_of(prompt: str, role: str | None) -> str:
    """The role named; else, for a file, the one whose folder holds it (prompts/<role>/NAME.yaml)
    or, where the folder is no role's, the one its content shows; for a name, the role that has
    a built-in prompt of that name."""
    if role is not None:
        if role not in ROLES:
            raise UserError(f"--role {role}: not a role ({', '.join(ROLES)})")
        return role
    path = Path(prompt)
    if path.is_file():
        folder = path.resolve().parent.name
        return folder if folder in ROLES else role_by_content(path)
    if path.suffix in (".yaml", ".yml"):
        raise UserError(f"prompt file not found: {prompt}")
    named = [role for role in ROLES if (PROMPTS_DIR / role / f"{prompt}.yaml").exists()]
    if len(named) != 1:
        raise UserError(f"{prompt!r} is no file, and " + (f"built-in prompts of {', '.join(named)} have that name"
                        if named else "no built-in prompt has that name (`rlff-esc prompts` lists them)")
                        + f"; give --role ({', '.join(ROLES)})")
    return named[0]


def role_by_content(path: Path) -> str:
    """The one role the file is a valid prompt of; for a file valid as none, the role its content
    points to, so that role's checks say what is wrong with it."""
    fits = [role for role in ROLES if _loads_as(role, path)] or _pointed_to(path)
    if len(fits) == 1:
        return fits[0]
    raise UserError(f"which role is {path} for? its folder is no role's and its content "
                    + (f"could be a {' or a '.join(fits)} prompt" if fits else "shows none")
                    + f"; give --role ({', '.join(ROLES)})")


def _pointed_to(path: Path) -> list[str]:
    """The roles a file's content points to, the most telling sign first: a field only that role
    reads (verdicts: a critic, criteria: a judge), else variables only it requires ({situation}:
    the user simulator, {conversation}: the critic)."""
    data = load_yaml(path)[1]
    data = data if isinstance(data, dict) else {}
    used = {name for field in ("system", "user") if isinstance(data.get(field), str)
            for name in _variables(data[field])}
    by_field = {OWN_FIELDS[field] for field in data if field in OWN_FIELDS}
    by_variables = {role for role, fields in TEMPLATE_VARIABLES.items()
                    if (required := set().union(*(need for _, need in fields.values()))) and required <= used}
    return sorted(by_field or by_variables)


def _loads_as(role: str, path: Path) -> bool:
    try:
        load_prompt(role, str(path))
    except UserError:
        return False
    return True


def _variables(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name}
    except ValueError:  # bad brace syntax; the role's own checks will say so
        return set()


def find_case(dataset: str, case_id: str) -> Case:
    cases = load_cases(dataset)
    if not cases:
        raise UserError(f"dataset {dataset} has no cases")
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
