"""The decision children parse hostile mail: they start without the daemon's passwords and
secrets in their environment (read back from /proc/<pid>/environ and from the child itself),
and still decide and render with the reply-token secret the parent hands them."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import pytest

from mailbot import config as config_mod
from mailbot.migrations import open_store
from mailbot.config import ImapMailboxConfig
from mailbot.ingest.intake import save_raw
from mailbot.worker import Quarantined, Worker
from tests.integration.test_isolation import GOOD

SECRETS = {
    "MB_TEST_IMAP_PASS": "imap-pw-4711-not-for-children",      # named by imap password_env
    "MB_TEST_RELAY": "relay-pw-4712-not-for-children",          # named by outbound password_env
    "MB_TEST_REPLY_KEY": "k" * 40,                               # named by token_secret_env
    "SOME_SERVICE_API_TOKEN": "api-token-4713-not-for-children",  # looks like a secret
}


def child_environ() -> dict[str, str]:
    """Run in a child: its environment as Python sees it."""
    return dict(os.environ)


def test_child_environment_has_no_secrets(base_config: config_mod.Config, tmp_path: Path,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("MB_TEST_PLAIN", "stays")
    cfg = base_config.model_copy(update={
        "worker": base_config.worker.model_copy(update={"processes": 2}),
        "imap": (ImapMailboxConfig(host="127.0.0.1", username="u",
                                   password_env="MB_TEST_IMAP_PASS"),),
        "outbound": base_config.outbound.model_copy(update={"password_env": "MB_TEST_RELAY"}),
        "conversation": base_config.conversation.model_copy(
            update={"token_secret_env": "MB_TEST_REPLY_KEY"}),
    })
    store = open_store(cfg)
    save_raw(store, GOOD, "test")
    worker = Worker.from_config(cfg, store)
    try:
        [result] = worker.process_many(store.claim_inbound(10), datetime.now(UTC))
        assert not isinstance(result, Quarantined), result.error
        assert worker.pool is not None
        executor = worker.pool._pool()
        pids = list(getattr(executor, "_processes", {}))
        assert len(pids) == 2
        reported = [executor.submit(child_environ).result(timeout=60) for _ in range(4)]
        raw_environs = [Path(f"/proc/{pid}/environ").read_bytes() for pid in pids]
    finally:
        worker.close()
        store.close()
    for raw in raw_environs:
        for name, value in SECRETS.items():
            assert value.encode() not in raw and name.encode() not in raw
        assert b"CREDENTIALS_DIRECTORY" not in raw
        assert b"MB_TEST_PLAIN=stays" in raw
    for env in reported:
        assert not set(SECRETS) & set(env) and "CREDENTIALS_DIRECTORY" not in env
        assert env["MB_TEST_PLAIN"] == "stays"
    for name, value in SECRETS.items():  # the daemon itself keeps them
        assert os.environ[name] == value
