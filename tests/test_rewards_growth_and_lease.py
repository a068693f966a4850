"""Run folders that grow, move and get relabelled, and one embedded server shared by commands that
overlap."""

import asyncio
import hashlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from esc_agents.config import build_config
from esc_agents.core.errors import JobFailure, UserError
from esc_agents.core.runlog import RunLog
from esc_agents.engine import Engine
from esc_agents.jobs import FAILURES, run_jobs
from esc_agents.models.local_server import LocalServer, cache_dir, lease_dir, live_leases, take_lease
from esc_agents.prompts import PROMPTS_DIR
from esc_agents.runs import RunFolder, RunRecord
from tests.conftest import PLUMBING_ENV, REWARD_FIXTURE, read_jsonl, rlff_esc
from tests.fakes import ScriptedChatModel
from tests.test_compare import fake_run
from training.futures.export import format_stats, stats
from training.futures.generate import generate_rewards, relabel


# The smallest reward dataset: 2 contexts of 2 candidates, futures of one turn, 2 critic samples.
TINY = ["--candidates", "2", "--max-turns", "1", "--critic-samples", "2", "--supporter-max-tokens", "16",
        "--user-max-tokens", "16", "--eval-split", "none", "--concurrency", "8"]


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and "Traceback" not in result.stderr and len(lines) == 1, result.stderr[-3000:]
    return lines[0]


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


@pytest.fixture(scope="module")
def own_server(tmp_path_factory) -> str:
    """A config file whose embedded server is this module's own, on a free port: these tests wait on
    no other test's requests, and never stop the shared server on 8765."""
    port = free_port()
    config = tmp_path_factory.mktemp("server") / "port.yaml"
    config.write_text(f"endpoints:\n  local: {{base_url: 'http://127.0.0.1:{port}/v1', embedded_kv_tokens: 8192, "
                      "timeout: 600}\n")  # a busy 2-core machine can take minutes per request
    server = LocalServer(build_config(config).endpoints["local"])
    server.start()
    yield str(config)
    server.stop()
    shutil.rmtree(lease_dir(port), ignore_errors=True)
    (cache_dir() / f"server-{port}.log").unlink(missing_ok=True)


def rewards(out: Path, cache: Path, contexts: int, *extra: str, config: str):
    return rlff_esc("rewards", *TINY, "--config", config, "--contexts", str(contexts), "--cache", str(cache),
                    "--out", str(out), *extra, timeout=1800)


@pytest.fixture(scope="module")
def reward_run(own_server, tmp_path_factory) -> tuple[Path, Path]:
    """A finished 2-context reward dataset and the completion cache it was made with."""
    root = tmp_path_factory.mktemp("rewards")
    result = rewards(root / "dr", root / "cache.sqlite", 2, config=own_server)
    if result.returncode == 2 and "rerun the same command to retry them" in result.stderr:
        result = rewards(root / "dr", root / "cache.sqlite", 2, config=own_server)  # as a user would
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(read_jsonl(root / "dr" / "records.jsonl")) == 4
    return root / "dr", root / "cache.sqlite"


@pytest.mark.server
def test_relabel_out_leaves_the_source_as_it_was_and_the_generating_rerun_is_still_accepted(reward_run, own_server,
                                                                                            tmp_path):
    source, cache = reward_run
    data = tmp_path / "dr"
    shutil.copytree(source, data)
    before = snapshot(data)
    result = rlff_esc("rewards", "relabel", str(data), "--formula", "terminal", "--delta", "0", "--out",
                      str(tmp_path / "copy"), timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]
    assert snapshot(data) == before  # byte for byte, stats.json included
    copy = read_jsonl(tmp_path / "copy" / "records.jsonl")
    assert [r["key"] for r in copy] == [json.loads(line)["key"] for line in before["records.jsonl"].splitlines()]
    assert {(r["formula"], r["delta"]) for r in copy} == {("terminal", 0.0)}
    run = json.loads((tmp_path / "copy" / "run.json").read_text())
    assert run["labels"]["formula"] == "terminal" and run["fingerprint"] == json.loads(before["run.json"])["fingerprint"]

    # Relabelled in place, the dataset keeps the fingerprint it was generated with: the generating
    # command's rerun is accepted, recomputes nothing and keeps the new labels.
    assert rlff_esc("rewards", "relabel", str(data), "--formula", "terminal", "--delta", "0",
                    timeout=120).returncode == 0
    relabelled = (data / "records.jsonl").read_bytes()
    rerun = rewards(data, cache, 2, config=own_server)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "0 futures run, 4 already done" in rerun.stdout
    assert (data / "records.jsonl").read_bytes() == relabelled
    assert rlff_esc("rewards", "relabel", str(data), "--formula", "terminal", "--out", str(tmp_path / "copy"),
                    timeout=120).returncode == 2  # --out never overwrites a run


@pytest.mark.server
def test_more_contexts_add_only_the_new_ones(reward_run, own_server, tmp_path):
    source, cache = reward_run
    data = tmp_path / "dr"
    shutil.copytree(source, data)
    # Relabelled first: the records the larger run adds are labelled as the rest.
    assert rlff_esc("rewards", "relabel", str(data), "--formula", "terminal", timeout=120).returncode == 0
    old_lines = (data / "records.jsonl").read_text().splitlines(keepends=True)
    grown = rewards(data, cache, 3, config=own_server)
    assert grown.returncode == 0, grown.stderr[-3000:]
    assert "2 futures run, 4 already done" in grown.stdout
    lines = (data / "records.jsonl").read_text().splitlines(keepends=True)
    assert lines[:4] == old_lines  # the old records untouched
    records = [json.loads(line) for line in lines]
    keys = [r["key"] for r in records]
    assert len(keys) == len(set(keys)) == 6
    old_contexts = {json.loads(line)["context_key"] for line in old_lines}
    new_contexts = {r["context_key"] for r in records[4:]}
    assert len(old_contexts) == 2 and len(new_contexts) == 1 and not old_contexts & new_contexts
    assert {r["formula"] for r in records} == {"terminal"}
    run = json.loads((data / "run.json").read_text())
    assert run["fingerprint"]["rewards"]["sampling"]["contexts"] == 3
    assert run["grown"][0]["from"] == {"rewards.sampling.contexts": 2}
    # The same settings again: nothing to do. Fewer contexts, or other settings: refused, nothing changed.
    again = rewards(data, cache, 3, config=own_server)
    assert again.returncode == 0 and "0 futures run, 6 already done" in again.stdout
    assert "leave out" in one_line_error(rewards(data, cache, 2, config=own_server))
    assert "other settings (seed)" in one_line_error(rewards(data, cache, 3, "--seed", "1", config=own_server))
    assert (data / "records.jsonl").read_text().splitlines(keepends=True) == lines


@pytest.mark.server
def test_run_folders_moved_elsewhere_still_evaluate_relabel_and_export(reward_run, own_server, tmp_path):
    source, _ = reward_run
    sim = tmp_path / "made" / "sim"
    result = rlff_esc("simulate", "--config", own_server, "--limit", "1", "--max-turns", "1", "--critic-samples", "2",
                      "--supporter-max-tokens", "16", "--cache", str(tmp_path / "cache.sqlite"), "--out", str(sim),
                      timeout=1800)
    assert result.returncode == 0, result.stderr[-3000:]
    shutil.copytree(source, tmp_path / "made" / "dr")
    for folder in (sim, tmp_path / "made" / "dr"):
        text = (folder / "run.json").read_text()
        assert str(PROMPTS_DIR) not in text and str(tmp_path) not in text  # nothing names a place here
    moved = tmp_path / "elsewhere"
    shutil.move(tmp_path / "made", moved)
    evaluated = rlff_esc("evaluate", str(moved / "sim"), timeout=120)
    assert evaluated.returncode == 0, evaluated.stderr[-3000:]
    assert "cases            1" in evaluated.stdout
    relabelled = rlff_esc("rewards", "relabel", str(moved / "dr"), "--formula", "terminal", timeout=120)
    assert relabelled.returncode == 0, relabelled.stderr[-3000:]
    exported = rlff_esc("rewards", "export", str(moved / "dr"), "--format", "jsonl", "--out", str(moved / "export"),
                        timeout=120)
    assert exported.returncode == 0, exported.stderr[-3000:]
    scored = [r for r in read_jsonl(moved / "dr" / "records.jsonl") if r["r_fut"] is not None]
    assert sum(len(read_jsonl(path)) for path in (moved / "export").glob("*.jsonl")) == len(scored) > 0
    run = json.loads((moved / "sim" / "run.json").read_text())
    critic = RunFolder.open(moved / "sim").prompt("critic")
    assert critic.sha256 == run["fingerprint"]["roles"]["critic"]["prompt_sha256"]


def scripted_rewards(out: Path, contexts: int, candidates: int = 2):
    """`rewards` in process on a scripted model: the same generation, resume and growth code, no server."""
    config = build_config(None, {"episode": {"max_turns": 1, "critic_samples": 2},
                                 "rewards": {"candidates": candidates, "sampling": {"contexts": contexts}}})
    model = ScriptedChatModel(script={"supporter": ["I hear you."], "user_simulator": ["Thanks, that helps."],
                                      "critic": ["feels better"]})
    engine = Engine(config, use_cache=False, chat_models={"local": model})
    return asyncio.run(generate_rewards(config, out, dataset="esconv:ppdpp_train", engine=engine, progress=False,
                                        eval_split=None))


def test_a_relabelled_dataset_grows_by_its_new_contexts_labelled_alike(tmp_path):
    out = tmp_path / "dr"
    assert scripted_rewards(out, 2).completed == 4
    fingerprint = json.loads((out / "run.json").read_text())["fingerprint"]
    relabel(out, "terminal", 0.0)
    relabelled = (out / "records.jsonl").read_text().splitlines(keepends=True)
    assert json.loads((out / "run.json").read_text())["fingerprint"] == fingerprint
    again = scripted_rewards(out, 2)
    assert (again.completed, again.skipped) == (0, 4)
    grown = scripted_rewards(out, 3)
    assert (grown.completed, grown.skipped) == (2, 4)
    lines = (out / "records.jsonl").read_text().splitlines(keepends=True)
    assert lines[:4] == relabelled
    records = [json.loads(line) for line in lines]
    assert len({r["key"] for r in records}) == 6 and len({r["context_key"] for r in records}) == 3
    assert {(r["formula"], r["delta"]) for r in records} == {("terminal", 0.0)}
    with pytest.raises(UserError, match="was made for 1 contexts these settings leave out"):
        scripted_rewards(out, 2)
    assert (out / "records.jsonl").read_text().splitlines(keepends=True) == lines


def test_a_dataset_relabelled_by_an_older_version_is_still_resumed_by_its_generating_command(tmp_path):
    """Older versions wrote a relabelling into the fingerprint (with the formula's resolved
    parameters); the generating command's rerun then looked like other settings and was refused."""
    out = tmp_path / "dr"
    assert scripted_rewards(out, 2).completed == 4
    generated = json.loads((out / "run.json").read_text())
    relabel(out, "terminal", 0.0)
    relabelled = (out / "records.jsonl").read_text()
    old = json.loads((out / "run.json").read_text())
    del old["labels"]
    old["fingerprint"]["rewards"].update(formula="terminal", formula_params={}, delta=0.0)
    (out / "run.json").write_text(json.dumps(old))
    with pytest.raises(UserError, match="other settings"):  # refused: run.json says what it said
        scripted_rewards(out, 2, candidates=3)
    assert json.loads((out / "run.json").read_text()) == old
    again = scripted_rewards(out, 2)
    assert (again.completed, again.skipped) == (0, 4)
    run = json.loads((out / "run.json").read_text())
    assert run["fingerprint"] == generated["fingerprint"]
    assert run["labels"] == {"formula": "terminal", "formula_params": {}, "delta": 0.0}
    assert (out / "records.jsonl").read_text() == relabelled
    grown = scripted_rewards(out, 3)  # new contexts are labelled as the relabelling says
    assert (grown.completed, grown.skipped) == (2, 4)
    assert {(r["formula"], r["delta"]) for r in read_jsonl(out / "records.jsonl")} == {("terminal", 0.0)}


def test_stats_count_success_and_K_over_futures_that_ended_and_labels_over_the_scored_ones(tmp_path):
    out = tmp_path / "dr"
    assert scripted_rewards(out, 2).completed == 4
    rows = read_jsonl(out / "records.jsonl")
    rows[0].update(r_fut=None, label=None, success=False)  # ran to T, no parsable verdict: ended, unsuccessful
    rows[1].update(success=True)
    rows[2].update(r_fut=None, label=None, success=False, K=0, turn_scores=[], critic_scores=[])  # cut short
    (out / "records.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    summary = stats(out)
    assert (summary["records"], summary["scored"], summary["cut_short"], summary["cut_short_scored"]) == (4, 2, 1, 0)
    assert summary["success_rate"] == pytest.approx(1 / 3)  # rows 0, 1 and 3; over all 4 it would be 1/4
    assert summary["mean_K"] == 1.0  # over all 4 it would be 0.75
    assert summary["label_balance"] == pytest.approx((rows[1]["label"] + rows[3]["label"]) / 2)
    rows[2].update(r_fut=0.5, label=1)  # scored by an older version although cut short
    (out / "records.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    assert stats(out)["cut_short_scored"] == 1
    assert "warning: 1 records cut short by a missing reply carry an R_fut" in format_stats(stats(out))


def test_rewards_into_a_folder_another_command_made_is_one_line(tmp_path):
    run = tmp_path / "sim"
    run.mkdir()
    (run / "run.json").write_text(json.dumps({"fingerprint": {"dataset": "esconv:ppdpp_test"},
                                              "config": build_config(None, {}).model_dump(mode="json")}))
    with pytest.raises(UserError, match="holds a run with other settings"):
        scripted_rewards(run, 2)


def test_a_runs_prompt_resolves_from_its_text_or_a_builtin_and_what_is_missing_is_named(tmp_path):
    builtin = (PROMPTS_DIR / "critic" / "default.yaml").read_text()
    digest = hashlib.sha256(builtin.encode()).hexdigest()
    def run_prompt(folder, run, role):
        return RunFolder(folder, RunRecord.model_validate(run)).prompt(role)

    run = {"fingerprint": {"roles": {"critic": {"prompt": "default", "prompt_sha256": digest}}}}
    assert run_prompt(tmp_path, run, "critic").text == builtin  # the built-in of that name and content
    edited = builtin + "\n# edited\n"
    run["fingerprint"]["roles"]["critic"] = {"prompt": "mine", "prompt_sha256": hashlib.sha256(edited.encode()).hexdigest()}
    with pytest.raises(UserError, match="does not keep the text of its critic prompt 'mine'.*put that prompt file back"):
        run_prompt(tmp_path, {**run, "prompts": {"critic": "/gone/mine.yaml"}}, "critic")
    assert run_prompt(tmp_path, {**run, "prompt_texts": {"critic": edited}}, "critic").text == edited


def test_report_and_view_refuse_a_folder_that_holds_a_key_twice(tmp_path):
    run = fake_run(tmp_path / "sim", 2, ["c1", "c2"])
    lines = (run / "trajectories.jsonl").read_text().splitlines(keepends=True)
    (run / "trajectories.jsonl").write_text("".join(lines + lines[:1]))
    data = tmp_path / "dr"
    shutil.copytree(REWARD_FIXTURE, data)
    records = (data / "records.jsonl").read_text().splitlines(keepends=True)
    (data / "records.jsonl").write_text("".join(records + records[:1]))
    key = json.loads(records[0])["key"]
    for folder, message in ((run, "holds 1 case_ids more than once: c1"), (data, f"holds 1 keys more than once: {key}")):
        for command in (["report", str(folder), "--out", str(tmp_path / "report.html")],
                        ["view", str(folder), "--out", str(tmp_path / "view.html")]):
            assert message in one_line_error(rlff_esc(*command, timeout=120))
    assert not (tmp_path / "report.html").exists() and not (tmp_path / "view.html").exists()


def test_a_failed_job_is_fsynced_to_failures_jsonl(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(os.readlink(f"/proc/self/fd/{fd}")) or real_fsync(fd))

    async def fails():
        raise JobFailure("the endpoint gave up")

    async def works():
        return {"case_id": "ok"}

    meter = SimpleNamespace(total_calls=0, roles={})
    with RunLog(tmp_path / "trajectories.jsonl", key="case_id") as log:
        result = asyncio.run(run_jobs({"bad": fails, "ok": works}, log, total=2, concurrency=2, meter=meter,
                                      desc="x", progress=False))
    assert result.failed == {"bad": "the endpoint gave up"} and result.completed == 1
    assert read_jsonl(tmp_path / FAILURES) == [{"case_id": "bad", "error": "the endpoint gave up"}]
    assert str(tmp_path / FAILURES) in synced


def test_a_bad_eval_split_names_the_option(tmp_path):
    result = rlff_esc("rewards", "--eval-split", "esconv:nosuch", "--limit", "1", "--contexts", "1", "--offline",
                      "--cache", str(tmp_path / "empty.sqlite"), "--out", str(tmp_path / "r"), timeout=120)
    assert "--eval-split esconv:nosuch: unknown ESConv split 'nosuch'" in one_line_error(result)
    assert not (tmp_path / "r").exists()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def healthy(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def start(args: list[str], env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "esc_agents.cli", *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_a_lease_lives_as_long_as_its_process(tmp_path):
    mine = take_lease(tmp_path)
    child = subprocess.Popen([sys.executable, "-c", "import sys; from pathlib import Path; "
                              "from esc_agents.models.local_server import take_lease; take_lease(Path(sys.argv[1]))",
                              str(tmp_path)])
    child.wait()  # it exited without giving its lease back (as a killed command would)
    assert len(list(tmp_path.glob("*.lease"))) == 2
    assert live_leases(tmp_path) == [mine]
    assert list(tmp_path.glob("*.lease")) == [mine]  # the dead one is cleared


@pytest.mark.server
def test_a_command_keeps_the_embedded_server_another_started_until_it_finishes(tmp_path):
    """The first command starts the server on its own port (never the shared 8765), the second
    reuses it, the first exits while the second still runs, and the second still finishes; the
    server stops once neither uses it."""
    port = free_port()
    config = tmp_path / "port.yaml"
    config.write_text(f"endpoints:\n  local: {{base_url: 'http://127.0.0.1:{port}/v1', embedded_kv_tokens: 8192}}\n")
    env = {**os.environ, **PLUMBING_ENV, "RLFF_ESC_SERVER_IDLE": "2"}
    common = ["simulate", "--config", str(config), "--no-cache", "--critic-samples", "2", "--supporter-max-tokens", "24",
              "--max-turns", "1"]
    first = start([*common, "--limit", "1", "--out", str(tmp_path / "first")], env)
    second = None
    try:
        deadline = time.monotonic() + 400
        while not healthy(port):
            assert first.poll() is None, first.communicate()[1][-3000:]
            assert time.monotonic() < deadline, "the first command's server never came up"
            time.sleep(0.5)
        # Twice the first's episodes, one at a time, started later: still running when the first exits.
        second = start([*common, "--limit", "2", "--concurrency", "1", "--out", str(tmp_path / "second")], env)
        _, first_err = first.communicate(timeout=900)
        assert first.returncode == 0, first_err[-3000:]
        assert second.poll() is None, "the second command should still be running when the first exits"
        _, second_err = second.communicate(timeout=900)
        assert second.returncode == 0, second_err[-3000:]
        assert len(read_jsonl(tmp_path / "second" / "trajectories.jsonl")) == 2
        assert not (tmp_path / "second" / "failures.jsonl").exists()
        deadline = time.monotonic() + 60
        while healthy(port):  # nobody holds a lease now: the server goes after its idle wait
            assert time.monotonic() < deadline, "the server outlived its last client"
            time.sleep(0.5)
    finally:
        for child in (first, second):
            if child is not None and child.poll() is None:
                child.kill()
                child.wait()
        if not healthy(port):  # this port's log and lease folder are of no use to anyone else
            shutil.rmtree(lease_dir(port), ignore_errors=True)
            (cache_dir() / f"server-{port}.log").unlink(missing_ok=True)
