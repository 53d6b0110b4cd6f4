"""Mail loops (RFC 3834) over the wire: mailbot against a badly behaved auto-responder, and
two mailbots answering each other. Both stop; the number of messages exchanged is printed
and bounded. Every wait here is bounded in time and every exchange in count."""

from __future__ import annotations

import asyncio
import email.policy
import smtplib
import threading
import time
from collections.abc import Callable
from pathlib import Path
from email.message import EmailMessage
from email.parser import BytesParser
from email.utils import make_msgid

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session

from mailbot.config import Config
from mailbot.store import Store
from tests.e2e.helpers import daemon_config, running
from tests.fixtures.servers import free_port

_PARSE = BytesParser(policy=email.policy.default)
SAFETY_CAP = 50  # the responder never sends more than this, whatever mailbot does


class NaiveResponder:
    """An auto-responder that breaks every rule: it answers every message, with no
    Auto-Submitted or Precedence header, from a normal-looking address."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.received: list[EmailMessage] = []
        self.sent = 0
        self.delivered = 0  # answers the daemon accepted (it commits before its 250)
        self.target_port = 0
        self.lock = threading.Lock()
        self.controller = Controller(self, hostname="127.0.0.1", port=free_port())

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:  # noqa: N802
        msg = _PARSE.parsebytes(envelope.original_content or b"")
        with self.lock:
            self.received.append(msg)  # type: ignore[arg-type]
            if self.sent >= SAFETY_CAP:
                return "250 OK"
            self.sent += 1
        threading.Thread(target=self._answer, args=(msg,), daemon=True).start()
        return "250 OK"

    def _answer(self, msg: EmailMessage) -> None:
        reply = EmailMessage()
        reply["From"] = f"Petr Dovolená <{self.address}>"
        reply["To"] = "podpora@estelar.example"
        reply["Subject"] = f"Re: {msg['Subject']}"
        reply["Message-ID"] = make_msgid(domain="vacation.example")
        reply["In-Reply-To"] = str(msg["Message-ID"])
        reply.set_content("Děkuji za zprávu, jsem do pondělí mimo, odpovím po návratu.\n")
        with smtplib.SMTP("127.0.0.1", self.target_port, timeout=10) as c:
            c.sendmail(self.address, ["podpora@estelar.example"], reply.as_bytes(policy=email.policy.SMTP))
        with self.lock:
            self.delivered += 1


def at_rest(store: Store) -> tuple[int, int] | None:
    """(inbound rows, outbox rows) if every stored mail is decided and every mail queued is
    sent (a decision commits the mail it queues with it), else None."""
    inbound, outbox = store.count_inbound(), store.count_outbox()
    if set(inbound) - {"decided"} or set(outbox) - {"sent"}:
        return None
    return sum(inbound.values()), sum(outbox.values())


async def wait_at_rest(snapshot: Callable[[], object | None], limit: float = 40.0) -> None:
    """Wait until two snapshots in a row are the same and not None: nothing stored, queued or
    on the wire anywhere (row counts only grow, so an exchange between the two readings
    would have changed them). Polls every 0.2 s, at most `limit` s. Replaces "wait until
    nothing changed for 3 s": the end of the exchange is observed, not inferred from quiet."""
    end = time.monotonic() + limit
    last: object | None = None
    while time.monotonic() < end:
        now = snapshot()
        if now is not None and now == last:
            return
        last = now
        await asyncio.sleep(0.2)
    raise AssertionError(f"the exchange did not come to rest within {limit:.0f} s: {last}")


async def test_naive_auto_responder_loop_stops_at_the_rate_limit(base_config: Config) -> None:
    responder = NaiveResponder("petr@vacation.example")
    responder.controller.start()
    try:
        cfg = daemon_config(base_config, responder.controller.port)
        limit = cfg.conversation.auto_replies_per_hour
        async with running(cfg) as daemon:
            responder.target_port = daemon.listen_port
            first = EmailMessage()
            first["From"] = "petr@vacation.example"
            first["To"] = "podpora@estelar.example"
            first["Subject"] = "Dotaz"
            first["Message-ID"] = make_msgid(domain="vacation.example")
            first.set_content("Nefunguje nám to.")
            await asyncio.to_thread(_send, daemon.listen_port, first)

            def snapshot() -> object | None:
                with responder.lock:
                    answering = (responder.sent, responder.delivered, len(responder.received))
                daemon_side = at_rest(daemon.store)
                if daemon_side is None or answering[0] != answering[1]:
                    return None  # a decision, a reply or an answer still under way
                return answering, daemon_side

            await wait_at_rest(snapshot)
            replies = len(responder.received)
            inbound = daemon.store.count_inbound().get("decided", 0)
        print(f"\nloop with a naive auto-responder: mailbot sent {replies} replies, received "
              f"{inbound} mails; rate limit {limit}/hour")
        assert replies == limit  # then mailbot stops answering
        assert inbound == limit + 1  # the first mail plus one answer to each reply
        assert responder.sent < SAFETY_CAP
    finally:
        responder.controller.stop()


def _send(port: int, msg: EmailMessage) -> None:
    with smtplib.SMTP("127.0.0.1", port, timeout=10) as c:
        c.sendmail(str(msg["From"]), ["podpora@estelar.example"], msg.as_bytes(policy=email.policy.SMTP))


async def test_two_mailbots_do_not_answer_each_other(base_config: Config, tmp_path: Path) -> None:
    """Mailbot A gets a request from mailbot B's support address; A's rejection reaches B,
    which sees Auto-Submitted and does not answer: one automatic message in all."""
    port_a, port_b = free_port(), free_port()
    cfg_a = daemon_config(base_config, port_b, listener_port=port_a)
    b_base = base_config.model_copy(update={
        "store": base_config.store.model_copy(update={"url": f"sqlite:///{tmp_path / 'b.db'}"}),
        "mailbox": base_config.mailbox.model_copy(update={
            "support_address": "support@other.example", "message_id_domain": "other.example",
            "staff_domains": ("other.example",), "unsubscribe_address": "unsub@other.example"}),
    })
    cfg_b = daemon_config(b_base, port_a, listener_port=port_b)
    async with running(cfg_a) as a, running(cfg_b) as b:
        start = EmailMessage()
        start["From"] = "support@other.example"
        start["To"] = "podpora@estelar.example"
        start["Subject"] = "Dotaz"
        start["Message-ID"] = make_msgid(domain="other.example")
        start.set_content("Nefunguje nám to.")
        await asyncio.to_thread(_send, port_a, start)

        def snapshot() -> object | None:
            sides = (at_rest(a.store), at_rest(b.store))
            return None if None in sides else sides

        await wait_at_rest(snapshot)
        total = sum(s.count_inbound().get("decided", 0) for s in (a.store, b.store))
        b_decisions = [b.store.decision_for(i) for i in range(1, 5)]
    kinds = [d.kind for d in b_decisions if d is not None]
    print(f"\ntwo mailbots: {total} messages decided in all (A: 1 request, B: {len(kinds)} "
          f"replies, decided {kinds})")
    assert total == 2 and kinds == ["ignore_auto"]
