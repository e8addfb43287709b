"""Helpers for benches that put LLMLoom side by side with its peers under one load generator.

The peers are LiteLLM's proxy and direct calls to the model server; the load
generator is wrk, the same for all of them. ``bench/peers.sh`` installs both,
outside the repository: wrk from Debian, LiteLLM's proxy pinned in a virtualenv
of its own under the cache (never in .venv, never among LLMLoom's dependencies).

    from bench.peers import LiteLLMProxy, cpu_seconds, wrk

    with LiteLLMProxy("http://127.0.0.1:8081/v1") as proxy:
        body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        r = wrk(f"{proxy.url}/chat/completions", body, proxy.headers, connections=16, seconds=10)

Only the standard library and httpx, so any bench can import it.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
PEERS_SH = HERE / "peers.sh"

LITELLM_ENV = {
    # The model cost map (and the other JSON LiteLLM keeps a copy of) from the package,
    # not from raw.githubusercontent.com: offline, and no retries with sleeps at start.
    "LITELLM_LOCAL_MODEL_COST_MAP": "True",
    "LITELLM_LOCAL_ANTHROPIC_BETA_HEADERS": "True",
    "LITELLM_LOCAL_AUTOROUTER_PRESETS": "True",
    "LITELLM_LOCAL_POLICY_TEMPLATES": "True",
    "LITELLM_LOCAL_BLOG_POSTS": "True",
    # LiteLLM's own usage telemetry: vetoed.
    "LITELLM_TELEMETRY_DISABLED": "True",
    # Its loggers at ERROR: nothing written per request.
    "LITELLM_LOG": "ERROR",
    # No .env read from the working directory (dotenv is loaded in DEV mode only).
    "LITELLM_MODE": "PRODUCTION",
    # No admin UI, no docs pages, no feedback banner.
    "DISABLE_ADMIN_UI": "True",
    "NO_DOCS": "True",
    "NO_REDOC": "True",
    "LITELLM_DONT_SHOW_FEEDBACK_BOX": "True",
    # huggingface_hub and tokenizers, imported by LiteLLM, never reach the hub.
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "TOKENIZERS_PARALLELISM": "false",
}
"""The environment LiteLLM's proxy runs with, on top of PATH, HOME, LANG and TMPDIR only:
nothing else is inherited, so no DATABASE_URL (or DATABASE_HOST...: LiteLLM builds a URL
from those too) means no database, no Prisma and no spend logs written anywhere."""

_INHERITED = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")

_UVICORN_LOG_CONFIG: dict[str, Any] = {
    # uvicorn's lifecycle lines (one "Application startup complete." per worker: how
    # LiteLLMProxy knows every worker is up) but no access log line per request.
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(process)d %(name)s %(message)s"}},
    "handlers": {"stderr": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "loggers": {
        "uvicorn": {"handlers": ["stderr"], "level": "INFO", "propagate": False},
        "uvicorn.error": {"level": "INFO"},
        "uvicorn.access": {"handlers": ["stderr"], "level": "WARNING", "propagate": False},
    },
}

_STARTED = "Application startup complete."


def litellm_binary() -> Path:
    """Install wrk and LiteLLM's proxy when missing (``bench/peers.sh``); the ``litellm``
    executable."""
    out = subprocess.run(
        ["bash", str(PEERS_SH)], check=True, stdout=subprocess.PIPE, text=True
    ).stdout
    lines = out.strip().splitlines()
    if not lines:
        raise RuntimeError(f"{PEERS_SH} printed no path")
    path = Path(lines[-1].strip())
    if not os.access(path, os.X_OK):
        raise RuntimeError(f"{PEERS_SH} printed {path}, which is not an executable")
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _stat_fields(pid: int) -> list[str]:
    """/proc/<pid>/stat after the command name (field 3, the state, comes first)."""
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()


def cpu_seconds(pids: list[int]) -> float:
    """User plus system CPU time the running processes ``pids`` have used (those gone
    since count 0)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            fields = _stat_fields(pid)
            total += int(fields[11]) + int(fields[12])  # utime, stime (fields 14 and 15)
    return total / os.sysconf("SC_CLK_TCK")


def session_pids(sid: int) -> list[int]:
    """Every running process of session ``sid``: a child started with a new session and
    all it started (unless one of them made a session of its own)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(FileNotFoundError, ProcessLookupError, IndexError):
            fields = _stat_fields(int(entry.name))
            if int(fields[3]) == sid and fields[0] != "Z":
                pids.append(int(entry.name))
    return sorted(pids)


class LiteLLMProxy:
    """LiteLLM's proxy as a child process on a free loopback port, routing the model name
    ``model`` to the OpenAI-compatible ``api_base`` (``openai/<model>``); ready, every
    worker up, when the constructor returns.

    ``workers`` uvicorn workers under a supervisor (``--num_workers``), no database, no
    UI, no telemetry, no network access beyond ``api_base``. With ``master_key`` (the
    default) every request needs ``Authorization: Bearer <master_key>``, as in a real
    deployment; ``headers`` carries it. Its config and log are in ``workdir`` (a new
    temporary folder unless given)."""

    def __init__(
        self,
        api_base: str,
        *,
        model: str = "echo",
        workers: int = 2,
        master_key: str | None = "sk-bench-litellm",
        workdir: Path | None = None,
        timeout: float = 180.0,
        binary: Path | None = None,
    ) -> None:
        self.model = model
        self.workers = workers
        self.workdir = workdir or Path(tempfile.mkdtemp(prefix="litellm-proxy-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = _free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.headers: dict[str, str] = (
            {"Authorization": f"Bearer {master_key}"} if master_key else {}
        )
        general: dict[str, Any] = {
            # Nothing to write spend to, and nothing kept per request.
            "disable_spend_logs": True,
            "disable_error_logs": True,
            "disable_reset_budget": True,
        }
        if master_key:
            general["master_key"] = master_key
        config = {
            "model_list": [
                {
                    "model_name": model,
                    "litellm_params": {
                        "model": f"openai/{model}",
                        "api_base": api_base,
                        "api_key": "unused",
                    },
                }
            ],
            "general_settings": general,
            "litellm_settings": {
                "request_timeout": 600,
                "num_retries": 0,
            },
        }
        # YAML is a superset of JSON: no yaml package needed here.
        self.config_path = self.workdir / "litellm-config.yaml"
        self.config_path.write_text(json.dumps(config, indent=2))
        log_config = self.workdir / "uvicorn-log.json"
        log_config.write_text(json.dumps(_UVICORN_LOG_CONFIG))
        self.log_path = self.workdir / "litellm.log"
        env = {k: os.environ[k] for k in _INHERITED if k in os.environ}
        env |= LITELLM_ENV
        # Where a multi-worker proxy would keep Prometheus samples (only with that callback).
        env["PROMETHEUS_MULTIPROC_DIR"] = str(self.workdir / "prometheus")
        exe = binary or litellm_binary()
        cmd = [
            str(exe),
            "--config",
            str(self.config_path),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--num_workers",
            str(workers),
            "--log_config",
            str(log_config),
            # uvicorn's supervisor kills a worker that has not answered its ping within
            # 5 s; importing LiteLLM takes longer than that on a small, busy machine.
            "--timeout_worker_healthcheck",
            str(round(timeout)),
        ]
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            cmd,
            cwd=self.workdir,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            self._wait_ready(timeout)
        except BaseException:
            self.stop()
            raise

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.popen.poll() is not None:
                raise RuntimeError(
                    f"LiteLLM's proxy exited with {self.popen.returncode}:\n{self.tail()}"
                )
            started = self.log_path.read_text(errors="replace").count(_STARTED)
            if started >= self.workers:
                with contextlib.suppress(httpx.HTTPError):
                    r = httpx.get(f"{self.base}/health/liveliness", timeout=2)
                    if r.status_code == 200:
                        return
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"LiteLLM's proxy not ready after {timeout:g}s "
                    f"({started}/{self.workers} workers up):\n{self.tail()}"
                )
            time.sleep(0.2)

    def warm(self, requests: int = 64, concurrency: int = 8) -> None:
        """Send chat requests over several connections at once, so that every worker has
        done its lazy imports and opened its pool before anything is measured."""
        body = {"model": self.model, "messages": [{"role": "user", "content": "warm up"}]}

        def one(_: int) -> None:
            r = httpx.post(
                f"{self.url}/chat/completions", json=body, headers=self.headers, timeout=60
            )
            r.raise_for_status()

        with ThreadPoolExecutor(concurrency) as pool:
            list(pool.map(one, range(requests)))

    @property
    def url(self) -> str:
        """The OpenAI base URL (ends in /v1)."""
        return f"{self.base}/v1"

    def pids(self) -> list[int]:
        """The proxy's running processes: the supervisor, its workers and any helper."""
        return session_pids(self.popen.pid) if self.popen.poll() is None else []

    def tail(self, lines: int = 60) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM to the whole process group, SIGKILL after ``timeout``."""
        pid = self.popen.pid
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout)
        # Anything of its session still there (a worker whose supervisor died first, or
        # a supervisor past its timeout) is killed.
        if session_pids(pid):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(timeout)
        self._log.close()

    def __enter__(self) -> LiteLLMProxy:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


@dataclass(frozen=True)
class WrkResult:
    """One wrk run: requests completed, their rate, latency in ms, and failures."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    max_ms: float
    non_2xx: int
    """Responses with a status outside 200-299."""
    socket_errors: int
    """Connect, read and write errors and timeouts (no response at all)."""


def _lua_string(text: str) -> str:
    """A Lua string literal of ``text`` (its UTF-8 bytes): printable ASCII as is, every
    other byte, quote and backslash as a decimal escape."""
    return (
        '"'
        + "".join(
            chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in text.encode()
        )
        + '"'
    )


_WRK_DONE = """
local threads = {}
non2xx = 0

function setup(thread)
  table.insert(threads, thread)
end

function response(status, headers, body)
  if status < 200 or status > 299 then
    non2xx = non2xx + 1
  end
end

function done(summary, latency, requests)
  local bad = 0
  for _, t in ipairs(threads) do
    bad = bad + t:get("non2xx")
  end
  local e = summary.errors
  io.write(string.format("WRKRESULT requests %d\\n", summary.requests))
  io.write(string.format("WRKRESULT duration_us %d\\n", summary.duration))
  io.write(string.format("WRKRESULT p50_us %d\\n", latency:percentile(50)))
  io.write(string.format("WRKRESULT p99_us %d\\n", latency:percentile(99)))
  io.write(string.format("WRKRESULT mean_us %f\\n", latency.mean))
  io.write(string.format("WRKRESULT max_us %d\\n", latency.max))
  io.write(string.format("WRKRESULT non2xx %d\\n", bad))
  io.write(string.format("WRKRESULT socket_errors %d\\n",
    e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_script(body: dict[str, Any], headers: dict[str, str]) -> str:
    """The Lua script wrk runs: POST ``body`` as JSON with ``headers``; print results."""
    lines = [
        'wrk.method = "POST"',
        f"wrk.body = {_lua_string(json.dumps(body))}",
        'wrk.headers["Content-Type"] = "application/json"',
    ]
    lines += [f"wrk.headers[{_lua_string(k)}] = {_lua_string(v)}" for k, v in headers.items()]
    return "\n".join(lines) + "\n" + _WRK_DONE


def wrk(
    url: str,
    body: dict[str, Any],
    headers: dict[str, str],
    connections: int,
    seconds: float,
    threads: int = 1,
    timeout: float = 30.0,
) -> WrkResult:
    """POST ``body`` to ``url`` over ``connections`` keep-alive connections for ``seconds``
    (wrk, ``threads`` threads; ``bench/peers.sh`` installs it)."""
    exe = shutil.which("wrk")
    if exe is None:
        raise RuntimeError(f"wrk is not installed: run {PEERS_SH}")
    threads = max(1, min(threads, connections))
    with tempfile.NamedTemporaryFile("w", suffix=".lua", prefix="wrk-") as script:
        script.write(wrk_script(body, headers))
        script.flush()
        cmd = [
            exe,
            f"--threads={threads}",
            f"--connections={connections}",
            f"--duration={max(1, round(seconds))}s",
            f"--timeout={max(1, round(timeout))}s",
            f"--script={script.name}",
            url,
        ]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + timeout + 30)
    if proc.returncode != 0:
        raise RuntimeError(f"wrk failed ({proc.returncode}): {proc.stderr or proc.stdout}")
    values: dict[str, float] = {}
    for line in proc.stdout.splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[0] == "WRKRESULT":
            values[parts[1]] = float(parts[2])
    if "requests" not in values:
        raise RuntimeError(f"wrk printed no results:\n{proc.stdout}\n{proc.stderr}")
    secs = values["duration_us"] / 1e6
    return WrkResult(
        requests=int(values["requests"]),
        seconds=secs,
        rps=values["requests"] / secs if secs else 0.0,
        p50_ms=values["p50_us"] / 1000,
        p99_ms=values["p99_us"] / 1000,
        mean_ms=values["mean_us"] / 1000,
        max_ms=values["max_us"] / 1000,
        non_2xx=int(values["non2xx"]),
        socket_errors=int(values["socket_errors"]),
    )
