"""`rlff-esc serve`: the embedded local server in the foreground, for other tools."""

from __future__ import annotations

import argparse
import os
import sys

from esc_agents.cli.config_flags import ConfigFlags, Options, option
from esc_agents.core.errors import UserError

HELP = "run the embedded local server in the foreground"
DESCRIPTION = """Serve an embedded endpoint profile's model with `transformers serve` on loopback:
SmolLM2-135M-Instruct for the default `local` profile, or the model folder a profile's
`model_path` names (an exported policy, for instance)."""


class ServeOptions(Options):
    config: str | None = option(None, "YAML config whose endpoint profile to serve", metavar="FILE",
                                unset="none, the built-in profiles")
    profile: str = option("local", "embedded endpoint profile", metavar="PROFILE")


FLAGS = ConfigFlags(ServeOptions)


def add_parser(commands) -> None:
    parser = commands.add_parser("serve", help=HELP, description=DESCRIPTION)
    FLAGS.add_to(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from esc_agents.config import build_config
    from esc_agents.models.local_server import (
        OFFLINE_ENV,
        LocalServer,
        embedded_model_dir,
        serve_command,
    )

    endpoints = build_config(args.config).endpoints
    if args.profile not in endpoints:
        raise UserError(f"--profile: unknown endpoint profile {args.profile!r} (known: {', '.join(sorted(endpoints))})")
    profile = endpoints[args.profile]
    if profile.kind != "embedded":
        raise UserError(f"--profile: profile {args.profile!r} is not the embedded server")
    server = LocalServer(profile)
    command = serve_command(server.model_path or embedded_model_dir(), server.host, server.port,
                            profile.embedded_dtype, profile.embedded_kv_tokens)
    print(f"serving {command[2]} on {server.root}/v1 (model name: {command[2]}); Ctrl-C to stop", file=sys.stderr)
    os.execve(command[0], command, {**os.environ, **OFFLINE_ENV})
