"""The `rlff-esc` command. Thin: parse arguments, build the config, call one function."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
from pathlib import Path

from esc_agents import __version__
from esc_agents.cli.training import (
    add_held_out_options,
    add_training_parsers,
    held_out_options,
)
from esc_agents.cli.values import COUNT, SCORE, SEED, SHARE, Parser
from esc_agents.core.errors import UserError

OFFLINE_HELP = "replay from the cache alone: start no server, call no endpoint; a missing completion is an error"


def _engine(args: argparse.Namespace, config):
    """The engine of a command, with its cache options."""
    from esc_agents.engine import Engine

    return Engine(config, use_cache=not args.no_cache, cache_path=args.cache, offline=args.offline)


def _add_run_options(parser: argparse.ArgumentParser, dataset: str = "esconv:ppdpp_test", out_required: bool = True) -> None:
    """Options shared by every command that runs episodes."""
    parser.add_argument("--config", metavar="FILE", help="YAML config: endpoint profiles, roles, episode settings")
    parser.add_argument("--dataset", default=dataset,
                        help="esconv:<split>, extes:<split> or a JSONL file (default: %(default)s)")
    parser.add_argument("--limit", type=COUNT, metavar="N", help="use the first N cases")
    parser.add_argument("--max-turns", type=COUNT, metavar="T", help="turn cap T (default 8)")
    parser.add_argument("--critic-samples", type=COUNT, metavar="L", help="critic samples per turn l (default 10)")
    parser.add_argument("--success-threshold", type=SCORE, metavar="ETA",
                        help="goal reached when the critic's mean score exceeds this (default 0.5)")
    parser.add_argument("--concurrency", type=COUNT, default=8, metavar="C",
                        help="episodes run at once (default: %(default)s)")
    parser.add_argument("--seed", type=SEED, help="part of every cache key: a new seed draws new samples")
    parser.add_argument("--supporter-prompt", metavar="NAME|FILE", help="supporter prompt (vanilla, think, strategy)")
    parser.add_argument("--persona", metavar="NAME|FILE", help="user-simulator persona (cooperative, resistant, ...)")
    parser.add_argument("--critic-prompt", metavar="NAME|FILE", help="critic prompt (default)")
    parser.add_argument("--critic", metavar="PLUGIN", help="a critic written in Python: an installed role name "
                        "(see `rlff-esc roles`) or package.module:callable; replaces the LLM critic")
    parser.add_argument("--seeker", metavar="PLUGIN", help="a user simulator written in Python (as --critic)")
    parser.add_argument("--endpoint", metavar="PROFILE", help="endpoint profile for every role (local, vllm, openai, ...)")
    parser.add_argument("--supporter-endpoint", metavar="PROFILE")
    parser.add_argument("--supporter-model", type=Path, metavar="DIR",
                        help="serve this policy locally as the supporter: a model folder from `rlff-esc export` "
                        "or a train-grpo folder (merged on first use)")
    parser.add_argument("--user-endpoint", metavar="PROFILE")
    parser.add_argument("--critic-endpoint", metavar="PROFILE")
    parser.add_argument("--cache", metavar="FILE", help="completion cache (default: <cache dir>/completions.sqlite)")
    parser.add_argument("--no-cache", action="store_true", help="neither replay nor record completions")
    parser.add_argument("--offline", action="store_true", help=OFFLINE_HELP)
    parser.add_argument("--context-window", type=COUNT, metavar="N",
                        help="the supporter sees the latest N messages of the dialogue (default: all); the reward "
                        "model and GRPO inherit it from the reward data")
    parser.add_argument("--supporter-max-tokens", type=COUNT, metavar="N",
                        help="supporter max_tokens (default 96; a trained policy: its training max_completion_length)")
    _add_max_invalid_rate(parser)
    parser.add_argument("--out", required=out_required, type=Path, metavar="DIR",
                        help="run folder (created or resumed)")


MAX_INVALID_RATE_ENV = "RLFF_ESC_MAX_INVALID_RATE"  # a default for every command, e.g. for smoke runs of a tiny critic


def _add_max_invalid_rate(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(MAX_INVALID_RATE_ENV) or "0.2"
    try:
        default_rate = SHARE(default)
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"${MAX_INVALID_RATE_ENV}: {exc}") from None
    parser.add_argument("--max-invalid-rate", type=SHARE, default=default_rate, metavar="R",
                        help="exit 3 when more than this share of critic (or judge) answers match no verdict "
                        f"(default: %(default)s, or ${MAX_INVALID_RATE_ENV})")


def _too_many_invalid(what: str, rate: float, limit: float) -> bool:
    """Unparsable verdicts leave a metric resting on the parsable rest: loud above the limit."""
    if rate <= limit:
        return False
    print(f"rlff-esc: error: {rate:.1%} of {what} answers matched no verdict (above --max-invalid-rate {limit:g}); "
          "the numbers above rest on the rest; check the prompt's verdict patterns or the model", file=sys.stderr)
    return True


def _critic_trust(folders, limit: float) -> int:
    """3 when any simulate run's critic answers are unparsable above the limit, else 0."""
    from esc_agents.core.runlog import read_jsonl
    from esc_agents.core.types import invalid_verdict_rate

    untrusted = [_too_many_invalid(f"{folder.name}'s critic", invalid_verdict_rate(
        score for t in read_jsonl(folder / "trajectories.jsonl") for score in t["scores"]), limit) for folder in folders]
    return 3 if any(untrusted) else 0


def _config_from(args: argparse.Namespace, supporter_spec: str | None = None, **sections):
    """The run config from the shared options; `supporter_spec` (see `compare`) or
    --supporter-model replaces the supporter's binding."""
    from esc_agents.config import build_config
    from esc_agents.evaluation.compare import supporter_binding

    def role(endpoint: str | None, prompt: str | None) -> dict:
        return {"endpoint": endpoint or args.endpoint, "prompt": prompt}

    for plugin, prompt in (("--seeker", args.persona), ("--critic", args.critic_prompt)):
        if prompt is not None and getattr(args, plugin[2:]) is not None:
            raise UserError(f"{plugin} replaces the LLM role; it cannot go with that role's prompt {prompt!r}")
    binding = {"supporter": role(args.supporter_endpoint, args.supporter_prompt)}
    if args.supporter_model is not None:
        binding = supporter_binding(str(args.supporter_model))[1]
        binding["supporter"]["prompt"] = args.supporter_prompt or binding["supporter"]["prompt"]
    if supporter_spec is not None:
        binding = supporter_binding(supporter_spec)[1]
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
    })


def _load_cases(args: argparse.Namespace):
    from esc_agents.datasets import load_cases

    cases = load_cases(args.dataset)
    if args.limit is not None:
        cases = cases[: args.limit]
    if not cases:
        raise UserError(f"dataset {args.dataset} has no cases")
    return cases


def cmd_simulate(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.metrics import evaluate_run, format_summary
    from esc_agents.simulate import simulate

    config = _config_from(args)
    cases = _load_cases(args)
    engine = _engine(args, config)
    result = asyncio.run(
        simulate(config, cases, args.out, dataset=args.dataset, concurrency=args.concurrency, engine=engine)
    )
    print(f"{result.completed} episodes run, {result.skipped} already done, {len(result.failed)} failed -> {args.out}")
    _print_usage(engine.meter)
    if result.completed or result.skipped:
        print(format_summary(evaluate_run(args.out)))
    return _report_failures(result.failed, "episodes") or _critic_trust([args.out], args.max_invalid_rate)


def _print_usage(meter) -> None:
    for role, usage in meter.as_dict().items():
        print(f"  {role:16s} calls {usage['calls']:5d}  cached {usage['cached']:5d}  "
              f"tokens in {usage['prompt_tokens']:7d} out {usage['completion_tokens']:6d}")


def _report_failures(failed: dict[str, str], what: str) -> int:
    """Failed jobs are listed and make the exit code 2; everything else was saved."""
    if not failed:
        return 0
    for key, error in failed.items():
        print(f"failed {key}: {error}", file=sys.stderr)
    print(f"rlff-esc: error: {len(failed)} {what} failed; rerun the same command to retry them", file=sys.stderr)
    return 2


def cmd_rewards(args: argparse.Namespace) -> int:
    from training.futures.export import format_stats, stats
    from training.futures.generate import generate_rewards

    if args.out is None:
        raise UserError("rewards: --out DIR is required")
    config = _config_from(args, future_supporter={
        "endpoint": args.future_supporter_endpoint, "prompt": args.future_supporter_prompt,
    } if (args.future_supporter_endpoint or args.future_supporter_prompt) else None, rewards={
        "candidates": args.candidates, "formula": args.formula, "delta": args.delta,
        "formula_params": _formula_params(args.param) or None,
        "sampling": {"dialogues": args.limit, "contexts": args.contexts, "positions": args.positions,
                     "per_dialogue": args.per_dialogue, "min_history": args.min_history},
    })
    if config.rewards.candidates < 2:
        print("rlff-esc: warning: m < 2 candidates gives no within-context pairs for a ranking reward model",
              file=sys.stderr)
    engine = _engine(args, config)
    result = asyncio.run(generate_rewards(
        config, args.out, dataset=args.dataset, shard_spec=args.shard, concurrency=args.concurrency, engine=engine,
        **held_out_options(args),
    ))
    print(f"{result.completed} futures run, {result.skipped} already done, {len(result.failed)} failed -> {args.out}")
    _print_usage(engine.meter)
    untrusted = False
    if result.completed or result.skipped:
        summary = stats(args.out)
        print(format_stats(summary))
        untrusted = _too_many_invalid("the critic's", summary["invalid_critic_rate"], args.max_invalid_rate)
    return _report_failures(result.failed, "futures") or (3 if untrusted else 0)


def _formula_params(pairs: list[str]) -> dict[str, float]:
    params = {}
    for pair in pairs:
        name, _, value = pair.partition("=")
        try:
            params[name] = float(value)
        except ValueError:
            raise UserError(f"--param takes NAME=NUMBER, got {pair!r}") from None
    return params


def cmd_rewards_relabel(args: argparse.Namespace) -> int:
    from training.futures.export import format_stats, stats
    from training.futures.generate import relabel

    report = relabel(args.folder, args.formula, args.delta, _formula_params(args.param))
    print(f"relabelled {report['records']} records with {args.formula} (δ = {args.delta:g}); "
          f"{report['labels_changed']} labels changed; no LLM call")
    print(format_stats(stats(args.folder)))
    return 0


def cmd_rewards_merge(args: argparse.Namespace) -> int:
    from training.futures.generate import merge

    report = merge(args.parts, args.out)
    print(f"merged {len(args.parts)} parts: {report['records']} records -> {args.out}")
    for name in ("duplicates", "missing", "unexpected"):
        keys = report[name]
        print(f"  {name:10s} {len(keys)}" + (f": {', '.join(keys[:10])}{' …' if len(keys) > 10 else ''}" if keys else ""))
    return 0


def cmd_rewards_stats(args: argparse.Namespace) -> int:
    from training.futures.export import format_stats, stats

    print(format_stats(stats(args.folder)))
    print(f"wrote {args.folder / 'stats.json'} and {args.folder / 'r_fut_hist.png'}")
    return 0


def cmd_rewards_export(args: argparse.Namespace) -> int:
    from training.futures.export import export

    rows = export(args.folder, args.out, fmt=args.format, valid=args.valid, test=args.test, seed=args.seed)
    print(f"exported {', '.join(f'{name} {count}' for name, count in rows.items())} rows ({args.format}) -> {args.out}")
    return 0


def _unique_labels(labels: list[str]) -> list[str]:
    """Two parts with one label would share a folder, and one would hide the other."""
    if twice := sorted({label for label in labels if labels.count(label) > 1}):
        raise UserError(f"{', '.join(twice)} named more than once; each part needs its own name")
    return labels


def _simulate_parts(args: argparse.Namespace, configs: dict, cases) -> dict[str, Path]:
    """The simulate runs of a multi-run command, one per label under DIR; failed episodes are listed
    and the study goes on with the cases that finished. Every part's prompts are loaded first: a
    typo in the last spec must not cost the runs before it."""
    from esc_agents.core.runlock import run_lock
    from esc_agents.simulate import simulate

    engines = {label: _engine(args, config) for label, config in configs.items()}
    for label, engine in engines.items():
        print(f"{label}:", file=sys.stderr)
        with run_lock(args.out / label):
            result = asyncio.run(simulate(engine.config, cases, args.out / label, dataset=args.dataset,
                                          concurrency=args.concurrency, engine=engine))
        if result.failed:
            _report_failures(result.failed, f"episodes of {label}")
    return {label: args.out / label for label in configs}


def cmd_compare(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.compare import (
        compare_runs,
        format_comparison,
        supporter_binding,
    )

    if not args.runs and not args.supporters:
        raise UserError("compare needs --supporters A,B[,...] or --runs DIR DIR ...")
    specs = [spec.strip() for spec in args.supporters.split(",")] if not args.runs else []
    labels = _unique_labels([folder.name for folder in args.runs] if args.runs else
                            [supporter_binding(spec)[0] for spec in specs])
    if len(labels) < 2:
        raise UserError("compare needs at least two supporters or runs")
    if args.runs:
        runs = dict(zip(labels, args.runs))
    else:
        runs = _simulate_parts(args, {label: _config_from(args, supporter_spec=spec)
                                      for label, spec in zip(labels, specs)}, _load_cases(args))
    print(format_comparison(compare_runs(runs, args.out, allow_mismatch=args.allow_mismatch)))
    print(f"wrote {args.out / 'compare.json'} and {args.out / 'success_by_turn.png'}")
    return _critic_trust(runs.values(), args.max_invalid_rate)


def cmd_bias(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.bias import bias_report, conditions, format_bias

    def names(value: str | None) -> list[str | None]:
        return [name.strip() for name in value.split(",")] if value else [None]

    cases = _load_cases(args)
    studied = conditions(names(args.personas), names(args.user_models), names(args.critic_models), args.seeds,
                         args.seed or 0)
    _unique_labels([condition.label for condition in studied])
    folders = _simulate_parts(args, {condition.label: _config_from(argparse.Namespace(
        **{**vars(args), **condition.options()})) for condition in studied}, cases)
    runs = {condition: folders[condition.label] for condition in studied}
    print(format_bias(bias_report(runs, args.out)))
    print(f"wrote {args.out / 'bias.json'} and {args.out / 'success_by_turn.png'}")
    return _critic_trust(runs.values(), args.max_invalid_rate)


def cmd_judge(args: argparse.Namespace) -> int:
    from esc_agents.config import build_config
    from esc_agents.evaluation.judge import (
        format_judgments,
        judge_runs,
        summarize_judgments,
    )

    if not args.runs or len(args.runs) != 2 or args.out is None:
        raise UserError("judge needs --runs A B (two simulate runs) and --out DIR")
    config = build_config(args.config, {"judge": {"endpoint": args.judge_endpoint or "local",
                                                   "prompt": args.judge_prompt}, "seed": args.seed})
    engine = _engine(args, config)
    result = asyncio.run(judge_runs(config, {folder.name: folder for folder in args.runs}, args.out,
                                    concurrency=args.concurrency, engine=engine, allow_mismatch=args.allow_mismatch))
    summary = summarize_judgments(args.out, engine.judge_criteria)
    print(format_judgments(summary))
    print(f"wrote {args.out / 'judge.json'} and {args.out / 'judgments.jsonl'}")
    untrusted = _too_many_invalid("the judge's", summary["unparsable"] / max(summary["cases"], 1),
                                  args.max_invalid_rate)
    return _report_failures(result.failed, "judged cases") or (3 if untrusted else 0)


def cmd_judge_export(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.annotation import KEY, export_pairs
    from esc_agents.prompts import load_prompt

    criteria = load_prompt("judge", args.judge_prompt).spec.criteria
    sheet = export_pairs({folder.name: folder for folder in args.runs}, args.out, criteria, seed=args.seed)
    print(f"wrote {sheet} (give it to annotators; one filled copy each) and {args.out / KEY} (keep it apart)")
    return 0


def cmd_judge_export_critic(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.annotation import KEY, export_success

    sheet = export_success(args.run, args.out, seed=args.seed)
    print(f"wrote {sheet} (annotators fill `success` with yes/no) and {args.out / KEY} (keep it apart)")
    return 0


def cmd_judge_import(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.annotation import import_sheets

    report = import_sheets(args.key, args.sheets, args.judgments)
    print(json.dumps(report, indent=2))
    print(f"wrote {args.key.parent / 'agreement.json'}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.report import write_report

    print(f"wrote {write_report(args.folders, args.out)}")
    return 0


def cmd_view(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.viewer import write_viewer

    print(f"wrote {write_viewer(args.folders, args.out)}")
    return 0


def cmd_evaluate(args: argparse.Namespace) -> int:
    from esc_agents.evaluation.metrics import evaluate_run, format_summary

    summary = evaluate_run(args.run)
    print(format_summary(summary))
    print(f"wrote {args.run / 'summary.json'} and {args.run / 'success_by_turn.png'}")
    if not summary["complete"]:
        left = len(summary["failed_cases"]) + len(summary["missing_cases"])
        print(f"rlff-esc: error: the run is incomplete ({left} cases did not run); rerun its simulate command",
              file=sys.stderr)
        return 2
    return _critic_trust([args.run], args.max_invalid_rate)


def cmd_serve(args: argparse.Namespace) -> int:
    from esc_agents.config import build_config
    from esc_agents.models.local_server import (
        OFFLINE_ENV,
        LocalServer,
        embedded_model_dir,
        serve_command,
    )

    profile = build_config(args.config).endpoints[args.profile]
    if not profile.embedded:
        raise UserError(f"profile {args.profile!r} is not the embedded server")
    server = LocalServer(profile)
    command = serve_command(server.model_path or embedded_model_dir(), server.host, server.port,
                            profile.embedded_dtype, profile.embedded_kv_tokens)
    print(f"serving {command[2]} on {server.root}/v1 (model name: {command[2]}); Ctrl-C to stop", file=sys.stderr)
    os.execve(command[0], command, {**os.environ, **OFFLINE_ENV})


def cmd_graph(args: argparse.Namespace) -> int:
    from graphs.episode import EPISODE_GRAPH

    print(EPISODE_GRAPH.get_graph().draw_mermaid())
    return 0


def cmd_roles(args: argparse.Namespace) -> int:
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


def cmd_prompts_render(args: argparse.Namespace) -> int:
    from esc_agents.roles.render import find_case, render_messages, role_of

    role = role_of(args.prompt, args.role)
    print(json.dumps(render_messages(args.prompt, role, find_case(args.dataset, args.case)), indent=2,
                     ensure_ascii=False))
    return 0


def cmd_prompts(args: argparse.Namespace) -> int:
    from esc_agents.prompts import ROLES, available, load_prompt

    for role in ROLES:
        print(f"{role}:")
        for name in available(role):
            print(f"  {name:12s} {load_prompt(role, name).spec.description}")
    return 0


def _add_rewards_parser(commands) -> None:
    from training.futures.formulas import FORMULAS

    formulas = ", ".join(sorted(FORMULAS))
    rewards = commands.add_parser(
        "rewards", help="build the future-oriented reward dataset D_r (stage 1)",
        description="For sampled contexts of training dialogues, sample m candidate supporter replies, "
        "simulate each one's future with the episode graph, and append one record per (context, candidate) "
        "to DIR/records.jsonl. A rerun resumes; --shard i/N splits the work across machines.",
    )
    _add_run_options(rewards, dataset="esconv:ppdpp_train", out_required=False)
    rewards.add_argument("--contexts", type=COUNT, metavar="N", help="contexts to sample (default: all selected)")
    rewards.add_argument("--candidates", type=COUNT, metavar="M", help="candidate replies per context m (default 4)")
    rewards.add_argument("--positions", choices=["all", "random", "first"],
                         help="which positions of each dialogue (default random)")
    rewards.add_argument("--per-dialogue", type=COUNT, metavar="K", help="positions per dialogue for random/first (default 1)")
    rewards.add_argument("--min-history", type=COUNT, metavar="N", help="messages before the reply (default 1)")
    rewards.add_argument("--formula", help=f"R_fut formula: {formulas} (default terminal_efficiency)")
    rewards.add_argument("--delta", type=SCORE, help="label = 1[R_fut > delta] (default 0.5)")
    rewards.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                         help="formula parameter, e.g. lambda=0.5 or gamma=0.8 (rewards.formula_params)")
    rewards.add_argument("--shard", metavar="i/N", help="produce only the i-th of N disjoint parts")
    rewards.add_argument("--future-supporter-prompt", metavar="NAME|FILE",
                         help="supporter that continues futures (default: the candidate proposer)")
    rewards.add_argument("--future-supporter-endpoint", metavar="PROFILE")
    add_held_out_options(rewards)
    rewards.set_defaults(func=cmd_rewards, writes="out")
    actions = rewards.add_subparsers(dest="rewards_command", metavar="ACTION")

    relabel = actions.add_parser("relabel", help="recompute R_fut and labels with another formula; no LLM call")
    relabel.add_argument("folder", type=Path, metavar="DIR")
    relabel.add_argument("--formula", required=True, help=formulas)
    relabel.add_argument("--delta", type=SCORE, default=0.5, help="default: %(default)s")
    relabel.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                         help="formula parameter, e.g. lambda=0.5 or gamma=0.8")
    relabel.set_defaults(func=cmd_rewards_relabel, writes="folder")

    merge = actions.add_parser("merge", help="validate and merge shard folders")
    merge.add_argument("parts", type=Path, nargs="+", metavar="PART")
    merge.add_argument("--out", type=Path, required=True, metavar="DIR")
    merge.set_defaults(func=cmd_rewards_merge, writes="out")

    stats = actions.add_parser("stats", help="counts, success, label balance, R_fut histogram, cost")
    stats.add_argument("folder", type=Path, metavar="DIR")
    stats.set_defaults(func=cmd_rewards_stats, writes=None)

    export = actions.add_parser("export", help="split by dialogue and write a dataset for the reward model")
    export.add_argument("folder", type=Path, metavar="DIR")
    export.add_argument("--out", type=Path, required=True, metavar="DIR")
    export.add_argument("--format", choices=["hf", "parquet", "jsonl"], default="hf",
                        help="Hugging Face datasets folder, parquet or JSONL per split (default: %(default)s)")
    export.add_argument("--valid", type=SHARE, default=0.1, help="share of dialogues (default: %(default)s)")
    export.add_argument("--test", type=SHARE, default=0.1, help="share of dialogues (default: %(default)s)")
    export.add_argument("--seed", type=SEED, default=0)
    export.set_defaults(func=cmd_rewards_export, writes="out")


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="rlff-esc",
        description="RLFF-ESC: simulate emotional-support dialogues with LLM roles, build future-oriented "
        "rewards, train the reward model and the GRPO policy, and evaluate supporters.",
    )
    parser.add_argument("--version", action="version", version=f"rlff-esc {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    simulate = commands.add_parser("simulate", help="run episodes on a dataset and write trajectories",
                                   description="Run supporter / user simulator / critic episodes concurrently. "
                                   "Appends DIR/trajectories.jsonl as episodes finish; a rerun resumes.")
    _add_run_options(simulate)
    simulate.set_defaults(func=cmd_simulate, writes="out")

    _add_rewards_parser(commands)
    add_training_parsers(commands)

    compare = commands.add_parser(
        "compare", help="several supporters on the same cases, with paired tests",
        description="Run each supporter on the same cases with the same user simulator and critic (one "
        "simulate run per supporter under DIR/<label>, sharing the completion cache), or read existing "
        "runs, and report SR / AT / final score with 95% intervals, McNemar on success and a paired "
        "bootstrap on turns per pair, and SR-by-turn curves in one PNG. A supporter is a prompt name or "
        "file (vanilla, think, strategy), PROMPT@PROFILE for another endpoint, or a model folder from "
        "`rlff-esc export`.",
    )
    _add_run_options(compare)
    compare.add_argument("--supporters", metavar="A,B,...", help="supporter specs to run and compare")
    compare.add_argument("--runs", type=Path, nargs="+", metavar="DIR", help="compare existing simulate runs instead")
    compare.add_argument("--allow-mismatch", action="store_true",
                         help="compare runs whose cases or settings differ (a warning is kept in the report)")
    compare.set_defaults(func=cmd_compare, writes="out")

    bias = commands.add_parser(
        "bias", help="simulator-bias study: one supporter under several personas, user and critic models, seeds",
        description="Run the same supporter on the same cases under every combination of user-simulator "
        "persona, user-simulator endpoint, critic endpoint and seed (one simulate run each under "
        "DIR/<condition>), and report SR / AT per condition, the SR shift against the first condition "
        "(paired bootstrap), the final-score distribution shift (Wasserstein, KS test), the SR spread over "
        "seeds and SR pooled over user-simulator models.",
    )
    _add_run_options(bias)
    bias.add_argument("--personas", default="cooperative,resistant", metavar="A,B,...",
                      help="user-simulator personas (prompt names or files; default: %(default)s)")
    bias.add_argument("--user-models", metavar="PROFILE,...", help="endpoint profiles for the user simulator")
    bias.add_argument("--critic-models", metavar="PROFILE,...", help="endpoint profiles for the critic")
    bias.add_argument("--seeds", type=COUNT, default=1, metavar="K", help="seeds per condition (default: %(default)s)")
    bias.set_defaults(func=cmd_bias, writes="out")

    judge = commands.add_parser(
        "judge", help="LLM-judge pairwise quality of two supporters, both orders; human annotation round trip",
        description="Compare two simulate runs case by case with an LLM judge on the judge prompt's criteria "
        "(default: fluency, empathy, identification, suggestion, overall). Each case is judged in both "
        "orders; a preference that flips with the order counts as a tie. Prints win/tie/loss per criterion "
        "with 95% intervals; writes judge.json and judgments.jsonl (appended, resumable).",
    )
    judge.add_argument("--runs", type=Path, nargs=2, metavar="DIR", help="the two simulate runs (A first)")
    judge.add_argument("--out", type=Path, metavar="DIR")
    judge.add_argument("--config", metavar="FILE")
    judge.add_argument("--judge-prompt", default="default", metavar="NAME|FILE", help="default: %(default)s")
    judge.add_argument("--judge-endpoint", metavar="PROFILE", help="endpoint profile of the judge (default local)")
    judge.add_argument("--concurrency", type=COUNT, default=8)
    judge.add_argument("--seed", type=SEED)
    judge.add_argument("--cache", metavar="FILE")
    judge.add_argument("--no-cache", action="store_true")
    judge.add_argument("--offline", action="store_true", help=OFFLINE_HELP)
    judge.add_argument("--allow-mismatch", action="store_true", help="judge runs whose settings differ")
    _add_max_invalid_rate(judge)
    judge.set_defaults(func=cmd_judge, writes="out")
    judge_actions = judge.add_subparsers(dest="judge_command", metavar="ACTION")
    judge_export = judge_actions.add_parser(
        "export", help="annotation sheet of the same pairs: random item ids and A/B order, key kept apart")
    judge_export.add_argument("--runs", type=Path, nargs=2, required=True, metavar="DIR")
    judge_export.add_argument("--out", type=Path, required=True, metavar="DIR")
    judge_export.add_argument("--judge-prompt", default="default", metavar="NAME|FILE",
                              help="whose criteria become the sheet's columns (default: %(default)s)")
    judge_export.add_argument("--seed", type=SEED, default=0)
    judge_export.set_defaults(func=cmd_judge_export, writes="out")
    export_critic = judge_actions.add_parser(
        "export-critic", help="annotation sheet of one run's episodes for human success labels")
    export_critic.add_argument("--run", type=Path, required=True, metavar="DIR")
    export_critic.add_argument("--out", type=Path, required=True, metavar="DIR")
    export_critic.add_argument("--seed", type=SEED, default=0)
    export_critic.set_defaults(func=cmd_judge_export_critic, writes="out")
    judge_import = judge_actions.add_parser(
        "import", help="read filled sheets; human results, Krippendorff's alpha, Cohen's kappa with the model")
    judge_import.add_argument("key", type=Path, metavar="KEY.json")
    judge_import.add_argument("sheets", type=Path, nargs="+", metavar="SHEET.csv", help="one per annotator")
    judge_import.add_argument("--judgments", type=Path, metavar="DIR", help="a `judge` output folder to compare with")
    judge_import.set_defaults(func=cmd_judge_import, writes=None)

    report = commands.add_parser(
        "report", help="one self-contained HTML file for any mix of run folders",
        description="Tables, embedded PNG plots, resolved configs and the dialogues (the `view` viewer, "
        "embedded) of simulate, compare, bias, judge, rewards, train-rm and train-grpo folders, in one HTML file "
        "with no external asset. Two or more "
        "train-grpo folders (e.g. one per --reward mode) also get their curves on shared axes and a cost table.",
    )
    report.add_argument("folders", type=Path, nargs="+", metavar="DIR")
    report.add_argument("--out", type=Path, required=True, metavar="FILE.html")
    report.set_defaults(func=cmd_report)

    view = commands.add_parser(
        "view", help="browse the dialogues of run folders in one HTML file",
        description="Transcripts with the critic's votes per turn (simulate), the same case side by side "
        "(compare, bias), contexts with their candidates and simulated futures (rewards), GRPO completions "
        "and their futures (train-grpo): filters and pages in one self-contained HTML file; no server.",
    )
    view.add_argument("folders", type=Path, nargs="+", metavar="DIR")
    view.add_argument("--out", type=Path, metavar="FILE.html", help="default: DIR/view.html for one folder")
    view.set_defaults(func=cmd_view)

    evaluate = commands.add_parser("evaluate", help="SR / AT summary of a simulate run",
                                   description="Write DIR/summary.json and DIR/success_by_turn.png; print a table.")
    evaluate.add_argument("run", type=Path, metavar="DIR")
    _add_max_invalid_rate(evaluate)
    evaluate.set_defaults(func=cmd_evaluate)

    serve = commands.add_parser("serve", help="run the embedded local server in the foreground",
                                description="Serve SmolLM2-135M-Instruct with `transformers serve` on loopback.")
    serve.add_argument("--config", metavar="FILE")
    serve.add_argument("--profile", default="local", help="embedded endpoint profile (default: %(default)s)")
    serve.set_defaults(func=cmd_serve)

    graph = commands.add_parser("graph", help="print the rollout graph as a Mermaid diagram")
    graph.set_defaults(func=cmd_graph)

    roles = commands.add_parser("roles", help="list the roles: prompt files and installed Python roles")
    roles.set_defaults(func=cmd_roles)

    prompts = commands.add_parser("prompts", help="list the built-in prompts and personas; render one for a case")
    prompts.set_defaults(func=cmd_prompts)
    render = prompts.add_subparsers(dest="prompts_command", metavar="ACTION").add_parser(
        "render", help="print the exact messages a role sends for a dataset case (JSON)",
        description="Load and check a prompt as a run would, and print the chat its role sends at the case's "
        "first exchange; the replies a run would have are placeholders.")
    render.add_argument("prompt", metavar="NAME|FILE")
    render.add_argument("--case", required=True, metavar="ID", help="a case id of the dataset, e.g. ppdpp_test-0")
    render.add_argument("--dataset", default="esconv:ppdpp_test", help="default: %(default)s")
    render.add_argument("--role", help="the prompt's role (default: the folder the file is in)")
    render.set_defaults(func=cmd_prompts_render)
    return parser


def _stop_on_sigterm(signum, frame) -> None:
    # A cluster scheduler's SIGTERM unwinds like Ctrl-C, so the embedded server we started stops too.
    raise KeyboardInterrupt


def _run(args: argparse.Namespace) -> int:
    """A command that writes a run folder holds it for its whole run (see runlock)."""
    from esc_agents.core.runlock import run_lock

    writes = getattr(args, "writes", None)
    folder = writes(args) if callable(writes) else getattr(args, writes or "-", None)
    if folder is None:
        return args.func(args)
    with run_lock(folder):
        return args.func(args)


def main(argv: list[str] | None = None) -> int:
    try:
        try:
            return _main(argv)
        finally:
            sys.stdout.flush()  # here, not at exit, so a reader that has gone is caught below
    except BrokenPipeError:
        # The reader (`| head`) has what it wanted: stop quietly, as Unix tools do.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


def _main(argv: list[str] | None) -> int:
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    try:
        return _run(build_parser().parse_args(argv))
    except UserError as exc:
        print(f"rlff-esc: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlff-esc: interrupted; finished results are saved, rerun the same command to resume", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
