"""`rlff-esc graph`: the rollout graph as a Mermaid diagram."""

from __future__ import annotations

import argparse

HELP = "print the rollout graph as a Mermaid diagram"


def add_parser(commands) -> None:
    parser = commands.add_parser("graph", help=HELP, description=HELP[0].upper() + HELP[1:] + ".")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from graphs.episode import EPISODE_GRAPH

    print(EPISODE_GRAPH.get_graph().draw_mermaid())
    return 0
