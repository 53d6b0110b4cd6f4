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
    store.save_inbound(request.as_bytes(policy=email.policy.SMTP), "test", received_at=NOW)
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


def test_news_bounces_suppress_the_address(cfg: config_mod.Config, store: Store) -> None:
    """Two bounce reports about news mail to one address suppress it (bounce_limit = 2)."""
    store.upsert_licenses(LICENSES)
    store.upsert_contacts(CONTACTS)
    directory = Path(cfg.news.directory)
    worker = Worker(cfg, store)
    for i, name in enumerate(("v53", "b1")):
        if name != "v53":
            (directory / f"{name}.md").write_text('+++\nsubject_cs = "X"\n+++\nText.\n', encoding="utf-8")
        queue_campaign(store, cfg, load_campaign(directory, name), NOW)
        row = next(r for r in store.list_outbox(limit=100)
                   if r.kind == "news" and r.purpose == f"news:{name}:grant@firma.cz")
        report = EmailMessage()
        report["From"] = "MAILER-DAEMON@mx.firma.cz"
        report["To"] = "podpora@estelar.example"
        report["Subject"] = "Undelivered Mail Returned to Sender"
        report["Message-ID"] = f"<bounce{i}@mx.firma.cz>"
        report.set_content("User unknown.")
        report.add_attachment(row.raw, maintype="message", subtype="rfc822")  # type: ignore[arg-type]
        report.replace_header("Content-Type", 'multipart/report; report-type="delivery-status"; '
                              f'boundary="{report.get_boundary()}"')
        store.save_inbound(report.as_bytes(policy=email.policy.SMTP), "test", received_at=NOW)
        worker.process_many(store.claim_inbound(5), now=NOW)
    assert [(a, r) for a, r, _ in store.suppressed()] == [("grant@firma.cz", "bounced")]
    (directory / "b2.md").write_text('+++\nsubject_cs = "Y"\n+++\nText.\n', encoding="utf-8")
    assert queue_campaign(store, cfg, load_campaign(directory, "b2"), NOW) == 1  # Dvořák only


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
