"""Automatic mail (bounces, auto-replies, lists, spam): no reply. A bounce (the decision
carries the Message-IDs of our mail it reports) marks that mail bounced; a hard one counts
towards suppressing the news to its recipient."""

from __future__ import annotations

from typing import TYPE_CHECKING

from mailbot.domain import DecisionKind, RuleResult
from mailbot.handlers.base import Act, Effect, Handler

if TYPE_CHECKING:
    from mailbot.store import Transaction


class IgnoreHandler(Handler):
    kinds = frozenset({DecisionKind.IGNORE_AUTO})

    def write(self, tx: Transaction, act: Act) -> Effect:
        decision = act.decision
        if not decision.bounced_ids:
            return Effect()
        marked = tx.mark_bounced(decision.bounced_ids, act.now, hard=decision.bounce_hard)
        kind = "hard" if decision.bounce_hard else "soft"
        notes = [RuleResult("bounced", bool(marked), f"{marked} outgoing marked bounced ({kind})")]
        if decision.bounce_hard:
            for address in tx.bounce_news(decision.bounced_ids, act.settings.news_bounce_limit,
                                          act.now):
                notes.append(RuleResult("suppressed", True, f"{address}: news mail bounced"))
        return Effect(notes=tuple(notes))
