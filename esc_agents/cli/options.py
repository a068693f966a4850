"""The options shared by several commands, as `Options` models (each option a field: its name, type,
bounds, help and shown default come from there, see config_flags.py), and what they turn into: the
run config, the engine, the cases, the supporter a spec names."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any, Literal

from esc_agents.cli.config_flags import ConfigFlags, Options, option
from esc_agents.cli.values import OUT_FOLDER, SHARE, labels
from esc_agents.config import RunConfig
from esc_agents.core import progress, tracking
from esc_agents.core.errors import UserError

MAX_INVALID_RATE_ENV = "RLFF_ESC_MAX_INVALID_RATE"  # a default for every command, e.g. for smoke runs of a tiny critic
MAX_INVALID_RATE = 0.2
ProgressMode = Literal[progress.MODES]
Tracker = Literal[tracking.TRACKERS]


def default_max_invalid_rate() -> float:
    """The default of --max-invalid-rate, read when the parser is built: $RLFF_ESC_MAX_INVALID_RATE
    where it is set."""
    try:
        return SHARE(os.environ.get(MAX_INVALID_RATE_ENV) or str(MAX_INVALID_RATE))
    except argparse.ArgumentTypeError as exc:
        raise UserError(f"${MAX_INVALID_RATE_ENV}: {exc}") from None


def default_eval_split() -> str:
    from esc_agents.datasets import DEFAULT_EVAL_SPLIT

    return DEFAULT_EVAL_SPLIT


def labels_option(rows: str) -> Any:
    """Display names for a table's rows, so a file or spec name need not go into a paper."""
    return option({}, f"display names for {rows} in the tables (folders keep their names); a ROW that names none "
                  "is refused", parse=labels, repeat=False, metavar="ROW=NAME,...")


class ProcessOptions(Options):
    """Options of the process, not of one command, so they go before the command or after it."""

    app_dir: str = option(".", "where your own Python modules are found (roles, formulas, dataset loaders, factory backends, "
                          "reward terms named package.module:name), "
                          "after the installed packages; . is the working directory", metavar="DIR")
    progress: ProgressMode = option(
        "auto", "live progress bars: auto draws them only where stderr is a terminal, elsewhere each stage ends "
        "with one line")


class TrustOptions(Options):
    """Whether a result's numbers rest on enough parsable verdicts to trust (see outcome.py)."""

    max_invalid_rate: float = option(
        default_factory=default_max_invalid_rate, description="exit 3 when more than this share of critic (or judge) answers "
        f"match no verdict (${MAX_INVALID_RATE_ENV} sets the default)", ge=0, le=1, metavar="R")


class EngineOptions(TrustOptions):
    """The completion cache and the servers of a command that calls LLM roles (see `engine`)."""

    cache: Path | None = option(None, "completion cache", metavar="FILE", unset="<cache dir>/completions.sqlite")
    no_cache: bool = option(False, "neither replay nor record completions")
    offline: bool = option(False, "replay from the cache alone: start no server, call no endpoint; a missing "
                           "completion is an error")
    same_model: bool = option(False, "resume a run folder although a role's server moved (another base URL or "
                              "served model): it serves the same weights; run.json records the move")


class RunOptions(EngineOptions):
    """The options of every command that runs episodes: the cases, and the run config's settings
    (`sets`: the RunConfig fields an option overrides; see `config_from`)."""

    target = RunConfig

    config: str | None = option(None, "YAML config: endpoint profiles, roles, episode settings", metavar="FILE",
                                unset="none, the built-in settings")
    dataset: str = option("esconv:ppdpp_test", "a registered NAME:SPLIT (esconv:<split>, extes:<split>, or a "
                          "package's), a JSONL file, or a loader of yours, package.module:function[@SPLIT]",
                          metavar="DATASET")
    limit: int | None = option(None, "use the first N cases", ge=1, metavar="N", unset="all")
    max_turns: int | None = option(None, "turn cap T", ge=1, metavar="T", sets="episode.max_turns")
    critic_samples: int | None = option(None, "critic samples per turn l", ge=1, metavar="L",
                                        sets="episode.critic_samples")
    success_threshold: float | None = option(None, "goal reached when the critic's mean score exceeds this",
                                             metavar="ETA", sets="episode.success_threshold")
    concurrency: int = option(8, "episodes run at once", ge=1, metavar="C")
    seed: int | None = option(None, "part of every cache key: a new seed draws new samples", sets="seed")
    supporter_prompt: str | None = option(None, "supporter prompt: vanilla, think, strategy, or a file",
                                          metavar="NAME|FILE", sets="supporter.prompt")
    persona: str | None = option(None, "user-simulator persona: cooperative, resistant, ... (`rlff-esc prompts`), "
                                 "or a file", metavar="NAME|FILE", sets="user_simulator.prompt")
    critic_prompt: str | None = option(None, "critic prompt: a name (`rlff-esc prompts`) or a file",
                                       metavar="NAME|FILE", sets="critic.prompt")
    critic: str | None = option(None, "a critic written in Python: an installed role name (see `rlff-esc roles`) "
                                "or package.module:callable; replaces the LLM critic", metavar="PLUGIN",
                                sets="critic.factory", unset="none, the LLM critic")
    seeker: str | None = option(None, "a user simulator written in Python (as --critic)", metavar="PLUGIN",
                                sets="user_simulator.factory", unset="none, the LLM user simulator")
    # --endpoint before the roles' own: where both are given, the role's wins
    endpoint: str | None = option(None, "endpoint profile for every role (local, vllm, openai, ...)",
                                  metavar="PROFILE", sets=("supporter.endpoint", "user_simulator.endpoint",
                                                           "critic.endpoint"))
    supporter_endpoint: str | None = option(None, "endpoint profile of the supporter alone, over --endpoint",
                                            metavar="PROFILE", sets="supporter.endpoint")
    supporter_model: Path | None = option(None, "serve this policy locally as the supporter: a model folder from "
                                          "`rlff-esc export` or a train-grpo folder (merged on first use)",
                                          metavar="DIR", unset="none")
    user_endpoint: str | None = option(None, "endpoint profile of the user simulator alone, over --endpoint",
                                       metavar="PROFILE", sets="user_simulator.endpoint")
    critic_endpoint: str | None = option(None, "endpoint profile of the critic alone, over --endpoint",
                                         metavar="PROFILE", sets="critic.endpoint")
    context_window: int | None = option(None, "the supporter sees the latest N messages of the dialogue; the reward "
                                        "model and GRPO inherit it from the reward data", ge=1, metavar="N",
                                        sets="supporter.context_window", unset="all")
    supporter_max_tokens: int | None = option(None, "supporter max_tokens (a trained policy's default: its "
                                              "training max_completion_length)", ge=1, metavar="N",
                                              sets="supporter.max_tokens")
    user_max_tokens: int | None = option(None, "user simulator max_tokens: the length of the seeker's replies",
                                         ge=1, metavar="N", sets="user_simulator.max_tokens")
    out: Path = option(..., "run folder (created or resumed)", parse=OUT_FOLDER, metavar="DIR")
    report_to: Tracker = option("none", "log the running success rate, requests, tokens and failures as jobs finish: "
                                "tensorboard (DIR/tensorboard; compare and bias: DIR/<label>/tensorboard), wandb or "
                                "trackio (project rlff-esc)")


class HeldOutOptions(Options):
    """Training on dialogues of the split a policy is evaluated on inflates its SR without an error."""

    eval_split: str = option(default_factory=default_eval_split, description="refuse training dialogues that are also in "
                             "this evaluation split ('none': no check)", metavar="SPEC")
    allow_eval_overlap: bool = option(False, "go on despite such dialogues, with a warning and a record in the "
                                      "provenance")


PROCESS = ConfigFlags(ProcessOptions)
RUN = ConfigFlags(RunOptions)
HELD_OUT = ConfigFlags(HeldOutOptions)


def held_out_options(args: argparse.Namespace) -> dict:
    return {"eval_split": None if args.eval_split == "none" else args.eval_split,
            "allow_eval_overlap": args.allow_eval_overlap}


def engine(args: argparse.Namespace, config):
    """The engine of a command, with its cache options; a tracker it cannot report to is refused
    here, before any model call."""
    from esc_agents.engine import Engine

    tracking.check_tracker(getattr(args, "report_to", "none"))
    return Engine(config, use_cache=not args.no_cache, cache_path=args.cache, offline=args.offline,
                  same_model=args.same_model)


def tracker(args: argparse.Namespace, folder: Path, config) -> tracking.Tracker:
    """The tracker `--report-to` names, for the run in `folder`."""
    return tracking.open_tracker(getattr(args, "report_to", "none"), folder, config.model_dump(mode="json"))


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
                flags: ConfigFlags = RUN, **sections):
    """The run config: the options of `flags` that set its fields (`sets`) over the config file;
    `supporter_spec` (see `compare`) or --supporter-model replaces the supporter's binding. A value
    the config refuses (an unknown endpoint profile) is blamed on the option that gave it, `blame`
    naming those of `sections` and of values a command put in `args` itself."""
    from esc_agents.cli.config_flags import describe_problems
    from esc_agents.config import build_config

    for plugin, prompt in (("--seeker", args.persona), ("--critic", args.critic_prompt)):
        if prompt is not None and getattr(args, plugin[2:]) is not None:
            raise UserError(f"{plugin} replaces the LLM role; it cannot go with that role's prompt {prompt!r}")
    overrides, given = flags.overrides(args), flags.given(args)
    chosen = overrides.pop("supporter", {})  # the supporter's settings the options gave
    binding = {"supporter": chosen}
    if supporter_spec is not None:  # the spec names the supporter; the options give what it leaves
        binding = supporter(supporter_spec)[1]
        if "endpoint" in binding["supporter"]:
            given["supporter.endpoint"] = "--supporters"
        binding["supporter"] = {**chosen, **binding["supporter"],
                                **{key: value for key, value in chosen.items() if key not in ("endpoint", "prompt")}}
    elif args.supporter_model is not None:  # served from the folder: its endpoint, the options' other settings
        binding = supporter(str(args.supporter_model))[1]
        binding["supporter"].update({key: value for key, value in chosen.items() if key != "endpoint"})
        given.pop("supporter.endpoint", None)
    return build_config(args.config, {**overrides, **binding, **sections},
                        describe=lambda error, source: describe_problems(error, {**given, **(blame or {})}, source))


def load_cases(args: argparse.Namespace):
    from esc_agents.datasets import load_cases

    cases = load_cases(args.dataset)
    if args.limit is not None:
        cases = cases[: args.limit]
    if not cases:
        raise UserError(f"dataset {args.dataset} has no cases")
    return cases
