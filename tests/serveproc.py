"""`vesalius serve` as a real subprocess: its ports from the log, its memory from /proc."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Served:
    process: subprocess.Popen[str]
    dicom_port: int = 0
    http_port: int = 0
    lines: list[str] = field(default_factory=list)

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def dicomweb(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/dicom-web"

    def status_kib(self, name: str) -> int:
        """A memory figure of the process from /proc/<pid>/status (VmRSS, VmHWM...), in KiB."""
        text = Path(f"/proc/{self.pid}/status").read_text()
        match = re.search(rf"^{name}:\s+(\d+) kB", text, re.MULTILINE)
        assert match, text
        return int(match.group(1))

    def reset_peak(self) -> int:
        """Reset the process's peak RSS (VmHWM) to its current RSS and return that, in KiB.

        The peak of the start (imports, migrations) is often above the idle RSS, so a peak
        measured from the start says nothing about one request: measure from here instead.
        """
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        return self.status_kib("VmHWM")

    def kill(self) -> None:
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(30)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(60)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode


def serve(env: dict[str, str], timeout: float = 90) -> Served:
    """Start `vesalius serve` with *env* (ports 0) and wait until both ports are logged."""
    process = subprocess.Popen(
        [sys.executable, "-m", "vesalius", "serve"],
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    served = Served(process)
    ready = threading.Event()

    def drain() -> None:  # keep reading, or a full pipe would block the server's logging
        assert process.stdout is not None
        for line in process.stdout:
            served.lines.append(line)
            if match := re.search(r"(dicom|http)_port=(\d+)", line):
                setattr(served, f"{match.group(1)}_port", int(match.group(2)))
                if served.dicom_port and served.http_port:
                    ready.set()
        ready.set()

    threading.Thread(target=drain, daemon=True).start()
    deadline = time.monotonic() + timeout
    while not ready.wait(0.1):
        if time.monotonic() > deadline:
            break
    if not (served.dicom_port and served.http_port):
        served.stop()
        raise AssertionError("vesalius serve did not start:\n" + "".join(served.lines))
    return served


def api_token(env: dict[str, str]) -> str:
    """An administrator's API token in the archive *env* points to (created, migrated, closed)."""
    from authhelp import make_user
    from vesalius.config import load_settings
    from vesalius.container import build

    container = build(load_settings(env=env), migrate=True)
    try:
        return make_user(container)
    finally:
        container.close()
