"""The shipped systemd unit is hardened (systemd-analyze's offline security score)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

UNIT = Path(__file__).resolve().parents[2] / "systemd" / "mailbot.service"


def test_unit_exposure_at_most_2() -> None:
    """`systemd-analyze security --offline=yes` rates the unit at most 2.0."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze not installed")
    out = subprocess.run(
        ["systemd-analyze", "security", "--offline=yes", str(UNIT)],
        capture_output=True, text=True, check=False,
    ).stdout
    match = re.search(r"Overall exposure level for \S+: ([\d.]+)", out)
    assert match, out[-500:]
    print(f"systemd exposure: {match.group(1)}")
    assert float(match.group(1)) <= 2.0


def test_unit_takes_secrets_as_credentials() -> None:
    """Passwords come in through LoadCredential, never an Environment= line."""
    text = UNIT.read_text()
    assert "LoadCredential=" in text
    assert not re.search(r"(?im)^Environment=.*pass", text)
    assert "Type=notify" in text and "DynamicUser=yes" in text
