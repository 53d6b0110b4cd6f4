"""Deciding several messages stage by stage (`Decider.analyse_many`, what a decision process
runs per task) gives each message the analysis `analyse` gives it alone: in order, each
failure contained to its message, the limits and the attachments as before."""

from __future__ import annotations

from datetime import datetime

import pytest

import mailbot.config as config_mod
import mailbot.pipeline as pipeline_mod
from mailbot.domain import DecisionKind
from mailbot.pipeline import Analysis, Pipeline, staged
from mailbot.registry import DictRegistry
from tests.integration.test_conversation import CUSTOMER, LICENSE, MON, REQUEST, mail


def test_staged_groups_consecutive_messages_up_to_the_limit() -> None:
    raws = [b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 100, b"e" * 5, b"f" * 5]
    assert [list(g) for g in staged(raws, 25)] == [
        [b"a" * 10, b"b" * 10], [b"c" * 10], [b"d" * 100], [b"e" * 5, b"f" * 5]]
    assert [list(g) for g in staged(raws, 1000)] == [raws]
    assert list(staged([], 25)) == []


def _summary(a: Analysis) -> tuple[object, ...]:
    """What an analysis says, the traceback's last line for an error (its frames differ)."""
    error = a.error.strip().splitlines()[-1] if a.error else None
    return (a.mail.message_id if a.mail else None, a.decision, error, a.provisional,
            a.questions, a.attachments, a.saved_attachments, a.skipped_attachments)


@pytest.fixture
def messages(base_config: config_mod.Config, monkeypatch: pytest.MonkeyPatch
             ) -> tuple[Pipeline, list[bytes]]:
    """An isolated pipeline (as in a decision process) and a mix of messages: requests, one
    with an attachment, a follow-up (a question about a ticket), one over the size limit, one
    that breaks the parser and one that breaks the rules."""
    cfg = base_config.model_copy(update={"limits": base_config.limits.model_copy(
        update={"message_bytes": 60_000})})
    real_parse, real_decide = pipeline_mod.parse_with_tree, pipeline_mod.decide

    def parse_with_tree(raw: bytes):  # type: ignore[no-untyped-def]
        if b"BREAK-PARSER" in raw:
            raise ValueError("the parser broke")
        return real_parse(raw)

    def decide(mail, ctx):  # type: ignore[no-untyped-def]
        if "BREAK-RULES" in mail.subject:
            raise RuntimeError("a rule broke")
        return real_decide(mail, ctx)

    monkeypatch.setattr(pipeline_mod, "parse_with_tree", parse_with_tree)
    monkeypatch.setattr(pipeline_mod, "decide", decide)
    pipeline = Pipeline.isolated(cfg, DictRegistry({LICENSE.license: LICENSE}))
    pipeline.decider.use_token_secret(b"t" * 32)
    raws = [
        mail(CUSTOMER, "Nejde uložit kalendář", REQUEST),
        mail(CUSTOMER, "BREAK-PARSER", REQUEST),
        mail(CUSTOMER, "Snímek chyby", REQUEST, attachment=("chyba.png", b"\x89PNG" + b"x" * 500)),
        mail(CUSTOMER, "BREAK-RULES", REQUEST),
        mail(CUSTOMER, "Re: [#T-2026-000001] Nejde uložit kalendář", "Chyba trvá."),
        mail(CUSTOMER, "Velká příloha", REQUEST, attachment=("log.bin", b"y" * 70_000)),
        mail(CUSTOMER, "Nefunguje to", "Nefunguje to."),
    ]
    return pipeline, raws


def test_many_at_once_decide_each_as_alone(messages: tuple[Pipeline, list[bytes]],
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    pipeline, raws = messages
    now = datetime.combine(MON.date(), MON.timetz())
    alone = [pipeline.decider.analyse(raw, now) for raw in raws]
    monkeypatch.setattr(pipeline_mod, "STAGED_BYTES", 5_000)  # several stage groups
    many = pipeline.decider.analyse_many(raws, now)
    assert [_summary(a) for a in many] == [_summary(a) for a in alone]
    kinds = [a.decision.kind if a.decision else a.error.strip().splitlines()[-1] for a in many]
    assert kinds == [DecisionKind.TICKET, "ValueError: the parser broke", DecisionKind.TICKET,
                     "RuntimeError: a rule broke", DecisionKind.REJECT_INCOMPLETE,
                     DecisionKind.QUARANTINED, DecisionKind.REJECT_INCOMPLETE]
    # A new ticket's files are written where it is decided: their names and hashes come back.
    assert many[2].saved_attachments and many[2].saved_attachments[0].filename == "chyba.png"
    # The follow-up asked about its ticket, which a decision process cannot see: provisional.
    assert many[4].provisional and many[4].questions
    assert not many[6].provisional and not many[6].questions  # not the follow-up's question
    assert many[3].mail is not None and many[3].mail.subject == "BREAK-RULES"
