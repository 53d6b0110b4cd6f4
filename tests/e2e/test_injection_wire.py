"""Header and template injection, checked on the wire: what reaches the relay (aiosmtpd sink)
after hostile requests went through mailbot's listener, worker and outbox."""

from __future__ import annotations

import asyncio

from mailbot.config import Config
from tests.e2e.helpers import daemon_config, import_licenses, running, smtp_send

CUSTOMER = "dvorak@strojirny-hranice.cz"
BODY = (
    "Dobrý den,\r\n\r\npo kliknutí na Uložit se v ACS-line zobrazí chyba a směnný kalendář "
    "se neuloží. {{ config }} {{ 7*7 }} {% include 'x' %} <script>alert(1)</script> "
    "\"><img src=x onerror=alert(1)>\r\n\r\nLicenční číslo: 4012-7733\r\n"
)


def hostile(subject: str, from_header: str, msgid: str) -> bytes:
    head = (
        f"From: {from_header}\r\nTo: podpora@estelar.example\r\nSubject: {subject}\r\n"
        f"Message-ID: <{msgid}@strojirny-hranice.cz>\r\nDate: Tue, 24 Nov 2026 09:00:00 +0100\r\n"
        "MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
        "Content-Transfer-Encoding: 8bit\r\n\r\n"
    )
    return head.encode() + BODY.encode("utf-8")


CASES = {
    # CR LF smuggled in encoded words (a raw CR LF would just end the header line)
    "subject": ("=?utf-8?q?Hello=0D=0ABcc:_victim@example.com?=", f"Pavel <{CUSTOMER}>"),
    "subject-b64": ("=?utf-8?b?SGVsbG8NCkJjYzogdmljdGltQGV4YW1wbGUuY29t?=", f"Pavel <{CUSTOMER}>"),
    "name": ("Nejde ulozit", f"=?utf-8?q?Pavel=0D=0ABcc:_victim@example.com?= <{CUSTOMER}>"),
    "name-nul": ("Nejde ulozit", f"=?utf-8?q?Pavel=00=0AX-Evil:_1?= <{CUSTOMER}>"),
    "u2028": ("=?utf-8?q?Hello=E2=80=A8Bcc:_victim@example.com?=", f"Pavel <{CUSTOMER}>"),
}


async def test_no_injected_header_or_evaluated_template_reaches_the_wire(
        base_config: Config, smtp_sink) -> None:
    cfg = daemon_config(base_config, smtp_sink.port)
    cfg = cfg.model_copy(update={"conversation": cfg.conversation.model_copy(
        update={"auto_replies_per_hour": 100})})
    import_licenses(cfg)
    async with running(cfg) as daemon:
        for i, (subject, sender) in enumerate(CASES.values()):
            await asyncio.to_thread(smtp_send, daemon.listen_port, hostile(subject, sender, f"inj{i}"),
                                    sender=CUSTOMER)
        replies = await asyncio.to_thread(smtp_sink.wait_for, len(CASES), 30)
    assert len(replies) == len(CASES)
    for captured in replies:
        assert captured.rcpt_tos == (CUSTOMER,)
        head = captured.data.split(b"\r\n\r\n", 1)[0]
        names = [line.split(b":", 1)[0].lower() for line in head.split(b"\r\n")
                 if line and line[:1] not in (b" ", b"\t")]
        assert b"bcc" not in names and b"x-evil" not in names
        assert sorted(set(names)) == sorted(names)  # no header twice
        msg = captured.message
        for name, value in msg.items():  # the text may survive, inside Subject only
            assert name.lower() == "subject" or "victim@example.com" not in str(value)
        assert [a.addr_spec for a in msg["To"].addresses] == [CUSTOMER]
        text = msg.get_body(("plain",)).get_content()
        html = msg.get_body(("html",)).get_content()
        assert "{{ config }}" in text and "<script>" in text  # quoted literally
        assert "<script>" not in html and "&lt;script&gt;" in html and "<img" not in html
        assert "49" not in text and "templates_dir" not in text and "smtp" not in text.lower()
    print(f"\ninjection on the wire: {len(replies)} hostile requests, {len(replies)} replies, "
          "0 extra headers or recipients, templates inert")
