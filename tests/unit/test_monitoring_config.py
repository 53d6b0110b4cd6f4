"""[monitoring] and [alerts]: a bad key or value stops start-up with a line naming it."""

from __future__ import annotations

import pytest

from mailbot import config as config_mod
from mailbot.errors import ConfigError


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"monitoring": {"check_seconds": 0}}, "monitoring.check_seconds"),
        ({"monitoring": {"port": 9100}}, "monitoring.port: unknown key"),
        ({"monitoring": {"outbox_stuck_minutes": "soon"}}, "monitoring.outbox_stuck_minutes"),
        ({"alerts": {"intake_stopped_minutes": -1}}, "alerts.intake_stopped_minutes"),
        ({"alerts": {"lead": "x@y.cz"}}, "alerts.lead: unknown key"),
    ],
)
def test_bad_monitoring_settings_name_the_key(data: dict[str, object], expected: str) -> None:
    with pytest.raises(ConfigError, match=expected.replace(".", r"\.")):
        config_mod.parse(data)


def test_monitoring_and_alerts_are_off_unless_configured() -> None:
    cfg = config_mod.parse({})
    assert not cfg.monitoring.enabled and not cfg.alerts.enabled
    on = config_mod.parse({"monitoring": {"enabled": True, "check_seconds": 5},
                           "alerts": {"enabled": True, "outbox_stuck_minutes": 10}})
    assert on.monitoring.check_seconds == 5 and on.alerts.outbox_stuck_minutes == 10
