"""Against the real embedded server: simulate + evaluate, replay, kill and resume, injected faults."""

import asyncio
import json
import re

import pytest

from esc_agents.config import EndpointProfile
from esc_agents.datasets import load_cases
from esc_agents.models.endpoints import Endpoint
from esc_agents.models.transport import Transport
from tests.conftest import SHORT_REPLIES, kill_after_first_result, read_jsonl, rlff_esc
from tests.fault_proxy import FaultProxy

pytestmark = pytest.mark.server

SMALL = ["--dataset", "esconv:ppdpp_test", "--max-turns", "2", "--critic-samples", "2", "--concurrency", "4",
         *SHORT_REPLIES]



def test_simulate_evaluate_and_replay(local_server, tmp_path):
    cache = str(tmp_path / "cache.sqlite")
    out = tmp_path / "run"
    done = rlff_esc("simulate", *SMALL, "--limit", "2", "--cache", cache, "--out", str(out))
    assert done.returncode == 0, done.stderr
    trajectories = read_jsonl(out / "trajectories.jsonl")
    assert sorted(t["case_id"] for t in trajectories) == ["ppdpp_test-0", "ppdpp_test-1"]
    for t in trajectories:
        assert 1 <= t["turns"] <= 2 and t["status"] in ("success", "max_turns")
        assert t["messages"][0] == {"speaker": "seeker", "content": load_cases("esconv:ppdpp_test")[
            int(t["case_id"].split("-")[1])].situation, "raw": None, "strategy": None}
        assert all(m["content"] for m in t["messages"])
        assert len(t["scores"]) == t["turns"]
        assert all(len(s["samples"]) + len(s["invalid"]) == 2 for s in t["scores"])
    run = json.loads((out / "run.json").read_text())
    assert run["fingerprint"]["episode"]["max_turns"] == 2 and "OPENAI_API_KEY" not in json.dumps(run["versions"])

    evaluated = rlff_esc("evaluate", str(out))
    assert evaluated.returncode == 0 and "SR" in evaluated.stdout
    summary = json.loads((out / "summary.json").read_text())
    for key in ("success_rate", "average_turns", "mean_final_score", "success_by_turn", "by_emotion",
                "by_problem", "success_rate_ci95"):
        assert key in summary
    assert (out / "success_by_turn.png").stat().st_size > 1000

    again = rlff_esc("simulate", *SMALL, "--limit", "2", "--cache", cache, "--out", str(out))
    assert again.returncode == 0 and "0 episodes run, 2 already done" in again.stdout

    replay_out = tmp_path / "replay"
    replay = rlff_esc("simulate", *SMALL, "--limit", "2", "--cache", cache, "--out", str(replay_out))
    assert replay.returncode == 0
    assert sorted(read_jsonl(replay_out / "trajectories.jsonl"), key=lambda t: t["case_id"]) == sorted(
        trajectories, key=lambda t: t["case_id"])
    sent = re.findall(r"requests\s+(\d+)", replay.stdout)  # per role: requests sent to the server
    assert sent and set(sent) == {"0"}, replay.stdout


def test_killed_run_resumes_without_duplicates_or_loss(local_server, tmp_path):
    out = tmp_path / "run"
    # Two episodes at a time: the kill lands after the first result, with the third still to run.
    args = ["simulate", *SMALL, "--concurrency", "2", "--limit", "3", "--cache", str(tmp_path / "cache.sqlite"),
            "--out", str(out)]
    trajectories = out / "trajectories.jsonl"
    before = kill_after_first_result(args, trajectories)
    assert 1 <= len(before) < 3, "the kill should land mid-run"

    resumed = rlff_esc(*args)
    assert resumed.returncode == 0, resumed.stderr
    after = read_jsonl(trajectories)
    ids = [t["case_id"] for t in after]
    assert sorted(ids) == [f"ppdpp_test-{i}" for i in range(3)] and len(set(ids)) == 3
    assert after[: len(before)] == before  # nothing already written was touched


def flaky_config(tmp_path, base_url, model, attempts=4, timeout=15):
    path = tmp_path / "flaky.yaml"
    path.write_text(
        "endpoints:\n"
        f"  flaky: {{base_url: '{base_url}', model: '{model}', timeout: {timeout}, max_attempts: {attempts}, "
        "backoff_max: 0.2, supports_n: false}\n"
    )
    return str(path)


def test_retries_ride_out_429_500_and_stalls(local_server, tmp_path):
    faults = {0: "429", 1: "500", 2: "stall", 4: "429"}
    # A 5 s timeout: the stall is 8 s of silence; a healthy answer, however slow, keeps the line alive.
    with FaultProxy("http://127.0.0.1:8765", lambda i, body: faults.get(i, "ok"), stall_seconds=8,
                    heartbeat_seconds=1) as proxy:
        out = tmp_path / "run"
        done = rlff_esc("simulate", *SMALL, "--limit", "1", "--max-turns", "1", "--endpoint", "flaky",
                        "--config", flaky_config(tmp_path, proxy.base_url, local_server, timeout=5),
                        "--cache", str(tmp_path / "c.sqlite"), "--out", str(out))
    assert done.returncode == 0, done.stderr
    assert proxy.seen[:5] == ["429", "500", "stall", "ok", "429"]
    assert len(read_jsonl(out / "trajectories.jsonl")) == 1


def test_an_endpoint_that_keeps_failing_fails_its_episode_only(local_server, tmp_path):
    doomed = load_cases("esconv:ppdpp_test")[1].situation[:40].encode()
    with FaultProxy("http://127.0.0.1:8765", lambda i, body: "500" if doomed in body else "ok",
                    heartbeat_seconds=1) as proxy:
        out = tmp_path / "run"
        run = rlff_esc("simulate", *SMALL, "--limit", "3", "--max-turns", "1", "--endpoint", "flaky",
                       "--config", flaky_config(tmp_path, proxy.base_url, local_server, attempts=2),
                       "--cache", str(tmp_path / "c.sqlite"), "--out", str(out))
    assert run.returncode == 2
    assert "1 episodes failed" in run.stderr and "ppdpp_test-1" in run.stderr
    assert "for role supporter after 2 attempts: HTTP 500" in run.stderr
    assert sorted(t["case_id"] for t in read_jsonl(out / "trajectories.jsonl")) == ["ppdpp_test-0", "ppdpp_test-2"]
    assert [f["case_id"] for f in read_jsonl(out / "failures.jsonl")] == ["ppdpp_test-1"]
    assert json.loads((out / "summary.json").read_text())["failed_cases"] == ["ppdpp_test-1"]


CHAT = [{"role": "user", "content": "Say hello."}]


def test_transport_rides_out_a_500_with_one_retry(local_server):
    with FaultProxy("http://127.0.0.1:8765", lambda i, body: "500" if i == 0 else "ok") as proxy:
        transport = Transport("flaky", EndpointProfile(base_url=proxy.base_url, model=local_server, max_attempts=2,
                                                       backoff_max=0.1))

        async def go():
            try:
                return await transport.send("critic", CHAT, temperature=1.0, max_tokens=8)
            finally:
                await transport.close()

        (completion,) = asyncio.run(go())
    assert proxy.seen == ["500", "ok"]
    assert isinstance(completion.text, str) and completion.completion_tokens > 0 and not completion.cached


def test_the_meter_counts_the_requests_the_server_received(local_server):
    """With `n` detection on (the server may or may not honour it), and no cache."""
    with FaultProxy("http://127.0.0.1:8765", lambda i, body: "ok") as proxy:
        target = Endpoint("proxied", EndpointProfile(base_url=proxy.base_url, model=local_server, supports_n=None))

        async def go():
            try:
                first = await target.complete("critic", CHAT, temperature=1.0, max_tokens=8, indices=[0, 1, 2])
                second = await target.complete("critic", CHAT, temperature=1.0, max_tokens=8, indices=[3])
                return first + second
            finally:
                await target.close()

        completions = asyncio.run(go())
    usage = target.meter.as_dict()["critic"]
    assert len(completions) == 4 and target.supports_n is not None
    assert usage["calls"] == len(proxy.seen) == (2 if target.supports_n else 4)
    assert usage["cached"] == 0 and usage["prompt_tokens"] > 0 and usage["completion_tokens"] > 0
