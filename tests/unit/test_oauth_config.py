"""[imap]/[outbound] auth = "oauth2" settings: each missing or contradictory key stops start-up
with one line naming it; secrets are read from the environment or systemd credentials."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest

from mailbot import config as config_mod
from mailbot.errors import ConfigError
from mailbot.oauth import build_token_source

IMAP = """
[[imap]]
host = "outlook.office365.com"
username = "podpora@contoso.example"
auth = "oauth2"
"""


def load(tmp_path: Path, text: str) -> config_mod.Config:
    path = tmp_path / "mailbot.toml"
    path.write_text(text)
    return config_mod.load(path)


@pytest.mark.parametrize(("toml", "expected"), [
    (IMAP, 'imap.0: auth = "oauth2" needs an oauth2 section'),
    (IMAP + '[imap.oauth2]\nprovider = "microsoft"\nclient_id = "c"\n'
     'client_secret_env = "S"\n',
     'imap.0.oauth2: tenant_id is required for provider = "microsoft"'),
    (IMAP + '[imap.oauth2]\nprovider = "microsoft"\ntenant_id = "t"\nclient_id = "c"\n',
     "imap.0.oauth2: client_secret_env or client_secret_credential is required"),
    (IMAP + '[imap.oauth2]\nprovider = "google"\n',
     "imap.0.oauth2: provider = \"google\" takes either service_account_key_env/_credential "
     "or refresh_token_env/_credential (got neither)"),
    (IMAP + '[imap.oauth2]\nprovider = "google"\nrefresh_token_env = "R"\n',
     'imap.0.oauth2: client_id is required for provider = "google" with a refresh token'),
    (IMAP + '[imap.oauth2]\nprovider = "command"\n',
     'imap.0.oauth2: command is required for provider = "command"'),
    (IMAP + '[imap.oauth2]\nprovider = "okta"\n', "imap.0.oauth2.provider: Input should be"),
    (IMAP + '[imap.oauth2]\nprovider = "command"\ncommand = ["x"]\nmechanism = "plain"\n',
     "imap.0.oauth2.mechanism: Input should be 'xoauth2' or 'oauthbearer'"),
    (IMAP + '[imap.oauth2]\nprovider = "command"\ncommand = ["x"]\ntenant = "t"\n',
     "imap.0.oauth2.tenant: unknown key"),
    (IMAP + 'password_env = "P"\n[imap.oauth2]\nprovider = "command"\ncommand = ["x"]\n',
     'imap.0: auth = "oauth2" takes no password_env/password_credential'),
    ('[[imap]]\nhost = "h"\nusername = "u"\n[imap.oauth2]\nprovider = "command"\n'
     'command = ["x"]\n', 'imap.0: an oauth2 section needs auth = "oauth2"'),
    ('[outbound]\nmode = "smtp"\nauth = "oauth2"\n[outbound.oauth2]\nprovider = "command"\n'
     'command = ["x"]\n', 'outbound: auth = "oauth2" needs username'),
])
def test_bad_oauth2_setting_is_named(tmp_path: Path, toml: str, expected: str) -> None:
    with pytest.raises(ConfigError) as info:
        load(tmp_path, toml)
    assert expected in str(info.value)
    assert "\n" not in str(info.value)


def test_provider_default_scopes(tmp_path: Path) -> None:
    cfg = load(tmp_path, IMAP + '[imap.oauth2]\nprovider = "microsoft"\ntenant_id = "t"\n'
               'client_id = "c"\nclient_secret_credential = "oauth2-secret"\n'
               '[outbound]\nmode = "smtp"\nusername = "podpora@vendor.example"\nauth = "oauth2"\n'
               '[outbound.oauth2]\nprovider = "google"\nservice_account_key_env = "K"\n')
    assert cfg.imap[0].oauth2 is not None and cfg.outbound.oauth2 is not None
    assert cfg.imap[0].oauth2.effective_scopes == ("https://outlook.office365.com/.default",)
    assert cfg.outbound.oauth2.effective_scopes == ("https://mail.google.com/",)


def test_shipped_example_parses_when_uncommented() -> None:
    """The commented [imap.oauth2] example in config/mailbot.toml is valid as written."""
    text = (config_mod.ROOT / "config" / "mailbot.toml").read_text()
    block = text[text.index("# [[imap]]"):text.index("\n[outbound]")]
    lines = [line[2:] for line in block.splitlines()
             if re.match(r"# (\[|[a-z_]+ = )", line) and not line.startswith("# password_env")]
    data = tomllib.loads("\n".join(lines))
    cfg = config_mod.parse(data)
    assert cfg.imap[0].oauth2 is not None and cfg.imap[0].oauth2.provider == "microsoft"


def test_client_secret_from_systemd_credential(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "oauth2-secret").write_text("s3cret\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    cfg = config_mod.OAuth2Config(provider="microsoft", tenant_id="t", client_id="c",
                                  client_secret_credential="oauth2-secret")
    source = build_token_source(cfg, "podpora@contoso.example", "imap")
    assert source._provider._secret == "s3cret"  # type: ignore[attr-defined]


def test_missing_secret_is_named_at_start(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MB_NO_SUCH_SECRET", raising=False)
    cfg = config_mod.OAuth2Config(provider="google", refresh_token_env="MB_NO_SUCH_SECRET",
                                  client_id="c", client_secret_env="MB_NO_SUCH_SECRET")
    with pytest.raises(ConfigError, match="MB_NO_SUCH_SECRET \\(named by refresh_token_env\\)"):
        build_token_source(cfg, "u@vendor.example", "imap")


def test_service_account_key_that_is_no_key_is_refused_without_quoting_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("MB_SA_KEY", '{"type": "service_account", "private_key": "sekret-pem"}')
    cfg = config_mod.OAuth2Config(provider="google", service_account_key_env="MB_SA_KEY")
    with pytest.raises(ConfigError, match="not a service account key") as info:
        build_token_source(cfg, "u@vendor.example", "imap")
    assert "sekret-pem" not in str(info.value)
