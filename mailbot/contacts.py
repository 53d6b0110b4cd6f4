"""The contacts list: who to write to for a license (news, notices before support ends).

`mailbot contacts import FILE.csv` reads ``email,license,name,language``; a later row for the
same address wins. Addresses are checked with email-validator; the license must be 8 digits
(it need not be in the registry yet).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from email_validator import EmailNotValidError, validate_email

from mailbot.registry import RowError, read_csv

@dataclass(frozen=True, slots=True)
class Contact:
    email: str
    license: str
    name: str = ""
    language: str = "cs"


def parse_contact_row(row: dict[str, str | None]) -> Contact:
    """One CSV row as a Contact.

    Raises:
        ValueError: a bad address, license or language (the message names the column).
    """
    raw_email = (row.get("email") or "").strip()
    try:
        email = validate_email(raw_email, check_deliverability=False, allow_smtputf8=False,
                               test_environment=True).ascii_email
    except EmailNotValidError as exc:
        raise ValueError(f"email: {raw_email!r}: {exc}") from None
    assert email is not None
    license_number = re.sub(r"[\s-]", "", row.get("license") or "")
    if not re.fullmatch(r"\d{8}", license_number):
        raise ValueError(f"license: expected 8 digits, got {row.get('license')!r}")
    language = (row.get("language") or "cs").strip().lower() or "cs"
    if language in ("sk", "cz"):
        language = "cs"
    if language not in ("cs", "en"):
        raise ValueError(f"language: expected cs or en, got {row.get('language')!r}")
    name = " ".join((row.get("name") or "").split())[:300]
    return Contact(email.lower(), license_number, name, language)


def read_contacts_csv(text: str) -> tuple[list[Contact], list[RowError]]:
    """All good rows and the errors of the bad ones (a later row for an address wins)."""
    return read_csv(text, ("email", "license"), parse_contact_row, lambda c: c.email)


def read_contacts_file(path: Path) -> tuple[list[Contact], list[RowError]]:
    return read_contacts_csv(path.read_text(encoding="utf-8-sig"))
