"""`RateForecast`: which automatic replies of a batch the rate limits will hold back, counting
the store, the batches prepared before it and not yet written (only where still inside its
window), and the replies earlier in the batch — as `enqueue_replies` will when it is written."""

from __future__ import annotations

from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from mailbot.actions import RATE_WINDOW, ActionSettings, RateForecast
from mailbot.business_hours import BusinessCalendar
from mailbot.config import Config

NOW = datetime(2026, 11, 25, 10, 0, tzinfo=ZoneInfo("Europe/Prague"))


def forecast(base_config: Config, per: int = 3, total: int = 1000) -> RateForecast:
    settings = ActionSettings.from_config(base_config, BusinessCalendar(base_config.calendar))
    settings = ActionSettings(settings.calendar, per, settings.ticket_attachment_bytes,
                              settings.unsubscribe_address, settings.news_bounce_limit, total)
    return RateForecast(settings)


def test_the_store_and_the_batch_itself_count_per_address(base_config: Config) -> None:
    """Two queued to a, so its second reply in the batch is the fourth: held; b's never."""
    f = forecast(base_config)
    _, flags = f.hold_back(["a", "b", "a", None, "a"], NOW, {"a": 2, "b": 0}, 2)
    assert flags == [False, False, True, False, True]


def test_the_total_counts_every_address(base_config: Config) -> None:
    f = forecast(base_config, total=5)
    _, flags = f.hold_back(["a", "b", "c", "d"], NOW, {"a": 0, "b": 0, "c": 0, "d": 0}, 3)
    assert flags == [False, False, True, True]


def test_batches_not_yet_written_count_until_they_are(base_config: Config) -> None:
    """A batch prepared before (not yet written) adds its planned replies, not its held
    ones; once written they are the store's, and no longer counted here."""
    f = forecast(base_config)
    first, flags = f.hold_back(["a", "a", "a", "a"], NOW, {"a": 0}, 0)
    assert flags == [False, False, False, True]
    _, flags = f.hold_back(["a", "b"], NOW, {"a": 0, "b": 0}, 0)
    assert flags == [True, False]
    f.written(first)
    _, flags = f.hold_back(["a"], NOW, {"a": 0}, 0)  # the store would say 3 by now
    assert flags == [False]
    f.clear()
    _, flags = f.hold_back(["b"], NOW, {"b": 2}, 0)
    assert flags == [False]


def test_a_batch_written_later_counts_only_what_is_still_inside_its_window(
        base_config: Config) -> None:
    """The daemon's clock moves on: replies planned at an earlier `now` count for a later
    batch only while they are inside that batch's window (the check when it is written
    looks back from its own `now`)."""
    f = forecast(base_config, per=2)
    f.hold_back(["a", "a"], NOW, {"a": 0}, 0)
    _, flags = f.hold_back(["a"], NOW + RATE_WINDOW, {"a": 0}, 0)  # still inside (>=)
    assert flags == [True]
    _, flags = f.hold_back(["a"], NOW + RATE_WINDOW + timedelta(seconds=1), {"a": 0}, 0)
    assert flags == [False]


def test_the_total_is_read_only_where_it_may_hold_a_reply_back(base_config: Config) -> None:
    """Before any batch is written the store's total must be read; after one, only when
    the total it counted, plus what was planned since, comes near the limit — and never
    for a window older than the one counted."""
    f = forecast(base_config, total=10)
    assert f.total_may_hold(NOW, 1)
    f.seen_total(NOW - RATE_WINDOW, 4)
    assert not f.total_may_hold(NOW, 5)
    assert f.total_may_hold(NOW, 6)
    f.hold_back(["a", "b"], NOW, {"a": 0, "b": 0}, 4)  # a batch planned, not yet written
    assert f.total_may_hold(NOW, 4)
    assert not f.total_may_hold(NOW, 3)
    assert f.total_may_hold(NOW - timedelta(minutes=1), 1)  # a window the count missed
