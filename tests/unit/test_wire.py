"""The values that cross between the daemon and its decision processes come back equal from
pickle (`domain.wire`, and the decision's packed form)."""

from __future__ import annotations

import pickle
from datetime import UTC, date, datetime
from pathlib import Path

import pytest

from mailbot.domain import (
    Decision,
    DecisionKind,
    LicenseRecord,
    Priority,
    RuleResult,
    StaffCommand,
    Tier,
    TicketInfo,
)
from mailbot.ingest.parse import parse
from tests.unit.test_structure import decided

DATA = Path(__file__).resolve().parents[1] / "data" / "heldout"
OPENED = datetime(2026, 11, 20, 9, 0, tzinfo=UTC)


def _round_trip(value: object) -> object:
    return pickle.loads(pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL))


def test_every_field_of_a_decision_comes_back() -> None:
    """Misses, hits with and without details, a miss with a detail, enums, nested values."""
    ticket = TicketInfo("T-2026-000123", "open", "Terminál", "a@b.example", "A B", "12345678",
                        Priority.EMERGENCY, "en", OPENED, OPENED, assignee="eva",
                        first_message_id="<a@b>", last_message_id="<c@d>")
    decision = Decision(
        kind=DecisionKind.STAFF_REPLY,
        reasons=(RuleResult("bounce", False), RuleResult("staff_reply", True, "verified"),
                 RuleResult("own_mail", True), RuleResult("spam_verdict", False, "score 1.2"),
                 RuleResult("bounce", False)),
        license="12345678", priority=Priority.EMERGENCY, missing=("license", "description"),
        scope_reason="training", ticket_ref="T-2026-000123", language="en",
        customer=LicenseRecord("12345678", "Firma", "firma.example", date(2026, 1, 5),
                               Tier.START, None),
        entitlement_end=date(2026, 7, 5), flags=frozenset({"new_request"}), ticket=ticket,
        related_ticket="T-2026-000001", staff_text="Hotovo.",
        commands=(StaffCommand("close"), StaffCommand("assign", "eva")),
        command_errors=("#x: unknown",), bounced_ids=("<m@x>",), bounce_hard=False)
    back = _round_trip(decision)
    assert back == decision
    assert isinstance(back, Decision) and back.kind is DecisionKind.STAFF_REPLY
    assert back.priority is Priority.EMERGENCY
    assert [type(r) for r in back.reasons] == [RuleResult] * 5
    assert _round_trip(Decision(DecisionKind.IGNORE_AUTO, ())) == Decision(
        DecisionKind.IGNORE_AUTO, ())


@pytest.mark.parametrize("path", sorted(DATA.glob("*.eml"))[:40], ids=lambda p: p.name)
def test_real_decisions_and_mails_come_back(path: Path) -> None:
    raw = path.read_bytes()
    decision = decided(raw)
    assert _round_trip(decision) == decision
    mail = parse(raw)
    assert _round_trip(mail) == mail
