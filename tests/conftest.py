import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.in_process import run_in_process  # first: it imports tqdm as a child of the CLI would

from esc_agents.config import build_config
from esc_agents.models.local_server import LocalServer


# `make test` runs pytest-xdist with --dist loadscope --no-loadscope-reorder: a worker takes a whole
# module at a time, in collection order. The modules that take longest go first (measured: pass 1,
# the embedded server's; pass 2, the trainings), so that no long one is left to run alone at the end.
SLOWEST_FIRST = ["test_viewer", "test_rewards_server", "test_local_server", "test_rewards_growth_and_lease",
                 "test_accounting", "test_robustness", "test_disk_and_signals", "test_cli_errors",
                 "test_endpoint_identity", "test_cli_config_flags", "test_endpoint_cache", "test_role_plugins",
                 "test_grpo", "test_resume_and_move", "test_reward_model_training", "test_future_rewards",
                 "test_multiprocess"]


def pytest_collection_modifyitems(items):
    rank = {f"tests/{name}.py": place for place, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.nodeid.split("::")[0], len(rank)))  # stable: the rest as collected


@pytest.fixture(scope="session")
def local_server():
    """The real embedded server, started once per test session (or reused if already up).
    Yields the model name requests must use."""
    server = LocalServer(build_config().endpoints["local"])
    model = server.start()
    # The first generation pays for warm-up; keep that out of the tests' timeouts.
    httpx.post(server.root + "/v1/chat/completions", timeout=300,
               json={"model": model, "messages": [{"role": "user", "content": "Hi"}], "max_tokens": 4})
    yield model
    server.stop()


# Tests of plumbing need replies, not long ones: the embedded server's time goes to generated tokens.
SHORT_REPLIES = ["--supporter-max-tokens", "24", "--user-max-tokens", "24"]

# The 135M critic leaves a few percent of its answers unparsable, so a tiny run can cross the 20%
# limit by chance; tests of plumbing lift it, tests of the limit pass --max-invalid-rate.
PLUMBING_ENV = {"PYTHONUNBUFFERED": "1", "RLFF_ESC_MAX_INVALID_RATE": "1"}


def rlff_esc(*args: str, timeout: float = 600, env: dict | None = None, cwd: str | Path | None = None,
             separate_process: bool = False) -> subprocess.CompletedProcess:
    """Run the real command line as a user would (`env`: its environment, `cwd`: its working
    directory) and return its exit code, stdout and stderr. It runs in this process, through the
    same `main` the console script calls, unless `separate_process` (or $RLFF_ESC_TEST_SUBPROCESS)
    asks for a child: tests of what only a process shows (signals, imports at start, installed
    entry points) ask for one; the rest would pay a Python start and torch's import on every call."""
    environment = {**(env if env is not None else os.environ), **PLUMBING_ENV}
    if separate_process or os.environ.get("RLFF_ESC_TEST_SUBPROCESS"):
        return subprocess.run([sys.executable, "-m", "esc_agents.cli", *args], capture_output=True, text=True,
                              timeout=timeout, env=environment, cwd=cwd)
    return run_in_process(list(args), environment, cwd, timeout)


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def kill_when(args: list[str], ready, timeout: float = 600) -> None:
    """Start the command line and SIGKILL it as soon as `ready()` is true (or it exits)."""
    child = subprocess.Popen([sys.executable, "-m", "esc_agents.cli", *args],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and not ready() and child.poll() is None:
        time.sleep(0.2)
    child.send_signal(signal.SIGKILL)
    child.wait()


def kill_after_first_result(args: list[str], results: Path, timeout: float = 300) -> list[dict]:
    """SIGKILL the command line once `results` holds a line; return what it had written."""
    kill_when(args, lambda: results.exists() and results.read_text().count("\n") >= 1, timeout)
    return read_jsonl(results)


REWARD_FIXTURE = Path(__file__).parent / "fixtures" / "reward_data"
QUICK_RM = ["--max-steps", "2", "--batch-size", "4", "--max-length", "192"]


def run_root(tmp_path_factory) -> Path:
    """The folder of this test run that all its pytest-xdist workers share (each worker's own base
    temp lies below it); without xdist, the run's base temp."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


@pytest.fixture(scope="session")
def trained_reward_model(tmp_path_factory) -> Path:
    """A classification reward model trained for two steps on the committed D_r fixture; trained
    once per test run, by whichever worker asks first (the others wait for it)."""
    from filelock import FileLock

    root = run_root(tmp_path_factory)
    out, done = root / "reward_model" / "rm", root / "reward_model" / "trained"
    with FileLock(root / "reward_model.lock"):
        if not done.exists():
            result = rlff_esc("train-rm", "--data", str(REWARD_FIXTURE), "--out", str(out), *QUICK_RM)
            assert result.returncode == 0, result.stderr[-2000:]
            done.touch()
    return out


@pytest.fixture(scope="session")
def tiny_policy(tmp_path_factory):
    """A one-layer policy of random weights with the embedded model's tokenizer and chat template,
    for the training tests that check what a run records, resumes and exports, not what it learns:
    a step costs little, and its replies (random words, no think tags) are all spoken. The tests of
    learning (the reward model's loss falls) and of the real policy's path (test_grpo.py: killed,
    resumed, exported, served) train the embedded 135M model."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from esc_agents.models.local_server import embedded_model_dir

    folder = tmp_path_factory.mktemp("tiny_policy")
    tokenizer = AutoTokenizer.from_pretrained(embedded_model_dir())
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=4096,
                         bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id)
    LlamaForCausalLM(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
