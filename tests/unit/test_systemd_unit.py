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


def _bytes(value: str) -> int:
    units = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}
    m = re.fullmatch(r"(\d+)([KMGT]?)", value.strip())
    assert m, f"not a byte size: {value!r}"
    return int(m.group(1)) * units.get(m.group(2), 1)


def test_unit_without_memory_cap_lets_the_daemon_take_the_host() -> None:
    """MemoryHigh/MemoryMax bound the unit, with room for what the defaults allow: the
    decision children's caps, four IMAP FETCH batches and two messages at the size limit
    in the daemon, plus 512 MiB for the interpreter and the rest."""
    from mailbot.config import ImapMailboxConfig, LimitsConfig, ListenerConfig, WorkerConfig

    fields = r"(?m)^(MemoryHigh|MemoryMax|MemorySwapMax|OOMPolicy)=(\S+)"
    lines = dict(re.findall(fields, UNIT.read_text()))
    assert {"MemoryHigh", "MemoryMax"} <= set(lines), lines
    high, cap = _bytes(lines["MemoryHigh"]), _bytes(lines["MemoryMax"])
    worker = WorkerConfig()
    box = ImapMailboxConfig(host="imap.example", username="bot")
    needed = (worker.processes * worker.memory_mb * (1 << 20) + 4 * box.batch_bytes
              + 2 * max(LimitsConfig().message_bytes, ListenerConfig().max_message_bytes)
              + (512 << 20))
    assert high < cap
    assert needed <= cap, (needed >> 20, cap >> 20)
    assert lines.get("OOMPolicy") == "continue"  # a killed child is replaced, not the unit stopped
def test_unit_credential_names_match_readme() -> None:
    """The credentials the unit loads are exactly those README's deployment steps create
    (systemd refuses to start on a missing LoadCredential file, and an unloaded one never
    reaches the daemon), and every credential the README names in the config is loaded."""
    loaded = set(re.findall(r"(?m)^LoadCredential=([^:\s]+):", UNIT.read_text()))
    readme = (UNIT.parents[1] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Deployment (systemd)", 1)[1].split("\n## ", 1)[0]
    script = section.split("```sh", 1)[1].split("```", 1)[0]
    created = set(re.findall(r">\s*(?:/etc/mailbot/credentials/)?([a-z0-9-]+)\s*(?:#|$)",
                             script, re.M))
    named = set(re.findall(r'_credential = "([^"]+)"', section))
    named |= set(re.findall(r"`(reply-token-secret)`", section))
    assert created == loaded, (created, loaded)
    assert named <= loaded, (named, loaded)
