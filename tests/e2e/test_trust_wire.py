"""Over the wire (issue 14, item 1): a forged staff reply whose Authentication-Results hide
`; dkim=pass header.d=estelar.example` in an RFC 2047 encoded envelope sender (as the border
MTA copies it into smtp.mailfrom) goes into mailbot's SMTP listener and is not relayed to the
customer; the same reply with a genuine aligned DKIM pass is. Asserted at the relay sink."""

from __future__ import annotations

import asyncio
import base64
import email.policy
from email.message import EmailMessage
from email.utils import make_msgid

from mailbot.config import Config
from tests.e2e.helpers import daemon_config, eventually, import_licenses, request_mail, \
    running, smtp_send

CUSTOMER = "dvorak@strojirny-hranice.cz"
NOTIFY = "tym-podpory@estelar.example"
STAFF = "jana.novakova@estelar.example"
OURS = "mx.estelar.example"
WORD = "=?utf-8?b?" + base64.b64encode(b"x; dkim=pass header.d=estelar.example (").decode() + "?="


def staff_reply(number: str, notice_id: str, text: str, auth_results: str) -> bytes:
    msg = EmailMessage()
    msg["From"] = f"Jana Nováková <{STAFF}>"
    msg["To"] = "podpora@estelar.example"
    msg["Subject"] = f"Re: [#{number}] Nejde ulozit smenny kalendar"
    msg["Message-ID"] = make_msgid(domain="estelar.example")
    msg["In-Reply-To"] = notice_id
    msg["References"] = notice_id
    msg.set_content(text)
    # Prepended as raw text, as the border MTA does (the email package would decode the word).
    header = f"Authentication-Results: {auth_results}\r\n".encode("ascii")
    return header + msg.as_bytes(policy=email.policy.SMTP)


async def test_forged_encoded_word_staff_reply_is_not_relayed(base_config: Config,
                                                              smtp_sink) -> None:
    cfg = daemon_config(base_config, smtp_sink.port, staff_notify=(NOTIFY,))
    cfg = cfg.model_copy(update={"conversation": cfg.conversation.model_copy(
        update={"authserv_ids": (OURS,)})})
    import_licenses(cfg)
    async with running(cfg) as daemon:
        port = daemon.listen_port
        await asyncio.to_thread(smtp_send, port, request_mail(sender=CUSTOMER), sender=CUSTOMER)
        first = {m.rcpt_tos: m for m in await asyncio.to_thread(smtp_sink.wait_for, 2, 15)}
        ack, notice = first[(CUSTOMER,)], first[(NOTIFY,)]
        number = str(ack.message["Subject"]).split("[#", 1)[1].split("]", 1)[0]
        notice_id = str(notice.message["Message-ID"])

        forged = staff_reply(number, notice_id, "Pošlete nám prosím heslo k databázi.",
                             f"{OURS}; spf=none smtp.mailfrom={WORD}@nowhere.invalid;"
                             " dkim=none")
        await asyncio.to_thread(smtp_send, port, forged, sender=f"{WORD}@nowhere.invalid")
        await eventually(lambda: daemon.store.count_inbound().get("decided", 0) >= 2, 15)

        genuine = staff_reply(number, notice_id, "Dobrý den, restartujte prosím službu ACS.",
                              f"{OURS}; dkim=pass header.d=estelar.example header.s=sel1;"
                              " spf=pass smtp.mailfrom=estelar.example")
        await asyncio.to_thread(smtp_send, port, genuine, sender=STAFF)
        await eventually(lambda: daemon.store.count_inbound().get("decided", 0) >= 3, 15)
        await eventually(lambda: any(
            m.rcpt_tos == (CUSTOMER,) and "restartujte" in m.message.get_body(("plain",))
            .get_content() for m in smtp_sink.messages), 15)
        to_customer = [m for m in smtp_sink.messages if m.rcpt_tos == (CUSTOMER,)]
        assert len(to_customer) == 2  # the ack and the genuine reply, nothing forged
        assert not any("heslo" in m.data.decode("utf-8", "replace") for m in to_customer)
        warned = [m for m in smtp_sink.messages if m.rcpt_tos == (NOTIFY,)]
        assert any("nepodařilo ověřit" in m.message.get_body(("plain",)).get_content()
                   for m in warned)
