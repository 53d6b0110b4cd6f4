"""A news mail's unsubscribe token stays out of its Message-ID, which is logged (queued,
sent, bounced) and quoted in bounce reports; bounces still find the recipient."""

from __future__ import annotations

import email.policy
import logging
from email.message import EmailMessage

import pytest
from sqlalchemy import select

from mailbot import config as config_mod
from mailbot.ingest.intake import save_raw
from mailbot.news import load_campaign, queue_campaign
from mailbot.replies.outbox import OutboxDispatcher
from mailbot.replies.sink import DirectorySink
from mailbot.store import NewsToken, Store
from mailbot.worker import Worker
from tests.integration.test_news import CONTACTS, LICENSES, NOW, cfg  # noqa: F401 - fixture

__all__ = ["cfg"]


def test_news_token_not_in_message_id_or_logs(cfg: config_mod.Config, store: Store,  # noqa: F811
                                              caplog: pytest.LogCaptureFixture) -> None:
    store.upsert_licenses(LICENSES)
    store.upsert_contacts(CONTACTS)
    with caplog.at_level(logging.DEBUG):
        assert queue_campaign(store, cfg, load_campaign(cfg.path(cfg.news.directory), "v53"),
                              NOW) == 2
        sink = DirectorySink(cfg.path(cfg.outbound.directory))
        assert OutboxDispatcher(store, sink, clock=lambda: NOW).send_due() == 2
        rows = {r.rcpt_to[0]: r for r in store.list_outbox(limit=10) if r.kind == "news"}
        with store.session() as s:
            tokens = {t.email: t.token for t in s.scalars(select(NewsToken))}
        assert set(tokens) == set(rows)
        # A hard bounce quoting the mail to grant@ still marks that row by its Message-ID.
        returned = rows["grant@firma.cz"].raw
        report = EmailMessage()
        report["From"] = "MAILER-DAEMON@mx.firma.cz"
        report["To"] = "podpora@estelar.example"
        report["Subject"] = "Undelivered Mail Returned to Sender"
        report["Message-ID"] = "<bounce-privacy@mx.firma.cz>"
        report.set_content("User unknown.")
        report.add_attachment(returned, maintype="message", subtype="rfc822")  # type: ignore[arg-type]
        report.replace_header("Content-Type", 'multipart/report; report-type="delivery-status"; '
                              f'boundary="{report.get_boundary()}"')
        save_raw(store, report.as_bytes(policy=email.policy.SMTP), "test", received_at=NOW)
        Worker(cfg, store).process_many(store.claim_inbound(5), now=NOW)
    for address, row in rows.items():
        assert tokens[address] not in row.message_id
        assert tokens[address] in row.raw.decode("ascii", "replace")  # List-Unsubscribe has it
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert rows["grant@firma.cz"].message_id in logged  # the Message-ID is what is logged
    for token in tokens.values():
        assert token not in logged
    states = {r.rcpt_to[0]: r.state for r in store.list_outbox(limit=10) if r.kind == "news"}
    assert states == {"grant@firma.cz": "bounced", "dvorak@strojirny-hranice.cz": "sent"}
