"""`rlff-esc prompts`: the built-in prompts and personas; `prompts render` shows one for a case."""

from __future__ import annotations

import argparse
import json

HELP = "list the built-in prompts and personas; render one for a case"


def add_parser(commands) -> None:
    parser = commands.add_parser("prompts", help=HELP, description="With no ACTION, list the built-in prompts "
                                 "and personas by role; `render` shows what one sends for a case.")
    parser.set_defaults(func=run)
    render = parser.add_subparsers(dest="prompts_command", metavar="ACTION").add_parser(
        "render", help="print the exact messages a role sends for a dataset case (JSON)",
        description="Load and check a prompt as a run would, and print the chat its role sends at the case's "
        "first exchange; the replies a run would have are placeholders.")
    render.add_argument("prompt", metavar="NAME|FILE", help="a built-in prompt's name or a prompt file")
    render.add_argument("--case", required=True, metavar="ID", help="a case id of the dataset, e.g. ppdpp_test-0")
    render.add_argument("--dataset", default="esconv:ppdpp_test", help="default: %(default)s")
    render.add_argument("--role", help="the prompt's role (default: the folder the file is in)")
    render.set_defaults(func=run_render)


def run(args: argparse.Namespace) -> int:
    from esc_agents.prompts import ROLES, available, load_prompt

    for role in ROLES:
        print(f"{role}:")
        for name in available(role):
            print(f"  {name:12s} {load_prompt(role, name).spec.description}")
    return 0


def run_render(args: argparse.Namespace) -> int:
    from esc_agents.roles.render import find_case, render_messages, role_of

    role = role_of(args.prompt, args.role)
    print(json.dumps(render_messages(args.prompt, role, find_case(args.dataset, args.case)), indent=2,
                     ensure_ascii=False))
    return 0
