"""Stage 1: the future-oriented reward dataset D_r.

For each sampled context, the supporter proposes m candidate replies; each candidate is
continued by the same episode graph the evaluation uses (user simulator → critic → supporter …,
stopping at the goal or K = T future turns), and its future is scored with an R_fut formula.
One record per (context, candidate) is appended to `records.jsonl` as soon as its future ends.
Records keep every raw part, so `relabel` recomputes R_fut and labels without an LLM call.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sys
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from esc_agents import __version__
from esc_agents.config import ContextSampling, RunConfig
from esc_agents.core.errors import UserError
from esc_agents.core.runlog import append_jsonl, read_jsonl
from esc_agents.core.types import Message
from esc_agents.datasets import DEFAULT_EVAL_SPLIT, held_out_check, load_cases
from esc_agents.engine import Engine
from esc_agents.core.tracking import Tracker
from esc_agents.jobs import FAILURES, JobsResult, outstanding_failures, run_logged
from esc_agents.provenance import describe_identity, differing_fields, moved_servers, settings_only
from esc_agents.runs import Fingerprint, RunFolder, RunRecord, check_run, record_run
from graphs.episode import run_episode
from training.contexts import Context, sample_contexts, shard
from training.futures.formulas import (
    DEFAULT_CRITIC_RANGE,
    FutureOutcome,
    checked_formula,
    get_formula,
)
from training.futures.records import RECORDS, RewardRecord, jsonl, read_records


def record_key(context: Context, candidate: int) -> str:
    return f"{context.key}#{candidate}"


def labels(outcome: FutureOutcome, formula_name: str, params: dict[str, float], delta: float) -> dict[str, Any]:
    """R_fut of a future's raw parts and its label, with the formula and threshold that made them."""
    r_fut = get_formula(formula_name)(outcome, params)
    return {
        "r_fut": r_fut,
        "label": None if r_fut is None else int(r_fut > delta),
        "formula": formula_name,
        "formula_params": params,
        "delta": delta,
    }


def relabelled(record: RewardRecord, formula_name: str, params: dict[str, float], delta: float) -> RewardRecord:
    """The record with R_fut and its label recomputed from its raw parts."""
    return record.model_copy(update=labels(FutureOutcome.of_record(record), formula_name, params, delta))


def _provenance(run: RunRecord) -> dict[str, Any]:
    roles = run.fingerprint.roles
    llm = {role: spec for role, spec in roles.items() if "model" in spec}
    return {
        "models": {role: spec["model"] for role, spec in llm.items()},
        "prompts_sha256": {role: spec["prompt_sha256"] for role, spec in llm.items()},
        "temperatures": {role: spec["temperature"] for role, spec in llm.items()},
        "plugins": {role: spec for role, spec in roles.items() if role not in llm},
        "seed": run.fingerprint.seed,
        "rlff_esc": __version__,
    }


# run.json of a reward dataset made with the prefix-stable context order (see `sample_contexts`):
# such a dataset grows by the new contexts only. Without it (older datasets), the order they were made in.
CONTEXT_ORDER = {"context_order": "prefix"}
# "How many" settings a rerun may raise: the run then adds the new contexts and keeps the rest.
GROWABLE = ("rewards.sampling.contexts", "rewards.sampling.dialogues")


def reward_contexts(config: RunConfig, dataset: str, shard_spec: str | None = None, *,
                    prefix_stable: bool = True) -> list[Context]:
    contexts = sample_contexts(load_cases(dataset), config.rewards.sampling, config.seed, prefix_stable=prefix_stable)
    return shard(contexts, shard_spec)


def prefix_stable(run: RunRecord | None) -> bool:
    """Whether a reward dataset's contexts are in the prefix-stable order (a new one always is)."""
    return run is None or run.context_order == CONTEXT_ORDER["context_order"]


LABEL_SETTINGS = ("formula", "formula_params", "delta")


def with_labels_apart(run: RunRecord | None) -> RunRecord | None:
    """A dataset relabelled by an older version holds its relabelling in the fingerprint, so the
    command that generated it was refused on rerun. Such a run.json (no `labels`, a rewards
    fingerprint whose formula, parameters or delta differ from the `config` it was generated with)
    comes back with the relabelling moved to `labels` and the generating settings back in the
    fingerprint, as one relabelled now reads; any other run comes back as it is."""
    if run is None or "labels" in run.model_fields_set or run.fingerprint.rewards is None \
            or "rewards" not in (run.config or {}):
        return run
    made, generated = run.fingerprint.rewards, run.config["rewards"]
    if all(made.get(key) == generated.get(key) for key in LABEL_SETTINGS):
        return run
    fingerprint = run.fingerprint.model_copy(
        update={"rewards": {**made, **{key: generated.get(key) for key in LABEL_SETTINGS}}})
    return run.model_copy(update={"fingerprint": fingerprint, "labels": {key: made.get(key) for key in LABEL_SETTINGS}})


async def generate_rewards(
    config: RunConfig,
    out: Path,
    *,
    dataset: str,
    shard_spec: str | None = None,
    concurrency: int = 8,
    engine: Engine | None = None,
    progress: bool = True,
    tracker: Tracker | None = None,
    eval_split: str | None = DEFAULT_EVAL_SPLIT,
    allow_eval_overlap: bool = False,
) -> JobsResult:
    settings = config.rewards
    engine = engine or Engine(config)
    formula, params = checked_formula(settings.formula, settings.formula_params, settings.delta,
                                      config.episode.max_turns, engine.critic_range)
    folder = RunFolder.find(out)
    on_disk = folder.record if folder else None
    existing = with_labels_apart(on_disk)
    ordered = prefix_stable(existing)
    contexts = reward_contexts(config, dataset, shard_spec, prefix_stable=ordered)
    held_out = held_out_check(list({c.case.id: c.case for c in contexts}.values()), eval_split, allow_eval_overlap,
                              "rewards")
    provenance: dict[str, Any] = {}

    def grow(previous: RunRecord) -> None:
        """More contexts (or dialogues) than before: only if every context the run was made for stays."""
        before = config.model_copy(update={"rewards": settings.model_copy(
            update={"sampling": ContextSampling.model_validate(previous.fingerprint.rewards["sampling"])})})
        now = {context.key for context in contexts}
        dropped = [c.key for c in reward_contexts(before, dataset, shard_spec, prefix_stable=ordered) if c.key not in now]
        if dropped:
            raise UserError(f"{out} was made for {len(dropped)} contexts these settings leave out "
                            f"({', '.join(dropped[:3])}{' ...' if len(dropped) > 3 else ''}): a run can grow "
                            "(more --contexts or --limit), not shrink or change its selection; use a new --out")

    def planned() -> RunRecord:
        return RunRecord.new(config, engine.prompts, dataset, held_out=held_out, plugins=engine.plugin_fingerprints,
                             critic_range=engine.critic_range, extra=CONTEXT_ORDER,
                             identities=engine.endpoint_identities, rewards=settings.model_dump(), shard=shard_spec)

    def check() -> None:
        """Before any work: a rerun with other settings is refused, and nothing is written."""
        if checked := check_run(out, planned(), same_model=engine.same_model, growable=GROWABLE, may_grow=grow):
            provenance.update(_provenance(checked.record))

    def record() -> None:
        run = record_run(out, planned(), same_model=engine.same_model, growable=GROWABLE, may_grow=grow)
        provenance.update(_provenance(run.record))

    if existing is on_disk:
        check()
    else:  # moved apart only once this command's settings are known to fit the run
        folder.save(existing)
        try:
            check()
        except UserError:
            folder.save(on_disk)
            raise
        print(f"rlff-esc: note: {out}/run.json was relabelled by an older version; its relabelling is now kept "
              "under `labels`, apart from the settings it was generated with", file=sys.stderr)
    # A relabelled dataset labels its new records as it labels the rest.
    current = existing.labelling() if existing and existing.labels is not None else {
        "formula": formula.name, "formula_params": params, "delta": settings.delta}
    m = settings.candidates
    proposals: dict[str, asyncio.Future] = {}

    def candidates_of(context: Context) -> asyncio.Future:
        # The m candidates of a context are one request (with n) shared by its m jobs.
        if context.key not in proposals:
            proposals[context.key] = asyncio.ensure_future(
                engine.supporter.candidates(context.case, context.history, m)
            )
        return proposals[context.key]

    def future_of(context: Context, index: int):
        async def job() -> dict[str, Any]:
            candidate: Message = (await candidates_of(context))[index]
            history = context.history
            trajectory = await run_episode(engine.episode_context(context.case, future=True), [*history, candidate])
            outcome = FutureOutcome.of(trajectory, config.episode.max_turns)
            return RewardRecord(
                key=record_key(context, index),
                context_key=context.key,
                dialogue_id=context.case.id,
                position=context.position,
                candidate_index=index,
                emotion=context.case.emotion,
                problem=context.case.problem,
                context=history,
                candidate=candidate,
                future=trajectory.messages[len(history) + 1:],
                critic_scores=trajectory.scores,
                turn_scores=outcome.turn_scores,
                K=outcome.turns,
                T=outcome.max_turns,
                success=outcome.success,
                provenance=provenance,
                **labels(outcome, current["formula"], current["formula_params"], current["delta"]),
            ).model_dump()

        return job

    jobs = {record_key(context, index): future_of(context, index) for context in contexts for index in range(m)}
    try:
        result = await run_logged(engine, out / RECORDS, "key", jobs, record=record, total=len(jobs),
                                  concurrency=concurrency, desc="futures", progress=progress, tracker=tracker)
    finally:  # a session stopped by Ctrl-C or SIGTERM keeps the calls its records cost
        if engine.meter.roles:  # replayed completions count too, as `cached`
            append_jsonl(out / "usage.jsonl", engine.meter.as_dict())
    return result


def relabel(folder: Path, formula_name: str, delta: float, params: dict[str, float] | None = None,
            out: Path | None = None) -> dict[str, int]:
    """Recompute R_fut and labels of every record; no LLM call. In place (atomically), or with
    `out` into a relabelled copy, the source left as it was. The formula, its parameters and delta
    are recorded as run.json `labels`; the fingerprint keeps the settings the futures were generated
    with, so the generating command's rerun is still accepted (its new records get these labels)."""
    run = RunFolder.open(folder, "rewards")
    critic_range = tuple(run.record.critic_range or DEFAULT_CRITIC_RANGE)  # older runs: the built-in critic's
    _, resolved = checked_formula(formula_name, params, delta, run.max_turns, critic_range)
    target = folder if out is None else out
    if out is not None:
        if out.resolve() == folder.resolve():
            raise UserError(f"relabel --out {out} is the source folder; leave --out out to relabel in place")
        if RunFolder.holds_run(out):
            raise UserError(f"{out} holds a run already; relabel --out into a new folder")
    records = read_records(folder / RECORDS, unique=False)
    updated = [relabelled(record, formula_name, resolved, delta) for record in records]
    changed = sum(old.label != new.label for old, new in zip(records, updated))
    target.mkdir(parents=True, exist_ok=True)
    staging = target / (RECORDS + ".tmp")
    staging.write_text(jsonl(updated))
    os.replace(staging, target / RECORDS)
    update: dict[str, Any] = {}
    if out is not None:  # what else the copy needs to be a run of its own; run.json goes last
        for name in (FAILURES, "usage.jsonl"):
            if (folder / name).exists():
                shutil.copyfile(folder / name, out / name)
        update["relabelled_from"] = str(folder)
    update["labels"] = {"formula": formula_name, "formula_params": resolved, "delta": delta,
                        "at": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    RunFolder.create(target, run.record.model_copy(update=update))
    return {"records": len(records), "labels_changed": changed}


def _labels(run: RunRecord) -> dict[str, Any]:
    return {key: value for key, value in run.labelling().items() if key != "at"}


def merge(parts: list[Path], out: Path, *, same_model: bool = False) -> dict[str, Any]:
    """Merge shard folders into one: same settings required; duplicates and missing keys reported.
    Parts whose roles ran on other servers (each node its own vLLM, say) merge only with
    `same_model`: the servers serve the same weights; an identity a part does not record matches any."""
    runs = [RunFolder.open(part, "rewards").record for part in parts]
    reference = {**runs[0].fingerprint.as_json(), "shard": None}
    for part, run in zip(parts[1:], runs[1:]):
        fingerprint = run.fingerprint.as_json()
        if diff := differing_fields(settings_only(reference), settings_only({**fingerprint, "shard": None})):
            raise UserError(f"{part} was made with other settings than {parts[0]}: {', '.join(diff)}")
        if not same_model and (moves := moved_servers(reference, fingerprint)):
            role, before, after = moves[0]
            raise UserError(f"{part} ran the {role} on another server than {parts[0]} ({describe_identity(after)}, "
                            f"not {describe_identity(before)}); add --same-model if both serve the same weights")
        if prefix_stable(run) != prefix_stable(runs[0]):
            raise UserError(f"{part} orders its contexts otherwise than {parts[0]} (one was made by an older "
                            "version); merge parts made by one version")
        if diff := differing_fields(_labels(run), _labels(runs[0])):
            raise UserError(f"{part} is labelled otherwise than {parts[0]} ({', '.join(diff)}); relabel one of them")
    merged: dict[str, RewardRecord] = {}
    seen = Counter()
    for part in parts:
        for record in read_records(part / RECORDS, unique=False):
            seen[record.key] += 1
            merged.setdefault(record.key, record)
    config = RunConfig.model_validate(runs[0].config)
    expected = {
        record_key(context, index)
        for context in reward_contexts(config, reference["dataset"], prefix_stable=prefix_stable(runs[0]))
        for index in range(reference["rewards"]["candidates"])
    }
    failures = [f for part in parts for f in outstanding_failures(part, "key", merged.keys())]
    out.mkdir(parents=True, exist_ok=True)
    if (out / RECORDS).exists():
        raise UserError(f"{out / RECORDS} exists already; merge into a new folder")
    (out / RECORDS).write_text(jsonl(merged.values()))
    (out / FAILURES).write_text("".join(json.dumps(f) + "\n" for f in failures))
    usage = [line for part in parts for line in read_jsonl(part / "usage.jsonl")]
    (out / "usage.jsonl").write_text("".join(json.dumps(u) + "\n" for u in usage))
    RunFolder.create(out, runs[0].model_copy(update={"fingerprint": Fingerprint.model_validate(reference),
                                                     "merged_from": [str(p) for p in parts]}))
    return {
        "records": len(merged),
        "duplicates": sorted(key for key, count in seen.items() if count > 1),
        "missing": sorted(expected - merged.keys()),
        "unexpected": sorted(merged.keys() - expected),
    }
