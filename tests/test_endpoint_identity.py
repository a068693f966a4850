"""A run is tied to the servers that made it, not only to the model names it asked for: run.json
records what served each LLM role, a resume against another server is refused (or, with
--same-model, accepted and recorded), and `compare` / `bias` refuse runs whose fixed roles ran on
different servers. Against real loopback HTTP servers, through the command line."""

import asyncio
import json
import shutil
from pathlib import Path

import httpx
import pytest

from esc_agents.cli.main import build_parser
from esc_agents.config import build_config
from esc_agents.core.errors import UserError
from esc_agents.engine import Engine
from esc_agents.evaluation.bias import Condition, bias_report
from esc_agents.models.cache import model_identity
from esc_agents.models.transport import served_identity
from esc_agents.runs import RunRecord, check_run, record_run
from tests.conftest import SHORT_REPLIES, read_jsonl, rlff_esc
from tests.seeded_server import SeededServer
from tests.test_viewer import episode, score, simulate_folder

WEIGHTS_A, WEIGHTS_B = "weights-a.gguf", "weights-b.gguf"
ROLES = ("supporter", "user_simulator", "critic")


def answer(messages, seed) -> str:
    return "C) The seeker feels better."  # a reply for any role, and a verdict the critic parses


@pytest.fixture(scope="module")
def servers():
    """Two one-model servers (llama.cpp-like: any requested name is answered by the one they list)."""
    with SeededServer(answer, model=WEIGHTS_A) as first, SeededServer(answer, model=WEIGHTS_A) as second:
        yield first, second


def config_file(folder: Path, servers) -> str:
    """Profiles `first` and `second` ask for the same model name on the two servers."""
    path = folder / "servers.yaml"
    path.write_text("endpoints:\n" + "".join(
        f"  {name}: {{base_url: '{server.base_url}', model: m, supports_n: false, max_attempts: 1}}\n"
        for name, server in zip(("first", "second"), servers)))
    return str(path)


def simulate(folder: Path, out: Path, endpoint: str, *args: str):
    return rlff_esc("simulate", "--config", str(folder / "servers.yaml"), "--endpoint", endpoint, "--max-turns", "1",
                    "--critic-samples", "2", "--concurrency", "1", "--no-cache", "--out", str(out), *args,
                    timeout=300)


@pytest.fixture(scope="module")
def recorded(servers, tmp_path_factory) -> Path:
    """One episode, every role on the first server."""
    root = tmp_path_factory.mktemp("identity")
    config_file(root, servers)
    done = simulate(root, root / "run", "first", "--limit", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    return root / "run"


def copy_of(recorded: Path, tmp_path: Path, servers) -> Path:
    config_file(tmp_path, servers)
    return Path(shutil.copytree(recorded, tmp_path / "run"))


def identities(run: Path) -> dict:
    roles = json.loads((run / "run.json").read_text())["fingerprint"]["roles"]
    return {role: spec.get("identity") for role, spec in roles.items()}


def files(run: Path) -> dict[str, bytes]:
    return {path.name: path.read_bytes() for path in sorted(run.iterdir())}


def one_error_line(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and "Traceback" not in result.stderr, result.stderr[-2000:]
    return lines[0]


def test_the_run_records_the_base_url_and_served_model_of_each_role(servers, recorded):
    first, _ = servers
    assert identities(recorded) == {role: {"base_url": first.base_url, "model": WEIGHTS_A} for role in ROLES}


def test_a_resume_against_other_weights_or_another_base_url_is_refused_and_changes_nothing(servers, recorded,
                                                                                           tmp_path):
    first, second = servers
    run = copy_of(recorded, tmp_path, servers)
    before, asked = files(run), len(first.seeds)
    first.model = WEIGHTS_B  # the same URL and model name, other weights behind them
    try:
        refused = simulate(tmp_path, run, "first", "--limit", "2")
    finally:
        first.model = WEIGHTS_A
    line = one_error_line(refused)
    assert f"{first.base_url} serving {WEIGHTS_A}, now on {first.base_url} serving {WEIGHTS_B}" in line
    assert "supporter, user_simulator, critic" in line and "--same-model" in line
    assert len(first.seeds) == asked and files(run) == before  # no model call, not a byte changed

    moved = simulate(tmp_path, run, "second", "--limit", "2")  # another server under the same name
    line = one_error_line(moved)
    assert f"on {first.base_url} serving {WEIGHTS_A}, now on {second.base_url} serving {WEIGHTS_A}" in line
    assert second.seeds == [] and files(run) == before


def test_same_model_accepts_a_moved_server_and_records_the_move(servers, recorded, tmp_path):
    first, second = servers
    run = copy_of(recorded, tmp_path, servers)
    asked = len(second.seeds)
    accepted = simulate(tmp_path, run, "second", "--limit", "2", "--same-model")
    assert accepted.returncode == 0, accepted.stderr[-2000:]
    assert len(read_jsonl(run / "trajectories.jsonl")) == 2 and len(second.seeds) > asked
    record = json.loads((run / "run.json").read_text())
    now = {"base_url": second.base_url, "model": WEIGHTS_A}
    assert identities(run) == {role: now for role in ROLES}  # the record follows the server
    assert [(c["role"], c["from"], c["to"]) for c in record["identity_changes"]] == [
        (role, {"base_url": first.base_url, "model": WEIGHTS_A}, now) for role in ROLES]


def test_a_run_folder_without_identities_resumes_and_learns_them(servers, recorded, tmp_path):
    first, _ = servers
    run = copy_of(recorded, tmp_path, servers)
    record = json.loads((run / "run.json").read_text())
    for spec in record["fingerprint"]["roles"].values():
        del spec["identity"]
    (run / "run.json").write_text(json.dumps(record))  # as older versions wrote it
    resumed = simulate(tmp_path, run, "first", "--limit", "2")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert len(read_jsonl(run / "trajectories.jsonl")) == 2
    assert identities(run) == {role: {"base_url": first.base_url, "model": WEIGHTS_A} for role in ROLES}
    assert "identity_changes" not in json.loads((run / "run.json").read_text())


def test_compare_refuses_runs_whose_critics_ran_on_other_servers_naming_the_role(servers, recorded, tmp_path):
    first, second = servers
    config_file(tmp_path, servers)
    other = tmp_path / "other_critic"
    done = simulate(tmp_path, other, "first", "--limit", "1", "--critic-endpoint", "second")
    assert done.returncode == 0, done.stderr[-2000:]
    refused = rlff_esc("compare", "--runs", str(recorded), str(other), "--out", str(tmp_path / "cmp"), timeout=300)
    line = one_error_line(refused)
    assert (f"the critic of other_critic ran on {second.base_url} serving {WEIGHTS_A}, that of run on "
            f"{first.base_url} serving {WEIGHTS_A}") in line
    assert "user_simulator" not in line and not (tmp_path / "cmp" / "compare.json").exists()
    allowed = rlff_esc("compare", "--runs", str(recorded), str(other), "--allow-mismatch",
                       "--out", str(tmp_path / "cmp"), timeout=300)
    assert allowed.returncode == 0 and "warning: the critic of other_critic ran on" in allowed.stdout


@pytest.mark.server
def test_the_embedded_server_is_recorded_by_its_weights_not_its_port(local_server, tmp_path):
    out = tmp_path / "run"
    done = rlff_esc("simulate", "--limit", "1", "--max-turns", "1", "--critic-samples", "1", *SHORT_REPLIES,
                    "--no-cache", "--out", str(out), timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    weights = {"weights": model_identity(build_config().endpoints["local"])}
    assert identities(out) == {role: weights for role in ROLES}


# Without a command line: the same rules where they are decided.

def test_the_served_model_is_the_one_asked_for_else_the_only_one_with_its_weights_where_named():
    url = "http://gpu-node:8000/v1/"
    listed = {"data": [{"id": "qwen", "root": "/ckpt/step-900"}, {"id": "other", "root": "other"}]}
    assert served_identity(url, httpx.Response(200, json=listed), "qwen") == {
        "base_url": "http://gpu-node:8000/v1", "model": "qwen", "root": "/ckpt/step-900"}
    assert served_identity(url, httpx.Response(200, json=listed), "missing") == {
        "base_url": "http://gpu-node:8000/v1"}  # several listed, none asked for: no guess
    assert served_identity(url, httpx.Response(200, json={"data": [{"id": "any.gguf"}]}), "m")["model"] == "any.gguf"
    assert served_identity(url, httpx.Response(404, text="no such route"), "m") == {"base_url": "http://gpu-node:8000/v1"}


def test_python_roles_record_no_server_and_offline_knows_only_embedded_weights(servers, tmp_path):
    first, _ = servers
    endpoints = {"first": {"base_url": first.base_url, "model": "m"}}

    def learnt(roles: dict, **kwargs) -> dict:
        async def enter() -> dict:
            config = build_config(None, {"endpoints": endpoints, **roles})
            async with Engine(config, cache_path=tmp_path / "c.sqlite", **kwargs) as engine:
                return engine.endpoint_identities

        return asyncio.run(enter())

    served = {"base_url": first.base_url, "model": WEIGHTS_A}
    plugin_critic = {"supporter": {"endpoint": "first"}, "user_simulator": {"endpoint": "first"},
                     "critic": {"factory": "known-answer-critic"}}
    assert learnt(plugin_critic) == {"supporter": served, "user_simulator": served}
    # Offline nothing is asked: an embedded server's weights are known all the same, a remote server is not.
    weights = {"weights": model_identity(build_config().endpoints["local"])}
    assert learnt({"user_simulator": {"endpoint": "first"}}, offline=True) == {"supporter": weights, "critic": weights}


def test_what_this_session_does_not_know_is_kept_and_a_moved_server_is_refused_before_any_write(tmp_path):
    config = build_config()
    prompts = Engine(config).prompts
    out = tmp_path / "run"
    there = {"base_url": "http://a:8000/v1", "model": "m"}

    def planned(identities, cases=("c1",)):
        return RunRecord.new(config, prompts, "d", cases=list(cases), identities=identities)

    def record(identities, cases=("c1",)):
        return record_run(out, planned(identities, cases))

    record({"critic": there})
    check_run(out, planned(None))  # the check before any work
    record(None)  # an offline replay: nothing learnt, nothing forgotten
    assert identities(out)["critic"] == there
    record({"critic": {"base_url": "http://a:8000/v1"}})  # a server that stopped listing its models
    assert identities(out)["critic"] == there
    written = files(out)
    with pytest.raises(UserError, match=r"critic on http://a:8000/v1 serving m, now on http://b:8000/v1 serving m"):
        record({"critic": {**there, "base_url": "http://b:8000/v1"}}, cases=["c1", "c2"])
    assert files(out) == written


def bias_runs(root: Path, critic_urls: dict[Condition, str]) -> dict[Condition, Path]:
    runs = {}
    for condition, url in critic_urls.items():
        folder = simulate_folder(root / condition.label, [episode("c1", [score([1.0])], True)])
        record = json.loads((folder / "run.json").read_text())
        record["fingerprint"]["roles"]["critic"] = {"prompt": "default", "identity": {"base_url": url, "model": "m"}}
        (folder / "run.json").write_text(json.dumps(record))
        runs[condition] = folder
    return runs


def test_bias_refuses_a_critic_server_no_condition_varies_and_accepts_one_the_study_varies(tmp_path):
    cooperative, resistant = Condition("cooperative", None, None, 0), Condition("resistant", None, None, 0)
    runs = bias_runs(tmp_path / "personas", {cooperative: "http://a/v1", resistant: "http://b/v1"})
    with pytest.raises(UserError, match=r"the critic of resistant_seed0 ran on http://b/v1 serving m, that of "
                                        r"cooperative_seed0 on http://a/v1 serving m, and the study does not vary it"):
        bias_report(runs, tmp_path / "personas")
    varied = bias_runs(tmp_path / "critics", {Condition("cooperative", None, "a", 0): "http://a/v1",
                                              Condition("cooperative", None, "b", 0): "http://b/v1"})
    assert bias_report(varied, tmp_path / "critics")["cases"] == 1


@pytest.mark.parametrize("command", [["simulate"], ["rewards"], ["compare"], ["bias"], ["judge"]])
def test_every_command_that_writes_run_folders_takes_same_model(command):
    assert build_parser().parse_args([*command, "--same-model", "--out", "x"]).same_model
