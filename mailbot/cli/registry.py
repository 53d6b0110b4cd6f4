"""`mailbot licenses` and `mailbot contacts`: importing and listing the registries."""

from __future__ import annotations

import dataclasses
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import click
from rich.markup import escape

from mailbot.cli.base import (
    cli,
    config_option,
    console,
    err_console,
    load_config,
    store_for,
    table_,
)

if TYPE_CHECKING:
    from mailbot.registry import RowError
    from mailbot.store import Store


def _upsert_and_report(csv_file: Path, config_path: Path | None,
                       upsert: Callable[[Store], int], errors: Sequence[RowError],
                       noun: str) -> None:
    """Run `upsert` on the configured store, print the bad rows and the count; exit 1 when
    any row was bad (the good ones are imported all the same)."""
    store = store_for(load_config(config_path))
    try:
        n = upsert(store)
    finally:
        store.close()
    for e in errors:
        err_console.print(f"[yellow]{csv_file}: {e}[/yellow]", highlight=False)
    click.echo(f"imported {n} {noun}, {len(errors)} bad row(s)")
    if errors:
        sys.exit(1)


def _import_command(group: click.Group) -> Callable[[Callable[..., None]], click.Command]:
    """`mailbot GROUP import CSV_FILE [--config PATH]`."""
    csv_file = click.argument(
        "csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path))

    def decorate(f: Callable[..., None]) -> click.Command:
        return group.command("import")(csv_file(config_option(f)))
    return decorate


# --- licenses ---------------------------------------------------------------------------


@cli.group()
def licenses() -> None:
    """The license registry."""


@_import_command(licenses)
def licenses_import(csv_file: Path, config_path: Path | None) -> None:
    """Upsert the registry from a CSV file (bad rows are reported and skipped)."""
    from mailbot.registry import read_license_file

    records, errors = read_license_file(csv_file)
    _upsert_and_report(csv_file, config_path, lambda store: store.upsert_licenses(records),
                       errors, "license(s)")


# --- contacts ---------------------------------------------------------------------------


@cli.group()
def contacts() -> None:
    """The contacts list: addresses per license (news, notices before support ends)."""


@_import_command(contacts)
def contacts_import(csv_file: Path, config_path: Path | None) -> None:
    """Upsert contacts from a CSV file with columns email,license,name,language."""
    from mailbot.contacts import read_contacts_file

    found, errors = read_contacts_file(csv_file)
    _upsert_and_report(csv_file, config_path, lambda store: store.upsert_contacts(found),
                       errors, "contact(s)")


@contacts.command("list")
@click.option("--license", "license_number", default=None, help="Only this license's contacts.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@config_option
def contacts_list(license_number: str | None, as_json: bool, config_path: Path | None) -> None:
    """List contacts."""
    store = store_for(load_config(config_path), readonly=True)
    try:
        found = store.contacts(license_number)
    finally:
        store.close()
    if as_json:
        for c in found:
            click.echo(json.dumps(dataclasses.asdict(c), ensure_ascii=False))
        return
    table = table_("email", "license", "name", "language")
    for c in found:
        table.add_row(escape(c.email), c.license, escape(c.name), c.language)
    console.print(table)


@contacts.command("suppressed")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per line.")
@config_option
def contacts_suppressed(as_json: bool, config_path: Path | None) -> None:
    """Addresses no mailing reaches, with the reason."""
    store = store_for(load_config(config_path), readonly=True)
    try:
        rows = store.suppressed()
    finally:
        store.close()
    if as_json:
        for address, reason, since in rows:
            click.echo(json.dumps({"address": address, "reason": reason,
                                   "since": since.isoformat()}))
        return
    table = table_("address", "reason", "since")
    for address, reason, since in rows:
        table.add_row(escape(address), reason, since.isoformat(timespec="minutes"))
    console.print(table)
