"""Options shared by several commands, and what they turn into: the run config, the engine, the
cases, the supporter a spec names."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from esc_agents.cli.values import COUNT, OUT_FOLDER, SCORE, SEED, SHARE, labels
from esc_agents.core.errors import UserError

OFFLINE_HELP = "replay from the cache alone: start no server, call no endpoint; a missing completion is an error"
MAX_INVALID_RATE_ENV = "RLFF_ESC_MAX_INVALID_RATE"  # a default for every command, e.g. for smoke runs of a tiny critic


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", metavar="FILE", help="completion cache (default: <cache dir>/completions.sqlite)")
    parser.add_argument("--no-cache", action="store_true", help="neither replay nor record completions")
    parser.add_argument("--offline", action="store_true", help=OFFLINE_HELP)


def add_same_model_option(parser: argparse.ArgumentParser) -> None:
    """For commands that write run folders: a resume against another server is refused unless told."""
    parser.add_argument("--same-model", action="store_true",
                        help="resume a run folder although a role's server moved (another base URL or served "
                        "model): it serves the same weights; run.json records the move")


def add_labels_option(parser: argparse.ArgumentParser, rows: str) -> None:
    """Display names for a table's rows, so a file or spec name need not go into a paper."""
    parser.add_argument("--labels", type=labels, default={}, metavar="ROW=NAME,...",
                        help=f"display names for {rows} in the tables (folders keep their names); a ROW that names "
                        "none is refused")


def add_max_invalid_rate(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(MAX_INVALID_RATE_ENV) or "0.2"
    try:
        default_rate = SHARE(default)
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"${MAX_INVALID_RATE_ENV}: {exc}") from None
    parser.add_argument("--max-invalid-rate", type=SHARE, default=default_rate, metavar="R",
                        help="exit 3 when more than this share of critic (or judge) answers match no verdict "
                        f"(default: %(default)s, or ${MAX_INVALID_RATE_ENV})")


def add_run_options(parser: argparse.ArgumentParser, dataset: str = "esconv:ppdpp_test", out_required: bool = True) -> None:
    """Options shared by every command that runs episodes."""
    parser.add_argument("--config", metavar="FILE", help="YAML config: endpoint profiles, roles, episode settings")
    parser.add_argument("--dataset", default=dataset,
                        help="a registered NAME:SPLIT (esconv:<split>, extes:<split>, or a package's), a JSONL file, "
                        "or a loader of yours, package.module:function[@SPLIT] (default: %(default)s)")
    parser.add_argument("--limit", type=COUNT, metavar="N", help="use the first N cases (default: all)")
    parser.add_argument("--max-turns", type=COUNT, metavar="T", help="turn cap T (default 8)")
    parser.add_argument("--critic-samples", type=COUNT, metavar="L", help="critic samples per turn l (default 10)")
    parser.add_argument("--success-threshold", type=SCORE, metavar="ETA",
                        help="goal reached when the critic's mean score exceeds this (default 0.5)")
    parser.add_argument("--concurrency", type=COUNT, default=8, metavar="C",
                        help="episodes run at once (default: %(default)s)")
    parser.add_argument("--seed", type=SEED, help="part of every cache key: a new seed draws new samples (default 0)")
    parser.add_argument("--supporter-prompt", metavar="NAME|FILE", help="supporter prompt: vanilla (the default), think, strategy, or a file")
    parser.add_argument("--persona", metavar="NAME|FILE", help="user-simulator persona: cooperative (the default), resistant, ... (`rlff-esc prompts`), or a file")
    parser.add_argument("--critic-prompt", metavar="NAME|FILE", help="critic prompt (default: the one named `default`)")
    parser.add_argument("--critic", metavar="PLUGIN", help="a critic written in Python: an installed role name "
                        "(see `rlff-esc roles`) or package.module:callable; replaces the LLM critic")
    parser.add_argument("--seeker", metavar="PLUGIN", help="a user simulator written in Python (as --critic)")
    parser.add_argument("--endpoint", metavar="PROFILE", help="endpoint profile for every role (local, vllm, openai, ...)")
    parser.add_argument("--supporter-endpoint", metavar="PROFILE", help="endpoint profile of the supporter alone")
    parser.add_argument("--supporter-model", type=Path, metavar="DIR",
                        help="serve this policy locally as the supporter: a model folder from `rlff-esc export` "
                        "or a train-grpo folder (merged on first use)")
    parser.add_argument("--user-endpoint", metavar="PROFILE", help="endpoint profile of the user simulator alone")
    parser.add_argument("--critic-endpoint", metavar="PROFILE", help="endpoint profile of the critic alone")
    add_cache_options(parser)
    add_same_model_option(parser)
    parser.add_argument("--context-window", type=COUNT, metavar="N",
                        help="the supporter sees the latest N messages of the dialogue (default: all); the reward "
                        "model and GRPO inherit it from the reward data")
    parser.add_argument("--supporter-max-tokens", type=COUNT, metavar="N",
                        help="supporter max_tokens (default 96; a trained policy: its training max_completion_length)")
    add_max_invalid_rate(parser)
    parser.add_argument("--out", required=out_required, type=OUT_FOLDER, metavar="DIR",
                        help="run folder (created or resumed)"
                        + ("" if out_required else "; required unless an ACTION is given"))


def add_held_out_options(parser: argparse.ArgumentParser) -> None:
    """Training on dialogues of the split a policy is evaluated on inflates its SR without an error."""
    from esc_agents.datasets import DEFAULT_EVAL_SPLIT

    parser.add_argument("--eval-split", default=DEFAULT_EVAL_SPLIT, metavar="SPEC",
                        help="refuse training dialogues that are also in this evaluation split ('none': no check; "
                        "default: %(default)s)")
    parser.add_argument("--allow-eval-overlap", action="store_true",
                        help="go on despite such dialogues, with a warning and a record in the provenance")


def held_out_options(args: argparse.Namespace) -> dict:
    return {"eval_split": None if args.eval_split == "none" else args.eval_split,
            "allow_eval_overlap": args.allow_eval_overlap}


def engine(args: argparse.Namespace, config):
    """The engine of a command, with its cache options."""
    from esc_agents.engine import Engine

    return Engine(config, use_cache=not args.no_cache, cache_path=args.cache, offline=args.offline,
                  same_model=args.same_model)


def supporter(spec: str) -> tuple[str, dict[str, Any]]:
    """(label, config overrides) for one supporter spec (see `compare`). A train-grpo folder is
    merged into DIR/merged on first use, served from there and labelled by its own name."""
    from esc_agents.evaluation.compare import supporter_binding

    run = Path(spec)
    if (run / "adapter" / "adapter_config.json").exists():
        from training.grpo.export import POLICY_CARD, export_policy

        merged = run / "merged"
        if not (merged / POLICY_CARD).exists():
            export_policy(run, merged)
        return run.name, supporter_binding(str(merged))[1]
    return supporter_binding(spec)


def config_from(args: argparse.Namespace, supporter_spec: str | None = None, blame: dict[str, str] | None = None,
                **sections):
    """The run config from the shared options; `supporter_spec` (see `compare`) or
    --supporter-model replaces the supporter's binding. A value the config refuses (an unknown
    endpoint profile) is blamed on the option that gave it, `blame` naming those of `sections`."""
    from esc_agents.cli.config_flags import describe_problems
    from esc_agents.config import build_config

    def role(endpoint: str | None, prompt: str | None) -> dict:
        return {"endpoint": endpoint or args.endpoint, "prompt": prompt}

    given = {f"{name}.endpoint": option if value else "--endpoint"
             for name, value, option in (("supporter", args.supporter_endpoint, "--supporter-endpoint"),
                                         ("user_simulator", args.user_endpoint, "--user-endpoint"),
                                         ("critic", args.critic_endpoint, "--critic-endpoint"))
             if value or args.endpoint}

    for plugin, prompt in (("--seeker", args.persona), ("--critic", args.critic_prompt)):
        if prompt is not None and getattr(args, plugin[2:]) is not None:
            raise UserError(f"{plugin} replaces the LLM role; it cannot go with that role's prompt {prompt!r}")
    binding = {"supporter": role(args.supporter_endpoint, args.supporter_prompt)}
    if args.supporter_model is not None:
        binding = supporter(str(args.supporter_model))[1]
        binding["supporter"]["prompt"] = args.supporter_prompt or binding["supporter"]["prompt"]
        given.pop("supporter.endpoint", None)
    if supporter_spec is not None:
        binding = supporter(supporter_spec)[1]
        if "endpoint" not in binding["supporter"] and (args.supporter_endpoint or args.endpoint):
            binding["supporter"]["endpoint"] = args.supporter_endpoint or args.endpoint
        elif "endpoint" in binding["supporter"]:
            given["supporter.endpoint"] = "--supporters"
    if args.supporter_max_tokens is not None:
        binding["supporter"]["max_tokens"] = args.supporter_max_tokens
    if args.context_window is not None:
        binding["supporter"]["context_window"] = args.context_window
    return build_config(args.config, {
        **binding,
        "user_simulator": {**role(args.user_endpoint, args.persona), "factory": args.seeker},
        "critic": {**role(args.critic_endpoint, args.critic_prompt), "factory": args.critic},
        "episode": {
            "max_turns": args.max_turns,
            "critic_samples": args.critic_samples,
            "success_threshold": args.success_threshold,
        },
        "seed": args.seed,
        **sections,
    }, describe=lambda error, source: describe_problems(error, {**given, **(blame or {})}, source))


def load_cases(args: argparse.Namespace):
    from esc_agents.datasets import load_cases

    cases = load_cases(args.dataset)
    if args.limit is not None:
        cases = cases[: args.limit]
    if not cases:
        raise UserError(f"dataset {args.dataset} has no cases")
    return cases
