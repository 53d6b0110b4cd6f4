"""Conversations through the real worker and store (SQLite and PostgreSQL): notices to staff,
staff replies relayed with their commands, follow-ups, reopening, spoofing, bounces and the
auto-reply rate limit. The wire-level version with a real mail client is in tests/e2e."""

from __future__ import annotations

import email.policy
from datetime import datetime, timedelta
from pathlib import Path
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid
from zoneinfo import ZoneInfo

import pytest

from mailbot import config as config_mod
from mailbot.actions import Outcome
from mailbot.business_hours import BusinessCalendar
from mailbot.domain import DecisionKind, LicenseRecord, Tier
from mailbot.ingest.intake import save_raw
from mailbot.store import Store
from mailbot.worker import Quarantined, Worker

PRAGUE = ZoneInfo("Europe/Prague")
MON = datetime(2026, 11, 23, 9, 0, tzinfo=PRAGUE)  # a working Monday
LICENSE = LicenseRecord("40127733", "Strojírny Hranice a.s.", "strojirny-hranice.cz",
                        MON.date().replace(month=10), Tier.START, None)
CUSTOMER = "dvorak@strojirny-hranice.cz"
STAFF = "novak@estelar.example"
NOTIFY = "tym-podpory@estelar.example"
REQUEST = ("Dobrý den,\n\npo kliknutí na Uložit se v ACS-line zobrazí chyba „Neplatný interval“ "
           "a směnný kalendář pro třetí směnu se neuloží.\n\nLicenční číslo: 4012-7733\n\n"
           "S pozdravem\nPavel Dvořák\n")
_PARSE = BytesParser(policy=email.policy.default)


def mail(sender: str, subject: str, body: str, *, to: str = "podpora@estelar.example",
         in_reply_to: str | None = None, headers: dict[str, str] | None = None,
         attachment: tuple[str, bytes] | None = None) -> bytes:
    msg = EmailMessage()
    for name, value in (headers or {}).items():
        msg[name] = value
    msg["From"] = sender
    msg["To"] = to
    msg["Subject"] = subject
    msg["Message-ID"] = make_msgid(domain=sender.rpartition("@")[2])
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    if attachment:
        msg.add_attachment(attachment[1], maintype="application", subtype="octet-stream",
                           filename=attachment[0])
    return msg.as_bytes(policy=email.policy.SMTP)


class Desk:
    """The support desk: mail in through the store and worker, mail out read from the outbox."""

    def __init__(self, config: config_mod.Config, store: Store) -> None:
        self.store = store
        self.worker = Worker(config, store)
        self.calendar = BusinessCalendar(config.calendar)
        store.upsert_licenses([LICENSE])

    def receive(self, raw: bytes, at: datetime) -> Outcome:
        save_raw(self.store, raw, "test", received_at=at)
        [item] = self.store.claim_inbound(5)
        [result] = self.worker.process_many([item], now=at)
        assert not isinstance(result, Quarantined), result.error
        return result

    def receive_raw(self, raw: bytes, at: datetime) -> str:
        """Take in a message expected to be quarantined; returns the quarantine reason."""
        save_raw(self.store, raw, "test", received_at=at)
        [item] = self.store.claim_inbound(5)
        [result] = self.worker.process_many([item], now=at)
        assert isinstance(result, Quarantined)
        return result.error

    def sent(self, kind: str | None = None) -> list[EmailMessage]:
        rows = sorted(self.store.list_outbox(limit=1000), key=lambda r: r.id)
        return [_PARSE.parsebytes(r.raw) for r in rows if kind is None or r.kind == kind]  # type: ignore[misc]

    def ticket(self, number: str) -> object:
        return self.store.ticket_info(number)


@pytest.fixture
def desk(config: config_mod.Config, store: Store, tmp_path: Path) -> Desk:
    cfg = config.model_copy(update={
        "store": config.store.model_copy(update={"attachments_dir": str(tmp_path / "files")}),
        "limits": config.limits.model_copy(update={"ticket_attachment_bytes": 10_000}),
        "mailbox": config.mailbox.model_copy(update={"staff_notify": (NOTIFY,)}),
        "conversation": config.conversation.model_copy(
            update={"authserv_ids": ("mx.estelar.example",)}),
        "worker": config.worker.model_copy(update={"processes": 0}),
    })
    return Desk(cfg, store)


def open_ticket(desk: Desk, at: datetime = MON) -> tuple[str, EmailMessage, bytes]:
    raw = mail(f"Pavel Dvořák <{CUSTOMER}>", "Nejde uložit směnný kalendář", REQUEST)
    out = desk.receive(raw, at)
    assert out.decision.kind.value == "ticket" and out.ticket_number
    [notice] = desk.sent("notice")
    return out.ticket_number, notice, raw


def staff_answer(notice: EmailMessage, body: str, *, sender: str = f"Jan Novák <{STAFF}>",
                 to: str | None = None, headers: dict[str, str] | None = None,
                 attachment: tuple[str, bytes] | None = None) -> bytes:
    """What a mail client sends when staff press Reply on the notice (quote below)."""
    quoted = "\n".join("> " + line for line in notice.get_body(("plain",)).get_content().replace("\r\n", "\n").splitlines())
    text = f"{body}\n\nOn Mon, 23 Nov 2026 at 09:01, ESTELAR podpora wrote:\n{quoted}\n"
    return mail(sender, f"Re: {notice['Subject']}", text, to=to or str(notice["Reply-To"]),
                in_reply_to=str(notice["Message-ID"]), headers=headers, attachment=attachment)


def test_new_ticket_notifies_staff_with_tokened_reply_to(desk: Desk) -> None:
    """A new ticket: ack to the customer, notice to the staff list with everything they need
    and a per-ticket Reply-To."""
    number, notice, _ = open_ticket(desk)
    [ack] = desk.sent("ack")
    assert str(ack["To"]).endswith(f"<{CUSTOMER}>")
    assert [str(a.addr_spec) for a in notice["To"].addresses] == [NOTIFY]
    reply_to = str(notice["Reply-To"])
    assert reply_to.startswith(f"podpora+{number}.") and reply_to.endswith("@estelar.example")
    assert f"[#{number}]" in str(notice["Subject"])
    assert notice["Auto-Submitted"] == "auto-generated"
    text = notice.get_body(("plain",)).get_content().replace("\r\n", "\n")
    for expected in ("Strojírny Hranice a.s.", "40127733", "START", "Neplatný interval", CUSTOMER):
        assert expected in text
    html = notice.get_body(("html",)).get_content()
    assert "Strojírny Hranice a.s." in html and "<pre" in html


def test_staff_reply_is_relayed_threaded_without_the_quote(desk: Desk) -> None:
    """Reply-To → staff reply with the token: relayed to the customer from the support address,
    threaded under the customer's mail, quote stripped, attachment passed on."""
    number, notice, request = open_ticket(desk)
    customer_id = _PARSE.parsebytes(request)["Message-ID"]
    raw = staff_answer(notice, "Dobrý den,\nzkuste prosím restart služby ACS.\n\nJan Novák",
                       attachment=("postup.pdf", b"%PDF-1.4 test"))
    out = desk.receive(raw, MON + timedelta(hours=1))
    assert out.decision.kind.value == "staff_reply"
    [relay] = desk.sent("relay")
    assert [a.addr_spec for a in relay["To"].addresses] == [CUSTOMER]
    assert relay["From"].addresses[0].addr_spec == "podpora@estelar.example"
    assert STAFF not in str(relay)  # the staff member's address is not exposed
    assert "Jan Novák" in str(relay["From"])
    assert relay["In-Reply-To"] == customer_id
    assert customer_id in relay["References"] and f"<ticket-{number}.1@estelar.example>" in relay["References"]
    assert f"[#{number}]" in str(relay["Subject"])
    body = relay.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert body.startswith("Dobrý den,\nzkuste prosím restart služby ACS.")
    assert "Neplatný interval" not in body and "wrote:" not in body
    [att] = list(relay.iter_attachments())
    assert att.get_filename() == "postup.pdf" and att.get_content() == b"%PDF-1.4 test"
    assert "Auto-Submitted" not in relay  # a person's answer, not an automatic one
    kinds = [e.kind for e in desk.store.ticket_events(number)]
    assert kinds == ["opened", "answered"]


def test_wait_then_customer_reply_resumes_the_deadline(desk: Desk) -> None:
    """#wait pauses the deadline; the customer's reply resumes it with the working time left."""
    number, notice, _ = open_ticket(desk)  # Mon 9:00 → due Thu 9:00 (27 working hours)
    before = desk.store.ticket_info(number)
    assert before is not None and before.deadline == datetime(2026, 11, 26, 9, 0, tzinfo=PRAGUE)
    desk.receive(staff_answer(notice, "#wait\nPošlete prosím log ze serveru."),
                 MON + timedelta(hours=2))  # Mon 11:00: 25 working hours left
    waiting = desk.store.ticket_info(number)
    assert waiting is not None and waiting.state == "waiting"
    [relay] = desk.sent("relay")
    assert relay.get_body(("plain",)).get_content().replace("\r\n", "\n").startswith("Pošlete prosím log ze serveru.")
    # The customer answers on Wednesday 15:00: 25 h from then is Monday 13:00 next week.
    answer = mail(CUSTOMER, f"Re: [#{number}] Nejde uložit", "Log posílám v příloze.",
                  in_reply_to=str(relay["Message-ID"]))
    out = desk.receive(answer, datetime(2026, 11, 25, 15, 0, tzinfo=PRAGUE))
    assert out.decision.kind.value == "followup"
    resumed = desk.store.ticket_info(number)
    assert resumed is not None and resumed.state == "open"
    assert resumed.deadline == datetime(2026, 11, 30, 13, 0, tzinfo=PRAGUE)
    notices = desk.sent("notice")
    assert len(notices) == 2 and "Log posílám v příloze." in notices[1].get_body(("plain",)).get_content().replace("\r\n", "\n")


def test_commands_assign_priority_note_close(desk: Desk) -> None:
    """#assign and #priority change the ticket; #note is recorded but not relayed; #close closes."""
    number, notice, _ = open_ticket(desk)
    desk.receive(staff_answer(notice, "#assign Jan Novák\n#priority emergency\n#note\n"
                              "Interní: zákazník má starou verzi."), MON + timedelta(minutes=30))
    t = desk.store.ticket_info(number)
    assert t is not None and t.assignee == "Jan Novák" and t.priority.value == "emergency"
    assert t.deadline == datetime(2026, 11, 23, 13, 0, tzinfo=PRAGUE)  # 4 working hours
    assert desk.sent("relay") == []
    desk.receive(staff_answer(notice, "#close\nHotovo, děkujeme."), MON + timedelta(hours=1))
    closed = desk.store.ticket_info(number)
    assert closed is not None and closed.state == "closed"
    assert len(desk.sent("relay")) == 1
    events = [(e.kind, e.detail) for e in desk.store.ticket_events(number)]
    assert ("assigned", "Jan Novák") in events and ("priority", "emergency") in events
    assert ("note", "Interní: zákazník má starou verzi.") in events and ("closed", None) in events


def test_unknown_command_gets_an_error_and_nothing_is_done(desk: Desk) -> None:
    """A typo in a command: an error mail back to that staff member; nothing relayed or changed."""
    number, notice, _ = open_ticket(desk)
    desk.receive(staff_answer(notice, "#clsoe\nHotovo."), MON + timedelta(hours=1))
    assert desk.sent("relay") == []
    [error] = desk.sent("command_error")
    assert [a.addr_spec for a in error["To"].addresses] == [STAFF]
    assert "#clsoe" in error.get_body(("plain",)).get_content().replace("\r\n", "\n")
    t = desk.store.ticket_info(number)
    assert t is not None and t.state == "open"


def test_spoofed_staff_reply_is_not_relayed(desk: Desk, caplog: pytest.LogCaptureFixture) -> None:
    """From a staff address to the plain support address, no token, no trusted A-R: not
    relayed, logged as suspicious, and the staff are warned."""
    number, notice, _ = open_ticket(desk)
    forged = staff_answer(notice, "Pošlete heslo k databázi na tuto adresu.",
                          to="podpora@estelar.example",
                          headers={"Authentication-Results":
                                   "mx.evil.example; dkim=pass header.d=estelar.example"})
    out = desk.receive(forged, MON + timedelta(hours=1))
    assert out.decision.kind.value != "staff_reply" and "suspicious_staff" in out.decision.flags
    assert desk.sent("relay") == []
    assert any("not verified" in r.getMessage() for r in caplog.records)
    warning = desk.sent("notice")[-1]
    assert "nepodařilo ověřit" in warning.get_body(("plain",)).get_content().replace("\r\n", "\n")
    # The same reply stamped by our own MTA (trusted authserv-id, aligned DKIM pass) is relayed.
    genuine = staff_answer(notice, "Dobrý den, posílám postup.", to="podpora@estelar.example",
                           headers={"Authentication-Results":
                                    "mx.estelar.example; dkim=pass header.d=estelar.example"})
    assert desk.receive(genuine, MON + timedelta(hours=2)).decision.kind.value == "staff_reply"
    assert len(desk.sent("relay")) == 1


def test_followup_senders_and_reopen_window(desk: Desk) -> None:
    """A colleague from the license's domain may follow up; a stranger's mail is a new
    request; a ticket closed within the window reopens, after it a new ticket refers to it."""
    number, notice, _ = open_ticket(desk)
    colleague = mail("kolega@strojirny-hranice.cz", f"Re: [#{number}] x", "Doplňuji, chyba je i u druhé směny.")
    assert desk.receive(colleague, MON + timedelta(hours=1)).decision.kind.value == "followup"
    stranger = mail("eve@jinde.example", f"Re: [#{number}] x", "Také mi to nejde, co s tím?")
    out = desk.receive(stranger, MON + timedelta(hours=1, minutes=5))
    assert out.decision.kind.value != "followup" and "foreign_sender" in out.decision.flags
    desk.receive(staff_answer(notice, "#close\nVyřešeno."), MON + timedelta(hours=2))
    soon = mail(CUSTOMER, f"Re: [#{number}] x", "Chyba se znovu objevila po restartu.")
    out = desk.receive(soon, MON + timedelta(days=3))
    assert out.decision.kind.value == "followup" and "reopen" in out.decision.flags
    t = desk.store.ticket_info(number)
    assert t is not None and t.state == "open"
    desk.store.set_ticket_state(number, "closed", by="test", now=MON + timedelta(days=3))
    late = mail(CUSTOMER, f"Re: [#{number}] x", "Po měsíci se chyba vrátila, kalendář nejde uložit.")
    out = desk.receive(late, MON + timedelta(days=40))
    assert out.decision.kind.value == "ticket" and out.ticket_number != number
    assert out.decision.related_ticket == number and out.decision.license == "40127733"


def test_bounce_of_our_ack_marks_it_bounced(desk: Desk) -> None:
    """An RFC 3464 report returning our acknowledgement: the outbox row becomes `bounced`;
    no ticket, no reply."""
    open_ticket(desk)
    [ack_row] = [r for r in desk.store.list_outbox(limit=10) if r.kind == "ack"]
    report = EmailMessage()
    report["From"] = "MAILER-DAEMON@mx.strojirny-hranice.cz"
    report["To"] = "podpora@estelar.example"
    report["Subject"] = "Undelivered Mail Returned to Sender"
    report["Message-ID"] = make_msgid(domain="mx.strojirny-hranice.cz")
    report.set_content("The mail system could not deliver your message.")
    status = EmailMessage()
    status.set_content("Reporting-MTA: dns; mx.strojirny-hranice.cz\n\n"
                       f"Final-Recipient: rfc822; {CUSTOMER}\nAction: failed\nStatus: 5.1.1\n")
    report.add_attachment(ack_row.raw, maintype="message", subtype="rfc822")  # type: ignore[arg-type]
    report.replace_header("Content-Type", 'multipart/report; report-type="delivery-status"; '
                          f'boundary="{report.get_boundary()}"')
    before = len(desk.sent())
    out = desk.receive(report.as_bytes(policy=email.policy.SMTP), MON + timedelta(hours=1))
    assert out.decision.kind.value == "ignore_auto"
    assert out.decision.bounced_ids == (ack_row.message_id,)
    assert len(desk.sent()) == before
    row = desk.store.get_outbox(ack_row.id)
    assert row is not None and row.state == "bounced" and row.bounced_at is not None


def test_auto_replies_per_sender_are_rate_limited(desk: Desk) -> None:
    """RFC 3834: at most 3 automatic replies per sender and hour; the next hour there are more."""
    for i in range(5):
        desk.receive(mail(CUSTOMER, f"Dotaz {i}", "Nefunguje to."), MON + timedelta(minutes=i))
    rejections = desk.sent("reject_incomplete")
    assert len(rejections) == 3
    desk.receive(mail(CUSTOMER, "Dotaz 6", "Nefunguje to."), MON + timedelta(minutes=61))
    assert len(desk.sent("reject_incomplete")) == 4


def test_threading_by_message_id_alone(desk: Desk) -> None:
    """No tag and none of our Message-IDs: In-Reply-To naming a mail recorded on the ticket
    (the customer's own request) still finds the ticket, for the customer and for staff."""
    number, _, request = open_ticket(desk)
    request_id = str(_PARSE.parsebytes(request)["Message-ID"])
    more = mail(CUSTOMER, "Re: Nejde uložit směnný kalendář", "Ještě doplňuji: verze 5.2.",
                in_reply_to=request_id)
    out = desk.receive(more, MON + timedelta(minutes=10))
    assert (out.decision.kind.value, out.decision.ticket_ref) == ("followup", number)
    direct = mail(f"Jan Novák <{STAFF}>", "Re: Nejde uložit směnný kalendář", "Dobrý den, opraveno.",
                  to=CUSTOMER, in_reply_to=request_id,
                  headers={"Authentication-Results": "mx.estelar.example; dkim=pass header.d=estelar.example",
                           "Cc": "podpora@estelar.example"})
    out = desk.receive(direct, MON + timedelta(minutes=20))
    assert (out.decision.kind.value, out.decision.ticket_ref) == ("staff_reply", number)
    # Sent to the customer directly: recorded on the ticket, not relayed a second time.
    assert desk.sent("relay") == []
    assert [e.kind for e in desk.store.ticket_events(number)] == ["opened", "customer_mail", "answered"]


@pytest.fixture
def small_desk(config: config_mod.Config, store: Store) -> Desk:
    cfg = config.model_copy(update={
        "limits": config.limits.model_copy(update={"message_bytes": 40_000,
                                                   "attachment_bytes": 5_000}),
        "worker": config.worker.model_copy(update={"processes": 0}),
    })
    return Desk(cfg, store)


def test_too_large_is_quarantined_and_the_sender_told_the_limit(small_desk: Desk) -> None:
    """Over the size limit: quarantined with the reason; a person is told the limit, an
    automatic sender is not; structural excess gets no reply."""
    big = mail(CUSTOMER, "Log", REQUEST + "x" * 50_000)
    out = small_desk.receive_raw(big, MON)
    assert out.startswith("too_large: ")
    [note] = small_desk.sent("reject_too_large")
    assert [a.addr_spec for a in note["To"].addresses] == [CUSTOMER]
    assert "větší než 39 kB" in note.get_body(("plain",)).get_content().replace("\r\n", "\n")
    auto = mail(CUSTOMER, "Automatická odpověď", "x" * 50_000, headers={"Auto-Submitted": "auto-replied"})
    assert small_desk.receive_raw(auto, MON).startswith("too_large: ")
    attachment = mail("jina@strojirny-hranice.cz", "Log", REQUEST, attachment=("dump.bin", b"\0" * 8_000))
    assert small_desk.receive_raw(attachment, MON).startswith("attachment_too_large: dump.bin")
    headers = {f"X-Header-{i}": "v" for i in range(1_200)}
    assert small_desk.receive_raw(mail("x@spam.example", "Hi", "Hi", headers=headers), MON).startswith(
        "too_many_headers: ")
    assert len(small_desk.sent("reject_too_large")) == 2  # the person and the attachment sender
    assert small_desk.store.count_inbound() == {"quarantined": 4}
    assert small_desk.store.list_tickets() == []


def test_attachments_are_kept_as_files_within_the_ticket_budget(desk: Desk, tmp_path: Path) -> None:
    """A request's attachments become files named by their hash, with sanitised names on
    the ticket; beyond the ticket's budget they are left out and noted."""
    raw = mail(CUSTOMER, "Nejde uložit", REQUEST, attachment=("../../etc/passwd", b"log " * 1000))
    number = desk.receive(raw, MON).ticket_number
    assert number
    [row] = desk.store.ticket_attachments(number)
    assert (row.filename, row.size) == ("passwd", 4000)
    assert (tmp_path / "files" / row.sha256[:2] / row.sha256).read_bytes() == b"log " * 1000
    more = mail(CUSTOMER, f"Re: [#{number}] x", "Posílám další log.", attachment=("big.log", b"x" * 7000))
    desk.receive(more, MON + timedelta(minutes=5))
    assert len(desk.store.ticket_attachments(number)) == 1  # 4,000 + 7,000 > 10,000
    events = {e.kind: e.detail for e in desk.store.ticket_events(number)}
    assert events["attachments_skipped"] == "big.log"


def test_a_new_tickets_files_are_written_where_it_is_decided(desk: Desk, tmp_path: Path) -> None:
    """Mail that opens a ticket has its files written where it was parsed and decided, within
    the whole per-ticket limit (a new ticket's budget): only their names and hashes go on to
    the worker, not their bytes; over the limit a file is only described, never written.
    Mail on an existing ticket is read from the same tree (no second parse, no raw bytes sent
    along) and written once the worker knows the ticket's budget. Mail that keeps no files
    reads none, and a dry run writes none."""
    from mailbot.attachments import AttachmentStore
    from mailbot.pipeline import Pipeline
    from mailbot.registry import DictRegistry
    from mailbot.replies.conversation import attachments_of

    pipeline = desk.worker.pipeline
    files = AttachmentStore(tmp_path / "files")
    raw = mail(CUSTOMER, "Nejde uložit", REQUEST, attachment=("směny.log", b"log " * 1000))
    analysis = pipeline.analyse(raw, MON)
    assert analysis.decision is not None and analysis.decision.kind is DecisionKind.TICKET
    assert analysis.attachments is None
    [saved] = analysis.saved_attachments or ()
    assert (saved.filename, saved.size, analysis.skipped_attachments) == ("směny.log", 4000, ())
    assert files.path(saved.sha256).read_bytes() == b"log " * 1000
    over = mail(CUSTOMER, "Nejde tisk", REQUEST, attachment=("dump.bin", b"\x01" * 12_000))
    big = pipeline.analyse(over, MON)
    assert big.saved_attachments == ()
    [skipped] = big.skipped_attachments
    assert (skipped.filename, skipped.size) == ("dump.bin", 12_000)
    assert not files.path(skipped.sha256).exists()

    number = desk.receive(raw, MON).ticket_number
    assert [a.sha256 for a in desk.store.ticket_attachments(number or "")] == [saved.sha256]
    other = desk.receive(over, MON).ticket_number or ""
    assert desk.store.ticket_attachments(other) == []
    events = {e.kind: e.detail for e in desk.store.ticket_events(other)}
    assert events["attachments_skipped"] == "dump.bin"
    more = mail(CUSTOMER, f"Re: [#{number}] x", "Posílám další log.", attachment=("b.log", b"b" * 500))
    followup = pipeline.analyse(more, MON)
    assert followup.decision is not None and followup.decision.kind is DecisionKind.FOLLOWUP
    assert followup.saved_attachments is None
    assert followup.attachments == tuple(attachments_of(more))

    incomplete = mail(CUSTOMER, "Nejde to", "Nefunguje to. Díky",
                      attachment=("foto.jpg", b"\xff\xd8" * 100))
    rejected = pipeline.analyse(incomplete, MON)
    assert rejected.decision is not None
    assert rejected.decision.kind is DecisionKind.REJECT_INCOMPLETE
    assert (rejected.attachments, rejected.saved_attachments) == (None, None)

    dry = Pipeline.offline(desk.worker.config, DictRegistry({LICENSE.license: LICENSE}))
    other = mail(CUSTOMER, "Nejde export", REQUEST, attachment=("jiný.log", b"dry " * 500))
    decided = dry.analyse(other, MON)
    assert decided.decision is not None and decided.decision.kind is DecisionKind.TICKET
    assert decided.saved_attachments is None
    assert sorted(p.name for p in (tmp_path / "files").rglob("*") if p.is_file()) == [saved.sha256]


def test_after_hours_ack_says_when_work_starts(desk: Desk) -> None:
    """Mail on Saturday: the ack says it arrived outside working hours, when work on it
    starts (Monday 8:00) and the deadline counted from then."""
    raw = mail(f"Pavel Dvořák <{CUSTOMER}>", "Nejde uložit směnný kalendář", REQUEST)
    out = desk.receive(raw, datetime(2026, 11, 28, 11, 0, tzinfo=PRAGUE))
    assert out.deadline == datetime(2026, 12, 2, 17, 0, tzinfo=PRAGUE)
    [ack] = desk.sent("ack")
    text = ack.get_body(("plain",)).get_content().replace("\r\n", "\n")
    assert "mimo naši pracovní dobu" in text
    assert "pondělí 30. 11. 2026 8:00" in " ".join(text.split())
    weekday = mail(f"Pavel Dvořák <{CUSTOMER}>", "Jiný dotaz", REQUEST.replace("Uložit", "Tisk"))
    desk.receive(weekday, MON)
    later = desk.sent("ack")[1].get_body(("plain",)).get_content()
    assert "mimo naši pracovní dobu" not in later


def test_emergency_alerts_the_emergency_addresses_at_once(config: config_mod.Config, store: Store,
                                                         tmp_path: Path) -> None:
    cfg = config.model_copy(update={
        "store": config.store.model_copy(update={"attachments_dir": str(tmp_path / "files")}),
        "mailbox": config.mailbox.model_copy(update={"staff_notify": (NOTIFY,)}),
        "schedule": config.schedule.model_copy(update={
            "emergency_notify": ("pohotovost@estelar.example",), "sms_gateway": "420603123456@sms.example"}),
        "worker": config.worker.model_copy(update={"processes": 0}),
    })
    desk = Desk(cfg, store)
    text = REQUEST.replace("po kliknutí na Uložit se v ACS-line zobrazí chyba „Neplatný interval“ "
                           "a směnný kalendář pro třetí směnu se neuloží.",
                           "služba ACS nejde spustit a nikdo si nemůže zapsat docházku.")
    out = desk.receive(mail(CUSTOMER, "Havárie: server nejede", text), MON)
    assert out.decision.priority is not None and out.decision.priority.value == "emergency"
    [alert] = desk.sent("emergency")
    assert sorted(a.addr_spec for a in alert["To"].addresses) == [
        "420603123456@sms.example", "pohotovost@estelar.example"]
    assert "HAVÁRIE" in str(alert["Subject"]) and "nikdo si nemůže zapsat" in alert.get_content()


def test_a_message_whose_writes_fail_is_quarantined_not_retried_forever(
        desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bug in acting on one message (here: writing its decision raises) quarantines that
    message with the traceback, also when it is alone in its batch."""
    import mailbot.worker

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("simulated bug in write_decision")

    monkeypatch.setattr(mailbot.worker, "write_decision", broken)
    reason = desk.receive_raw(mail(CUSTOMER, "Dotaz", REQUEST), MON)
    assert "simulated bug in write_decision" in reason
    assert desk.store.count_inbound() == {"quarantined": 1}


def test_a_staff_reply_whose_signature_carries_the_newsletter_footer_is_no_bulk_mail(
        desk: Desk) -> None:
    """The company signature may end with the newsletter's opt-out line ("pokud si nepřejete
    dostávat…"): a staff reply that proves it is one still goes to its ticket; the same
    footer under a stranger's mail is bulk."""
    number, notice, _ = open_ticket(desk)
    footer = ("\n\nJan Novák\nESTELAR s.r.o.\nPokud si nepřejete dostávat obchodní sdělení, "
              "odhlaste se zde.")
    raw = staff_answer(notice, "Dobrý den,\nzkuste prosím restart služby ACS." + footer)
    out = desk.receive(raw, MON + timedelta(hours=1))
    assert out.decision.kind.value == "staff_reply", out.decision.reasons
    stranger = mail("akce@nabidky.example", "Akce měsíce", "Slevy na tonery." + footer)
    assert desk.receive(stranger, MON).decision.kind.value == "ignore_auto"
