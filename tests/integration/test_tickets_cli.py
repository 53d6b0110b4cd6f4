"""`mailbot tickets list|show|close|assign` against a real store (SQLite and PostgreSQL),
with tickets opened by the real pipeline (`mailbot replay` of request mails)."""

from __future__ import annotations

import email
import email.policy
import json
from email.message import EmailMessage
from datetime import datetime, timedelta
from pathlib import Path

from click.testing import CliRunner, Result

from mailbot.cli import cli
from mailbot.store import Store
from tests.e2e.helpers import LICENSES, request_mail
from tests.integration.test_replay import write_config

EARLY = "2026-11-20T10:00:00+01:00"  # a Friday: T-2026-000001
LATER = "2026-11-25T10:00:00+01:00"  # a Wednesday: T-2026-000002 and T-2026-000003
T1, T2, T3 = "T-2026-000001", "T-2026-000002", "T-2026-000003"


def invoke(*args: str, env: dict[str, str] | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)


def ok(*args: str, env: dict[str, str] | None = None) -> str:
    result = invoke(*args, env=env)
    assert result.exit_code == 0, result.output
    return result.output


def json_lines(output: str) -> list[dict[str, object]]:
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def setup_tickets(tmp_path: Path, store_url: str) -> str:
    """Three tickets: T1 opened at EARLY, T2 and T3 at LATER. Returns the config path."""
    cfg = str(write_config(tmp_path, store_url))
    csv = tmp_path / "licenses.csv"
    csv.write_bytes(LICENSES)
    ok("licenses", "import", str(csv), "--config", cfg)
    batches = [
        (EARLY, [("dvorak@strojirny-hranice.cz", "Nejde ulozit smenny kalendar")]),
        (LATER, [("novak@strojirny-hranice.cz", "Chyba pri tisku [sestava] dochazky"),
                 ("svoboda@strojirny-hranice.cz", "Export do mezd nefunguje")]),
    ]
    for i, (now, mails) in enumerate(batches):
        folder = tmp_path / f"mails{i}"
        folder.mkdir()
        for j, (sender, subject) in enumerate(mails):
            (folder / f"{j}.eml").write_bytes(request_mail(subject=subject, sender=sender))
        out = ok("replay", str(folder), "--json", "--now", now, "--config", cfg)
        assert [r["decision"] for r in json_lines(out)] == ["ticket"] * len(mails), out
    return cfg


def by_number(output: str) -> dict[str, dict[str, object]]:
    return {str(r["number"]): r for r in json_lines(output)}


def test_list_filters_and_json(tmp_path: Path, store_url: str) -> None:
    """list shows every ticket; --json carries all fields; --overdue (with --now), --open,
    --mine and --limit filter."""
    cfg = setup_tickets(tmp_path, store_url)

    table = ok("tickets", "list", "--config", cfg)
    for number in (T1, T2, T3):
        assert number in table
    # The customer is the registry's name for the license, with the sender's address.
    assert "Strojirny Hranice a.s." in table and "<dvorak@strojirny-hranice.cz>" in table
    assert "40127733" in table and "[sestava]" in table  # subjects are not rich markup
    assert "3 ticket(s)" in table

    rows = json_lines(ok("tickets", "list", "--json", "--config", cfg))
    assert [r["number"] for r in rows] == [T3, T2, T1]  # newest first
    assert set(rows[0]) >= {
        "number", "state", "subject", "customer_email", "customer_name", "license", "priority",
        "language", "opened_at", "deadline", "closed_at", "assignee", "first_message_id",
        "last_message_id"}
    first = by_number(ok("tickets", "list", "--json", "--config", cfg))[T1]
    assert first["state"] == "open" and first["priority"] == "normal"
    assert first["customer_email"] == "dvorak@strojirny-hranice.cz"
    assert first["license"] == "40127733" and first["closed_at"] is None
    assert first["customer_name"] == "Strojirny Hranice a.s."
    deadline1 = datetime.fromisoformat(str(first["deadline"]))
    deadline2 = datetime.fromisoformat(str(rows[1]["deadline"]))
    assert deadline1.tzinfo is not None and deadline1 < deadline2
    opened = datetime.fromisoformat(str(first["opened_at"]))
    assert opened == datetime.fromisoformat(EARLY)

    # Deadlines are shown in the calendar's zone (Europe/Prague: UTC+1 in November).
    local = deadline1.astimezone(datetime.fromisoformat(EARLY).tzinfo)
    assert local.strftime("%Y-%m-%d %H:%M") in table

    # Between the two deadlines only T1 is overdue.
    between = (deadline1 + timedelta(minutes=1)).isoformat()
    overdue = ok("tickets", "list", "--overdue", "--json", "--now", between, "--config", cfg)
    assert list(by_number(overdue)) == [T1]
    assert by_number(overdue)[T1]["overdue"] is True
    marked = ok("tickets", "list", "--now", between, "--config", cfg)
    assert marked.count("OVERDUE") == 1
    before = (deadline1 - timedelta(minutes=1)).isoformat()
    assert by_number(ok("tickets", "list", "--overdue", "--json", "--now", before,
                        "--config", cfg)) == {}

    # --open: open and waiting, not closed; a waiting ticket is never overdue.
    store = Store.from_url(store_url)
    try:
        assert store.set_ticket_state(T2, "waiting", by="test")
    finally:
        store.close()
    ok("tickets", "close", T3, "--config", cfg)
    assert set(by_number(ok("tickets", "list", "--open", "--json", "--config", cfg))) == {T1, T2}
    late = (deadline2 + timedelta(days=30)).isoformat()
    assert list(by_number(ok("tickets", "list", "--overdue", "--json", "--now", late,
                             "--config", cfg))) == [T1]

    # --mine matches the assignee case-insensitively; --limit caps the rows.
    ok("tickets", "assign", T2, "Eva Horakova", "--config", cfg)
    assert list(by_number(ok("tickets", "list", "--mine", "eva HORAKOVA", "--json",
                             "--config", cfg))) == [T2]
    assert by_number(ok("tickets", "list", "--mine", "nobody", "--json", "--config", cfg)) == {}
    assert len(json_lines(ok("tickets", "list", "--limit", "2", "--json", "--config", cfg))) == 2

    bad_now = invoke("tickets", "list", "--now", "2026-11-25T10:00:00", "--config", cfg)
    assert bad_now.exit_code == 2 and "offset" in bad_now.output


def test_show_close_and_assign(tmp_path: Path, store_url: str) -> None:
    """show prints fields and events; close and assign record events with the --by author."""
    cfg = setup_tickets(tmp_path, store_url)

    shown = ok("tickets", "show", T1, "--config", cfg)
    assert T1 in shown and "Nejde ulozit smenny kalendar" in shown
    assert "opened" in shown and "dvorak@strojirny-hranice.cz" in shown

    data = json.loads(ok("tickets", "show", T1, "--json", "--config", cfg))
    assert data["ticket"]["number"] == T1 and data["ticket"]["state"] == "open"
    assert [e["kind"] for e in data["events"]] == ["opened"]
    assert set(data["events"][0]) == {"id", "kind", "author", "created_at", "detail",
                                      "inbound_id"}
    assert data["events"][0]["author"] == "dvorak@strojirny-hranice.cz"
    assert data["events"][0]["inbound_id"] is not None
    datetime.fromisoformat(data["events"][0]["created_at"])

    out = ok("tickets", "close", T1, "--by", "operator-jana", "--config", cfg)
    assert out.strip() == f"closed {T1} (by operator-jana)"
    closed = by_number(ok("tickets", "list", "--json", "--config", cfg))[T1]
    assert closed["state"] == "closed" and closed["closed_at"] is not None
    events = json.loads(ok("tickets", "show", T1, "--json", "--config", cfg))["events"]
    assert [(e["kind"], e["author"]) for e in events][-1] == ("closed", "operator-jana")
    assert "closed" in ok("tickets", "show", T1, "--config", cfg)
    again = ok("tickets", "close", T1, "--config", cfg)
    assert "already closed" in again
    assert len(json.loads(ok("tickets", "show", T1, "--json", "--config", cfg))["events"]) == 2

    # Lower-case numbers are accepted; --by defaults to $USER.
    out = ok("tickets", "assign", T2.lower(), "Petr", "--config", cfg, env={"USER": "jdoe"})
    assert out.strip() == f"assigned {T2} to Petr (by jdoe)"
    assert by_number(ok("tickets", "list", "--json", "--config", cfg))[T2]["assignee"] == "Petr"
    assert list(by_number(ok("tickets", "list", "--mine", "petr", "--json",
                             "--config", cfg))) == [T2]
    last = json.loads(ok("tickets", "show", T2, "--json", "--config", cfg))["events"][-1]
    assert (last["kind"], last["author"], last["detail"]) == ("assigned", "jdoe", "Petr")
    assert "Petr" in ok("tickets", "show", T2, "--config", cfg)


def test_unknown_and_malformed_numbers(tmp_path: Path, store_url: str) -> None:
    """An unknown ticket exits 1 with a message on stderr; a malformed number is a usage
    error (exit 2) naming the expected form."""
    cfg = setup_tickets(tmp_path, store_url)
    missing = "T-2026-999999"
    for args in (("show", missing), ("close", missing), ("assign", missing, "Petr")):
        result = invoke("tickets", *args, "--config", cfg)
        assert result.exit_code == 1, result.output
        assert f"no ticket {missing}" in result.stderr
        assert result.stdout == ""
    for args in (("show", "T-26-1"), ("close", "2026-000001"), ("assign", "T-2026-00001x", "P"),
                 ("show", "T-2026-0000011")):
        result = invoke("tickets", *args, "--config", cfg)
        assert result.exit_code == 2, result.output
        assert "T-2026-000145" in result.stderr
    # Nothing was changed by the failed commands.
    rows = by_number(ok("tickets", "list", "--json", "--config", cfg))
    assert all(r["state"] == "open" and r["assignee"] is None for r in rows.values())


def test_attachments_export(tmp_path: Path, store_url: str) -> None:
    """`tickets show` lists a ticket's attachments; `tickets attachments --to DIR` copies them
    there under sanitised names, nothing outside DIR."""
    cfg = str(write_config(tmp_path, store_url))
    csv = tmp_path / "licenses.csv"
    csv.write_bytes(LICENSES)
    ok("licenses", "import", str(csv), "--config", cfg)
    msg = email.message_from_bytes(request_mail(sender="dvorak@strojirny-hranice.cz"),
                                   policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    msg.add_attachment(b"radek 1\n", maintype="text", subtype="plain", filename="../../evil.log")
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "1.eml").write_bytes(msg.as_bytes(policy=email.policy.SMTP))
    ok("replay", str(folder), "--now", LATER, "--config", cfg)
    shown = json.loads(ok("tickets", "show", T1, "--json", "--config", cfg))
    assert [a["filename"] for a in shown["attachments"]] == ["evil.log"]
    out = tmp_path / "export"
    ok("tickets", "attachments", T1, "--to", str(out), "--config", cfg)
    assert [p.name for p in out.iterdir()] == ["evil.log"]
    assert (out / "evil.log").read_bytes() == b"radek 1\n"
    assert not (tmp_path / "evil.log").exists()
