"""Config loading: the default file is valid and every kind of mistake names its key."""

from __future__ import annotations

from pathlib import Path

import pytest

from mailbot import config as config_mod
from mailbot.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "mailbot.toml"
    p.write_text(text, encoding="utf-8")
    return p


def test_default_config_is_valid() -> None:
    """The shipped config/mailbot.toml loads and describes the example vendor."""
    cfg = config_mod.load(ROOT / "config" / "mailbot.toml")
    assert cfg.mailbox.support_address == "podpora@estelar.example"
    assert cfg.mailbox.staff_domains == ("estelar.example",)
    assert cfg.database_url.startswith("sqlite:////")
    assert cfg.database_url.endswith("/var/mailbot.db")


@pytest.mark.parametrize(
    ("toml", "expected"),
    [
        ("[store]\nurll = 'x'\n", "store.urll: unknown key"),
        ("[mailbox]\nsupport_address = 'not-an-address'\n", "mailbox.support_address"),
        ("[calendar]\nopens = '25:00'\n", "calendar.opens: expected HH:MM"),
        ("[calendar]\nticket_hours = 'many'\n", "calendar.ticket_hours"),
        ("[calendar]\ntimezone = 'Mars/Olympus'\n", "calendar.timezone: unknown time zone"),
        ("[news]\nlist_id = 'novinky firmy'\n", "news.list_id: expected a list id"),
        ("[news]\nlist_id = 'novinky.estelar.example>'\n", "news.list_id: expected a list id"),
        ("[news]\nlist_id = 'novinky.čísla.example'\n", "news.list_id: expected a list id"),
        ("[outbound]\nmode = 'pigeon'\n", "outbound.mode"),
        ("[classify]\nlicense_pattern = '(unclosed'\n", "classify.license_pattern"),
        ("[bogus]\n", "bogus: unknown key"),
    ],
)
def test_bad_key_is_named(tmp_path: Path, toml: str, expected: str) -> None:
    """A bad key, type or value stops loading with one line that names it."""
    with pytest.raises(ConfigError) as info:
        config_mod.load(write(tmp_path, toml))
    message = str(info.value)
    assert expected in message
    assert "\n" not in message


def test_invalid_toml_is_reported(tmp_path: Path) -> None:
    """A syntax error is reported as such, with the file name."""
    with pytest.raises(ConfigError, match="not valid TOML"):
        config_mod.load(write(tmp_path, "[store\n"))


def test_missing_file_is_reported(tmp_path: Path) -> None:
    """A missing file is a ConfigError, not a traceback."""
    with pytest.raises(ConfigError, match="cannot read config"):
        config_mod.load(tmp_path / "absent.toml")


def test_relative_paths_anchor_at_config_dir(tmp_path: Path) -> None:
    """A relative SQLite path is taken from the directory of a config outside the repo."""
    cfg = config_mod.load(write(tmp_path, "[store]\nurl = 'sqlite:///var/x.db'\n"))
    assert cfg.database_url == f"sqlite:///{tmp_path / 'var' / 'x.db'}"


def test_secret_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords come from a named environment variable; a missing one is a clear error."""
    monkeypatch.setenv("MB_TEST_PW", "s3cret")
    assert config_mod.read_secret("MB_TEST_PW", None) == "s3cret"
    monkeypatch.delenv("MB_TEST_PW")
    with pytest.raises(ConfigError, match="MB_TEST_PW"):
        config_mod.read_secret("MB_TEST_PW", None)


def test_secret_from_credentials_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A systemd credential file is read from $CREDENTIALS_DIRECTORY."""
    (tmp_path / "smtp").write_text("pw-from-cred\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    assert config_mod.read_secret(None, "smtp") == "pw-from-cred"
