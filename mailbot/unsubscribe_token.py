"""The unsubscribe token of a news mailing, written once: how it is made, how a mail's
``List-Unsubscribe`` mailto carries it (``<local>+<token>@<domain>`` of
`mailbox.unsubscribe_address`) and how it is recognised again (mail and one-click URL)."""

from __future__ import annotations

import re
import secrets
from typing import Final

__all__ = ["is_token", "new_token", "token_address", "token_in", "without_tag"]

TOKEN_BYTES: Final = 10
_TOKEN: Final = re.compile(r"[0-9a-f]{20}")  # token_hex(TOKEN_BYTES): lower-case hex
_TAG: Final = re.compile(r"\+[^@]*@")


def new_token() -> str:
    """A per-recipient unsubscribe token (20 hex characters, 80 random bits)."""
    return secrets.token_hex(TOKEN_BYTES)


def is_token(value: str) -> bool:
    """Whether `value` has the form of a token (20 lower-case hex characters)."""
    return _TOKEN.fullmatch(value) is not None


def token_address(unsubscribe_address: str, token: str) -> str:
    """The address of the ``List-Unsubscribe`` mailto: ``<local>+<token>@<domain>``."""
    local, _, domain = unsubscribe_address.partition("@")
    return f"{local}+{token}@{domain}"


def token_in(address: str, unsubscribe_address: str) -> str | None:
    """The token `address` carries if it is `unsubscribe_address` with a token tag, else
    None (case-insensitive)."""
    local, _, domain = unsubscribe_address.lower().partition("@")
    m = re.fullmatch(rf"{re.escape(local)}\+([0-9a-f]{{20}})@{re.escape(domain)}",
                     address.strip().lower())
    return m.group(1) if m else None


def without_tag(address: str) -> str:
    """`address` without its ``+tag`` (any tag: the unsubscribe address in any form)."""
    return _TAG.sub("@", address, count=1)
