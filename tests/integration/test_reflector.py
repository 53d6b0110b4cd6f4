"""Issue 14, items 6 and 9, through the real worker and store (SQLite and PostgreSQL): a mail
about a ticket stays with the ticket even when it says "unsubscribe"; mailbot is no
reflector (a total cap on automatic replies, a short defanged quote, upstream spam verdicts
honoured)."""

from __future__ import annotations

import email.policy
import logging
import re
from datetime import timedelta
from email.message import EmailMessage
from email.parser import BytesParser

import pytest

from mailbot import actions
from mailbot import config as config_mod
from mailbot.actions import Outcome
from mailbot.limit_log import LimitWarnings
from mailbot.ingest.intake import save_raw
from mailbot.store import Store
from tests.integration.test_conversation import (
    CUSTOMER,
    MON,
    REQUEST,
    Desk,
    desk,  # noqa: F401  (the fixture)
    mail,
    open_ticket,
)

_PARSE = BytesParser(policy=email.policy.default)


def reasons(store: Store, inbound_id: int) -> list[dict[str, object]]:
    record = store.decision_for(inbound_id)
    assert record is not None
    return list(record.reasons)


def test_unsubscribe_words_in_a_ticket_followup_stay_with_the_ticket(desk: Desk) -> None:
    """`Re: [#T-…] How do I unsubscribe from the nightly export report?` is a follow-up of the
    ticket (the staff hear of it), and the customer is not removed from news. The same words
    sent to the unsubscribe address still unsubscribe."""
    number, _, _ = open_ticket(desk)
    followup = mail(CUSTOMER, f"Re: [#{number}] How do I unsubscribe from the nightly export report?",
                    "Please unsubscribe me from the nightly export report, it fills my inbox.")
    out = desk.receive(followup, MON + timedelta(hours=1))
    assert (out.decision.kind.value, out.decision.ticket_ref) == ("followup", number)
    assert desk.store.suppressed() == []
    assert len(desk.sent("notice")) == 2  # the new ticket's, and the follow-up's
    [note] = [r for r in reasons(desk.store, out.inbound_id) if r["rule"] == "unsubscribe_request"]
    assert note["hit"] and f"about {number}" in str(note["detail"])
    to_unsubscribe = mail(CUSTOMER, f"Re: [#{number}] odhlášení", "Odhlaste mě prosím.",
                          to="novinky-odhlaseni@estelar.example")
    out = desk.receive(to_unsubscribe, MON + timedelta(hours=2))
    assert out.decision.kind.value == "unsubscribe"
    assert [a for a, why, _ in desk.store.suppressed()] == [CUSTOMER]


@pytest.fixture
def capped_desk(desk: Desk) -> Desk:
    cfg: config_mod.Config = desk.worker.config
    capped = cfg.model_copy(update={"conversation": cfg.conversation.model_copy(
        update={"auto_replies_total_per_hour": 4})})
    return Desk(capped, desk.store)


def test_total_auto_replies_per_hour_are_capped_across_senders(capped_desk: Desk) -> None:
    """Forged senders, each under the per-address limit, cannot make mailbot answer without
    end: the (cap+1)-th acknowledgement within an hour, to a new address, is held back and
    recorded as `rate_limit`; an hour later replies go out again."""
    desk = capped_desk
    outcomes = [desk.receive(mail(f"zakaznik{i}@strojirny-hranice.cz", f"Kalendář {i}", REQUEST),
                             MON + timedelta(minutes=i)) for i in range(5)]
    assert [o.decision.kind.value for o in outcomes] == ["ticket"] * 5
    assert len(desk.sent("ack")) == 4
    assert len(desk.sent("notice")) == 5  # staff notices are not automatic replies
    limited = [r for r in reasons(desk.store, outcomes[4].inbound_id) if r["rule"] == "rate_limit"]
    assert [r["detail"] for r in limited] == [
        "no ack to zakaznik4@strojirny-hranice.cz: 4 per hour to all addresses reached"]
    # An hour later the cap applies afresh, also within one batch (one transaction).
    later = MON + timedelta(minutes=65)  # the first acks are over an hour old
    for i in range(5, 10):
        save_raw(desk.store, mail(f"zakaznik{i}@strojirny-hranice.cz", f"Kalendář {i}", REQUEST),
                                "test", received_at=later)
    batch = desk.store.claim_inbound(10)
    assert len(batch) == 5
    results = desk.worker.process_many(batch, now=later)
    assert [r.decision.kind.value for r in results if isinstance(r, Outcome)] == ["ticket"] * 5
    assert len(desk.sent("ack")) == 8


def test_ack_quotes_a_short_excerpt_without_links(desk: Desk) -> None:
    """The acknowledgement of a long request with URLs quotes only a short excerpt, and the
    URLs in it are inert: no <a href> from the customer's text, no clickable URL in either
    part (the attacker's text is not reflected under our name)."""
    phishing = ("Vaše licence byla pozastavena. Obnovte ji na https://estelar-login.example/obnova?id=1 "
                "nebo na www.estelar-podpora.example do 24 hodin.\n\n")
    body = phishing + REQUEST + "\n".join(f"Řádek {i}: " + "text " * 30 for i in range(40))
    out = desk.receive(mail(CUSTOMER, "Nejde uložit směnný kalendář", body), MON)
    assert out.decision.kind.value == "ticket"
    [ack] = desk.sent("ack")
    text = ack.get_body(("plain",)).get_content().replace("\r\n", "\n")
    html = ack.get_body(("html",)).get_content()
    quoted = [line[1:].strip() for line in text.splitlines() if line.startswith(">")]
    assert 0 < sum(len(line) for line in quoted) <= 340  # ~300 characters, defanged
    assert "Řádek 3" not in text and "Řádek 3" not in html
    for part in (text, html):
        assert "https://estelar-login" not in part and "estelar-login.example" not in part
        assert "www.estelar-podpora.example" not in part
        assert "hxxps://estelar-login[.]example" in part  # shown, inert
    customer_links = [href for href in re.findall(r'<a\s[^>]*href="([^"]*)"', html)
                      if "estelar-login" in href or "estelar-podpora" in href]
    assert customer_links == []


def test_upstream_spam_verdict_is_stored_ignored_and_never_answered(desk: Desk) -> None:
    """`X-Spam-Flag: YES` (or `X-Spam-Status: Yes, …`) from the border MTA: stored, decided
    ignore with the verdict as the reason, no ticket, nothing in the outbox. A sender's
    `X-Spam-Flag: NO` next to our YES changes nothing."""
    details = []
    for i, headers in enumerate(({"X-Spam-Flag": "YES"},
                                 {"X-Spam-Flag": "NO", "X-Spam-Status":
                                  "Yes, score=9.4 required=5.0 tests=HELO_DYNAMIC_IPADDR"})):
        out = desk.receive(mail(CUSTOMER, f"Nejde uložit směnný kalendář {i}", REQUEST,
                                headers=headers), MON + timedelta(minutes=i))
        assert out.decision.kind.value == "ignore_auto" and out.ticket_number is None
        record = desk.store.decision_for(out.inbound_id)
        assert record is not None and record.kind == "ignore_auto"
        [hit] = [r for r in record.reasons if r["hit"]]
        assert hit["rule"] == "spam_verdict"
        details.append(hit["detail"])
    assert details == ["spam verdict X-Spam-Flag: YES",
                       "spam verdict X-Spam-Status: Yes, score=9.4 required=5.0 tests=HELO_DYNAMIC_IPADDR"]
    assert desk.store.count_inbound() == {"decided": 2}
    assert desk.sent() == [] and desk.store.count_outbox() == {}
    # Without the verdict (or with only the sender's NO) the same request opens a ticket.
    out = desk.receive(mail(CUSTOMER, "Nejde uložit směnný kalendář", REQUEST,
                            headers={"X-Spam-Flag": "NO"}), MON + timedelta(minutes=5))
    assert out.decision.kind.value == "ticket"


def test_per_address_limit_holds_within_one_batch(desk: Desk) -> None:
    """The per-address limit counts the replies a batch queues itself (one transaction):
    five requests from one sender decided together get three acknowledgements, as one by
    one; the other two are recorded as `rate_limit`, and the staff hear of all five."""
    for i in range(5):
        save_raw(desk.store, mail(CUSTOMER, f"Kalendář {i}", REQUEST), "test",
                 received_at=MON + timedelta(minutes=i))
    batch = desk.store.claim_inbound(10)
    assert len(batch) == 5
    results = desk.worker.process_many(batch, now=MON + timedelta(minutes=5))
    assert [r.decision.kind.value for r in results if isinstance(r, Outcome)] == ["ticket"] * 5
    assert len(desk.sent("ack")) == 3
    assert len(desk.sent("notice")) == 5
    limited = [[r["detail"] for r in reasons(desk.store, o.inbound_id)
                if r["rule"] == "rate_limit"] for o in results]
    note = f"no ack to {CUSTOMER}: 3 per hour to this address reached"
    assert limited == [[], [], [], [note], [note]]


def test_held_replies_warn_once_per_limit_and_hour(capped_desk: Desk,
                                                   caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A burst running into the limits (a loop from one address, then forged senders past
    the total): every reply held back is in its decision record and in the log, but only
    the first per limit and hour is a WARNING, which operators alert on."""
    monkeypatch.setattr(actions, "LIMIT_WARNINGS", LimitWarnings(3600))
    caplog.set_level(logging.INFO, logger="mailbot.actions")
    desk = capped_desk  # 3 per hour to one address, 4 to all
    looping = [desk.receive(mail(CUSTOMER, f"Kalendář {i}", REQUEST), MON + timedelta(minutes=i))
               for i in range(6)]
    forged = [desk.receive(mail(f"zakaznik{i}@strojirny-hranice.cz", f"Kalendář {i}", REQUEST),
                           MON + timedelta(minutes=10 + i)) for i in range(4)]
    assert len(desk.sent("ack")) == 4
    held = [r["detail"] for o in [*looping, *forged]
            for r in reasons(desk.store, o.inbound_id) if r["rule"] == "rate_limit"]
    assert len(held) == 6
    lines = [(r.levelno, r.getMessage()) for r in caplog.records
             if r.getMessage().startswith("auto-reply rate limit: no ")]
    assert len(lines) == 6
    warnings = [m for level, m in lines if level == logging.WARNING]
    assert len(warnings) == 2
    assert CUSTOMER in warnings[0] and "to this address" in warnings[0]
    assert "zakaznik1@" in warnings[1] and "to all addresses" in warnings[1]
    assert sum(level == logging.INFO for level, _ in lines) == 4


def test_limit_warnings_forget_after_the_window_and_stay_bounded(
        caplog: pytest.LogCaptureFixture) -> None:
    """A limit is warned about again once its window has passed; at most `size` addresses
    are remembered, the oldest forgotten first (a flood of forged senders cannot grow it)."""
    caplog.set_level(logging.INFO, logger="mailbot.actions")
    warned = LimitWarnings(window=3600, size=3)

    def levels(*calls: tuple[str, float]) -> list[int]:
        caplog.clear()
        for address, at in calls:
            warned.held("ack", address, "3 per hour to this address reached",
                        per_address=True, now=at)
        return [r.levelno for r in caplog.records]

    W, I = logging.WARNING, logging.INFO
    assert levels(("a@x", 0.0), ("A@X", 3599.0), ("a@x", 3600.0)) == [W, I, W]
    assert levels(("b@x", 3601.0), ("c@x", 3602.0), ("d@x", 3603.0)) == [W, W, W]
    assert levels(("a@x", 3700.0)) == [W]  # forgotten for the three newer ones
