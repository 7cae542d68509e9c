"""Run real `smsbridge` processes against the fakes, for tests that need whole processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import IO

import httpx

SMSBRIDGE = str(Path(sys.executable).parent / "smsbridge")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class BridgeProcess:
    """One `smsbridge …` child process; its output goes to a log file for post-mortems."""

    def __init__(
        self,
        args: Sequence[str],
        env: Mapping[str, str],
        log_path: Path,
        *,
        cwd: Path | None = None,
        inherit: bool = True,
    ) -> None:
        """`cwd`: where it runs (default: here); `inherit`: whether it gets this process's
        environment under `env` (False: `env` and PATH only, as on a fresh machine)."""
        self.args = list(args)
        base = dict(os.environ) if inherit else {"PATH": os.environ.get("PATH", "/usr/bin:/bin")}
        self.env = {**base, **env}
        self.cwd = cwd
        self.log_path = log_path
        self.port: int | None = None
        if args and args[0] == "serve":
            self.port = free_port()
            self.args += ["--host", "127.0.0.1", "--port", str(self.port)]
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self._process is not None
        return self._process.pid

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 20.0) -> BridgeProcess:
        self._log = self.log_path.open("ab")
        self._process = subprocess.Popen(
            [SMSBRIDGE, *self.args],
            env=self.env,
            cwd=self.cwd,
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )
        if self.port is not None:
            self._wait_healthy(timeout)
        return self

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self._process is not None
            if self._process.poll() is not None:
                raise RuntimeError(f"smsbridge exited early:\n{self.output()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.1)
        raise TimeoutError(f"smsbridge did not become healthy:\n{self.output()}")

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self._process is not None
        if self._process.poll() is None:
            self._process.send_signal(sig)
        code = self._process.wait(timeout)
        if self._log is not None:
            self._log.close()
        return code

    def wait(self, timeout: float = 60.0) -> int:
        """Wait for a one-shot command (`migrate`) to finish by itself."""
        assert self._process is not None
        code = self._process.wait(timeout)
        if self._log is not None:
            self._log.close()
        return code

    def kill(self) -> int:
        return self.stop(signal.SIGKILL)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
