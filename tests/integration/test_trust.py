"""The trust boundary through the real worker and store (issue 14, items 2 and 5): reply
tokens never reach anyone outside the staff, `#assign` stays within the staff, and a ticket
belongs to its customer (a forged or free-mail From neither joins nor ends a `#wait`)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path

import pytest

from mailbot import config as config_mod
from mailbot.domain import LicenseRecord, Tier
from mailbot.errors import ConfigError
from mailbot.store import Store
from tests.integration.test_conversation import (
    CUSTOMER,
    MON,
    NOTIFY,
    REQUEST,
    Desk,
    mail,
    open_ticket,
    staff_answer,
)

OURS = "mx.estelar.example"
FREEMAIL_LICENSE = LicenseRecord("50001111", "Pekárna Nováková", "gmail.com",
                                 date(2026, 10, 1), Tier.START, None)


def make_desk(config: config_mod.Config, store: Store, tmp_path: Path, *,
              notify: tuple[str, ...] = (NOTIFY,), sms: str | None = None) -> Desk:
    cfg = config.model_copy(update={
        "store": config.store.model_copy(update={"attachments_dir": str(tmp_path / "files")}),
        "mailbox": config.mailbox.model_copy(update={"staff_notify": notify}),
        "conversation": config.conversation.model_copy(update={"authserv_ids": (OURS,)}),
        "schedule": config.schedule.model_copy(update={
            "emergency_notify": ("pohotovost@estelar.example",), "sms_gateway": sms}),
        "worker": config.worker.model_copy(update={"processes": 0}),
    })
    desk = Desk(cfg, store)
    store.upsert_licenses([FREEMAIL_LICENSE])
    return desk


@pytest.fixture
def desk(config: config_mod.Config, store: Store, tmp_path: Path) -> Desk:
    return make_desk(config, store, tmp_path)


# --- item 5: a ticket belongs to its customer --------------------------------------------------


def test_forged_customer_from_cannot_follow_up_or_end_the_wait(desk: Desk) -> None:
    """A mail with the customer's From that our MTA's A-R do not authenticate (DKIM for
    another domain, DMARC fail) neither joins the ticket nor ends its #wait: it is a new
    request that refers to the ticket, without its license. The customer's own
    authenticated mail still follows up."""
    number, notice, _ = open_ticket(desk)
    desk.receive(staff_answer(notice, "#wait\nPošlete prosím log."), MON + timedelta(hours=1))
    forged = mail(CUSTOMER, f"Re: [#{number}] Nejde uložit", "Zrušte prosím tiket, už to jde.",
                  headers={"Authentication-Results":
                           f"{OURS}; dkim=pass header.d=evil.test; spf=pass"
                           " smtp.mailfrom=eve@evil.test; dmarc=fail"
                           " header.from=strojirny-hranice.cz"})
    out = desk.receive(forged, MON + timedelta(hours=2))
    assert out.decision.kind.value != "followup"
    assert "unaligned_sender" in out.decision.flags
    assert out.decision.related_ticket == number and out.decision.license is None
    waiting = desk.store.ticket_info(number)
    assert waiting is not None and waiting.state == "waiting"
    genuine = mail(CUSTOMER, f"Re: [#{number}] Nejde uložit", "Log posílám.",
                   headers={"Authentication-Results":
                            f"{OURS}; dkim=pass header.d=strojirny-hranice.cz;"
                            " dmarc=pass header.from=strojirny-hranice.cz"})
    assert desk.receive(genuine, MON + timedelta(hours=3)).decision.kind.value == "followup"
    resumed = desk.store.ticket_info(number)
    assert resumed is not None and resumed.state == "open"


def test_freemail_domain_never_stands_for_the_customer(desk: Desk) -> None:
    """A license whose email_domain is gmail.com: only the ticket's own address follows
    up; anyone else at gmail.com starts a new request."""
    request = REQUEST.replace("4012-7733", "5000-1111")
    out = desk.receive(mail("pekarna.novakova@gmail.com", "Nejde tisk", request), MON)
    number = out.ticket_number
    assert out.decision.kind.value == "ticket" and number
    stranger = mail("kdokoli@gmail.com", f"Re: [#{number}] Nejde tisk", "Uzavřete to prosím.")
    out = desk.receive(stranger, MON + timedelta(hours=1))
    assert out.decision.kind.value != "followup" and "foreign_sender" in out.decision.flags
    own = mail("pekarna.novakova@gmail.com", f"Re: [#{number}] Nejde tisk", "Doplňuji info.")
    assert desk.receive(own, MON + timedelta(hours=2)).decision.kind.value == "followup"


# --- item 2: reply tokens are not passwords -----------------------------------------------------


def test_assign_to_an_outside_address_is_refused(desk: Desk) -> None:
    """`#assign` to an outside address would send the ticket's reminders (with the reply
    token) outside: an error mail back, nothing done. A staff address is fine."""
    number, notice, _ = open_ticket(desk)
    desk.receive(staff_answer(notice, "#assign eve@evil.test\nPředávám."),
                 MON + timedelta(hours=1))
    [error] = desk.sent("command_error")
    assert "eve@evil.test" in error.get_body(("plain",)).get_content()
    assert desk.sent("relay") == []
    t = desk.store.ticket_info(number)
    assert t is not None and t.assignee is None
    desk.receive(staff_answer(notice, "#assign kolega@estelar.example\nPředávám."),
                 MON + timedelta(hours=2))
    t = desk.store.ticket_info(number)
    assert t is not None and t.assignee == "kolega@estelar.example"


def test_reply_token_never_goes_to_an_outside_recipient(config: config_mod.Config,
                                                        store: Store, tmp_path: Path) -> None:
    """The emergency alert also goes to the SMS gateway: its Reply-To has no token. The
    staff-only notice keeps its tokened Reply-To."""
    desk = make_desk(config, store, tmp_path, sms="420603123456@sms.example")
    text = REQUEST.replace("po kliknutí na Uložit se v ACS-line zobrazí chyba „Neplatný "
                           "interval“ a směnný kalendář pro třetí směnu se neuloží.",
                           "služba ACS nejde spustit a nikdo si nemůže zapsat docházku.")
    out = desk.receive(mail(CUSTOMER, "Havárie: server nejede", text), MON)
    assert out.decision.priority is not None and out.decision.priority.value == "emergency"
    [alert] = desk.sent("emergency")
    assert str(alert["Reply-To"]) == "podpora@estelar.example"
    [notice] = desk.sent("notice")
    assert str(notice["Reply-To"]).startswith(f"podpora+{out.ticket_number}.")


def test_notice_to_a_list_with_an_outside_address_carries_no_token(
        config: config_mod.Config, store: Store, tmp_path: Path) -> None:
    desk = make_desk(config, store, tmp_path, notify=(NOTIFY, "externista@partner.test"))
    _, notice, _ = open_ticket(desk)
    assert str(notice["Reply-To"]) == "podpora@estelar.example"
    assert "podpora+" not in notice.as_string()


def test_configuration_of_tokens_and_freemail() -> None:
    """A short default token lifetime; a bad freemail entry or an unset previous-secret
    variable stops start-up naming the key."""
    conv = config_mod.ConversationConfig()
    assert conv.token_days == 14 and "gmail.com" in conv.freemail_domains
    with pytest.raises(ConfigError, match="conversation.freemail_domains"):
        config_mod.parse({"conversation": {"freemail_domains": ["not a domain"]}})
    with pytest.raises(ConfigError, match="conversation.token_secret_previous_env"):
        config_mod.parse({"conversation": {"token_secret_previous_env": "MAILBOT_TEST_UNSET_X"}})
    with pytest.raises(ConfigError, match="conversation.token_secret_previous_credential"):
        config_mod.parse({"conversation": {"token_secret_previous_credential": "no-such-file"}})
