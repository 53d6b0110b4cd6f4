"""Command-line conventions: `--config` before the command, after it, or from $MAILBOT_CONFIG."""

from __future__ import annotations

from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from mailbot.cli import cli
from tests.integration.test_replay import NOW, write_config


def leaf_commands(group: click.Group, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], click.Command]]:
    """Every runnable command under `group`, with its path of names."""
    found: list[tuple[tuple[str, ...], click.Command]] = []
    for name, command in sorted(group.commands.items()):
        if isinstance(command, click.Group):
            found += leaf_commands(command, (*path, name))
        else:
            found.append(((*path, name), command))
    return found


# Options a command needs besides its required ones to get as far as reading its config.
EXTRA_ARGS = {("news", "schedule"): ["--at", "2027-01-04T10:00:00+01:00"]}


def placeholder_args(command: click.Command, tmp_path: Path) -> list[str]:
    """Values for a command's arguments and required options: an existing file for a path."""
    dummy = tmp_path / "dummy.csv"
    dummy.write_text("x\n", encoding="utf-8")
    args: list[str] = []
    for param in command.params:
        if isinstance(param, click.Argument):
            if isinstance(param.type, click.Path):
                args.append(str(dummy) if param.type.file_okay else str(tmp_path))
            else:
                args.append("T-2026-000001" if param.name == "number" else "1")
        elif isinstance(param, click.Option) and param.required:
            args += [param.opts[0], "1"]
    return args


COMMANDS = leaf_commands(cli)


def test_the_command_list_is_complete() -> None:
    """The walk finds the commands the README documents (a renamed group would hide here)."""
    names = {" ".join(path) for path, _ in COMMANDS}
    assert {"run", "status", "replay", "tickets list", "news send", "sla report",
            "outbox retry", "quarantine list", "licenses import"} <= names


@pytest.mark.parametrize("path", [p for p, _ in COMMANDS], ids=[" ".join(p) for p, _ in COMMANDS])
def test_config_before_the_command_is_used_by_every_command(path: tuple[str, ...], tmp_path: Path) -> None:
    """`mailbot --config BAD <command>` reads BAD: the error names its bad key."""
    command = dict(COMMANDS)[path]
    bad = tmp_path / "bad.toml"
    bad.write_text("[listener]\nport = 'high'\n", encoding="utf-8")
    args = [*placeholder_args(command, tmp_path), *EXTRA_ARGS.get(path, [])]
    result = CliRunner().invoke(cli, ["--config", str(bad), *path, *args])
    assert result.exit_code != 0
    assert "listener.port" in result.output, result.output


def test_status_with_config_before_after_and_from_environment(tmp_path: Path) -> None:
    """The three spellings reach the same store (one decided mail in it, unlike the default
    store); a command's own --config wins over the others."""
    good = str(write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}"))
    mail = tmp_path / "1.eml"
    mail.write_bytes(b"From: jana@novak-syn.cz\r\nSubject: Tisk\r\nMessage-ID: <c1@x>\r\n\r\n"
                     b"Nejde vytisknout sestavu, chyba 17. Licence: 5188-0264\r\n")
    assert CliRunner().invoke(cli, ["--config", good, "replay", str(mail), "--now", NOW]).exit_code == 0
    bad = tmp_path / "bad.toml"
    bad.write_text("[listener]\nport = 'high'\n", encoding="utf-8")
    runner = CliRunner()
    for args, env in (
        (["--config", good, "status"], {}),
        (["status", "--config", good], {}),
        (["status"], {"MAILBOT_CONFIG": good}),
        (["--config", str(bad), "status", "--config", good], {}),
        (["--config", good, "status"], {"MAILBOT_CONFIG": str(bad)}),
    ):
        result = runner.invoke(cli, args, env=env)
        assert result.exit_code == 0, (args, env, result.output)
        assert "decided=" in result.output, result.output
