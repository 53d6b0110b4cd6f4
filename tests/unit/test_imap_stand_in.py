"""The stand-in stored for mail an intake did not fetch whole (IMAP, over the size limit)."""

from __future__ import annotations

import email.policy
from email.message import EmailMessage

from mailbot.config import LimitsConfig
from mailbot.ingest.limits import check, not_fetched_stand_in


def test_stand_in_for_mail_not_fetched_is_quarantined_too_large() -> None:
    """The stand-in states the size; the limits check finds it too large (answerable), keeps
    whole header fields only, and a stand-in stays too large after the limit is raised."""
    msg = EmailMessage()
    msg["From"] = "Jana <jana@example.org>"
    msg["Subject"] = "Velka priloha"
    msg["X-Long"] = "x" * 3000
    msg["X-After"] = "za hranici"
    head = msg.as_bytes(policy=email.policy.SMTP)  # ends with the blank line, like BODY[HEADER]
    assert len(head) > 2000
    raw = not_fetched_stand_in(head, 40 * 1024 * 1024, 2000)
    assert raw.startswith(b"X-Mailbot-Not-Fetched: size=41943040\r\n")
    assert len(raw) <= 2000 + 100
    assert b"X-Long" not in raw  # the field cut by the cap is left out, not half kept
    assert b"Subject: Velka priloha\r\n\r\n[mailbot: 40 MB;" in raw
    whole = not_fetched_stand_in(head, 40 * 1024 * 1024, 8000)
    assert whole.endswith(b"X-After: za hranici\r\n\r\n[mailbot: 40 MB; only the header "
                          b"section was fetched (limits.message_bytes)]\r\n")
    violation = check(raw, LimitsConfig(message_bytes=25 * 1024 * 1024))
    assert violation is not None and violation.code == "too_large" and violation.answerable
    assert str(violation).startswith("too_large: 40 MB > 25 MB")
    raised = check(raw, LimitsConfig(message_bytes=100 * 1024 * 1024))
    assert raised is not None and raised.code == "too_large"
