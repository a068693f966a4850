"""Load and validate prompt files.

A prompt is a YAML file under `prompts/<role>/<name>.yaml`, chosen by name, or any file a user
passes by path. Templates use `{variable}` fields (write `{{` for a literal brace). Each role
declares which variables exist and which are required, so a typo is an error at load time,
before any LLM call.
"""

from __future__ import annotations

import hashlib
import re
import string
from functools import cached_property
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from esc_agents.config import describe_validation_error
from esc_agents.core.errors import UserError
from esc_agents.core.yamlfile import load_yaml
from esc_agents.verdicts import Option, Reading, VerdictReader, option_lines, pattern_mark

PROMPTS_DIR = Path(__file__).resolve().parents[1] / "prompts"
ROLES = ("supporter", "user_simulator", "critic", "judge")

# role -> template field -> (allowed variables, required variables). A role given the case may use
# all of it: the user simulator and the critic every field, the judge (handed only the situation)
# that; the supporter none, as it learns the seeker's problem from the seeker.
TEMPLATE_VARIABLES: dict[str, dict[str, tuple[set[str], set[str]]]] = {
    "supporter": {"system": ({"strategies"}, set())},
    "user_simulator": {"system": ({"emotion", "problem", "situation"}, {"situation"})},
    "critic": {
        "system": ({"emotion", "problem", "situation"}, set()),
        "user": ({"conversation", "emotion", "problem", "situation"}, {"conversation"}),
    },
    "judge": {
        "system": ({"situation", "criteria"}, set()),
        "user": ({"situation", "conversation_a", "conversation_b", "criteria"}, {"conversation_a", "conversation_b"}),
    },
}


# The fields each role reads; any other a file sets would be silently ignored.
USED_FIELDS = {
    "supporter": {"system", "reply_format", "think_tag", "response_tag"},
    "user_simulator": {"system", "axes"},
    "critic": {"system", "user"},
    "judge": {"system", "user"},
}


class Verdict(BaseModel):
    """One answer a critic may give. `option`: the mark it has in the prompt's option list (`A`, or
    `4` on a numbered scale); by default the option line of the `user` template that reads as this
    verdict, or the mark a bare-letter pattern such as `^\\W*a\\b` stands for. `patterns`: phrases
    (regular expressions) that name it; `verdicts.VerdictReader` says how they are read."""

    model_config = ConfigDict(extra="forbid")
    label: str
    score: float
    patterns: list[str] = Field(min_length=1)
    option: str | None = Field(None, pattern=r"^[A-Za-z0-9]$")

    @field_validator("patterns")
    @classmethod
    def _compile(cls, patterns: list[str]) -> list[str]:
        for pattern in patterns:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"invalid regular expression {pattern!r}: {exc}") from None
        return patterns


class PromptFile(BaseModel):
    model_config = ConfigDict(extra="forbid")
    description: str = ""
    system: str
    user: str | None = None
    reply_format: Literal["plain", "think", "strategy"] = "plain"
    think_tag: str = "think"
    response_tag: str = "response"
    axes: dict[str, str] = Field(default_factory=dict)
    verdicts: list[Verdict] = Field(default_factory=list)
    criteria: list[str] = Field(default_factory=list)  # judge prompts: what A and B are compared on


class Prompt:
    """A validated prompt file plus where it came from and a hash for provenance."""

    def __init__(self, role: str, name: str, path: Path, spec: PromptFile, text: str):
        self.role = role
        self.name = name
        self.path = path
        self.spec = spec
        self.text = text
        self.sha256 = hashlib.sha256(text.encode()).hexdigest()

    def render(self, field: str, **variables: str) -> str:
        template = getattr(self.spec, field)
        return template.format_map(variables)

    @property
    def score_range(self) -> tuple[float, float]:
        """A critic's lowest and highest verdict score: the scale R_fut formulas and δ live on."""
        scores = [verdict.score for verdict in self.spec.verdicts]
        return min(scores), max(scores)

    def check_success_threshold(self, threshold: float) -> None:
        check_success_threshold(f"critic prompt {self.name!r}", self.score_range, threshold)

    @cached_property
    def reader(self) -> VerdictReader:
        """The critic's verdicts as options: each with its mark and option sentence from the `user`
        template, and its phrase patterns (bare-mark patterns become the mark)."""
        verdicts = self.spec.verdicts
        marks = {verdict.label: verdict.option.upper() if verdict.option else None for verdict in verdicts}
        phrases = {verdict.label: tuple(p for p in verdict.patterns if pattern_mark(p) is None) for verdict in verdicts}
        for verdict in verdicts:
            implied = {pattern_mark(p) for p in verdict.patterns} - {None}
            if marks[verdict.label] is None and len(implied) == 1:
                marks[verdict.label] = implied.pop()
        lines = option_lines(self.spec.user or "")
        by_phrase = VerdictReader([Option(label, phrases=phrases[label]) for label in phrases])
        sentences: dict[str, str] = {}
        for mark, sentence in lines.items():
            label = next((label for label, given in marks.items() if given == mark), None)
            if label is None and (label := by_phrase.read(sentence).label) is not None and marks[label] is None:
                marks[label] = mark
            if label is not None and marks[label] == mark:
                sentences[label] = sentence
        return VerdictReader([Option(label, marks[label], sentences.get(label), phrases[label]) for label in phrases])

    def read(self, answer: str) -> Reading:
        """How the critic's answer reads, with the reason (`prompts check` prints it)."""
        return self.reader.read(answer)

    def classify(self, answer: str) -> Verdict | None:
        """The one verdict the critic's answer asserts, or None (no verdict, a denied one, or two)."""
        label = self.reader.read(answer).label
        return next((verdict for verdict in self.spec.verdicts if verdict.label == label), None)


def check_success_threshold(critic: str, score_range: tuple[float, float], threshold: float) -> None:
    """Success is a mean verdict score above eta: a critic whose scores all lie on one side of eta
    would make every episode a success (or none) without a word."""
    low, high = score_range
    if not low <= threshold < high:
        raise UserError(f"{critic} scores verdicts in [{low:g}, {high:g}], but the success threshold "
                        f"eta = {threshold:g} must lie in [{low:g}, {high:g}) so verdicts fall on both sides of it; "
                        "set --success-threshold (episode.success_threshold)")


def prompt_kind(role: str) -> str:
    """The prompt folder a role draws from (the future supporter uses supporter prompts)."""
    return "supporter" if role == "future_supporter" else role


def available(role: str) -> list[str]:
    return sorted(path.stem for path in (PROMPTS_DIR / role).glob("*.yaml"))


def _fields(template: str) -> set[str]:
    try:
        return {name for _, name, _, _ in string.Formatter().parse(template) if name is not None}
    except ValueError as exc:
        raise ValueError(f"bad template syntax ({exc}); write {{{{ and }}}} for literal braces") from None


def load_prompt(role: str, name_or_path: str) -> Prompt:
    if role not in ROLES:
        raise UserError(f"unknown role {role!r}")
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.exists():
        path, name = candidate, candidate.stem
        if not path.exists():
            raise UserError(f"{role} prompt file not found: {path}")
    else:
        path, name = PROMPTS_DIR / role / f"{name_or_path}.yaml", name_or_path
        if not path.exists():
            raise UserError(
                f"unknown {role} prompt {name_or_path!r} (available: {', '.join(available(role))}; or give a file path)"
            )
    text, data = load_yaml(path)
    return _checked(role, name, path, text, data)


def prompt_from_text(role: str, name: str, text: str, source: Path) -> Prompt:
    """A prompt from its recorded text (run.json keeps each run's), validated as a file would be;
    `source` names where the text came from in errors."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(f"{source}: the recorded {role} prompt {name!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
    return _checked(role, name, source, text, data)


def _checked(role: str, name: str, path: Path, text: str, data: object) -> Prompt:
    try:
        spec = PromptFile.model_validate(data or {})
    except ValidationError as exc:
        raise UserError(describe_validation_error(exc, str(path))) from None
    _validate(role, path, spec)
    return Prompt(role, name, path, spec, text)


def _validate(role: str, path: Path, spec: PromptFile) -> None:
    """Every problem of a hand-written file at once, so an author fixes them in one pass."""
    problems = []
    for field, (allowed, required) in TEMPLATE_VARIABLES[role].items():
        template = getattr(spec, field)
        if template is None:
            problems.append(f"a {role} prompt needs a `{field}` template")
            continue
        try:
            used = _fields(template)
        except ValueError as exc:
            problems.append(f"{field}: {exc}")
            continue
        for name in sorted(used - allowed):
            hint = "; write {{ and }} for literal braces" if not name.isidentifier() else ""
            problems.append(f"{field}: unknown template variable {{{name}}} "
                            f"(allowed: {', '.join(sorted(allowed)) or 'none'}{hint})")
        problems += [f"{field}: template variable {{{name}}} is required" for name in sorted(required - used)]
    if ignored := sorted(spec.model_fields_set - USED_FIELDS[role] - {"description", "verdicts", "criteria"}):
        problems.append(f"{', '.join(ignored)}: not used by a {role} prompt; remove {'them' if len(ignored) > 1 else 'it'}")
    if role == "critic" and len(spec.verdicts) < 2:
        problems.append("a critic prompt needs at least two `verdicts`")
    if role != "critic" and spec.verdicts:
        problems.append("`verdicts` belong in critic prompts only")
    labels = [verdict.label for verdict in spec.verdicts]
    problems += [f"verdict label {label!r} appears more than once" for label in sorted(set(labels))
                 if labels.count(label) > 1]
    if (role == "judge") != bool(spec.criteria):
        problems.append("judge prompts, and only they, list `criteria`")
    if problems:
        raise UserError(f"{path}: " + "; ".join(problems))
