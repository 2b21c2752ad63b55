"""Run one Elasticsearch or OpenSearch node as a child process: start, wait until healthy, stop, kill, restart.

Engine-specific assembly (which artifacts make a home directory) lives in ``opensearch.py`` and
``elasticsearch.py``; this module only knows how to run a home directory on 127.0.0.1.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path


class NodeStartError(RuntimeError):
    """The node did not become healthy; the message carries the tail of its log."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def process_cmdline(pid: int) -> str | None:
    """The command line of process ``pid`` (arguments joined by spaces), or None when there is no such process."""
    proc = Path("/proc")
    if proc.is_dir():
        try:
            raw = (proc / str(pid) / "cmdline").read_bytes()
        except OSError:
            return None
        return raw.replace(b"\0", b" ").decode(errors="replace").strip() or None  # a zombie has none
    found = subprocess.run(["ps", "-ww", "-o", "command=", "-p", str(pid)], capture_output=True, text=True)
    return found.stdout.strip() or None


@dataclass
class Node:
    """One node process. ``engine`` is ``"opensearch"`` or ``"elasticsearch"`` (the name of its ``bin/`` script)."""

    name: str
    engine: str
    version: str
    home: Path
    java_home: Path
    workdir: Path
    http_port: int = 0
    heap: str = "1g"
    settings: dict[str, str] = field(default_factory=dict)
    username: str | None = None
    password: str | None = None
    scheme: str = "http"
    ca_certs: Path | None = None
    pid: int | None = None
    extra_env: dict[str, str] = field(default_factory=dict)
    java_opts: list[str] = field(default_factory=list)

    # ---- addresses -------------------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.http_port}"

    @property
    def data_dir(self) -> Path:
        return self.workdir / "data"

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def config_dir(self) -> Path:
        return self.workdir / "config"

    @property
    def console_log(self) -> Path:
        return self.logs_dir / "console.log"

    # ---- lifecycle -------------------------------------------------------------------------------------------
    def _command(self) -> list[str]:
        all_settings = {
            "cluster.name": f"e5plugin-{self.name}",
            "node.name": self.name,
            "network.host": "127.0.0.1",
            "http.port": str(self.http_port),
            "transport.port": "0",
            "discovery.type": "single-node",
            "path.data": str(self.data_dir),
            "path.logs": str(self.logs_dir),
            **self.settings,
        }
        cmd = [str(self.home / "bin" / self.engine)]
        if os.geteuid() == 0:
            # Both engines refuse to run as root ("can not run ... as root"). Map root to an unprivileged uid in a
            # user namespace: the node sees a non-root euid, while files keep root's ownership outside.
            uid = os.environ.get("E5PLUGIN_NODE_UID", "1000")
            cmd = ["unshare", "--user", f"--map-user={uid}", f"--map-group={uid}", *cmd]
        for key, value in all_settings.items():
            cmd += ["-E", f"{key}={value}"]
        return cmd

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        prefix = "OPENSEARCH" if self.engine == "opensearch" else "ES"
        env[f"{prefix}_JAVA_HOME"] = str(self.java_home)
        env["JAVA_HOME"] = str(self.java_home)
        env[f"{prefix}_JAVA_OPTS"] = " ".join(
            [f"-Xms{self.heap}", f"-Xmx{self.heap}", *self.java_opts, env.get(f"E5PLUGIN_{prefix}_JAVA_OPTS", "")]
        ).strip()
        env[f"{prefix}_PATH_CONF"] = str(self.config_dir)
        env.update(self.extra_env)
        return env

    def start(self, timeout: float = 180.0) -> Node:
        """Start the process (keeping port and data of an earlier run) and wait until it answers healthy."""
        if self.is_alive():
            return self
        if not self.http_port:
            self.http_port = free_port()
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if not self.config_dir.exists():
            shutil.copytree(self.home / "config", self.config_dir)
        with open(self.console_log, "ab") as log:
            proc = subprocess.Popen(
                self._command(),
                cwd=self.workdir,
                env=self._env(),
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.pid = proc.pid
        self._proc = proc
        self.save_state()
        try:
            self.wait_ready(timeout)
        except BaseException:
            self.stop(timeout=15)  # a node that did not come up (or an interrupted start) is not left running
            raise
        return self

    def wait_ready(self, timeout: float = 180.0) -> None:
        deadline = time.monotonic() + timeout
        last_error = ""
        while time.monotonic() < deadline:
            if not self.is_alive():
                raise NodeStartError(f"{self.engine} node {self.name!r} exited during start.\n{self.log_tail()}")
            try:
                health = self.request("GET", "/_cluster/health")
                if health.get("status") in ("green", "yellow") and self.is_answering():
                    return
                last_error = (
                    f"status {health.get('status')}"
                    if health.get("status") not in ("green", "yellow")
                    else f"another process answers on port {self.http_port}"
                )
            except (OSError, urllib.error.URLError, ValueError) as exc:
                last_error = str(exc)
            time.sleep(1.0)
        raise NodeStartError(
            f"{self.engine} node {self.name!r} not healthy after {timeout:.0f}s ({last_error}).\n{self.log_tail()}"
        )

    def is_alive(self) -> bool:
        """Whether the node's process runs. A pid read back from the state file counts only while that process is
        still this node's (its command line names the node's work directory): pids get recycled."""
        if not self.pid:
            return False
        proc = getattr(self, "_proc", None)
        if proc is not None:
            return proc.poll() is None
        return self.owns_pid()

    def owns_pid(self) -> bool:
        """Whether ``pid`` is this node's process: every node command line carries ``path.data=<workdir>/data``."""
        cmdline = process_cmdline(self.pid) if self.pid else None
        return bool(cmdline) and f"path.data={self.data_dir}" in cmdline  # type: ignore[operator]

    def is_answering(self) -> bool:
        """Whether the cluster answering on ``http_port`` is this node: the process it reports runs in this node's
        process group (not some other cluster that already listened on the port)."""
        if not self.is_alive():
            return False
        try:
            nodes = self.request("GET", "/_nodes/_local/process").get("nodes", {})
            pids = [int(info["process"]["id"]) for info in nodes.values()]
        except (OSError, urllib.error.URLError, ValueError, KeyError, TypeError):
            return False
        try:
            return len(pids) == 1 and os.getpgid(pids[0]) == self.pid
        except OSError:
            return False

    def _signal_group(self, sig: int) -> None:
        if not self.is_alive():  # never signal a process group that is no longer the node's
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.pid, sig)  # type: ignore[arg-type]

    def _wait_exit(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.is_alive():
                return True
            time.sleep(0.2)
        return not self.is_alive()

    def stop(self, timeout: float = 60.0) -> None:
        """Graceful stop (SIGTERM), then SIGKILL if it does not exit in time."""
        if not self.is_alive():
            if self.pid and self.state_file().is_file():
                self.pid = None
                self.save_state()  # the recorded pid is gone or belongs to another process now: forget it
            self.pid = None
            return
        self._signal_group(signal.SIGTERM)
        if not self._wait_exit(timeout):
            self._signal_group(signal.SIGKILL)
            self._wait_exit(10)
        self.pid = None
        self.save_state()

    def kill(self) -> None:
        """Hard kill (SIGKILL), as a crash would: for fault-injection tests."""
        if self.is_alive():
            self._signal_group(signal.SIGKILL)
            self._wait_exit(30)
        self.pid = None

    def restart(self, timeout: float = 180.0) -> Node:
        self.stop()
        return self.start(timeout)

    # ---- plumbing --------------------------------------------------------------------------------------------
    def request(self, method: str, path: str, body: object | None = None, timeout: float = 10.0) -> dict:
        """A small HTTP call used for readiness and setup (the product itself uses the official clients)."""
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(self.url + path, data=data, method=method)
        req.add_header("Content-Type", "application/json")
        if self.username:
            token = base64.b64encode(f"{self.username}:{self.password}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        context = ssl.create_default_context(cafile=str(self.ca_certs)) if self.ca_certs else None
        with urllib.request.urlopen(req, timeout=timeout, context=context) as resp:
            return json.loads(resp.read() or b"{}")

    def log_tail(self, lines: int = 40) -> str:
        for path in (self.console_log, self.logs_dir / f"e5plugin-{self.name}.log"):
            if path.is_file():
                return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return "(no log written)"

    def state_file(self) -> Path:
        return self.workdir / "node.json"

    def save_state(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        state = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(self).items()}
        self.state_file().write_text(json.dumps(state, indent=2))

    @classmethod
    def load_state(cls, workdir: Path) -> Node | None:
        path = Path(workdir) / "node.json"
        if not path.is_file():
            return None
        state = json.loads(path.read_text())
        for key in ("home", "java_home", "workdir", "ca_certs"):
            if state.get(key):
                state[key] = Path(state[key])
        return cls(**state)
