"""News campaigns: audience, rendering (sanitised HTML, bulk headers, personalised), one row
per (campaign, recipient) however often it is sent, and unsubscribing by the mailto token."""

from __future__ import annotations

import email.policy
from datetime import date, datetime
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from mailbot import config as config_mod
from mailbot.contacts import Contact
from mailbot.domain import LicenseRecord, Tier
from mailbot.ingest.intake import save_raw
from mailbot.ingest.parse import parse
from mailbot.errors import ConfigError
from mailbot.news import load_campaign, queue_campaign
from mailbot.store import Store
from mailbot.worker import Worker

NOW = datetime(2026, 11, 25, 10, tzinfo=ZoneInfo("Europe/Prague"))
_PARSE = BytesParser(policy=email.policy.default)
LICENSES = [
    LicenseRecord("40127733", "Strojírny Hranice a.s.", "strojirny-hranice.cz", date(2026, 6, 1), Tier.START, None),
    LicenseRecord("11112222", "Firma a.s.", "firma.cz", date(2024, 1, 1), Tier.HOTLINE, None),
    LicenseRecord("55556666", "Nula s.r.o.", "nula.cz", date(2025, 1, 1), Tier.NONE, None),
]
CONTACTS = [
    Contact("dvorak@strojirny-hranice.cz", "40127733", "Pavel Dvořák", "cs"),
    Contact("grant@firma.cz", "11112222", "Ann <b>Grant</b>", "en"),
    Contact("nobody@nula.cz", "55556666", "", "cs"),
]


@pytest.fixture
def cfg(config: config_mod.Config, tmp_path: Path) -> config_mod.Config:
    news = tmp_path / "news"
    news.mkdir()
    (news / "v53.md").write_text(
        '+++\nsubject_cs = "Nová verze"\nsubject_en = "New version"\naudience = "supported"\n+++\n'
        "Dobrý den {{ name }}, licence {{ license }} ({{ tier }}).\n\n<script>alert(1)</script>\n"
        "<!-- en -->\nHello {{ name }}, license {{ license }}.\n", encoding="utf-8")
    return config.model_copy(update={
        "news": config.news.model_copy(update={"directory": str(news),
                                               "base_url": "https://estelar.example/news"}),
        "worker": config.worker.model_copy(update={"processes": 0}),
    })


def mails(store: Store) -> list[EmailMessage]:
    return [_PARSE.parsebytes(r.raw) for r in store.list_outbox(limit=100) if r.kind == "news"]  # type: ignore[misc]


def test_example_campaign_loads(config: config_mod.Config) -> None:
    c = load_campaign(config.path(config.news.directory), "example")
    assert c.audience == "supported" and "5.3" in c.subjects["en"] and "Dobrý den" in c.bodies["cs"]


def test_campaign_once_per_recipient_with_bulk_headers(cfg: config_mod.Config, store: Store) -> None:
    store.upsert_licenses(LICENSES)
    store.upsert_contacts(CONTACTS)
    campaign = load_campaign(cfg.path(cfg.news.directory), "v53")
    assert queue_campaign(store, cfg, campaign, NOW) == 2  # NONE tier: no support, no news
    assert queue_campaign(store, cfg, campaign, NOW) == 0  # sent again: nothing new
    by_to = {m["To"].addresses[0].addr_spec: m for m in mails(store)}
    assert sorted(by_to) == ["dvorak@strojirny-hranice.cz", "grant@firma.cz"]
    cs = by_to["dvorak@strojirny-hranice.cz"]
    assert cs["Subject"] == "Nová verze" and cs["Precedence"] == "bulk"
    assert cs["Auto-Submitted"] == "auto-generated"
    assert cs["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    links = str(cs["List-Unsubscribe"])
    assert "<mailto:novinky-odhlaseni+" in links and "https://estelar.example/news/unsubscribe/" in links
    text = cs.get_body(("plain",)).get_content()
    assert "Dobrý den Pavel Dvořák, licence 40127733 (START)." in text
    html = cs.get_body(("html",)).get_content()
    assert "<script>" not in html
    en = by_to["grant@firma.cz"]
    assert en["Subject"] == "New version" and "Hello Ann <b>Grant</b>" in en.get_body(("plain",)).get_content()
    assert "Ann &lt;b&gt;Grant&lt;/b&gt;" in en.get_body(("html",)).get_content()
    assert store.campaign_status("v53") == {"queued": 2, "unsubscribed": 0}


def test_unsubscribe_by_the_mailto_token(cfg: config_mod.Config, store: Store) -> None:
    """Answering the List-Unsubscribe mailto (even from another address) unsubscribes the
    recipient; a later campaign skips them."""
    store.upsert_licenses(LICENSES)
    store.upsert_contacts(CONTACTS)
    campaign = load_campaign(cfg.path(cfg.news.directory), "v53")
    queue_campaign(store, cfg, campaign, NOW)
    mine = next(m for m in mails(store) if "dvorak@" in str(m["To"]))
    mailto = str(mine["List-Unsubscribe"]).split("<mailto:", 1)[1].split(">", 1)[0]
    request = EmailMessage()
    request["From"] = "sekretariat@strojirny-hranice.cz"
    request["To"] = mailto
    request["Subject"] = "unsubscribe"
    request["Message-ID"] = "<u1@strojirny-hranice.cz>"
    request.set_content("")
    save_raw(store, request.as_bytes(policy=email.policy.SMTP), "test", received_at=NOW)
    [result] = Worker(cfg, store).process_many(store.claim_inbound(5), now=NOW)
    assert result.decision.kind.value == "unsubscribe"  # type: ignore[union-attr]
    assert {a for a, _, _ in store.suppressed()} == {"dvorak@strojirny-hranice.cz",
                                                      "sekretariat@strojirny-hranice.cz"}
    assert store.campaign_status("v53")["unsubscribed"] == 1
    (Path(cfg.news.directory) / "v54.md").write_text(
        '+++\nsubject_cs = "Další"\n+++\nText.\n', encoding="utf-8")
    assert queue_campaign(store, cfg, load_campaign(Path(cfg.news.directory), "v54"), NOW) == 1


def test_scheduled_campaign_is_queued_once_when_due(cfg: config_mod.Config, store: Store) -> None:
    from mailbot.replies.conversation import ConversationRenderer
    from mailbot.scheduler import Scheduler

    store.upsert_licenses(LICENSES)
    store.upsert_contacts(CONTACTS)
    store.schedule_campaign("v53", datetime(2026, 12, 1, 9, tzinfo=NOW.tzinfo))
    cfg = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"digest": False})})
    s = Scheduler(cfg, store, ConversationRenderer(cfg, b"s"))
    assert "campaign:v53" not in s.run_due(datetime(2026, 12, 1, 8, 59, tzinfo=NOW.tzinfo))
    assert "campaign:v53" in s.run_due(datetime(2026, 12, 1, 9, 0, tzinfo=NOW.tzinfo))
    assert "campaign:v53" not in s.run_due(datetime(2026, 12, 1, 10, 0, tzinfo=NOW.tzinfo))
    assert len(mails(store)) == 2


def news_mail_to_grant(store: Store, cfg: config_mod.Config, name: str) -> tuple[str, bytes]:
    """Queue campaign `name` (a one-line campaign file unless it is v53) and return the
    (Message-ID, raw bytes) of its mail to grant@firma.cz."""
    directory = Path(cfg.news.directory)
    if not (directory / f"{name}.md").exists():
        (directory / f"{name}.md").write_text('+++\nsubject_cs = "X"\n+++\nText.\n',
                                              encoding="utf-8")
    queue_campaign(store, cfg, load_campaign(directory, name), NOW)
    row = next(r for r in store.list_outbox(limit=100)
               if r.kind == "news" and r.purpose == f"news:{name}:grant@firma.cz")
    return row.message_id, row.raw


def test_news_bounces_suppress_the_address(cfg: config_mod.Config, store: Store) -> None:
    """Two bounce reports about news mail to one address suppress it (bounce_limit = 2)."""
    store.upsert_licenses(LICENSES)
    store.upsert_contacts(CONTACTS)
    directory = Path(cfg.news.directory)
    worker = Worker(cfg, store)
    for i, name in enumerate(("v53", "b1")):
        _, returned = news_mail_to_grant(store, cfg, name)
        report = EmailMessage()
        report["From"] = "MAILER-DAEMON@mx.firma.cz"
        report["To"] = "podpora@estelar.example"
        report["Subject"] = "Undelivered Mail Returned to Sender"
        report["Message-ID"] = f"<bounce{i}@mx.firma.cz>"
        report.set_content("User unknown.")
        report.add_attachment(returned, maintype="message", subtype="rfc822")  # type: ignore[arg-type]
        report.replace_header("Content-Type", 'multipart/report; report-type="delivery-status"; '
                              f'boundary="{report.get_boundary()}"')
        save_raw(store, report.as_bytes(policy=email.policy.SMTP), "test", received_at=NOW)
        worker.process_many(store.claim_inbound(5), now=NOW)
    assert [(a, r) for a, r, _ in store.suppressed()] == [("grant@firma.cz", "bounced")]
    (directory / "b2.md").write_text('+++\nsubject_cs = "Y"\n+++\nText.\n', encoding="utf-8")
    assert queue_campaign(store, cfg, load_campaign(directory, "b2"), NOW) == 1  # Dvořák only


def delivery_report(returned: bytes, n: int, action: str, status: str) -> bytes:
    """A Postfix-style RFC 3464 report about one returned news mail (grant@firma.cz)."""
    report = EmailMessage()
    report["From"] = "MAILER-DAEMON@mx.firma.cz (Mail Delivery System)"
    report["To"] = "podpora@estelar.example"
    report["Subject"] = ("Delayed Mail (still being retried)" if action == "delayed"
                         else "Undelivered Mail Returned to Sender")
    report["Message-ID"] = f"<report{n}@mx.firma.cz>"
    report.set_content("This is the mail system at host mx.firma.cz.")
    report.add_attachment(returned, maintype="message", subtype="rfc822")  # type: ignore[arg-type]
    raw = report.as_bytes(policy=email.policy.SMTP)
    boundary = report.get_boundary()
    assert boundary is not None
    status_part = (
        f"--{boundary}\r\nContent-Description: Delivery report\r\n"
        "Content-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.firma.cz\r\nX-Postfix-Queue-ID: 4Z1xQ2\r\n\r\n"
        "Final-Recipient: rfc822; grant@firma.cz\r\nOriginal-Recipient: rfc822;grant@firma.cz\r\n"
        f"Action: {action}\r\nStatus: {status}\r\n"
        "Diagnostic-Code: smtp; 452 4.2.2 Mailbox full\r\n\r\n"
    ).encode()
    second = raw.index(f"--{boundary}".encode(), raw.index(f"--{boundary}".encode()) + 1)
    raw = raw[:second] + status_part + raw[second:]  # after the notice, before the returned mail
    return raw.replace(b"Content-Type: multipart/mixed",
                       b'Content-Type: multipart/report; report-type="delivery-status"', 1)


@pytest.mark.parametrize(("action", "status", "state", "suppressed"), [
    ("delayed", "4.4.1", "queued", False),  # still on its way: not a bounce at all
    ("failed", "4.2.2", "bounced", False),  # soft: marked, not counted towards suppression
    ("failed", "5.1.1", "bounced", True),
], ids=["delayed", "soft", "hard"])
def test_only_hard_news_bounces_suppress(cfg: config_mod.Config, store: Store, action: str,
                                         status: str, state: str, suppressed: bool) -> None:
    """Two RFC 3464 reports about news mail to one address (bounce_limit = 2): delayed ones
    leave the rows alone, soft failures mark them bounced only, hard ones suppress."""
    from mailbot.store import Suppression

    store.upsert_licenses(LICENSES)
    store.upsert_contacts(CONTACTS)
    worker = Worker(cfg, store)
    for i, name in enumerate(("v53", "b1")):
        message_id, returned = news_mail_to_grant(store, cfg, name)
        raw = delivery_report(returned, i, action, status)
        mail = parse(raw)  # the report names the news mail and says how delivery went
        assert message_id in mail.original_ids
        assert mail.delivery_outcome == {"delayed": "delayed", "4": "soft", "5": "hard"}[
            "delayed" if action == "delayed" else status[0]]
        save_raw(store, raw, "test", received_at=NOW)
        worker.process_many(store.claim_inbound(5), now=NOW)
    rows = [r for r in store.list_outbox(limit=100)
            if r.kind == "news" and r.purpose.endswith(":grant@firma.cz")]
    assert len(rows) == 2 and {r.state for r in rows} == {state}
    if state == "bounced":
        kind = "soft" if status.startswith("4") else "hard"
        assert {r.bounce for r in rows} == {kind}
    expected = [("grant@firma.cz", "bounced")] if suppressed else []
    assert [(a, r) for a, r, _ in store.suppressed()] == expected
    if suppressed:
        with store.session() as s:
            found = s.get(Suppression, "grant@firma.cz")
            assert found is not None and found.detail == "2 hard bounces of news mail"


def test_hard_report_after_a_soft_one_counts(cfg: config_mod.Config, store: Store) -> None:
    """A hard report about a news mail already soft-bounced makes it a hard bounce."""
    store.upsert_licenses(LICENSES)
    store.upsert_contacts(CONTACTS)
    worker = Worker(cfg, store)
    for n, (name, status) in enumerate((("v53", "4.2.2"), ("v53", "5.1.1"), ("b1", "5.1.1"))):
        _, returned = news_mail_to_grant(store, cfg, name)
        save_raw(store, delivery_report(returned, n, "failed", status), "test", received_at=NOW)
        worker.process_many(store.claim_inbound(5), now=NOW)
        if n == 1:
            assert store.suppressed() == []
    rows = [r for r in store.list_outbox(limit=100) if r.purpose.endswith(":grant@firma.cz")]
    assert [(r.state, r.bounce) for r in rows] == [("bounced", "hard")] * 2
    assert [(a, r) for a, r, _ in store.suppressed()] == [("grant@firma.cz", "bounced")]


def test_unsubscribe_by_token_on_both_engines(cfg: config_mod.Config, store: Store) -> None:
    """The one-click path of the store: a known token unsubscribes its address (idempotent),
    an unknown one changes nothing."""
    store.upsert_licenses(LICENSES)
    store.upsert_contacts(CONTACTS)
    queue_campaign(store, cfg, load_campaign(cfg.path(cfg.news.directory), "v53"), NOW)
    mine = next(m for m in mails(store) if "grant@" in str(m["To"]))
    token = str(mine["List-Unsubscribe"]).split("/unsubscribe/", 1)[1].split(">", 1)[0]
    assert store.unsubscribe_by_token("f" * 20, NOW) is None
    assert store.suppressed() == []
    assert store.unsubscribe_by_token(token, NOW) == "grant@firma.cz"
    assert store.unsubscribe_by_token(token, NOW) == "grant@firma.cz"
    assert [(a, r) for a, r, _ in store.suppressed()] == [("grant@firma.cz", "unsubscribed")]


# --- recurring campaigns (news schedule --cron) -------------------------------------------

PRAGUE = ZoneInfo("Europe/Prague")


def test_recurring_campaign_runs_once_per_occurrence(cfg: config_mod.Config, store: Store) -> None:
    """A monthly schedule queues the run of its occurrence once (a second tick at the same
    time, or a second scheduler with the old due_at, adds nothing), the next occurrence a new
    run to the same recipients, and after downtime over three occurrences only the latest."""
    import dataclasses

    from sqlalchemy import select

    from mailbot.news import next_run
    from mailbot.replies.conversation import ConversationRenderer
    from mailbot.scheduler import Scheduler
    from mailbot.store import NewsToken

    store.upsert_licenses(LICENSES)
    store.upsert_contacts(CONTACTS)
    (Path(cfg.news.directory) / "monthly.md").write_text(
        '+++\nsubject_cs = "Měsíčník"\naudience = "all"\n+++\nDobrý den {{ name }}.\n',
        encoding="utf-8")
    cron = "0 8 1 * *"
    first = next_run(cron, NOW, PRAGUE)
    assert first == datetime(2026, 12, 1, 8, tzinfo=PRAGUE)
    store.schedule_campaign("monthly", first, cron)
    cfg = cfg.model_copy(update={"schedule": cfg.schedule.model_copy(update={"digest": False})})
    s = Scheduler(cfg, store, ConversationRenderer(cfg, b"s"))

    def campaigns(now: datetime) -> list[str]:
        return [p for p in s.run_due(now) if p.startswith("campaign:")]

    def rows() -> list[tuple[str, str]]:
        return sorted((r.purpose, r.message_id) for r in store.list_outbox(limit=100)
                      if r.kind == "news")

    assert campaigns(datetime(2026, 12, 1, 7, 59, tzinfo=PRAGUE)) == []
    assert campaigns(datetime(2026, 12, 1, 8, 0, tzinfo=PRAGUE)) == ["campaign:monthly@20261201T0800"]
    assert [p for p, _ in rows()] == [f"news:monthly@20261201T0800:{c.email}" for c in CONTACTS]
    assert campaigns(datetime(2026, 12, 1, 8, 0, tzinfo=PRAGUE)) == []  # the same tick again
    assert len(rows()) == 3
    [row] = store.scheduled_campaigns()
    assert row.due_at == datetime(2027, 1, 1, 8, tzinfo=PRAGUE) and row.cron == cron
    # A second scheduler that read the row before the first moved it: the run's mails are
    # there already, and its due_at update (conditional on the old due_at) changes nothing.
    assert queue_campaign(store, cfg, dataclasses.replace(
        load_campaign(Path(cfg.news.directory), "monthly"), name="monthly@20261201T0800"), NOW) == 0
    assert not store.campaign_queued("monthly", NOW, due_at=first,
                                     next_due=datetime(2027, 1, 1, 8, tzinfo=PRAGUE))
    assert store.scheduled_campaigns()[0].due_at == datetime(2027, 1, 1, 8, tzinfo=PRAGUE)

    assert campaigns(datetime(2027, 1, 1, 8, 0, 30, tzinfo=PRAGUE)) == ["campaign:monthly@20270101T0800"]
    after_two = rows()
    assert len(after_two) == 6 and len({m for _, m in after_two}) == 6  # new Message-IDs
    assert sorted(p.rsplit(":", 1)[1] for p, _ in after_two) == sorted(
        [c.email for c in CONTACTS] * 2)  # the same recipients
    assert all(m.count("@") == 1 for _, m in after_two)

    # Down from before 1 February until after 1 April: one run, the latest occurrence.
    assert campaigns(datetime(2027, 4, 1, 9, 30, tzinfo=PRAGUE)) == ["campaign:monthly@20270401T0800"]
    assert len(rows()) == 9
    [row] = store.scheduled_campaigns()
    assert row.due_at == datetime(2027, 5, 1, 8, tzinfo=PRAGUE)  # summer time: 06:00 UTC
    assert row.queued_at == datetime(2027, 4, 1, 9, 30, tzinfo=PRAGUE)

    runs = ["monthly@20261201T0800", "monthly@20270101T0800", "monthly@20270401T0800"]
    assert store.campaign_runs("monthly") == runs
    for run in runs:
        assert store.campaign_status(run) == {"queued": 3, "unsubscribed": 0}
    assert store.campaign_status("monthly") == {"unsubscribed": 0}  # never sent as a one-off
    with store.session() as sess:
        assert sorted(set(sess.scalars(select(NewsToken.campaign)))) == runs


def test_one_off_and_recurring_schedules_switch(store: Store) -> None:
    """--at after --cron makes a one-off that is due again; --at again moves it only
    while not queued."""
    from datetime import timedelta

    at = datetime(2026, 12, 1, 9, tzinfo=PRAGUE)
    store.schedule_campaign("v53", at, "0 8 * * 1")
    assert [c.name for c in store.due_campaigns(at)] == ["v53"]
    store.campaign_queued("v53", at, due_at=at, next_due=at + timedelta(days=7))
    assert store.due_campaigns(at) == []
    store.schedule_campaign("v53", at)
    [row] = store.due_campaigns(at)
    assert row.cron is None and row.queued_at is None
    store.campaign_queued("v53", at)
    store.schedule_campaign("v53", at + timedelta(days=1))
    assert store.scheduled_campaigns()[0].due_at == at and store.due_campaigns(at) == []


def test_status_like_treats_underscore_literally(cfg: config_mod.Config, store: Store) -> None:
    """`a_b` is not a pattern: the mails of `axb` are not counted as its mails."""
    store.upsert_licenses(LICENSES)
    store.upsert_contacts(CONTACTS)
    directory = Path(cfg.news.directory)
    for name in ("a_b", "axb"):
        (directory / f"{name}.md").write_text('+++\nsubject_cs = "X"\n+++\nText.\n',
                                             encoding="utf-8")
    assert queue_campaign(store, cfg, load_campaign(directory, "axb"), NOW) == 2
    assert store.campaign_status("a_b") == {"unsubscribed": 0}
    assert store.campaign_status("axb")["queued"] == 2
    assert store.campaign_runs("a_b") == []


def test_long_address_gets_a_hashed_purpose(cfg: config_mod.Config, store: Store) -> None:
    """An address that would make the purpose longer than 200 characters is named by its
    SHA-256 in the purpose; queueing again still finds it."""
    import hashlib

    from mailbot.news import news_purpose

    local = "x" * 64
    domain = ".".join(["d" * 60, "e" * 60, "firma"]) + ".cz"
    address = f"{local}@{domain}"
    assert len(f"news:v53:{address}") > 200
    store.upsert_licenses(LICENSES)
    store.upsert_contacts([Contact(address, "11112222", "Dlouhá", "cs")])
    campaign = load_campaign(Path(cfg.news.directory), "v53")
    assert queue_campaign(store, cfg, campaign, NOW) == 1
    [row] = [r for r in store.list_outbox(limit=10) if r.kind == "news"]
    expected = "news:v53:#" + hashlib.sha256(address.encode()).hexdigest()[:40]
    assert row.purpose == news_purpose("v53", address) == expected and len(row.purpose) <= 200
    assert list(row.rcpt_to) == [address]
    assert queue_campaign(store, cfg, campaign, NOW) == 0
    assert store.campaign_status("v53")["queued"] == 1
    assert news_purpose("v53", "a@b.cz") == "news:v53:a@b.cz"


def test_campaign_with_a_template_error_does_not_load(tmp_path: Path) -> None:
    """A hand-edited body with broken Jinja2 is refused when loaded (at `news schedule`),
    naming the file, body and line, not when the scheduler gets to it."""
    (tmp_path / "broken.md").write_text(
        '+++\nsubject_cs = "X"\n+++\nDobrý den,\n{{ name\n', encoding="utf-8")
    with pytest.raises(ConfigError, match=r"broken.md: body cs: line 2"):
        load_campaign(tmp_path, "broken")
