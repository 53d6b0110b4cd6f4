"""Operator commands against a real store: status, outbox and quarantine tools."""

from __future__ import annotations

from pathlib import Path

import pytest
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


# --- news: create, schedule --cron, status per run -----------------------------------------


def news_config(tmp_path: Path) -> tuple[str, Path]:
    """A config file (store, sink and attachments in tmp_path) whose news.directory is
    tmp_path/news; returns (config path, news directory)."""
    import re

    path = write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}")
    news = tmp_path / "news"
    text = re.sub(r'(?m)^(\[news\]\r?\n)directory = .*$', rf'\1directory = "{news}"',
                  path.read_text(encoding="utf-8"), count=1)
    path.write_text(text, encoding="utf-8")
    return str(path), news


def fails(*args: str) -> str:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    assert result.exit_code != 0, result.output
    return result.output


def test_toml_string_escapes() -> None:
    """Subjects with quotes, backslashes, control characters and +++ survive the front
    matter exactly."""
    import tomllib

    from mailbot.news import toml_string

    for value in ['Verze "5.3" – C:\\ACS\\bin', "tab\there\nnew line\x01", "C+++ a ++", "'"]:
        assert tomllib.loads(f"x = {toml_string(value)}")["x"] == value
        assert "+++" not in toml_string(value) and "\n" not in toml_string(value)


def test_news_create(tmp_path: Path) -> None:
    """`news create` writes a campaign that loads (escaped subject, skeleton body with the
    placeholders), refuses to overwrite it, and rejects a bad name or audience."""
    from mailbot.news import load_campaign

    cfg, news = news_config(tmp_path)
    subject = 'Novinky "ACS" v C:\\ACS +++'
    out = invoke("news", "create", "monthly", "--subject-cs", subject, "--audience", "all",
                 "--config", cfg)
    assert out.strip() == str(news / "monthly.md")
    c = load_campaign(news, "monthly")
    assert c.subjects == {"cs": subject, "en": subject} and c.audience == "all"
    assert "Dobrý den" in c.bodies["cs"] and "{{ license }}" in c.bodies["cs"]
    assert "{{ support_end }}" in c.bodies["cs"] and "{{ name }}" in c.bodies["en"]
    before = (news / "monthly.md").read_bytes()
    assert "exists already" in fails("news", "create", "monthly", "--subject-cs", "Jiný",
                                     "--config", cfg)
    assert (news / "monthly.md").read_bytes() == before
    assert "campaign name" in fails("news", "create", "Bad.Name", "--subject-cs", "X",
                                    "--config", cfg)
    assert "audience" in fails("news", "create", "vip", "--subject-cs", "X", "--audience",
                               "vip", "--config", cfg)
    assert not (news / "vip.md").exists()
    body = tmp_path / "body.md"
    body.write_text("Vážený zákazníku, **nová verze**.\n", encoding="utf-8")
    invoke("news", "create", "v54", "--subject-cs", "Nová verze", "--subject-en", "New version",
           "--body-cs", str(body), "--config", cfg)
    c = load_campaign(news, "v54")
    assert c.subjects == {"cs": "Nová verze", "en": "New version"}
    assert c.bodies == {"cs": "Vážený zákazníku, **nová verze**.",
                        "en": "Vážený zákazníku, **nová verze**."}


def test_news_schedule_cron_and_status_per_run(tmp_path: Path) -> None:
    """--cron is validated; the schedule lists with its next run; after the scheduler has run
    two occurrences, status shows each run, and NAME@… one of them."""
    import json
    from datetime import datetime
    from zoneinfo import ZoneInfo

    from mailbot import config as config_mod
    from mailbot.contacts import Contact
    from mailbot.replies.conversation import ConversationRenderer
    from mailbot.scheduler import Scheduler
    from mailbot.store import Store
    from tests.integration.test_news import LICENSES

    cfg, news = news_config(tmp_path)
    invoke("news", "create", "monthly", "--subject-cs", "Měsíčník", "--audience", "all",
           "--config", cfg)
    assert "Bad minute" in fails("news", "schedule", "monthly", "--cron", "61 8 * * *",
                                 "--config", cfg)
    assert "expected 5 fields" in fails("news", "schedule", "monthly", "--cron", "0 8 1 *",
                                        "--config", cfg)
    assert "either --at" in fails("news", "schedule", "monthly", "--cron", "0 8 1 * *",
                                  "--at", "2026-12-01T08:00:00+01:00", "--config", cfg)
    assert "either --at" in fails("news", "schedule", "monthly", "--config", cfg)
    out = invoke("news", "schedule", "monthly", "--cron", "0  8 1 * *",
                 "--now", "2026-11-25T10:00:00+01:00", "--config", cfg)
    assert 'every "0 8 1 * *" (Europe/Prague), next run 2026-12-01T08:00:00+01:00' in out
    for listing in (invoke("news", "scheduled", "--config", cfg),
                    invoke("news", "schedule", "--list", "--config", cfg)):
        assert "monthly" in listing and "0 8 1 * *" in listing and "2026-12-01T08:00+01:00" in listing

    config = config_mod.load(Path(cfg))
    config = config.model_copy(update={
        "schedule": config.schedule.model_copy(update={"digest": False})})
    store = Store.from_url(config.database_url)
    try:
        store.upsert_licenses(LICENSES)
        store.upsert_contacts([Contact("a@firma.cz", "11112222", "A", "cs"),
                               Contact("b@firma.cz", "11112222", "B", "en")])
        s = Scheduler(config, store, ConversationRenderer(config, b"s"))
        prague = ZoneInfo("Europe/Prague")
        s.run_due(datetime(2026, 12, 1, 8, tzinfo=prague))
        s.run_due(datetime(2027, 1, 1, 8, 5, tzinfo=prague))
    finally:
        store.close()
    runs = json.loads(invoke("news", "status", "monthly", "--json", "--config", cfg))
    assert runs == {"monthly@20261201T0800": {"queued": 2, "unsubscribed": 0},
                    "monthly@20270101T0800": {"queued": 2, "unsubscribed": 0}}
    table = invoke("news", "status", "monthly", "--config", cfg)
    assert "monthly@20261201T0800" in table and "monthly@20270101T0800" in table
    one = json.loads(invoke("news", "status", "monthly@20261201T0800", "--json", "--config", cfg))
    assert one == {"queued": 2, "unsubscribed": 0}
    assert "2027-02-01T08:00+01:00" in invoke("news", "scheduled", "--config", cfg)


def test_news_preview_test_mail_and_send_with_follow(tmp_path: Path) -> None:
    """`preview --to` hands one [TEST] mail to the transport at once (not to the outbox);
    `send --follow` queues the campaign and watches the sender until nothing is pending."""
    import threading
    from email import message_from_bytes, policy

    from mailbot.replies.outbox import OutboxDispatcher
    from mailbot.replies.sink import DirectorySink
    from mailbot.store import Store

    config = str(write_config(tmp_path, f"sqlite:///{tmp_path / 'cli.db'}"))
    (tmp_path / "lic.csv").write_text(
        "license,customer,email_domain,activated_on,support_tier,max_version_date\n"
        "51880264,Novák & syn s.r.o.,novak-syn.cz,2026-01-15,HOTLINE,2099-12-31\n",
        encoding="utf-8")
    (tmp_path / "contacts.csv").write_text(
        "email,license,name,language\n" + "".join(
            f"k{i}@novak-syn.cz,51880264,Kontakt {i},cs\n" for i in range(3)), encoding="utf-8")
    invoke("licenses", "import", str(tmp_path / "lic.csv"), "--config", config)
    invoke("contacts", "import", str(tmp_path / "contacts.csv"), "--config", config)

    out = invoke("news", "preview", "example", "--to", "tester@estelar.example",
                 "--config", config)
    assert "test mail sent to tester@estelar.example" in out
    [eml] = (tmp_path / "sent").glob("*.eml")
    msg = message_from_bytes(eml.read_bytes(), policy=policy.default)
    assert msg["To"].addresses[0].addr_spec == "tester@estelar.example"
    assert str(msg["Subject"]).startswith("[TEST] ACS-line")
    assert "Kontakt 0" in msg.get_body(("plain",)).get_content()
    store = Store.from_url(f"sqlite:///{tmp_path / 'cli.db'}")
    assert store.count_outbox() == {}

    stop = threading.Event()
    sender = OutboxDispatcher(store, DirectorySink(tmp_path / "sent2"))

    def send_until_stopped() -> None:
        while not stop.is_set():
            if not sender.send_due():
                stop.wait(0.1)

    thread = threading.Thread(target=send_until_stopped)
    thread.start()
    try:
        out = invoke("news", "send", "example", "--follow", "--config", config)
    finally:
        stop.set()
        thread.join(10)
        sender.close()
    assert "example: queued 3 mail(s)" in out
    assert out.strip().splitlines()[-1] == "sent 3, unsubscribed 0"
    assert len(list((tmp_path / "sent2").glob("*.eml"))) == 3
    table = invoke("news", "status", "example", "--config", config)
    rows = {line.split()[1]: line.split()[3] for line in table.splitlines()
            if line.startswith("│")}
    assert rows == {"pending": "0", "sent": "3", "failed": "0", "bounced": "0",
                    "unsubscribed": "0"}
    assert "not a valid address" in fails("news", "preview", "example", "--to", "not an address",
                                          "--config", config)


def test_read_only_commands_do_not_migrate(tmp_path: Path) -> None:
    """status, the lists and shows, sla report, news status/scheduled and contacts
    list/suppressed open the store without upgrading it: on a database older than the code
    (here: empty) they stop with an error naming the schema, and leave it untouched."""
    import sqlite3

    db = tmp_path / "old.db"
    cfg = str(write_config(tmp_path, f"sqlite:///{db}"))
    for args in (("status",), ("outbox", "list"), ("outbox", "show", "1"),
                 ("quarantine", "list"), ("quarantine", "show", "1"), ("tickets", "list"),
                 ("tickets", "show", "T-2026-000001"), ("sla", "report"),
                 ("news", "status", "monthly"), ("news", "scheduled"), ("contacts", "list"),
                 ("contacts", "suppressed")):
        result = CliRunner().invoke(cli, [*args, "--config", cfg])
        assert result.exit_code != 0, args
        assert "schema is at revision none" in result.output, (args, result.output)
        assert "mailbot db upgrade" in result.output, args
        with sqlite3.connect(db) as conn:
            tables = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        assert tables == [], (args, tables)
    invoke("db", "upgrade", "--config", cfg)
    assert invoke("status", "--config", cfg).startswith("inbound:  empty")


def test_run_tunes_the_allocator_before_the_daemon_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`mailbot run` sets glibc's arenas and mapping threshold (mailbot.memory.tune) before
    the daemon builds anything or starts a thread."""
    from mailbot import app, memory

    calls: list[str] = []
    monkeypatch.setattr(memory, "tune", lambda: calls.append("tune") or True)

    async def run(config: object, early_stop: object = None) -> None:
        calls.append("run")

    monkeypatch.setattr(app, "run", run)
    cfg = str(write_config(tmp_path, f"sqlite:///{tmp_path / 'run.db'}"))
    invoke("run", "--config", cfg)
    assert calls == ["tune", "run"]


async def test_the_daemon_freezes_its_start_up_once_built(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`mailbot run` settles (mailbot.memory.settled: what start-up built is frozen) once the
    daemon is built, before it serves."""
    import asyncio

    from mailbot import app, memory

    calls: list[str] = []

    class Built:
        stop = asyncio.Event()

        async def run(self) -> None:
            calls.append("run")

    monkeypatch.setattr(app.Daemon, "build", lambda config: calls.append("build") or Built())
    monkeypatch.setattr(memory, "settled", lambda: calls.append("settled"))
    await app.run(object())  # type: ignore[arg-type]
    assert calls == ["build", "settled", "run"]
