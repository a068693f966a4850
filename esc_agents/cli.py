"""The `rlff-esc` command. Thin: parse arguments, build the config, call one function."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from pathlib import Path

from esc_agents import __version__
from esc_agents.errors import UserError


def _add_run_options(parser: argparse.ArgumentParser) -> None:
    """Options shared by every command that runs episodes."""
    parser.add_argument("--config", metavar="FILE", help="YAML config: endpoint profiles, roles, episode settings")
    parser.add_argument("--dataset", default="esconv:ppdpp_test",
                        help="esconv:<split>, extes:<split> or a JSONL file (default: %(default)s)")
    parser.add_argument("--limit", type=int, metavar="N", help="use the first N cases")
    parser.add_argument("--max-turns", type=int, metavar="T", help="turn cap T (default 8)")
    parser.add_argument("--critic-samples", type=int, metavar="L", help="critic samples per turn l (default 10)")
    parser.add_argument("--success-threshold", type=float, metavar="ETA",
                        help="goal reached when the critic's mean score exceeds this (default 0.5)")
    parser.add_argument("--concurrency", type=int, default=8, metavar="C",
                        help="episodes run at once (default: %(default)s)")
    parser.add_argument("--seed", type=int, help="part of every cache key: a new seed draws new samples")
    parser.add_argument("--supporter-prompt", metavar="NAME|FILE", help="supporter prompt (vanilla, think, strategy)")
    parser.add_argument("--persona", metavar="NAME|FILE", help="user-simulator persona (cooperative, resistant, ...)")
    parser.add_argument("--critic-prompt", metavar="NAME|FILE", help="critic prompt (default)")
    parser.add_argument("--endpoint", metavar="PROFILE", help="endpoint profile for every role (local, vllm, openai, ...)")
    parser.add_argument("--supporter-endpoint", metavar="PROFILE")
    parser.add_argument("--user-endpoint", metavar="PROFILE")
    parser.add_argument("--critic-endpoint", metavar="PROFILE")
    parser.add_argument("--cache", metavar="FILE", help="completion cache (default: <cache dir>/completions.sqlite)")
    parser.add_argument("--no-cache", action="store_true", help="neither replay nor record completions")
    parser.add_argument("--out", required=True, type=Path, metavar="DIR", help="run folder (created or resumed)")


def _config_from(args: argparse.Namespace):
    from esc_agents.config import build_config

    def role(endpoint: str | None, prompt: str | None) -> dict:
        return {"endpoint": endpoint or args.endpoint, "prompt": prompt}

    return build_config(args.config, {
        "supporter": role(args.supporter_endpoint, args.supporter_prompt),
        "user_simulator": role(args.user_endpoint, args.persona),
        "critic": role(args.critic_endpoint, args.critic_prompt),
        "episode": {
            "max_turns": args.max_turns,
            "critic_samples": args.critic_samples,
            "success_threshold": args.success_threshold,
        },
        "seed": args.seed,
    })


def cmd_simulate(args: argparse.Namespace) -> int:
    from esc_agents.datasets import load_cases
    from esc_agents.engine import Engine
    from esc_agents.evaluation.metrics import evaluate_run, format_summary
    from esc_agents.simulate import simulate

    config = _config_from(args)
    cases = load_cases(args.dataset)
    if args.limit is not None:
        cases = cases[: args.limit]
    if not cases:
        raise UserError(f"dataset {args.dataset} has no cases")
    engine = Engine(config, use_cache=not args.no_cache, cache_path=args.cache)
    result = asyncio.run(
        simulate(config, cases, args.out, dataset=args.dataset, concurrency=args.concurrency, engine=engine)
    )
    print(f"{result.completed} episodes run, {result.skipped} already done, {len(result.failed)} failed -> {args.out}")
    for role, usage in result.usage.as_dict().items():
        print(f"  {role:15s} calls {usage['calls']:5d}  cached {usage['cached']:5d}  "
              f"tokens in {usage['prompt_tokens']:7d} out {usage['completion_tokens']:6d}")
    if result.completed or result.skipped:
        print(format_summary(evaluate_run(args.out)))
    if result.failed:
        for case_id, error in result.failed.items():
            print(f"failed {case_id}: {error}", file=sys.stderr)
        print(f"rlff-esc: error: {len(result.failed)} episodes failed; rerun the same command to retry them",
              file=sys.stderr)
        return 2
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.metrics import evaluate_run, format_summary

    summary = evaluate_run(args.run)
    print(format_summary(summary))
    print(f"wrote {args.run / 'summary.json'} and {args.run / 'success_by_turn.png'}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    from esc_agents.config import build_config
    from esc_agents.local_server import OFFLINE_ENV, LocalServer, serve_command, embedded_model_dir

    profile = build_config(args.config).endpoints[args.profile]
    if not profile.embedded:
        raise UserError(f"profile {args.profile!r} is not the embedded server")
    server = LocalServer(profile)
    command = serve_command(embedded_model_dir(), server.host, server.port, profile.embedded_dtype)
    print(f"serving {command[2]} on {server.root}/v1 (model name: {command[2]}); Ctrl-C to stop", file=sys.stderr)
    os.execve(command[0], command, {**os.environ, **OFFLINE_ENV})


def cmd_graph(args: argparse.Namespace) -> int:
    from graphs.episode import EPISODE_GRAPH

    print(EPISODE_GRAPH.get_graph().draw_mermaid())
    return 0


def cmd_prompts(args: argparse.Namespace) -> int:
    from esc_agents.prompts import ROLES, available, load_prompt

    for role in ROLES:
        print(f"{role}:")
        for name in available(role):
            print(f"  {name:12s} {load_prompt(role, name).spec.description}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlff-esc",
        description="RLFF-ESC: simulate emotional-support dialogues with LLM roles and evaluate them.",
    )
    parser.add_argument("--version", action="version", version=f"rlff-esc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    simulate = commands.add_parser("simulate", help="run episodes on a dataset and write trajectories",
                                   description="Run supporter / user simulator / critic episodes concurrently. "
                                   "Appends DIR/trajectories.jsonl as episodes finish; a rerun resumes.")
    _add_run_options(simulate)
    simulate.set_defaults(func=cmd_simulate)

    evaluate = commands.add_parser("evaluate", help="SR / AT summary of a simulate run",
                                   description="Write DIR/summary.json and DIR/success_by_turn.png; print a table.")
    evaluate.add_argument("run", type=Path, metavar="DIR")
    evaluate.set_defaults(func=cmd_evaluate)

    serve = commands.add_parser("serve", help="run the embedded local server in the foreground",
                                description="Serve SmolLM2-135M-Instruct with `transformers serve` on loopback.")
    serve.add_argument("--config", metavar="FILE")
    serve.add_argument("--profile", default="local", help="embedded endpoint profile (default: %(default)s)")
    serve.set_defaults(func=cmd_serve)

    graph = commands.add_parser("graph", help="print the rollout graph as a Mermaid diagram")
    graph.set_defaults(func=cmd_graph)

    prompts = commands.add_parser("prompts", help="list the built-in prompts and personas")
    prompts.set_defaults(func=cmd_prompts)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except UserError as exc:
        print(f"rlff-esc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlff-esc: interrupted; finished results are saved, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
