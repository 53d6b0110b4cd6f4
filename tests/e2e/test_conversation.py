"""A whole support conversation over the wire, with a real mail client for the staff side.

customer (smtplib) → mailbot's SMTP listener → ack to the customer and a notice to the staff
list at the relay (aiosmtpd sink) → the notice lands in a staff Maildir → neomutt replies
(Reply, type, attach, send through mailbot's listener) → mailbot relays the answer to the
customer, threaded → the customer replies → the staff are notified. Everything asserted
here is what crossed the wire.
"""

from __future__ import annotations

import asyncio
import email.policy
from email.message import EmailMessage
from email.utils import make_msgid
from pathlib import Path

import pytest

from mailbot.config import Config
from tests.e2e.helpers import daemon_config, import_licenses, request_mail, running, smtp_send
from tests.fixtures.mua import deliver_to_maildir, neomutt_available, neomutt_reply

pytestmark = pytest.mark.skipif(not neomutt_available(),
                                reason="neomutt not installed (apt-get install neomutt)")

CUSTOMER = "dvorak@strojirny-hranice.cz"
STAFF = "jana.novakova@estelar.example"
NOTIFY = "tym-podpory@estelar.example"


def plain(msg: EmailMessage) -> str:
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


async def test_customer_staff_customer_conversation(base_config: Config, smtp_sink,
                                                    tmp_path: Path) -> None:
    cfg = daemon_config(base_config, smtp_sink.port, staff_notify=(NOTIFY,))
    import_licenses(cfg)
    async with running(cfg) as daemon:
        port = daemon.listen_port
        # 1. The customer writes; the ack goes to them, the notice to the staff list.
        request = request_mail(sender=CUSTOMER)
        request_id = email.message_from_bytes(request)["Message-ID"]
        await asyncio.to_thread(smtp_send, port, request, sender=CUSTOMER)
        first = await asyncio.to_thread(smtp_sink.wait_for, 2, 15)
        by_rcpt = {m.rcpt_tos: m for m in first}
        ack, notice = by_rcpt[(CUSTOMER,)], by_rcpt[(NOTIFY,)]
        number = str(ack.message["Subject"]).split("[#", 1)[1].split("]", 1)[0]
        assert ack.message["In-Reply-To"] == request_id
        reply_to = str(notice.message["Reply-To"])
        assert reply_to.startswith(f"podpora+{number}.")
        assert "Neplatný interval" in plain(notice.message)

        # 2. A staff member answers from neomutt: Reply, typed text, one attachment.
        maildir = tmp_path / "staff-maildir"
        deliver_to_maildir(maildir, notice.data)
        log = tmp_path / "postup.txt"
        log.write_text("1. Zastavte službu ACS.\n2. Spusťte ji znovu.\n", encoding="utf-8")
        await asyncio.to_thread(
            neomutt_reply, maildir, body="Dobrý den,\nzkuste prosím restart služby podle postupu v příloze.",
            smtp_port=port, from_addr=STAFF, from_name="Jana Nováková", attachments=[log],
            home=tmp_path / "home")

        # 3. mailbot relays it to the customer, threaded under their mail, quote stripped.
        msgs = await asyncio.to_thread(smtp_sink.wait_for, 3, 15)
        relay = msgs[2]
        assert relay.rcpt_tos == (CUSTOMER,)
        r = relay.message
        assert r["From"].addresses[0].addr_spec == "podpora@estelar.example"
        assert STAFF not in relay.data.decode("utf-8", "replace")
        assert r["In-Reply-To"] == request_id
        refs = str(r["References"]).split()
        assert request_id in refs and f"<ticket-{number}.1@estelar.example>" in refs
        assert f"[#{number}]" in str(r["Subject"])
        text = plain(r)
        assert text.startswith("Dobrý den,\nzkuste prosím restart služby podle postupu v příloze.")
        assert "Neplatný interval" not in text and "wrote:" not in text
        [att] = list(r.iter_attachments())
        assert att.get_filename() == "postup.txt"
        assert att.get_content().replace("\r\n", "\n") == log.read_text(encoding="utf-8")

        # 4. The customer replies to the relayed answer; the staff are notified.
        answer = EmailMessage()
        answer["From"] = f"Pavel Dvořák <{CUSTOMER}>"
        answer["To"] = "podpora@estelar.example"
        answer["Subject"] = f"Re: {r['Subject']}"
        answer["Message-ID"] = make_msgid(domain="strojirny-hranice.cz")
        answer["In-Reply-To"] = r["Message-ID"]
        answer["References"] = f"{r['References']} {r['Message-ID']}"
        answer.set_content("Děkuji, po restartu se kalendář uložil.\n\n> Dobrý den,\n> zkuste prosím restart\n")
        await asyncio.to_thread(smtp_send, port, answer.as_bytes(policy=email.policy.SMTP),
                                sender=CUSTOMER)
        msgs = await asyncio.to_thread(smtp_sink.wait_for, 4, 15)
        followup = msgs[3]
        assert followup.rcpt_tos == (NOTIFY,)
        assert f"[#{number}]" in str(followup.message["Subject"])
        assert "Děkuji, po restartu se kalendář uložil." in plain(followup.message)
        # No ack to a follow-up: the decision commits every mail it queues together, so once
        # its notice was sent the outbox holds all there will be (instead of: sleep, count).
        assert sum(daemon.store.count_outbox().values()) == 4
        assert len(smtp_sink.messages) == 4
        events = [e.kind for e in daemon.store.ticket_events(number)]
        assert events == ["opened", "answered", "customer_mail"]
    print(f"\nconversation over the wire: {len(smtp_sink.messages)} messages at the relay "
          f"(ack, notice, relayed staff reply, follow-up notice) for {number}")
