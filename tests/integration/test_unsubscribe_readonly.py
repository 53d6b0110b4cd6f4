"""The unsubscribe GET only reads: it answers while another connection holds SQLite's write
lock (it used to begin IMMEDIATE and wait for the lock like a writer)."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

from mailbot import migrations
from mailbot.store import Store, utcnow
from mailbot.unsubscribe_http import UnsubscribeServer

from tests.fixtures.http import http_get

TOKEN = "0123456789abcdef0123"


def get(port: int, path: str) -> tuple[int, bytes]:
    return http_get(port, path, timeout=30)


def test_unsubscribe_get_answers_under_a_held_write_lock(tmp_path: Path) -> None:
    db = tmp_path / "store.db"
    store = Store.from_url(f"sqlite:///{db}")
    migrations.upgrade(store.engine)
    with store.transaction() as tx:
        tx.add_news_token(TOKEN, "grant@firma.cz", "v53", utcnow())
    writer = sqlite3.connect(db, isolation_level=None, timeout=1)
    writer.execute("BEGIN IMMEDIATE")  # another writer holds the lock until we roll back
    writer.execute("UPDATE news_tokens SET campaign = 'held' WHERE token = ?", (TOKEN,))

    async def scenario() -> tuple[tuple[int, bytes], tuple[int, bytes]]:
        server = UnsubscribeServer(store, "127.0.0.1", 0, timeout=20)
        await server.start()
        try:
            assert server.port is not None
            known = await asyncio.to_thread(get, server.port, f"/unsubscribe/{TOKEN}")
            unknown = await asyncio.to_thread(get, server.port, "/unsubscribe/" + "f" * 20)
            return known, unknown
        finally:
            await server.close()

    try:
        (status, body), (unknown_status, _) = asyncio.run(scenario())
    finally:
        writer.execute("ROLLBACK")
        writer.close()
        store.close()
    assert status == 200, body[:200]
    assert b'method="post"' in body.lower() and TOKEN.encode() in body
    assert unknown_status == 404
