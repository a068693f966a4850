"""`rlff-esc prompts`: the built-in prompts and personas; `prompts render` shows one for a case;
`prompts check` shows how a critic prompt reads a file of answers."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from esc_agents.cli.config_flags import ConfigFlags, Options, option
from esc_agents.cli.values import existing_file

HELP = "list the built-in prompts and personas; render one for a case; check how a critic prompt reads answers"


class RenderOptions(Options):
    prompt: str = option(..., "a built-in prompt's name or a prompt file", positional=True, metavar="NAME|FILE")
    case: str = option(..., "a case id of the dataset, e.g. ppdpp_test-0", metavar="ID")
    dataset: str = option("esconv:ppdpp_test", "the dataset the case is in", metavar="DATASET")
    role: str | None = option(None, "the prompt's role", metavar="ROLE", unset="a file's folder, where that names a "
                              "role, else what the file holds: verdicts make a critic, criteria a judge, ...; a name: "
                              "the role whose built-in prompt it is")


class CheckOptions(Options):
    prompt: str = option(..., "a built-in critic prompt's name or a critic prompt file", positional=True,
                         metavar="NAME|FILE")
    answers: Path = option(..., "answers to read: .txt (one a line) or .jsonl ({\"answer\": ..., \"verdict\": ...})",
                           parse=existing_file, metavar="ANSWERS")


def add_parser(commands) -> None:
    parser = commands.add_parser("prompts", help=HELP, description="With no ACTION, list the built-in prompts "
                                 "and personas by role; `render` shows what one sends for a case.")
    parser.set_defaults(func=run)
    actions = parser.add_subparsers(dest="prompts_command", metavar="ACTION")
    render = actions.add_parser(
        "render", help="print the exact messages a role sends for a dataset case (JSON)",
        description="Load and check a prompt as a run would, and print the chat its role sends at the case's "
        "first exchange; the replies a run would have are placeholders.")
    ConfigFlags(RenderOptions).add_to(render)
    render.set_defaults(func=run_render)
    check = actions.add_parser(
        "check", help="print how a critic prompt reads each of a file of answers",
        description="Read each answer as a run would (option marks, asserted and denied phrases, two verdicts) "
        "and print its verdict, or `invalid`, with the reason. ANSWERS is a text file with one answer a line, or "
        "JSONL with an `answer` per line and optionally the `verdict` it must get (null: invalid); then every "
        "answer read otherwise is marked and the exit code is 1.")
    ConfigFlags(CheckOptions).add_to(check)
    check.set_defaults(func=run_check)


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


def run_check(args: argparse.Namespace) -> int:
    from esc_agents.core.errors import UserError
    from esc_agents.prompts import load_prompt

    critic = load_prompt("critic", args.prompt)
    answers = read_answers(args.answers)
    labels = {verdict.label for verdict in critic.spec.verdicts}
    if unknown := sorted({str(expected) for _, expected in answers if expected not in (None, ..., *labels)}):
        raise UserError(f"{args.answers}: verdict {unknown[0]!r} is none of the prompt's ({', '.join(sorted(labels))})")
    for choice in critic.reader.options:  # what the reader took from the prompt, for the author to check
        print(f"# {choice.label}: option {choice.mark or '-'}"
              + (f" ({choice.sentence})" if choice.sentence else "") + f", {len(choice.phrases)} phrase(s)")
    wrong = invalid = 0
    for answer, expected in answers:
        reading = critic.read(answer)
        mark = " " if expected is ... else "ok" if reading.label == expected else "XX"
        wrong += mark == "XX"
        invalid += reading.label is None
        shown = json.dumps(answer, ensure_ascii=False)
        print(f"{mark:2s} {reading.label or 'invalid':16s} {reading.why:45s} {shown[:100]}")
    print(f"{len(answers)} answers: {invalid} invalid ({invalid / max(len(answers), 1):.1%})"
          + (f"; {wrong} read otherwise than expected" if any(e is not ... for _, e in answers) else ""))
    return 1 if wrong else 0


def read_answers(path: Path) -> list[tuple[str, object]]:
    """(answer, expected verdict) pairs; `...` where the file gives no expectation."""
    from esc_agents.core.errors import UserError

    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path}: not UTF-8 text; give one answer a line, or JSONL") from None
    if path.suffix != ".jsonl":
        return [(line, ...) for line in text.splitlines() if line.strip()]
    rows = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
            rows.append((row["answer"], row.get("verdict", ...)))
        except (json.JSONDecodeError, KeyError, TypeError):
            raise UserError(f"{path}:{number}: not a JSON object with an \"answer\"") from None
    return rows
