"""`mailbot outbox`, `mailbot quarantine` and `mailbot status`: the queues and their depths."""

from __future__ import annotations

from pathlib import Path

import click

from mailbot.cli.base import cli, config_option, console, load_config, store_for, table_


@cli.group()
def outbox() -> None:
    """Outgoing replies."""


@outbox.command("list")
@click.option("--state", default=None, help="queued, sent, dead, bounced")
@click.option("--limit", default=50, show_default=True)
@config_option
def outbox_list(state: str | None, limit: int, config_path: Path | None) -> None:
    """List outbox rows, newest first."""
    store = store_for(load_config(config_path), readonly=True)
    table = table_("id", "state", "kind", "to", "attempts", "next attempt", "last error")
    for r in store.list_outbox(state, limit):
        table.add_row(str(r.id), r.state, r.kind, ", ".join(r.rcpt_to), str(r.attempts),
                      r.next_attempt_at.isoformat(timespec="seconds"), (r.last_error or "")[:60])
    console.print(table)


@outbox.command("show")
@click.argument("outbox_id", type=int)
@config_option
def outbox_show(outbox_id: int, config_path: Path | None) -> None:
    """Print one outbox message with its delivery state."""
    store = store_for(load_config(config_path), readonly=True)
    r = store.get_outbox(outbox_id)
    if r is None:
        raise click.ClickException(f"no outbox message {outbox_id}")
    click.echo(f"# state={r.state} attempts={r.attempts} reply={r.server_reply!r} "
               f"error={r.last_error!r}")
    click.echo(r.raw.decode("utf-8", "replace"))


@outbox.command("retry")
@click.argument("outbox_ids", type=int, nargs=-1, required=True)
@config_option
def outbox_retry(outbox_ids: tuple[int, ...], config_path: Path | None) -> None:
    """Queue dead messages again, due now."""
    n = store_for(load_config(config_path)).retry_outbox(outbox_ids)
    click.echo(f"requeued {n} message(s)")


@cli.group()
def quarantine() -> None:
    """Messages that could not be parsed or decided."""


@quarantine.command("list")
@click.option("--limit", default=50, show_default=True)
@config_option
def quarantine_list(limit: int, config_path: Path | None) -> None:
    """List quarantined messages with the reason."""
    store = store_for(load_config(config_path), readonly=True)
    table = table_("id", "received", "from", "origin", "error")
    for r in store.list_inbound("quarantined", limit):
        last = (r.error or "").strip().splitlines()[-1:] or [""]
        table.add_row(str(r.id), r.received_at.isoformat(timespec="seconds"), r.sender or "",
                      r.origin, last[0][:80])
    console.print(table)


@quarantine.command("show")
@click.argument("inbound_id", type=int)
@click.option("--raw", is_flag=True, help="Print the raw message instead of the error.")
@config_option
def quarantine_show(inbound_id: int, raw: bool, config_path: Path | None) -> None:
    """Print a quarantined message's traceback (or raw bytes)."""
    row = store_for(load_config(config_path), readonly=True).get_inbound(inbound_id)
    if row is None or row.state != "quarantined":
        raise click.ClickException(f"inbound message {inbound_id} is not quarantined")
    click.echo(row.raw.decode("utf-8", "replace") if raw else (row.error or ""))


@quarantine.command("retry")
@click.argument("inbound_ids", type=int, nargs=-1, required=True)
@config_option
def quarantine_retry(inbound_ids: tuple[int, ...], config_path: Path | None) -> None:
    """Decide quarantined messages again (after a fix)."""
    from mailbot.worker import Worker

    cfg = load_config(config_path)
    store = store_for(cfg)
    n = store.requeue_inbound(inbound_ids)
    worker = Worker.from_config(cfg, store)
    try:
        while worker.run_once(50):
            pass
    finally:
        worker.close()
    click.echo(f"requeued {n} message(s)")
    for inbound_id in inbound_ids:
        rec = store.decision_for(inbound_id)
        click.echo(f"  {inbound_id}: {rec.kind if rec else 'still quarantined'}")


@cli.command()
@config_option
def status(config_path: Path | None) -> None:
    """Queue depths and the oldest unsent reply."""
    store = store_for(load_config(config_path), readonly=True)
    inbound = store.count_inbound()
    out = store.count_outbox()
    click.echo("inbound:  " + (", ".join(f"{k}={v}" for k, v in sorted(inbound.items())) or "empty"))
    click.echo("outbox:   " + (", ".join(f"{k}={v}" for k, v in sorted(out.items())) or "empty"))
    oldest = store.oldest_unsent()
    if oldest is not None:
        click.echo(f"oldest unsent reply: {oldest.isoformat(timespec='seconds')}")
    dead = out.get("dead", 0)
    if dead:
        click.echo(f"dead replies: {dead} (mailbot outbox list --state dead)")
    for cp in store.imap_checkpoints():
        line = (f"intake {cp.mailbox}: uidvalidity={cp.uidvalidity} last_uid={cp.last_uid} "
                f"updated {cp.updated_at.isoformat(timespec='seconds')}")
        if cp.last_error:
            when = cp.last_error_at.isoformat(timespec="seconds") if cp.last_error_at else "?"
            line += f"; last error {when}: {cp.last_error[:120]}"
        click.echo(line)
