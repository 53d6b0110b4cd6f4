"""Operator commands against a real store: status, outbox and quarantine tools."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from mailbot.cli import cli
from tests.integration.test_replay import NOW, write_config


def invoke(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.output


def test_status_outbox_and_quarantine(tmp_path: Path) -> None:
    """After a replay, status counts the queues, outbox list/show show the reply, and a
    quarantined message can be listed, shown and retried."""
    cfg = str(write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}"))
    mails = tmp_path / "mails"
    mails.mkdir()
    (mails / "1.eml").write_bytes(
        b"From: jana@novak-syn.cz\r\nSubject: Tisk sestavy\r\nMessage-ID: <c1@x>\r\n\r\n"
        b"Dobry den, nejde vytisknout mesicni sestavu dochazky, program hlasi chybu 17.\r\n"
        b"Licence: 5188-0264\r\n")
    invoke("replay", str(mails), "--now", NOW, "--config", cfg)
    status = invoke("status", "--config", cfg)
    assert "decided=1" in status and "queued=1" in status and "oldest unsent reply" in status
    listing = invoke("outbox", "list", "--config", cfg)
    assert "jana@novak-syn.cz" in listing
    shown = invoke("outbox", "show", "1", "--config", cfg)
    assert "Auto-Submitted: auto-replied" in shown
    assert invoke("outbox", "retry", "1", "--config", cfg).startswith("requeued 1")
    assert "unknown" not in invoke("quarantine", "list", "--config", cfg)


def test_check_config_names_bad_key(tmp_path: Path) -> None:
    """check-config exits non-zero with the key named."""
    bad = tmp_path / "bad.toml"
    bad.write_text("[listener]\nport = 'high'\n")
    result = CliRunner().invoke(cli, ["check-config", "--config", str(bad)])
    assert result.exit_code != 0 and "listener.port" in result.output
