"""`mailbot run` as subprocesses for the crash and cluster tests (and bench/news_throughput.py):
config files, start/stop/kill, waiting with a budget, reading the store from outside."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from sqlalchemy import create_engine, text

ROOT = Path(__file__).resolve().parents[2]


def daemon_config(path: Path, head: str) -> Path:
    """Write `head` (root, store, intake, outbound … as TOML) followed by the default
    config's [classify] rules to `path`."""
    default = (ROOT / "config" / "mailbot.toml").read_text(encoding="utf-8")
    path.write_text(f'root = "{ROOT}"\n' + head + default[default.index("\n[classify]"):],
                    encoding="utf-8")
    return path


def listening(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


class DaemonProcess:
    """`python -m mailbot run` as a child process that can be killed and started again."""

    def __init__(self, config: Path, log: Path) -> None:
        self.config = config
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, port: int | None = None) -> subprocess.Popen[bytes]:
        """Start the daemon; with `port`, return once its listener answers."""
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "mailbot", "run", "--config", str(self.config)],
                cwd=ROOT, env=dict(os.environ, MAILBOT_LOG_LEVEL="WARNING"),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log,
            )
        if port is not None:
            wait_until(lambda: listening(port), 30, f"the daemon listens on {port}", self)
        return self.proc

    def stop(self, sig: int = signal.SIGTERM) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        return self.proc.wait(timeout=30)

    def kill_if_running(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def log_tail(self, lines: int = 30) -> str:
        text_ = self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""
        return "\n".join(text_.splitlines()[-lines:])


def wait_until(predicate: Callable[[], bool], timeout: float, what: str,
               daemon: DaemonProcess, poll: float = 0.05) -> None:
    """Poll `predicate` until true; fail after `timeout` s or when `daemon` exits."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout:.0f} s\n{daemon.log_tail()}")
        if daemon.proc is not None and daemon.proc.poll() is not None:
            raise AssertionError(f"the daemon exited ({daemon.proc.returncode}) while "
                                 f"waiting until {what}\n{daemon.log_tail()}")
        time.sleep(poll)


def db_rows(url: str | Path, query: str) -> list[tuple[object, ...]]:
    """The rows of `query` on the store at `url` (a SQLite file may be given as a path)."""
    engine = create_engine(f"sqlite:///{url}" if isinstance(url, Path) else url)
    try:
        with engine.connect() as c:
            return [tuple(r) for r in c.execute(text(query))]
    finally:
        engine.dispose()


def db_count(url: str | Path, query: str) -> int:
    """The single number `query` selects."""
    return int(db_rows(url, query)[0][0] or 0)  # type: ignore[call-overload]
