"""Real Vesalius processes on loopback for the federation tests: `vesalius serve` and the CLI,
each node with its own data folder (and database)."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

VESALIUS = [sys.executable, "-m", "vesalius"]
ADMIN_PASSWORD = "Fed-secret-pass-0042"


class Node:
    """One Vesalius: a data folder, optionally a server database, and its processes."""

    def __init__(self, root: Path, name: str, database_url: str | None = None, **env: str) -> None:
        self.name = name
        self.dir = root / name
        self.dir.mkdir(parents=True, exist_ok=True)
        self.env: dict[str, str] = {
            "VESALIUS_DATA_DIR": str(self.dir / "data"),
            "VESALIUS_DICOM_HOST": "127.0.0.1",
            "VESALIUS_DICOM_PORT": "0",
            "VESALIUS_HTTP_PORT": "0",
            "VESALIUS_ADMIN_PASSWORD": ADMIN_PASSWORD,
            "VESALIUS_LOG_LEVEL": "INFO",
            **env,
        }
        if database_url:
            self.env["VESALIUS_DATABASE_URL"] = database_url
        self.process: subprocess.Popen[str] | None = None
        self.http_port = 0
        self.dicom_port = 0
        self.log: list[str] = []
        self._token: str | None = None
        if database_url:
            self.run(["db", "upgrade"])

    # -- commands ------------------------------------------------------------------------------

    def run(
        self, args: list[str], check: bool = True, timeout: float = 180, **env: str
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            VESALIUS + args,
            env={**os.environ, "COLUMNS": "200", **self.env, **env},
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"vesalius {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n"
                f"{result.stderr}"
            )
        return result

    def popen(self, args: list[str], **env: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            VESALIUS + args,
            env={**os.environ, "COLUMNS": "200", **self.env, **env},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    # -- the server ----------------------------------------------------------------------------

    def start(self, **env: str) -> Node:
        assert self.process is None
        process = self.popen(["serve"], **env)
        self.process = process
        ports: dict[str, int] = {}
        deadline = time.monotonic() + 90
        assert process.stdout is not None
        while len(ports) < 2 and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            self.log.append(line)
            if match := re.search(r"(dicom|http)_port=(\d+)", line):
                ports[match.group(1)] = int(match.group(2))
        if len(ports) < 2:
            self.stop()
            raise AssertionError(f"{self.name} did not start:\n{''.join(self.log)}")
        self.http_port, self.dicom_port = ports["http"], ports["dicom"]
        # keep reading its output so that the pipe never fills
        import threading

        threading.Thread(target=self._drain, args=(process,), daemon=True).start()
        return self

    def _drain(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            self.log.append(line)

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is None:
            return
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)

    @property
    def url(self) -> str:
        assert self.http_port, f"{self.name} is not running"
        return f"http://127.0.0.1:{self.http_port}"

    # -- HTTP as the admin ---------------------------------------------------------------------

    @property
    def token(self) -> str:
        if self._token is None:
            self._token = self.run(["user", "token", "admin"]).stdout.strip()
        return self._token

    def get(self, path: str, **params: Any) -> Any:
        answer = httpx.get(
            self.url + path,
            params=params,
            headers={"Authorization": f"Bearer {self.token}"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        return answer.json()

    def delete(self, path: str) -> httpx.Response:
        return httpx.delete(
            self.url + path, headers={"Authorization": f"Bearer {self.token}"}, timeout=30
        )
