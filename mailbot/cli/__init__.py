"""The `mailbot` command line (click; rich for tables). The only place that exits.

Every command takes `--config PATH` before or after its name (`mailbot --config X status` or
`mailbot status --config X`; the latter wins), else $MAILBOT_CONFIG, else `config/mailbot.toml`.

The `cli` group and the helpers several commands share (consoles, `table_`, `config_option`,
`load_config`, `parse_now`) are in `base.py`; the commands, by area:

- `daemon.py`: `run`, `check-config`, `db upgrade`
- `registry.py`: `licenses import`, `contacts import|list|suppressed`
- `news.py`: `news preview|send|schedule|scheduled|create|status`
- `replay.py`: `replay`
- `queues.py`: `outbox list|show|retry`, `quarantine list|show|retry`, `status`
- `tickets.py`: `tickets list|show|attachments|close|assign`
- `evaluate.py`: `eval DIR` (score the rules against labelled mail)
- `sla.py`: `sla report` (table, `--csv`, `--json`, `--html` page with charts)
- `purge.py`: `purge [--dry-run] [--json]` (retention)

Importing this package imports those modules, which registers their commands on `cli`.
"""

from __future__ import annotations

import sys

# Importing the command modules registers their commands on `cli`.
from mailbot.cli import (  # noqa: F401
    daemon, evaluate, news, purge, queues, registry, replay, sla, tickets,
)
from mailbot.cli.base import cli, err_console
from mailbot.errors import MailbotError

__all__ = ["cli", "main"]


def main() -> None:
    try:
        cli(standalone_mode=True)
    except MailbotError as exc:
        err_console.print(f"error: {exc}", highlight=False)
        sys.exit(1)
