"""The outcome handlers' registry is checked complete, and the facts a decision carries key on
what the deciding rule found, not on the rule's name."""

from __future__ import annotations

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from mailbot import config as config_mod
from mailbot.classify.decide import decide
from mailbot.classify.rules import RULES, Finding, RuleContext, bounce
from mailbot.domain import DecisionKind, Mail, ticket_message_id
from mailbot.handlers import HANDLERS, Handler, Registry, RegistryError
from mailbot.handlers.ignore import IgnoreHandler
from mailbot.handlers.rejection import RejectionHandler
from mailbot.ingest.parse import parse
from mailbot.registry import DictRegistry

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Europe/Prague"))


def test_every_decision_kind_has_exactly_one_handler() -> None:
    """The package's registry answers every member of the enum (not a list of its own)."""
    for kind in DecisionKind:
        assert isinstance(HANDLERS[kind], Handler), kind
        assert kind in HANDLERS[kind].kinds


def test_a_kind_without_a_handler_fails_the_registry_naming_the_kind() -> None:
    """Leaving a kind out (here: automatic mail) raises at construction, naming it — the
    check `mailbot.handlers` runs at import."""
    others = {h for k, h in HANDLERS.items() if k is not DecisionKind.IGNORE_AUTO}
    with pytest.raises(RegistryError, match="ignore_auto"):
        Registry(others)


def test_a_kind_with_two_handlers_fails_the_registry() -> None:
    class AlsoIgnore(Handler):
        kinds = frozenset({DecisionKind.IGNORE_AUTO})

    with pytest.raises(RegistryError, match="ignore_auto.*two handlers"):
        Registry([*set(HANDLERS.values()), AlsoIgnore()])


def test_replacing_one_kind_keeps_the_others_handlers() -> None:
    class ScopeOnly(Handler):
        kinds = frozenset({DecisionKind.REJECT_SCOPE})

    fake = ScopeOnly()
    registry = HANDLERS.replacing(fake)
    assert registry[DecisionKind.REJECT_SCOPE] is fake
    assert isinstance(registry[DecisionKind.REJECT_EXPIRED], RejectionHandler)
    assert isinstance(registry[DecisionKind.IGNORE_AUTO], IgnoreHandler)


def _bounce_of(message_id: str) -> Mail:
    """An RFC 3464 report returning the message `message_id`."""
    raw = (
        "From: MAILER-DAEMON@mx.example.org\r\nTo: podpora@estelar.example\r\n"
        "Subject: Undelivered Mail Returned to Sender\r\nMessage-ID: <dsn-1@mx.example.org>\r\n"
        "MIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type="delivery-status"; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nThe mail system could not deliver it.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example.org\r\n\r\nFinal-Recipient: rfc822; a@example.org\r\n"
        "Action: failed\r\nStatus: 5.1.1\r\n\r\n"
        "--B\r\nContent-Type: text/rfc822-headers\r\n\r\n"
        f"From: podpora@estelar.example\r\nMessage-ID: {message_id}\r\n\r\n"
        "--B--\r\n"
    )
    return parse(raw.encode())


def test_bounced_ids_follow_the_bounce_finding_not_the_rule_name(
        base_config: config_mod.Config) -> None:
    """A bounce rule under another name (a site's own, or a renamed one) still makes the
    decision carry the Message-IDs it reports (it keyed on `rule == "bounce"`)."""
    ctx = RuleContext.from_config(base_config, DictRegistry({}), NOW, None)
    ours = ticket_message_id("T-2026-000001", 1, ctx.message_id_domain)

    def delivery_failure(mail: Mail, ctx: RuleContext) -> Finding | None:
        return bounce(mail, ctx)

    rules = tuple(delivery_failure if r is bounce else r for r in RULES)
    decision = decide(_bounce_of(ours), ctx, rules)
    assert decision.kind is DecisionKind.IGNORE_AUTO
    assert decision.reasons[1].rule == "delivery_failure" and decision.reasons[1].hit
    assert decision.bounced_ids == (ours,)
    assert decide(_bounce_of(ours), ctx).bounced_ids == (ours,)


AUTOMATIC = [DecisionKind.TICKET, DecisionKind.REJECT_INCOMPLETE, DecisionKind.REJECT_SCOPE,
             DecisionKind.REJECT_EXPIRED, DecisionKind.REJECT_UNKNOWN_LICENSE,
             DecisionKind.QUARANTINED]


@pytest.mark.parametrize("kind", AUTOMATIC, ids=[k.value for k in AUTOMATIC])
def test_the_automatic_reply_is_described_as_it_is_rendered(
        base_config: config_mod.Config, kind: DecisionKind) -> None:
    """`Handler.automatic` says, without rendering, what `render_replies` renders first: the
    reply's purpose, kind (template) and Message-ID; `reply_recipient` (quiet) is its
    address. Outcomes without an automatic reply describe none."""
    from dataclasses import replace

    from mailbot.actions import ReplyContext, TicketDraft
    from mailbot.domain import Decision, Priority, TicketView
    from mailbot.handlers import render_replies
    from mailbot.replies.conversation import ConversationRenderer
    from mailbot.replies.render import ReplyRenderer, reply_recipient

    ctx = ReplyContext(base_config.mailbox, ReplyRenderer(base_config),
                       ConversationRenderer(base_config, b"handler-test-secret-" * 2))
    raw = ("From: Jan Novák <Jan.Novak@Firma.CZ>\r\nTo: podpora@estelar.example\r\n"
           "Subject: Nejde tisk\r\nMessage-ID: <m-1@firma.cz>\r\n\r\nNejde tisk.\r\n")
    mail = parse(raw.encode())
    decision = Decision(kind=kind, reasons=(), license="40127733", priority=Priority.NORMAL,
                        missing=("license",), scope_reason="training",
                        flags=frozenset({"tell_sender"}))
    ticket = None
    if HANDLERS[kind].opens_ticket:
        ticket = TicketDraft(2026, 7, TicketView("T-2026-000007", "Nejde tisk", Priority.NORMAL,
                                                 NOW, NOW, "jan.novak@firma.cz"))
    domain = base_config.mailbox.message_id_domain
    auto = HANDLERS[kind].automatic(7, decision, ticket, domain)
    assert auto is not None
    first = render_replies(ctx, inbound_id=7, mail=mail, decision=decision, ticket=ticket,
                           now=NOW)[0]
    assert (first.purpose, first.kind, first.message_id) == (
        auto.purpose, auto.template, auto.message_id)
    assert first.auto and first.rcpt_to[0] == reply_recipient(
        mail, base_config.mailbox.own_addresses())[1]  # type: ignore[index]
    quiet = replace(decision, flags=frozenset())
    if kind is DecisionKind.QUARANTINED:  # only a mail merely too large is answered
        assert HANDLERS[kind].automatic(7, quiet, ticket, domain) is None
    for other in set(DecisionKind) - set(AUTOMATIC):
        assert HANDLERS[other].automatic(7, replace(decision, kind=other), None, domain) is None
