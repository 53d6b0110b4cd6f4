"""Contacts and the notices before HOTLINE START ends, with an injected clock: each notice
once per license, contact and occasion, across restarts; after downtime only the latest."""

from __future__ import annotations

import email.policy
import json
from datetime import date, datetime
from email.parser import BytesParser
from pathlib import Path
from zoneinfo import ZoneInfo

from click.testing import CliRunner

from mailbot import config as config_mod
from mailbot.cli import cli
from mailbot.contacts import Contact, read_contacts_csv
from mailbot.domain import LicenseRecord, Tier
from mailbot.replies.conversation import ConversationRenderer
from mailbot.scheduler import Scheduler
from mailbot.store import Store
from tests.integration.test_replay import write_config

P = ZoneInfo("Europe/Prague")
# START from 1 June 2026: support ends 1 December 2026 (six months).
START = LicenseRecord("40127733", "Strojírny Hranice a.s.", "strojirny-hranice.cz",
                      date(2026, 6, 1), Tier.START, None)
PAID = LicenseRecord("11112222", "Firma a.s.", "firma.cz", date(2026, 6, 1), Tier.HOTLINE, None)
_PARSE = BytesParser(policy=email.policy.default)


def at(y: int, m: int, d: int, hh: int = 9) -> datetime:
    return datetime(y, m, d, hh, tzinfo=P)


def run(config: config_mod.Config, store: Store, now: datetime) -> list[str]:
    cfg = config.model_copy(update={"schedule": config.schedule.model_copy(update={"digest": False})})
    return Scheduler(cfg, store, ConversationRenderer(cfg, b"s")).run_due(now)


def test_contacts_csv() -> None:
    text = ("email,license,name,language\n"
            "Dvorak@Strojirny-Hranice.cz,4012-7733,Pavel Dvořák,cs\n"
            "not-an-address,40127733,X,cs\n"
            "a@b.example,1234567,Y,cs\n"
            "grant@nordwell.example,40127733,Ann Grant,en\n"
            "grant@nordwell.example,40127733,Ann Grant,fr\n")
    found, errors = read_contacts_csv(text)
    assert found == [Contact("dvorak@strojirny-hranice.cz", "40127733", "Pavel Dvořák", "cs"),
                     Contact("grant@nordwell.example", "40127733", "Ann Grant", "en")]
    assert [e.line for e in errors] == [3, 4, 6]
    assert "email" in errors[0].message and "license" in errors[1].message


def test_start_notices_once_each_across_restarts(config: config_mod.Config, store: Store) -> None:
    store.upsert_licenses([START, PAID])
    store.upsert_contacts([Contact("dvorak@strojirny-hranice.cz", "40127733", "Pavel Dvořák", "cs"),
                           Contact("grant@nordwell.example", "40127733", "Ann Grant", "en"),
                           Contact("x@firma.cz", "11112222", "", "cs")])
    assert run(config, store, at(2026, 10, 31)) == []  # 31 days before
    first = run(config, store, at(2026, 11, 1))  # 30 days before the end (1 Dec)
    assert sorted(first) == ["start-notice:40127733:2026-11-01:30:dvorak@strojirny-hranice.cz",
                             "start-notice:40127733:2026-11-01:30:grant@nordwell.example"]
    assert run(config, store, at(2026, 11, 1, 15)) == []
    assert run(config, store, at(2026, 11, 20)) == []  # a restart, later: nothing new
    assert len(run(config, store, at(2026, 11, 24))) == 2  # 7 days before
    assert len(run(config, store, at(2026, 12, 1))) == 2  # the last day: final notice
    assert run(config, store, at(2026, 12, 2)) == [] and run(config, store, at(2026, 12, 30)) == []
    mails = [_PARSE.parsebytes(r.raw) for r in store.list_outbox(limit=100)]
    assert len(mails) == 6 and all(m["Auto-Submitted"] == "auto-generated" for m in mails)
    cs = [m for m in mails if "dvorak@" in str(m["To"])]
    texts = sorted(m.get_content() for m in cs)
    assert any("za 30 dní" in t for t in texts) and any("za 7 dní" in t for t in texts)
    assert any("skončila" in t for t in texts) and all("HOTLINE PLUS" in t for t in texts)
    en = [m for m in mails if "grant@" in str(m["To"])]
    assert any("ends on 1 December 2026" in str(m["Subject"]) for m in en)


def test_after_downtime_only_the_latest_notice(config: config_mod.Config, store: Store) -> None:
    store.upsert_licenses([START])
    store.upsert_contacts([Contact("dvorak@strojirny-hranice.cz", "40127733", "", "cs")])
    assert [p.split(":")[3] for p in run(config, store, at(2026, 11, 28))] == ["7"]
    assert run(config, store, at(2026, 11, 29)) == []


def test_contacts_cli(tmp_path: Path, store_url: str) -> None:
    cfg = str(write_config(tmp_path, store_url))
    csv = tmp_path / "contacts.csv"
    csv.write_text("email,license,name,language\nA@Example.org,40127733,Anna,cs\nbad,1,x,cs\n",
                   encoding="utf-8")
    result = CliRunner().invoke(cli, ["contacts", "import", str(csv), "--config", cfg])
    assert result.exit_code == 1 and "imported 1 contact(s), 1 bad row(s)" in result.output
    listed = CliRunner().invoke(cli, ["contacts", "list", "--json", "--config", cfg])
    assert '"email": "a@example.org"' in listed.output
    store = Store.from_url(store_url)
    with store.transaction() as tx:
        tx.unsubscribe("A@Example.org", None)
    store.close()
    suppressed = CliRunner().invoke(cli, ["contacts", "suppressed", "--json", "--config", cfg])
    assert suppressed.exit_code == 0
    [row] = [json.loads(line) for line in suppressed.output.splitlines()]
    assert (row["address"], row["reason"]) == ("a@example.org", "unsubscribed")
