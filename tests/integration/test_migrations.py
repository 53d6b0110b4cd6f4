"""Alembic migrations create exactly the schema the models describe, on both engines."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import inspect as sa_inspect

from mailbot import migrations
from mailbot.store import Base, Store


def test_migrated_schema_matches_models(store: Store) -> None:
    """After `upgrade`, autogenerate finds nothing to change (no model left unmigrated)."""
    with store.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), Base.metadata)
    assert diff == []


def test_upgrade_is_idempotent(store: Store) -> None:
    """Running the upgrade again (every start does) changes nothing; the migrations form one
    line (get_current_head raises on two heads, as two branches adding one each would make)."""
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(migrations.alembic_config(store.engine)).get_current_head()
    before = migrations.current(store.engine)
    migrations.upgrade(store.engine)
    assert migrations.current(store.engine) == before == head


def test_a_database_at_head_is_recognised_without_alembic(store_url: str) -> None:
    """The numbered file names give Alembic's head; a new database is not at it, an
    upgraded one is, and one left at an older revision is not (it gets migrated)."""
    from alembic.script import ScriptDirectory

    s = Store.from_url(store_url)
    try:
        assert migrations.numbered_head() == ScriptDirectory(str(migrations.HERE)).get_current_head()
        assert not migrations.at_head(s.engine)
        migrations.upgrade(s.engine, "0011")
        assert not migrations.at_head(s.engine)
        migrations.upgrade(s.engine)
        assert migrations.at_head(s.engine)
        assert migrations.current(s.engine) == migrations.numbered_head()
    finally:
        s.close()


def test_0009_renames_staff_command_events(store_url: str) -> None:
    """Events recorded by staff commands before 0009 (close, wait, assign) get the CLI's
    names; other events stay as they are."""
    from sqlalchemy import text

    s = Store.from_url(store_url)
    try:
        migrations.upgrade(s.engine, "0008")
        with s.engine.begin() as c:
            c.execute(text(
                "INSERT INTO tickets (id, number, year, seq, customer_email, customer_name, "
                "subject, priority, state, language, opened_at, deadline, out_seq) VALUES "
                "(1, 'T-2026-000001', 2026, 1, 'a@b.cz', '', 's', 'normal', 'closed', 'cs', "
                "'2026-11-02 09:00:00', '2026-11-05 09:00:00', 0)"))
            for i, kind in enumerate(("opened", "assign", "wait", "close", "closed", "note")):
                c.execute(text("INSERT INTO ticket_events (id, ticket_id, kind, author, "
                               "created_at) VALUES (:i, 1, :k, '', '2026-11-02 10:00:00')"),
                          {"i": i + 1, "k": kind})
        migrations.upgrade(s.engine)
        with s.engine.connect() as c:
            kinds = [k for (k,) in c.execute(text("SELECT kind FROM ticket_events ORDER BY id"))]
    finally:
        s.close()
    assert kinds == ["opened", "assigned", "waiting", "closed", "closed", "note"]


def test_0010_moves_the_bounce_kind_out_of_last_error(store_url: str) -> None:
    """Bounced rows get `bounce`: "soft" where 0009's marker said so, else "hard" (bounces
    from before kinds were told apart counted as hard); other rows none."""
    from sqlalchemy import text

    s = Store.from_url(store_url)
    try:
        migrations.upgrade(s.engine, "0009")
        with s.engine.begin() as c:
            for i, (state, error) in enumerate((("bounced", "soft bounce"),
                                                ("bounced", "hard bounce"),
                                                ("bounced", None), ("sent", None))):
                c.execute(text(
                    "INSERT INTO outbox (id, purpose, message_id, kind, mail_from, rcpt_to, raw, "
                    "state, attempts, next_attempt_at, created_at, last_error) VALUES "
                    "(:i, :p, :m, 'news', 'a@b.cz', '[\"c@d.cz\"]', :raw, :state, 1, "
                    "'2026-11-02 09:00:00', '2026-11-02 09:00:00', :error)"),
                    {"i": i + 1, "p": f"news:x:{i}", "m": f"<{i}@b.cz>", "raw": b"x",
                     "state": state, "error": error})
        migrations.upgrade(s.engine)
        with s.engine.connect() as c:
            kinds = [k for (k,) in c.execute(text("SELECT bounce FROM outbox ORDER BY id"))]
    finally:
        s.close()
    assert kinds == ["soft", "hard", "hard", None]


def test_0014_moves_the_raw_bytes_into_their_own_table(store_url: str) -> None:
    """Every message keeps its raw bytes, now read from inbound_raw (a row referred to by a
    decision included); one whose bytes retention dropped (b"") gets no row and reads b""."""
    from sqlalchemy import text

    s = Store.from_url(store_url)
    try:
        migrations.upgrade(s.engine, "0013")
        with s.engine.begin() as c:
            for i, raw in enumerate((b"Subject: one\r\n\r\nbody", b"", b"Subject: three\r\n\r\n")):
                c.execute(text(
                    "INSERT INTO inbound_messages (id, sha256, origin, size, raw, received_at, "
                    "state, attempts) VALUES (:i, :sha, 'test', :size, :raw, "
                    "'2026-11-02 09:00:00', 'decided', 1)"),
                    {"i": i + 1, "sha": f"{i:064d}", "size": len(raw), "raw": raw})
            c.execute(text(
                "INSERT INTO decisions (id, inbound_id, kind, missing, language, reasons, "
                "decided_at) VALUES (1, 1, 'new_request', '[]', 'cs', '[]', "
                "'2026-11-02 09:00:00')"))
        migrations.upgrade(s.engine)
        raws = [r.raw if (r := s.get_inbound(i)) else None for i in (1, 2, 3)]
        with s.engine.connect() as c:
            kept = [i for (i,) in c.execute(text("SELECT inbound_id FROM inbound_raw "
                                                 "ORDER BY inbound_id"))]
            columns = {col["name"] for col in sa_inspect(c).get_columns("inbound_messages")}
    finally:
        s.close()
    assert raws == [b"Subject: one\r\n\r\nbody", b"", b"Subject: three\r\n\r\n"]
    assert kept == [1, 3]
    assert "raw" not in columns
