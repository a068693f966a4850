"""The completion cache's correctness: keys follow the served weights, identical requests in flight
share one call, seeds reach servers that honour them, and offline replay needs no endpoint. Then
each layer of an endpoint alone: the key scheme, the cache layer, sampling, metering, transport."""

import asyncio
import json
import re

import pytest

from esc_agents.config import EndpointProfile, RunConfig, build_config
from esc_agents.core.errors import EndpointError, OfflineCacheMiss, UserError
from esc_agents.core.runlog import RunLog
from esc_agents.engine import Engine
from esc_agents.jobs import run_jobs
from esc_agents.models.cache import CachingLayer, CompletionCache, cache_scope, completion_key
from esc_agents.models.completion import Completion
from esc_agents.models.endpoints import Endpoint, UsageMeter
from esc_agents.models.sampling import Sampler, request_seed
from esc_agents.models.transport import Transport
from graphs.episode import run_episode
from tests.conftest import SHORT_REPLIES, read_jsonl, rlff_esc
from tests.fakes import ScriptedChatModel
from tests.fault_proxy import FaultProxy
from tests.test_graph_logic import CASE, SEEKER, SUPPORTER

CRITIC_CHAT = [{"role": "system", "content": "You are reviewing a conversation."},
               {"role": "user", "content": "Seeker: I lost my job.\nSupporter: That sounds hard."}]
EMBEDDED = {"base_url": "http://127.0.0.1:8765/v1", "model": "same-name", "embedded": True, "supports_n": False}
DEAD_URL = "http://127.0.0.1:9/v1"  # nothing listens on the discard port


def endpoint(profile: dict, cache=None, texts=("C) better",), **kwargs) -> Endpoint:
    model = ScriptedChatModel(script={"critic": list(texts)}, **kwargs)
    return Endpoint("e", EndpointProfile(**profile), cache=cache, chat_model=model)


def ask(target: Endpoint, indices=(0,), attempt=0, seed=0):
    return target.complete("critic", CRITIC_CHAT, temperature=1.0, max_tokens=8, indices=list(indices),
                           attempt=attempt, seed=seed)


def requests_made(target: Endpoint) -> int:
    return len(target.chat_model.requests)


def model_folder(path, weights: bytes, card: dict | None = None):
    path.mkdir()
    (path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    (path / "model.safetensors").write_bytes(weights)
    if card is not None:
        (path / "policy.json").write_text(json.dumps(card))
    return str(path)


# 9. Keys follow what is served, not the profile's model name.

def test_cache_key_follows_the_served_weights_not_the_model_name(tmp_path):
    cache = CompletionCache(tmp_path / "c.sqlite")
    first = model_folder(tmp_path / "a", b"weights A")
    second = model_folder(tmp_path / "b", b"weights B")

    def replays(profile: dict) -> bool:
        target = endpoint(profile, cache)
        asyncio.run(ask(target))
        return requests_made(target) == 0

    assert not replays({**EMBEDDED, "model_path": first})
    assert replays({**EMBEDDED, "model_path": first})  # same folder: same key
    assert replays({**EMBEDDED, "model_path": first, "base_url": "http://127.0.0.1:9999/v1"})  # port is no part
    assert not replays({**EMBEDDED, "model_path": second})  # same model name, other weights
    (tmp_path / "a" / "model.safetensors").write_bytes(b"weights A, trained further")
    assert not replays({**EMBEDDED, "model_path": first})  # a new checkpoint in the same folder

    remote = {"base_url": "http://host-one:8000/v1", "model": "same-name", "supports_n": False}
    assert not replays(remote)
    assert replays(remote)
    assert not replays({**remote, "base_url": "http://host-two:8000/v1"})


def test_a_policy_card_id_names_the_weights(tmp_path):
    cache = CompletionCache(tmp_path / "c.sqlite")
    card = {"id": "abc123", "prompt": "think"}
    exported = model_folder(tmp_path / "a", b"weights", card)
    copied = model_folder(tmp_path / "b", b"same weights, saved again", card)
    retrained = model_folder(tmp_path / "c", b"weights", {**card, "id": "def456"})
    asyncio.run(ask(endpoint({**EMBEDDED, "model_path": exported}, cache)))
    for folder, requests in ((copied, 0), (retrained, 1)):
        target = endpoint({**EMBEDDED, "model_path": folder}, cache)
        asyncio.run(ask(target))
        assert requests_made(target) == requests


# 10. Identical requests in flight share one call.

def test_concurrent_identical_requests_make_one_call(tmp_path):
    cache = CompletionCache(tmp_path / "c.sqlite")
    target = endpoint(EMBEDDED, cache, texts=["first answer", "second answer"])

    async def both():
        return await asyncio.gather(ask(target), ask(target))

    (first,), (second,) = asyncio.run(both())
    assert requests_made(target) == 1
    assert first.text == second.text == "first answer"  # the waiter got the leader's answer
    assert len(cache) == 1
    usage = target.meter.as_dict()["critic"]
    assert usage["calls"] == 1 and usage["cached"] == 1


def test_waiters_get_the_leading_calls_exception(tmp_path):
    attempts = []

    def fail(messages):
        attempts.append(messages)
        raise RuntimeError("model crashed")

    cache = CompletionCache(tmp_path / "c.sqlite")
    target = Endpoint("e", EndpointProfile(**EMBEDDED), cache=cache,
                      chat_model=ScriptedChatModel(script={"critic": fail}))

    async def both():
        return await asyncio.gather(ask(target), ask(target), return_exceptions=True)

    first, second = asyncio.run(both())
    assert isinstance(first, RuntimeError) and second is first
    assert len(attempts) == 1 and len(cache) == 0
    assert isinstance(asyncio.run(both())[0], RuntimeError) and len(attempts) == 2  # a failure is not remembered


# 15. Seeds reach endpoints that honour them.

SEEDED = {"base_url": DEAD_URL, "model": "m", "supports_n": False, "honours_seed": True}


def sent_seeds(profile: dict, indices=(0, 1, 2, 3), attempt=0, seed=0, **kwargs) -> list:
    target = endpoint(profile, **kwargs)
    asyncio.run(ask(target, indices, attempt, seed))
    return [request["kwargs"].get("seed") for request in target.chat_model.requests]


def test_seeds_are_sent_distinct_per_sample_and_stable_across_runs():
    seeds = sent_seeds(SEEDED)
    assert len(seeds) == 4 and all(isinstance(s, int) for s in seeds) and len(set(seeds)) == 4
    assert sorted(sent_seeds(SEEDED)) == sorted(seeds)  # a rerun without the cache sends the same
    assert not set(sent_seeds(SEEDED, attempt=1)) & set(seeds)  # a regeneration is a new draw
    assert not set(sent_seeds(SEEDED, seed=1)) & set(seeds)  # and so is a new run seed
    # one request with n carries the seed of its first index
    assert sent_seeds({**SEEDED, "supports_n": True}, honour_n=True) == [sent_seeds(SEEDED, indices=[0])[0]] * 4


def test_endpoints_that_ignore_seeds_get_none():
    assert sent_seeds(EMBEDDED) == [None] * 4
    profiles = build_config().endpoints
    assert profiles["vllm"].honours_seed and profiles["openai"].honours_seed
    assert not profiles["local"].honours_seed


# 16. Offline replay.

def scripted_episode(tmp_path, *, offline=False, chat_model=None, **config):
    config = RunConfig.model_validate({"episode": {"max_turns": 2, "critic_samples": 3}, **config})

    async def go():
        chat_models = {"local": chat_model} if chat_model is not None else None
        async with Engine(config, cache_path=tmp_path / "cache.sqlite", chat_models=chat_models,
                          offline=offline) as engine:
            return await run_episode(engine.episode_context(CASE)), engine

    return asyncio.run(go())


def test_offline_replays_without_any_endpoint(tmp_path):
    script = {"supporter": SUPPORTER, "user_simulator": SEEKER, "critic": ["B", "C", "A"]}
    recorded, _ = scripted_episode(tmp_path, chat_model=ScriptedChatModel(script=script))
    # The embedded profile now points at a dead port: no server may start, no preflight may run.
    replayed, engine = scripted_episode(tmp_path, offline=True, endpoints={"local": {**EMBEDDED, "model": "x",
                                                                                     "base_url": DEAD_URL}})
    assert replayed == recorded
    assert engine.meter.total_calls == 0 and engine._opened == []  # no backend opened: no server started


def test_offline_miss_is_one_clear_error_that_stops_the_run(tmp_path):
    model = ScriptedChatModel(script={"supporter": SUPPORTER, "user_simulator": SEEKER, "critic": ["D"]})
    with pytest.raises(OfflineCacheMiss, match=r"offline: no cached completion for role supporter .*sample 0"):
        scripted_episode(tmp_path, offline=True, chat_model=model)
    assert model.requests == []
    assert isinstance(OfflineCacheMiss("x"), UserError)

    async def miss():
        raise OfflineCacheMiss("offline: no cached completion")

    async def jobs():
        with RunLog(tmp_path / "log.jsonl", key="case_id") as log:
            return await run_jobs({"c1": miss}, log, total=1, concurrency=1, meter=UsageMeter(), desc="x",
                                  progress=False)

    with pytest.raises(OfflineCacheMiss):  # not swallowed as one job's failure
        asyncio.run(jobs())


def test_offline_refuses_no_cache():
    with pytest.raises(UserError, match="--offline.*--no-cache"):
        Engine(RunConfig(), use_cache=False, offline=True)


# Each layer alone.

REMOTE = {"base_url": "http://host-one:8000/v1", "model": "same-name", "supports_n": False, "max_attempts": 1}
PARAMS = {"temperature": 1.0, "max_tokens": 8, "seed": 0}
# Written by the endpoint before it was split into layers: a cache filled then must still replay.
KEY = "52993c6d73c30eba8eebe0832f5579db64717bb99918fd5feaf340f5bdcd9b04"  # sample 1, attempt 2
SCOPED_KEY = "ce5e4dd428b09d14f511c4d8f5c05de148945be974231c2a185fc7ed3cf1e585"  # the same in scope "step-3"


def test_the_cache_key_scheme_is_unchanged():
    parts = {"model": "http://host-one:8000/v1#same-name", "messages": CRITIC_CHAT, "params": PARAMS,
             "index": 1, "attempt": 2}
    assert completion_key(**parts) == KEY
    token = cache_scope.set("step-3")
    try:
        assert completion_key(**parts) == SCOPED_KEY
    finally:
        cache_scope.reset(token)


class Unreachable:
    """A layer below the cache that must not be asked."""

    async def sample(self, *args, **kwargs):
        raise AssertionError("the cache layer asked the layer below it")


def test_the_cache_layer_replays_a_stored_completion_without_asking_below(tmp_path):
    cache = CompletionCache(tmp_path / "c.sqlite")
    cache.put(KEY, {"text": "stored"})
    cache.put(SCOPED_KEY, {"text": "stored in scope"})
    layer = CachingLayer(EndpointProfile(**REMOTE), cache, Unreachable())
    (completion,), requests = asyncio.run(layer.sample("critic", CRITIC_CHAT, PARAMS, [1], 2))
    assert completion == Completion("stored", cached=True) and requests == 0

    async def scoped():
        cache_scope.set("step-3")  # set inside the task: the context is the task's own
        return await layer.sample("critic", CRITIC_CHAT, PARAMS, [1], 2)

    assert asyncio.run(scoped())[0][0].text == "stored in scope"
    offline = CachingLayer(EndpointProfile(**REMOTE), cache, Unreachable(), offline=True)
    with pytest.raises(OfflineCacheMiss, match="role critic .*sample 0"):  # another index: another key
        asyncio.run(offline.sample("critic", CRITIC_CHAT, PARAMS, [0], 2))

    # A whole endpoint on the same cache replays it too, its chat model never called, its meter
    # counting the replay as cached and no call.
    never = ScriptedChatModel(script={"critic": Unreachable().sample})
    target = Endpoint("e", EndpointProfile(**REMOTE), cache=cache, chat_model=never)
    assert [c.text for c in asyncio.run(ask(target, indices=[1], attempt=2))] == ["stored"]
    assert never.requests == [] and target.meter.as_dict()["critic"] == {
        "calls": 0, "cached": 1, "prompt_tokens": 0, "completion_tokens": 0, "samples": 0, "cached_calls": 1}


class CountingTransport:
    """Answers each request with `n` samples if it honours n, else one; records (n, seed)."""

    def __init__(self, honour_n: bool):
        self.honour_n = honour_n
        self.sent: list[tuple[int, int | None]] = []

    async def send(self, role, messages, *, temperature, max_tokens, n=1, seed=None):
        self.sent.append((n, seed))
        return [Completion(f"{len(self.sent)}.{i}") for i in range(n if self.honour_n else 1)]


@pytest.mark.parametrize("honour_n", [True, False])
def test_sampling_detects_n_once_and_seeds_each_request(honour_n):
    transport = CountingTransport(honour_n)
    sampler = Sampler(transport, supports_n=None, honours_seed=True)
    seeds = [request_seed(0, index, 1) for index in (4, 5, 6)]
    completions, requests = asyncio.run(sampler.sample("critic", CRITIC_CHAT, PARAMS, [4, 5, 6], 1))
    assert len(completions) == 3 and sampler.supports_n is honour_n
    if honour_n:  # one request for all three, seeded by its first index
        assert requests == 1 and transport.sent == [(3, seeds[0])]
    else:  # the n request brought one; the other two are asked for one by one
        assert requests == 3 and transport.sent == [(3, seeds[0]), (1, seeds[1]), (1, seeds[2])]
    transport.sent.clear()
    _, requests = asyncio.run(sampler.sample("critic", CRITIC_CHAT, PARAMS, [4, 5], 1))
    assert transport.sent == ([(2, seeds[0])] if honour_n else [(1, seeds[0]), (1, seeds[1])])  # learnt
    unseeded = Sampler(CountingTransport(True), supports_n=True, honours_seed=False)
    asyncio.run(unseeded.sample("critic", CRITIC_CHAT, PARAMS, [0, 1], 0))
    assert unseeded.transport.sent == [(2, None)]


def test_the_meter_counts_exactly_the_requests_made(tmp_path):
    model = ScriptedChatModel(script={"critic": ["a", "b", "c", "d"]})  # ignores n: one text a request
    target = Endpoint("e", EndpointProfile(**{**EMBEDDED, "supports_n": None}),
                      cache=CompletionCache(tmp_path / "c.sqlite"), chat_model=model)
    second = UsageMeter()
    target.observers.append(second)
    asyncio.run(ask(target, indices=[0, 1, 2]))  # n=3 brings one, then two singles: 3 requests
    asyncio.run(ask(target, indices=[0, 1, 2, 3]))  # three replayed, one asked for
    assert len(model.requests) == 4
    assert target.meter.as_dict() == second.as_dict()
    assert {k: target.meter.as_dict()["critic"][k] for k in ("calls", "cached")} == {"calls": 4, "cached": 3}
    # Tokens: those of fresh completions, none for a replayed one.
    meter = UsageMeter()
    meter.record("critic", [Completion("x", 10, 5), Completion("y", 10, 5), Completion("x", 99, 99, cached=True)], 1)
    assert meter.as_dict() == {"critic": {"calls": 1, "cached": 1, "prompt_tokens": 20, "completion_tokens": 10,
                                          "samples": 2, "cached_calls": 0}}


def test_transport_retries_a_500_up_to_max_attempts_then_names_role_and_cause():
    with FaultProxy(DEAD_URL, lambda i, body: "500") as proxy:  # never forwards: the upstream is unused
        transport = Transport("flaky", EndpointProfile(base_url=proxy.base_url, model="m", max_attempts=3,
                                                       backoff_max=0))
        sent = []
        transport.request_observers.append(sent.append)

        async def go():
            try:
                await transport.send("critic", CRITIC_CHAT, temperature=1.0, max_tokens=8, seed=7)
            finally:
                await transport.close()

        with pytest.raises(EndpointError, match=r"'flaky' \(m\) failed for role critic after 3 attempts: HTTP 500"):
            asyncio.run(go())
    assert proxy.seen == ["500"] * 3
    assert sent == [{"messages": CRITIC_CHAT, "temperature": 1.0, "max_tokens": 8, "seed": 7}]  # once, not per try


# The same features against the real embedded server.

def served(local_server, cache, **profile) -> Endpoint:
    return Endpoint("local", EndpointProfile(**{**build_config().endpoints["local"].model_dump(), **profile}),
                    cache=cache, request_model=local_server)


@pytest.mark.server
def test_real_server_keys_on_the_served_folder_and_shares_in_flight_calls(local_server, tmp_path):
    cache = CompletionCache(tmp_path / "c.sqlite")

    async def go():
        bundled = served(local_server, cache)
        first, second = await asyncio.gather(ask(bundled), ask(bundled))
        assert first[0].text == second[0].text and len(cache) == 1
        usage = bundled.meter.as_dict()["critic"]
        assert usage["calls"] == 1 and usage["cached"] == 1
        # The same weights served from an explicit folder are another identity: asked again.
        folder = served(local_server, cache, model_path=local_server)
        await ask(folder)
        assert folder.meter.total_calls == 1 and len(cache) == 2
        for target in (bundled, folder):
            await target.close()

    asyncio.run(go())


@pytest.mark.server
def test_real_server_takes_per_sample_seeds(local_server, tmp_path):
    bodies = []
    with FaultProxy("http://127.0.0.1:8765", lambda i, body: bodies.append(json.loads(body)) or "ok") as proxy:
        target = served(local_server, None, embedded=False, model=local_server, honours_seed=True,
                        base_url=proxy.base_url)

        async def go():
            completions = await ask(target, indices=[0, 1, 2])
            await target.close()
            return completions

        assert all(c.text for c in asyncio.run(go()))
    seeds = [body["seed"] for body in bodies]  # as the server received them
    assert len(set(seeds)) == 3 and all(isinstance(seed, int) for seed in seeds)


TINY = [*SHORT_REPLIES, "--dataset", "esconv:ppdpp_test", "--limit", "1", "--max-turns", "1", "--critic-samples", "2",
        "--concurrency", "1"]


@pytest.mark.server
def test_offline_replay_of_a_simulate_run_needs_no_endpoint(local_server, tmp_path):
    cache = str(tmp_path / "cache.sqlite")
    recorded = rlff_esc("simulate", *TINY, "--cache", cache, "--out", str(tmp_path / "run"))
    assert recorded.returncode == 0, recorded.stderr
    dead = tmp_path / "dead.yaml"
    dead.write_text(f"endpoints:\n  local: {{base_url: '{DEAD_URL}'}}\n")
    replay = rlff_esc("simulate", *TINY, "--cache", cache, "--config", str(dead), "--offline",
                      "--out", str(tmp_path / "replay"))
    assert replay.returncode == 0, replay.stderr
    assert read_jsonl(tmp_path / "replay" / "trajectories.jsonl") == read_jsonl(tmp_path / "run" / "trajectories.jsonl")
    sent = [int(n) for n in re.findall(r"requests\s+(\d+)", replay.stdout)]  # per role: requests sent
    assert sent and not any(sent), replay.stdout


@pytest.mark.server
def test_offline_with_an_empty_cache_is_one_line_and_exit_2(local_server, tmp_path):
    run = rlff_esc("simulate", *TINY, "--cache", str(tmp_path / "empty.sqlite"), "--offline",
                   "--out", str(tmp_path / "run"))
    assert run.returncode == 2
    error = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(error) == 1 and "Traceback" not in run.stderr
    assert re.match(r"rlff-esc: error: offline: no cached completion for role supporter .*rerun without --offline",
                    error[0])
    refused = rlff_esc("simulate", *TINY, "--offline", "--no-cache", "--out", str(tmp_path / "other"))
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "--no-cache" in refused.stderr
