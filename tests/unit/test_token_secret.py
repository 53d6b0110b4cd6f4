"""Where the reply-token secret comes from: a systemd credential first, at least 32 bytes,
and the database's random secret only where allowed (with a loud warning)."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from mailbot import config as config_mod
from mailbot.errors import ConfigError
from mailbot.store import Store
from mailbot.worker import token_secret

STRONG = "s" * 40


def conversation(**values: object) -> config_mod.ConversationConfig:
    return config_mod.ConversationConfig(**values)  # type: ignore[arg-type]


def test_short_reply_token_secret_is_refused_naming_the_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A secret under 32 bytes stops start-up with an error naming the config key."""
    monkeypatch.setenv("MB_TEST_TOKEN", "short")
    with pytest.raises(ConfigError, match=r"conversation\.token_secret_env: .*5 bytes.*32"):
        config_mod.read_token_secret(conversation(token_secret_env="MB_TEST_TOKEN"))
    (tmp_path / "tok").write_text("x" * 31)
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    with pytest.raises(ConfigError, match=r"conversation\.token_secret_credential: .*31 bytes"):
        config_mod.read_token_secret(conversation(token_secret_credential="tok"))


def test_reply_token_credential_wins_over_environment(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The systemd credential is preferred to the environment variable, and one called
    `reply-token-secret` is used without being named in the config."""
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("MB_TEST_TOKEN", "e" * 40)
    (tmp_path / "named").write_text("n" * 40 + "\n")
    both = conversation(token_secret_env="MB_TEST_TOKEN", token_secret_credential="named")
    assert config_mod.read_token_secret(both) == b"n" * 40
    assert config_mod.read_token_secret(conversation(token_secret_env="MB_TEST_TOKEN")) == b"e" * 40
    assert config_mod.read_token_secret(conversation()) is None
    (tmp_path / "reply-token-secret").write_text("d" * 40)
    assert config_mod.read_token_secret(conversation()) == b"d" * 40


def test_database_token_secret_warns_or_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """No secret configured: the store's random one is used with a warning at start, or,
    with token_secret_from_store = false, start-up stops naming the key."""
    monkeypatch.delenv("CREDENTIALS_DIRECTORY", raising=False)
    store = Store.from_url(f"sqlite:///{tmp_path / 's.db'}")
    from mailbot import migrations

    migrations.upgrade(store.engine)
    try:
        cfg = config_mod.Config()
        with caplog.at_level(logging.WARNING, logger="mailbot.worker"):
            secret = token_secret(cfg, store)
        assert len(secret) == 32
        assert any("kept in the database" in r.getMessage() for r in caplog.records)
        strict = cfg.model_copy(update={"conversation": conversation(token_secret_from_store=False)})
        with pytest.raises(ConfigError, match=r"conversation\.token_secret_from_store"):
            token_secret(strict, store)
        caplog.clear()
        monkeypatch.setenv("MB_TEST_TOKEN", STRONG)
        given = cfg.model_copy(update={"conversation": conversation(token_secret_env="MB_TEST_TOKEN")})
        with caplog.at_level(logging.WARNING, logger="mailbot.worker"):
            assert token_secret(given, store) == STRONG.encode()
        assert not caplog.records
    finally:
        store.close()
