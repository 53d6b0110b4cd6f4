"""Composition root: builds the store, worker and (later) intakes and sender from a Config.

This is the only place that wires objects together; everything else receives what it needs
as arguments.
"""

from __future__ import annotations

import logging

from mailbot import migrations
from mailbot.config import Config
from mailbot.store import Store

log = logging.getLogger(__name__)


def open_store(config: Config, *, migrate: bool = True) -> Store:
    """The configured store, with the schema brought up to date unless `migrate` is False."""
    store = Store.from_url(
        config.database_url, echo=config.store.echo, pool_size=config.store.pool_size
    )
    if migrate:
        migrations.upgrade(store.engine)
    return store
