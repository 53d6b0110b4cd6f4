"""A request to stop the news: the address a mailing's token names and the sender are taken
off the list. No reply."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailbot.domain import DecisionKind, Mail
from mailbot.handlers.base import Act, Effect, Handler
from mailbot.unsubscribe_token import token_in

if TYPE_CHECKING:
    from mailbot.store import Transaction


class UnsubscribeHandler(Handler):
    kinds = frozenset({DecisionKind.UNSUBSCRIBE})

    def write(self, tx: Transaction, act: Act) -> Effect:
        for address in unsubscribed_addresses(tx, act.mail, act.settings.unsubscribe_address):
            tx.unsubscribe(address, act.inbound_id)
        return Effect()


def unsubscribed_addresses(tx: Transaction, mail: Mail, unsubscribe_address: str) -> list[str]:
    """Who an unsubscribe request is for: the address a mailing's token names (the
    `List-Unsubscribe` mailto, which may be answered from another address), and the sender."""
    found: list[str] = []
    for address in mail.recipients():
        token = token_in(address, unsubscribe_address)
        email = tx.news_token_email(token) if token else None
        if email and email not in found:
            found.append(email)
    if mail.from_addr and mail.from_addr.lower() not in found:
        found.append(mail.from_addr.lower())
    return found
