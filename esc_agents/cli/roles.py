"""`rlff-esc roles`: the roles a run can bind, prompt files and installed Python roles."""

from __future__ import annotations

import argparse

HELP = "list the roles: prompt files and installed Python roles"


def add_parser(commands) -> None:
    parser = commands.add_parser("roles", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esc_agents.prompts import ROLES, available
    from esc_agents.roles.plugins import describe, installed_roles

    print("LLM roles (prompt files; --supporter-prompt, --persona, --critic-prompt, --judge-prompt):")
    for role in ROLES:
        print(f"  {role}: {', '.join(available(role))}")
    print("Python roles (installed `rlff_esc.roles` entry points; --critic NAME, --seeker NAME, or "
          "`factory: NAME` in a config):")
    for name, entry in sorted(installed_roles().items()):
        print(f"  {name:24s} {entry.value}  {describe(entry)}")
    return 0
