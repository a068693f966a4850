import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from esc_agents.config import build_config
from esc_agents.models.local_server import LocalServer


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


# The 135M critic leaves a few percent of its answers unparsable, so a tiny run can cross the 20%
# limit by chance; tests of plumbing lift it, tests of the limit pass --max-invalid-rate.
PLUMBING_ENV = {"PYTHONUNBUFFERED": "1", "RLFF_ESC_MAX_INVALID_RATE": "1"}


def rlff_esc(*args: str, timeout: float = 600, env: dict | None = None, **kwargs) -> subprocess.CompletedProcess:
    """Run the real command line in a child process, as a user would (`env`: its environment)."""
    return subprocess.run(
        [sys.executable, "-m", "esc_agents.cli", *args],
        capture_output=True, text=True, timeout=timeout, env={**(env or os.environ), **PLUMBING_ENV},
        **kwargs,
    )


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


@pytest.fixture(scope="session")
def trained_reward_model(tmp_path_factory) -> Path:
    """A classification reward model trained for two steps on the committed D_r fixture."""
    out = tmp_path_factory.mktemp("reward_model") / "rm"
    result = rlff_esc("train-rm", "--data", str(REWARD_FIXTURE), "--out", str(out), *QUICK_RM)
    assert result.returncode == 0, result.stderr[-2000:]
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
