"""A run folder, typed: its record (`run.json`), its trajectories and failures, the prompts it ran.

Every command that writes a run folder (simulate, rewards, judge) and every reader of one
(evaluate, compare, bias, view, relabel, merge, export, train-rm) goes through `RunFolder`:

    run = RunFolder.open(Path("runs/vanilla"))            # a simulate run; "rewards" or "judge" for the others
    run.max_turns, run.fingerprint.dataset, run.cases()  # T, the dataset, the case ids it is to finish
    run.trajectories()                                    # its finished episodes, one dict per line
    run.prompt("supporter")                               # the prompt the supporter used, as it was

`RunRecord` and `Fingerprint` read every run.json written so far: a key they do not declare is
kept as it is, and one an older version did not write is left out when the record is written
back (never filled in with a default), in the order the file had it. A command records its run
in three steps that used to be the modes of one function: `RunRecord.new` is what this session
would record, `RunFolder.create` writes it into a new folder, and for a folder that holds a run
already `RunFolder.check` refuses other settings or servers (writing nothing) and
`RunFolder.grow` records what a resume adds (more cases or contexts, servers learnt or moved).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, PrivateAttr, ValidationError, model_serializer, model_validator

from esc_agents.config import RoleConfig, RunConfig
from esc_agents.core.errors import UserError
from esc_agents.core.jsonfile import write_json
from esc_agents.core.runlog import read_unique
from esc_agents.jobs import outstanding_failures
from esc_agents.prompts import (PROMPTS_DIR, Prompt, PromptFile, load_prompt, prompt_from_text, prompt_kind)
from esc_agents.provenance import (IDENTITY, IDENTITY_CHANGES, describe_identity, differing_fields, fingerprint,
                                   flattened, moved_servers, prompt_record, role_identity, settings_only, versions)

RUN_JSON = "run.json"
TRAJECTORIES = "trajectories.jsonl"
RunKind = Literal["simulate", "rewards", "judge"]
# What each kind of run appends its results under, one line per key.
RESULT_KEYS: dict[str, str] = {"simulate": "case_id", "rewards": "key", "judge": "case_id"}


class _Kept(BaseModel):
    """A model that keeps the keys it was read with: undeclared ones as they are (a newer or older
    version's), declared ones only where they were given, all in the order they came."""

    model_config = ConfigDict(extra="allow")
    _order: tuple[str, ...] = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _remember_order(cls, data: Any, handler: Any) -> Any:
        made = handler(data)
        if isinstance(data, dict):
            made._order = tuple(data)
        return made

    @model_serializer(mode="wrap")
    def _in_order(self, handler: Any) -> Any:
        data = handler(self)
        if isinstance(data, dict) and self._order:
            data = {**{key: data[key] for key in self._order if key in data},
                    **{key: value for key, value in data.items() if key not in self._order}}
        return data

    def as_json(self) -> dict[str, Any]:
        """As the file holds it: what was read, with what was set since."""
        return self.model_dump(mode="json", exclude_unset=True)


class Fingerprint(_Kept):
    """The settings that change results (`provenance.fingerprint` makes it): a rerun with others
    is refused. Each role by its model, prompt (name and SHA-256), sampling and server
    (`identity`), or a Python role by its plugin fingerprint; plain dicts, as run.json has them."""

    dataset: str | None = None
    roles: dict[str, Any] = {}
    episode: dict[str, Any] = {}
    seed: int | None = None
    rewards: dict[str, Any] | None = None  # a rewards run's settings
    shard: str | None = None  # a rewards run: which shard of the contexts
    runs: dict[str, str] | None = None  # a judge run: the two runs it judged

    @property
    def max_turns(self) -> int | None:
        """T of the run's episodes (None where the record does not say)."""
        return self.episode.get("max_turns")

    def role(self, role: str) -> dict[str, Any]:
        """What the record says of one role ({} where nothing)."""
        spec = self.roles.get(role)
        return spec if isinstance(spec, dict) else {}


class RunRecord(_Kept):
    """run.json: the fingerprint, the resolved config, the prompts (by name and SHA-256, and their
    texts), the critic's score range, the case ids the run is to finish, and what happened to it
    since (grown, servers moved, relabelled, merged)."""

    fingerprint: Fingerprint
    config: dict[str, Any] | None = None  # `RunConfig` as JSON (an older one reads as it did)
    prompts: dict[str, Any] = {}  # role -> {name, sha256, source}; older records: the file's path
    prompt_texts: dict[str, str] = {}
    critic_range: list[int | float] | None = None
    cases: list[str] | None = None
    held_out: dict[str, Any] | None = None
    context_order: str | None = None  # a rewards run: "prefix" where its contexts grow by a prefix
    versions: dict[str, str] = {}
    created: str | None = None
    grown: list[dict[str, Any]] = []
    identity_changes: list[dict[str, Any]] = []  # each server move a resume accepted with --same-model
    relabelled_from: str | None = None  # a relabelled copy: the folder it was copied from
    labels: dict[str, Any] | None = None  # a rewards run relabelled: its formula, parameters and delta
    merged_from: list[str] | None = None

    @classmethod
    def new(cls, config: RunConfig, prompts: dict[str, Prompt], dataset: str, *, cases: list[str] | None = None,
            held_out: dict[str, Any] | None = None, plugins: dict[str, dict[str, Any]] | None = None,
            critic_range: tuple[float, float] | None = None, extra: dict[str, Any] | None = None,
            identities: dict[str, dict[str, str]] | None = None, **settings: Any) -> RunRecord:
        """The record a run with these settings gets. `cases`: the ids it is meant to finish (readers
        compare them with what finished, so a case that never ran is never silently left out of a
        metric). The prompts are kept by name, content hash and full text, so the run can be redone
        (and read) where their files are not: nothing in it names a place on this machine. A role
        object passed in (`plugins`) is kept in the config as the factory its fingerprint names,
        never as the LLM role it replaced. `identities`: what serves each LLM role, where known.
        `extra` goes beside the fingerprint; `settings`, a command's own, into it."""
        config = _objects_as_factories(config, plugins)
        return cls.model_validate({
            "fingerprint": fingerprint(config, prompts, dataset, plugins, identities, **settings),
            "config": config.model_dump(mode="json"),
            "prompts": {role: prompt_record(prompt) for role, prompt in prompts.items()},
            "prompt_texts": {role: prompt.text for role, prompt in prompts.items()},
            "critic_range": list(critic_range or prompts["critic"].score_range) if critic_range or "critic" in prompts
            else None,
            **({"cases": list(cases)} if cases is not None else {}),
            **({"held_out": held_out} if held_out is not None else {}),
            **(extra or {}),
            "versions": versions(),
            "created": _now(),
        })

    @property
    def kind(self) -> RunKind:
        """What made the run: `rewards` (D_r), `judge`, else `simulate`."""
        if self.fingerprint.rewards is not None:
            return "rewards"
        return "judge" if self.fingerprint.runs is not None else "simulate"

    def served_identities(self, role: str) -> list[dict[str, str]]:
        """Every server that `role` ran on, taken as one: the one recorded now and each one a resume
        with --same-model moved it from."""
        earlier = [change["from"] for change in self.identity_changes if change.get("role") == role]
        return [identity for identity in (role_identity(self.fingerprint.as_json(), role), *earlier) if identity]

    def labelling(self) -> dict[str, Any]:
        """The formula, parameters and delta a rewards run's labels are made with now: those of a
        relabelling where there was one (`labels`), else those it was generated with."""
        rewards = self.fingerprint.rewards or {}
        return self.labels or {key: rewards.get(key) for key in ("formula", "formula_params", "delta")}


@dataclass
class Resume:
    """What a rerun into a folder that holds a run changes, once `RunFolder.check` accepted it."""

    fingerprint: Fingerprint  # the new settings, keeping what the record knew of servers this session did not learn
    grown: list[str] = field(default_factory=list)  # growable settings that differ (flattened names)
    moves: list[tuple[str, dict, dict]] = field(default_factory=list)  # (role, server before, now) moved


class RunFolder:
    """A folder that holds a run's record, and what it reads of its other files."""

    def __init__(self, path: Path, record: RunRecord):
        self.path = Path(path)
        self.record = record

    @staticmethod
    def holds_run(path: Path) -> bool:
        return (Path(path) / RUN_JSON).is_file()

    @classmethod
    def find(cls, path: Path) -> RunFolder | None:
        """The run in `path`, of any kind; None where it holds no run.json."""
        file = Path(path) / RUN_JSON
        if not file.is_file():
            return None
        try:
            return cls(Path(path), RunRecord.model_validate(json.loads(file.read_text(encoding="utf-8"))))
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{file} is not valid JSON ({exc}); restore it, or rerun into a new folder") from None
        except ValidationError as exc:
            problem = exc.errors()[0]
            where = ".".join(str(part) for part in problem["loc"]) or "the record"
            raise UserError(f"{file} is not a run record ({where}: {problem['msg']})") from None

    @classmethod
    def open(cls, path: Path, kind: RunKind | None = "simulate") -> RunFolder:
        """The run in `path`, refused in one line where there is none or (unless `kind` is None) it
        is of another kind."""
        found = cls.find(path)
        if found is None:
            raise UserError(f"{path} is not a {kind or 'run'} folder (no {RUN_JSON})")
        if kind is not None and found.kind != kind:
            raise UserError(f"{path} holds a {found.kind} run, not a {kind} run")
        return found

    @classmethod
    def create(cls, path: Path, record: RunRecord) -> RunFolder:
        """A new run folder holding `record`."""
        folder = cls(Path(path), record)
        folder.path.mkdir(parents=True, exist_ok=True)
        folder.save()
        return folder

    def save(self, record: RunRecord | None = None) -> None:
        """Write `record` (else the one held) as run.json, atomically; it becomes the one held."""
        if record is not None:
            self.record = record
        write_json(self.path / RUN_JSON, self.record.as_json())

    @property
    def kind(self) -> RunKind:
        return self.record.kind

    @property
    def fingerprint(self) -> Fingerprint:
        return self.record.fingerprint

    @property
    def max_turns(self) -> int:
        """T of the run's episodes: a failed episode counts T turns in AT."""
        if self.fingerprint.max_turns is None:
            raise UserError(f"{self.path}/{RUN_JSON} does not record its episodes' max_turns")
        return self.fingerprint.max_turns

    def cases(self) -> list[str]:
        """The case ids the run is to finish, finished or not (none recorded: [])."""
        return list(self.record.cases or [])

    def trajectories(self) -> list[dict[str, Any]]:
        """The finished episodes, one dict per line of trajectories.jsonl as it was written (any
        version's; `core.types.Trajectory.model_validate` types a current one); a case held twice is
        refused."""
        return read_unique(self.path / TRAJECTORIES, "case_id")

    def failures(self, done: set[str]) -> list[dict[str, Any]]:
        """The failures recorded whose key has not finished since (`done`: the keys that have)."""
        return outstanding_failures(self.path, RESULT_KEYS[self.kind], done)

    def prompt(self, role: str) -> Prompt:
        """The prompt `role` used, resolved where the folder is now: its text as the record keeps
        it, else a built-in prompt of its name with the same content, else (records written before
        prompts were kept by name) the file it named, if it is still there with the same content;
        validated as a prompt file is. Anything else is one line saying what is missing."""
        name, text, source = self._prompt_source(role)
        if source is None:
            return prompt_from_text(prompt_kind(role), name, text, self.path / RUN_JSON)
        return load_prompt(prompt_kind(role), str(source))

    def prompt_file(self, role: str) -> PromptFile:
        """The fields of the prompt `role` used (its reply format and tags, persona description
        and axes, critic verdicts), found as `prompt` finds it but read as leniently as a record
        of any version needs: the text the record keeps where nothing else is found, a field this
        version does not know passed over, one that does not read left at its default, as is
        every field where the run keeps no prompt for the role (a Python role, say)."""
        try:
            _, text, _ = self._prompt_source(role)
        except UserError:  # a record that names no prompt for the role: the text it keeps, if any
            text = self.record.prompt_texts.get(role)
        try:
            data = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            data = None
        data = data if isinstance(data, dict) else {}
        known = {key: value for key, value in data.items() if key in PromptFile.model_fields}
        try:
            return PromptFile.model_validate({"system": "", **known})
        except ValidationError as exc:
            broken = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
            try:
                return PromptFile.model_validate({"system": "", **{k: v for k, v in known.items() if k not in broken}})
            except ValidationError:
                return PromptFile(system="")

    def _prompt_source(self, role: str) -> tuple[str, str, Path | None]:
        """(name, text, file) of the prompt `role` used; `file` None where the text is the record's."""
        spec = self.fingerprint.role(role)
        if "prompt" not in spec:
            raise UserError(f"{self.path}: the {role} of this run is not an LLM role with a prompt")
        name, sha256 = spec["prompt"], spec.get("prompt_sha256")  # no hash: a hand-written record

        def same(text: str) -> bool:
            return sha256 is None or _sha256(text) == sha256

        text = self.record.prompt_texts.get(role)
        if text is not None and same(text):
            return name, text, None
        looked = []
        recorded = self.record.prompts.get(role)
        candidates = [PROMPTS_DIR / prompt_kind(role) / f"{name}.yaml"]
        if isinstance(recorded, str):  # an older run.json: the file's path then
            candidates.append(Path(recorded))
        for path in candidates:
            looked.append(str(path))
            if path.is_file() and same(found := path.read_text(encoding="utf-8")):
                return name, found, path
        raise UserError(f"{self.path}/{RUN_JSON} does not keep the text of its {role} prompt {name!r} (sha256 "
                        f"{(sha256 or '?')[:12]}), and no file with that content was found (looked at: "
                        f"{', '.join(looked)}); put that prompt file back, or add its text under prompt_texts")

    def check(self, planned: RunRecord, *, same_model: bool = False, growable: tuple[str, ...] = (),
              may_grow: Callable[[RunRecord], None] | None = None) -> Resume:
        """Refuse a rerun whose settings (`planned`, from `RunRecord.new`) differ from the recorded
        ones, or whose servers do; writes nothing. A run may grow: where only `growable` settings
        (flattened names, e.g. how many contexts) differ, `may_grow(recorded)` raises if the new
        settings would drop work the run holds. Servers are compared apart from the settings: one
        unknown on either side (an older record, an offline replay, a check before the endpoints
        answered) is no difference; one that differs is refused, naming both, unless `same_model`
        says the moved server serves the same weights. Half the episodes from one server and half
        from another would otherwise pass for one run."""
        recorded, current = self.fingerprint.as_json(), planned.fingerprint.as_json()
        moves = moved_servers(recorded, current)
        current = _with_known_identities(current, recorded, {role for role, _, _ in moves})
        diff = differing_fields(settings_only(recorded), settings_only(current))
        if diff and (may_grow is None or not set(diff) <= set(growable)):
            raise UserError(
                f"{self.path} holds a run with other settings ({', '.join(diff)}); use a new --out or the same settings"
            )
        if moves and not same_model:
            raise UserError(_moved_message(self.path, moves))
        if diff:
            may_grow(self.record)
        return Resume(Fingerprint.model_validate(current), diff, moves)

    def grow(self, planned: RunRecord, resume: Resume) -> RunRecord:
        """Record what a resume `check` accepted adds: grown settings (each growth listed under
        `grown`, with the config and held-out check of now), servers moved (`identity_changes`) or
        learnt, and cases not recorded yet. Writes only where something changed."""
        now = _now()
        update: dict[str, Any] = {}
        if resume.grown:
            before = flattened(self.fingerprint.as_json())
            update.update(grown=[*self.record.grown, {"from": {field: before.get(field) for field in resume.grown},
                                                      "at": now}],
                          config=planned.config,
                          **({"held_out": planned.held_out} if planned.held_out is not None else {}))
        if resume.moves:
            update[IDENTITY_CHANGES] = [*self.record.identity_changes, *(
                {"role": role, "from": before, "to": after, "at": now} for role, before, after in resume.moves)]
        update["fingerprint"] = resume.fingerprint
        known, cases = self.record.cases, planned.cases
        if cases is not None and known is not None and not set(cases) <= set(known):
            update["cases"] = known + [case for case in cases if case not in set(known)]
        updated = self.record.model_copy(update=update)
        if updated.as_json() != self.record.as_json():
            self.save(updated)
        return self.record


def check_run(path: Path, planned: RunRecord, *, same_model: bool = False, growable: tuple[str, ...] = (),
              may_grow: Callable[[RunRecord], None] | None = None) -> RunFolder | None:
    """Before any work: where `path` holds a run, `RunFolder.check` it against `planned` (a run
    with other settings is refused before any model call, and nothing is written)."""
    folder = RunFolder.find(path)
    if folder is not None:
        folder.check(planned, same_model=same_model, growable=growable, may_grow=may_grow)
    return folder


def record_run(path: Path, planned: RunRecord, *, same_model: bool = False, growable: tuple[str, ...] = (),
               may_grow: Callable[[RunRecord], None] | None = None) -> RunFolder:
    """Once the endpoints answered: `RunFolder.create` a new run's record, or check a resumed one
    and `RunFolder.grow` it."""
    folder = RunFolder.find(path)
    if folder is None:
        return RunFolder.create(path, planned)
    folder.grow(planned, folder.check(planned, same_model=same_model, growable=growable, may_grow=may_grow))
    return folder


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _objects_as_factories(config: RunConfig, plugins: dict[str, dict[str, Any]] | None) -> RunConfig:
    """`config` with each role object passed in bound as the factory its fingerprint names, so the
    config run.json keeps, like its fingerprint, never shows the LLM role that object replaced."""
    bindings = config.roles()
    objects = {role: RoleConfig(factory=made["plugin"], args=made.get("args", {}))
               for role, made in (plugins or {}).items() if bindings[role].factory is None}
    return config.model_copy(update=objects) if objects else config


def _with_known_identities(current: dict[str, Any], recorded: dict[str, Any], moved: set[str]) -> dict[str, Any]:
    """`current` keeping what the record knew of each role's server that this session did not learn
    (an offline replay must not erase it); a moved role takes its new server whole."""
    roles = {}
    for role, spec in (current.get("roles") or {}).items():
        known, now = role_identity(recorded, role), role_identity(current, role)
        merged = now if role in moved or not known else {**known, **(now or {})}
        roles[role] = {**spec, IDENTITY: merged} if merged else spec
    return {**current, "roles": roles} if "roles" in current else current


def _moved_message(out: Path, moves: list[tuple[str, dict, dict]]) -> str:
    changes: dict[tuple[str, str], list[str]] = {}
    for role, before, after in moves:
        changes.setdefault((describe_identity(before), describe_identity(after)), []).append(role)
    said = "; ".join(f"{', '.join(roles)} on {before}, now on {after}" for (before, after), roles in changes.items())
    return (f"{out} holds a run made against another server ({said}); use a new --out, or --same-model "
            "if the server moved but serves the same weights")
