"""News and contacts: the contacts list, scheduled campaigns, unsubscribe tokens,
unsubscriptions and suppressed addresses."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from mailbot.contacts import Contact
from mailbot.store.base import StoreBase, TxBase, like_escape
from mailbot.store.models import (
    ContactRow,
    NewsToken,
    OutboxMessage,
    ScheduledCampaign,
    Suppression,
    Unsubscription,
    utcnow,
)
from mailbot.store.values import CampaignSchedule


def _schedule(r: Any) -> CampaignSchedule:
    return CampaignSchedule(r.name, r.due_at, r.cron, r.queued_at)


class NewsStore(StoreBase):
    """Contacts, campaigns and who may not be mailed."""

    def upsert_contacts(self, contacts: Sequence[Contact]) -> int:
        """Insert or update contacts by address; returns how many were written."""
        now = utcnow()
        self._upsert(ContactRow, "email", [
            {"email": c.email, "license": c.license, "name": c.name, "language": c.language,
             "updated_at": now} for c in contacts])
        return len(contacts)

    def contacts(self, license: str | None = None) -> list[Contact]:
        """Contacts (of one license), by address."""
        q = select(ContactRow).order_by(ContactRow.email)
        if license is not None:
            q = q.where(ContactRow.license == license)
        return self._values(q, lambda r: Contact(r.email, r.license, r.name, r.language))

    def campaign_status(self, campaign: str) -> dict[str, int]:
        """Outbox states of a campaign's (or a run's) mails, plus how many recipients
        unsubscribed since."""
        with self.session() as s:
            q = (select(OutboxMessage.state, func.count())
                 .where(OutboxMessage.purpose.like(f"news:{like_escape(campaign)}:%",
                                                   escape="\\"))
                 .group_by(OutboxMessage.state))
            counts = {state: int(n) for state, n in s.execute(q)}
            counts["unsubscribed"] = int(s.scalar(
                select(func.count()).select_from(NewsToken)
                .join(Unsubscription, Unsubscription.address == NewsToken.email)
                .where(NewsToken.campaign == campaign)) or 0)
            return counts

    def suppressed(self) -> list[tuple[str, str, datetime]]:
        """Addresses no mailing may reach: (address, reason, since)."""
        with self.session() as s:
            rows = s.execute(select(Unsubscription.address, Unsubscription.created_at)).all()
            found = [(a.lower(), "unsubscribed", t) for a, t in rows]
            bounced = s.execute(select(Suppression.address, Suppression.reason,
                                       Suppression.created_at)).all()
            found += [(a, r, t) for a, r, t in bounced]
            return sorted(found, key=lambda row: row[2])

    def campaign_runs(self, name: str) -> list[str]:
        """The ids of the runs of recurring campaign `name` that queued mail (NAME@…), oldest
        first."""
        with self.session() as s:
            return list(s.scalars(
                select(NewsToken.campaign).distinct()
                .where(NewsToken.campaign.like(f"{like_escape(name)}@%", escape="\\"))
                .order_by(NewsToken.campaign)))

    def schedule_campaign(self, name: str, due_at: datetime, cron: str | None = None) -> None:
        """Queue campaign `name` at `due_at` (again: the time is moved, if not yet queued);
        with `cron`, a recurring schedule whose next run is `due_at`. Changing a recurring
        schedule to a one-off makes it due again."""
        with self.session() as s:
            row = s.get(ScheduledCampaign, name)
            if row is None:
                s.add(ScheduledCampaign(name=name, due_at=due_at, cron=cron))
            elif cron is not None or row.cron is not None:
                if cron is None:
                    row.queued_at = None
                row.cron, row.due_at = cron, due_at
            elif row.queued_at is None:
                row.due_at = due_at

    def due_campaigns(self, now: datetime) -> list[CampaignSchedule]:
        """Schedules due at `now`: one-offs not yet queued, recurring ones whose run is due."""
        return self._values(select(ScheduledCampaign)
                            .where(ScheduledCampaign.queued_at.is_(None)
                                   | ScheduledCampaign.cron.is_not(None))
                            .where(ScheduledCampaign.due_at <= now)
                            .order_by(ScheduledCampaign.due_at), _schedule)

    def scheduled_campaigns(self) -> list[CampaignSchedule]:
        """All schedules, by name."""
        return self._values(select(ScheduledCampaign).order_by(ScheduledCampaign.name),
                            _schedule)

    def campaign_queued(self, name: str, now: datetime, due_at: datetime | None = None,
                        next_due: datetime | None = None) -> bool:
        """Record that `name` was queued at `now`. A recurring run passes the `due_at` it ran
        for and its `next_due`: the row moves on only if still at `due_at` (of two
        schedulers running the same occurrence, one moves it). True when the row changed."""
        with self.session() as s:
            q = update(ScheduledCampaign).where(ScheduledCampaign.name == name)
            if due_at is not None:
                q = q.where(ScheduledCampaign.due_at == due_at)
            values: dict[str, Any] = {"queued_at": now}
            if next_due is not None:
                values["due_at"] = next_due
            return bool(s.execute(q.values(**values)).rowcount)  # type: ignore[attr-defined]

    def news_token_known(self, token: str) -> bool:
        """Whether `token` is an unsubscribe token, read without a write lock (SQLite: a
        DEFERRED transaction, so a GET answers while a writer holds the database)."""
        with self.reading() as c:
            return c.scalar(select(NewsToken.email).where(NewsToken.token == token)) is not None

    def unsubscribe_by_token(self, token: str, now: datetime) -> str | None:
        """The one-click unsubscribe (RFC 8058): unsubscribe the address `token` was made
        for, in one transaction. Returns that address (also when it was unsubscribed
        already), or None for an unknown token (nothing changes)."""
        with self.session() as s:
            tx = NewsTx(s, self.engine.dialect.name)
            email = tx.news_token_email(token)
            if email is None:
                return None
            tx.unsubscribe(email, None, now)
            return email.lower()


class NewsTx(TxBase):
    """The writes of news and unsubscriptions inside one transaction."""

    def add_news_token(self, token: str, email: str, campaign: str, now: datetime) -> None:
        self.s.add(NewsToken(token=token, email=email, campaign=campaign, created_at=now))

    def bounce_news(self, message_ids: Sequence[str], limit: int, now: datetime) -> list[str]:
        """After a hard bounce report: suppress the recipients of these news mails whose news
        mail has bounced hard `limit` times in all. Returns the addresses suppressed now.

        Soft bounces (see mark_bounced) do not count.
        """
        self.flush_if_queued(message_ids)
        addresses = set(self.s.scalars(
            select(OutboxMessage.recipient)
            .where(OutboxMessage.message_id.in_(list(message_ids)))
            .where(OutboxMessage.kind == "news", OutboxMessage.recipient.is_not(None))))
        if not addresses:
            return []
        counts = self.s.execute(
            select(OutboxMessage.recipient, func.count())
            .where(OutboxMessage.kind == "news", OutboxMessage.state == "bounced",
                   OutboxMessage.bounce == "hard", OutboxMessage.recipient.in_(addresses))
            .group_by(OutboxMessage.recipient)).all()
        already = set(self.s.scalars(
            select(Suppression.address).where(Suppression.address.in_(addresses))))
        suppressed: list[str] = []
        for address, bounced in sorted(counts):
            if address is not None and bounced >= limit and address not in already:
                self.s.add(Suppression(address=address, reason="bounced",
                                       detail=f"{bounced} hard bounces of news mail",
                                       created_at=now))
                suppressed.append(address)
        return suppressed

    def news_token_email(self, token: str) -> str | None:
        """The address an unsubscribe token was made for."""
        return self.s.scalar(select(NewsToken.email).where(NewsToken.token == token))

    def unsubscribe(self, address: str, inbound_id: int | None,
                    now: datetime | None = None) -> None:
        """Record that `address` wants no more mailings (idempotent, also when another daemon
        or a one-click POST records it at the same moment)."""
        address = address.lower()
        if self.s.get(Unsubscription, address) is not None:
            return
        try:
            with self.s.begin_nested():
                self.s.add(Unsubscription(address=address, inbound_id=inbound_id,
                                          created_at=now or utcnow()))
        except IntegrityError:  # recorded meanwhile
            pass
