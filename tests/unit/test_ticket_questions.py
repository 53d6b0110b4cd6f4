"""A decision process's questions about tickets, answered again by the store's index."""

from __future__ import annotations

from mailbot.domain import TicketInfo
from mailbot.pipeline import UnansweredTickets, answers_unchanged


class Index:
    """A ticket index that knows `numbers` and, by Message-ID, `threads`."""

    def __init__(self, numbers: set[str] = set(), threads: dict[str, str] = {}) -> None:
        self.numbers, self.threads = numbers, threads

    def exists(self, ref: str) -> bool:
        return ref in self.numbers

    def get(self, ref: str) -> TicketInfo | None:
        return None

    def by_message_ids(self, message_ids: tuple[str, ...]) -> str | None:
        return next((self.threads[m] for m in message_ids if m in self.threads), None)


def test_questions_are_recorded_with_no_for_an_answer() -> None:
    unanswered = UnansweredTickets()
    assert unanswered.exists("T-2026-000001") is False
    assert unanswered.by_message_ids(("<a@x>",)) is None
    assert unanswered.get("T-2026-000002") is None
    assert unanswered.questions == [("exists", "T-2026-000001"),
                                    ("by_message_ids", ("<a@x>",)),
                                    ("get", "T-2026-000002")]


def test_answers_unchanged_only_where_the_index_knows_none() -> None:
    questions = (("exists", "T-2026-000001"), ("by_message_ids", ("<a@x>", "<b@x>")))
    assert answers_unchanged(questions, Index())
    assert answers_unchanged(questions, Index({"T-2026-000002"}, {"<c@x>": "T-2026-000002"}))
    assert not answers_unchanged(questions, Index({"T-2026-000001"}))
    assert not answers_unchanged(questions, Index(threads={"<b@x>": "T-2026-000002"}))
    assert not answers_unchanged((("asked", "?"),), Index())  # an unknown question: decide
