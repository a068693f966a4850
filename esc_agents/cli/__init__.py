"""The `rlff-esc` command line: one parser, a module per command group; each command validates
all of its inputs before the first model call or weight load."""

from esc_agents.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
