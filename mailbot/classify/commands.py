"""A staff reply's own text and its `#commands` (pure).

Staff answer from their mail client, so the reply carries the quoted notice below (or
above) their words; `mail-parser-reply` finds the latest reply in many clients' quoting
styles and languages. Commands are lines of their own at the top of that text:

    #close                      the ticket is solved
    #wait                       waiting for the customer (the deadline pauses)
    #assign NAME                who works on it (an address: only a staff address)
    #note                       internal: the reply is recorded, not sent to the customer
    #priority emergency|normal  change the priority (and the deadline)
"""

from __future__ import annotations

import email.utils
import re
from collections.abc import Callable
from functools import lru_cache

from mailparser_reply import EmailReplyParser

from mailbot.domain import StaffCommand

COMMANDS: dict[str, tuple[str, ...] | None] = {
    "close": (),
    "wait": (),
    "note": (),
    "assign": None,  # any name
    "priority": ("emergency", "normal"),
}
"""Command name → allowed arguments (empty: none; None: free text)."""

COMMAND_EVENTS = {"close": "closed", "wait": "waiting", "assign": "assigned",
                  "priority": "priority"}
"""The ticket event a command is recorded as: the same names the CLI records (`#note` is
recorded as the staff mail's own `note` event)."""

_COMMAND_LINE = re.compile(r"#([A-Za-z][\w-]*)[ \t]*(.*)")
_MAX_TEXT = 200_000


@lru_cache(maxsize=1)
def _parser() -> EmailReplyParser:
    return EmailReplyParser(languages=["cs", "en", "de"])


_QUOTE_SCAN = 32_768
"""Characters of a reply searched for the start of the quoted mail (the library's patterns
cost up to a quarter of a second on 200,000 characters)."""


def latest_reply(text: str) -> str:
    """The newest part of a reply: without the quoted earlier mail (the staff notice).

    The quote is looked for in the first `_QUOTE_SCAN` characters; a reply longer than
    that without a quote in them is kept whole (up to `_MAX_TEXT`)."""
    text = text[:_MAX_TEXT].replace("\r\n", "\n")
    if not text.strip():
        return ""
    head = text[:_QUOTE_SCAN]
    try:
        body = _parser().read(head).latest_reply or ""
    except Exception:  # noqa: BLE001 - the library fails: keep the text above any quote
        body = head
    if len(text) > len(head) and body.strip() == head.strip():
        body = text  # no quote in the head: the rest is still the reply
    lines = [line for line in body.splitlines() if not line.startswith(">")]
    return "\n".join(lines).strip("\n")


def parse_commands(text: str, is_staff: Callable[[str], bool] | None = None
                   ) -> tuple[tuple[StaffCommand, ...], str, tuple[str, ...]]:
    """Split the command lines off the top of `text`.

    Returns the commands, the rest of the text, and an error for each unknown command or
    bad argument (with errors, the reply must not be acted on at all). `#assign` to an
    address is refused unless `is_staff` says it is a staff address: reminders go to the
    assignee with the ticket's reply token, which must never leave the staff.
    """
    commands: list[StaffCommand] = []
    errors: list[str] = []
    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i].strip()
        if not line:
            i += 1
            continue
        m = _COMMAND_LINE.fullmatch(line)
        if m is None:
            break
        name, argument = m.group(1).lower(), m.group(2).strip()
        i += 1
        if name not in COMMANDS:
            errors.append(f"unknown command #{name}")
            continue
        allowed = COMMANDS[name]
        if allowed is None:
            if not argument:
                errors.append(f"#{name} needs an argument")
                continue
        elif allowed == () and argument:
            errors.append(f"#{name} takes no argument (got {argument!r})")
            continue
        elif allowed and argument.lower() not in allowed:
            errors.append(f"#{name} expects one of {', '.join(allowed)} (got {argument!r})")
            continue
        elif allowed:
            argument = argument.lower()
        if name == "assign" and "@" in argument and not _staff_address(argument, is_staff):
            errors.append(f"#assign {argument!r}: not a staff address")
            continue
        commands.append(StaffCommand(name, argument[:100]))
    rest = "\n".join(lines[i:]).strip("\n")
    return tuple(commands), rest, tuple(errors)


def _staff_address(argument: str, is_staff: Callable[[str], bool] | None) -> bool:
    """Whether an `#assign` argument holding "@" is exactly one staff address."""
    found = email.utils.getaddresses([argument])
    return (is_staff is not None and len(found) == 1 and "@" in found[0][1]
            and argument.count("@") == 1 and is_staff(found[0][1].lower()))
