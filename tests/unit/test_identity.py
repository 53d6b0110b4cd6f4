"""identity_of(raw): Message-ID and From address from the header block, as a compat32
header parse of the block reads them, without one."""

from __future__ import annotations

import email.parser
import email.policy
import re

import pytest

from mailbot.ingest.identity import identity_of

_ADDR = re.compile(r"<([^<>\s]+@[^<>\s]+)>|([^\s<>\"(),;:]+@[^\s<>\"(),;:]+)")


def reference(raw: bytes) -> tuple[str | None, str | None]:
    """What a full compat32 header parse of the header block gives (the former implementation)."""
    end, end2 = raw.find(b"\r\n\r\n"), raw.find(b"\n\n")
    cut = [e for e in (end, end2) if e >= 0]
    head = (raw[: min(cut)] if cut else raw[:65536])[:262144]
    headers = email.parser.BytesHeaderParser(policy=email.policy.compat32).parsebytes(head)
    mid, frm = headers.get("message-id"), headers.get("from")
    message_id = (" ".join(str(mid).split())[:998] or None) if mid else None
    found = _ADDR.search(str(frm)) if frm else None
    sender = (found.group(1) or found.group(2)).lower()[:320] if found else None
    return message_id, sender


CASES = {
    "plain": b"From: Jan <Jan@Example.CZ>\r\nMessage-ID: <a@b>\r\n\r\nbody\r\n",
    "folded": b"Message-ID:\r\n <a\r\n\tb@c>\r\nFrom: x@y.cz\r\n\r\n",
    "case": b"message-id: <m@x>\nFROM: <U@X.CZ>\n\n",
    "first wins": b"Message-ID: <1@x>\nMessage-ID: <2@x>\nFrom: a@x\nFrom: b@x\n\n",
    "body ignored": b"Subject: s\r\n\r\nMessage-ID: <body@x>\r\nFrom: body@x\r\n",
    "block ends": b"Subject: s\nnot a field\nMessage-ID: <late@x>\nFrom: late@x\n\n",
    "space before colon": b"Message-ID : <sp@x>\nFrom: a@x\n\n",
    "envelope line": b"From someone@x Mon Jan 1\nFrom : fake@x\nFrom: real@x\n\n",
    "envelope then continuation": b"Subject: s\nFrom env@x\n\tFrom: cont@x\nFrom: ok@x\n\n",
    "colon first": b":junk\n\tMessage-ID: <cont@x>\nMessage-ID: <ok@x>\n\n",
    "lone CR": b"Subject: s\rMessage-ID: <cr@x>\rFrom: cr@x\r\r",
    "8-bit": b"Message-ID: <\xc3\xa1@x>\nFrom: \xc3\xa1 <u@x.cz>\n\n",
    "empty id": b"Message-ID:   \nFrom: nobody\n\n",
    "long id": b"Message-ID: <" + b"x" * 2000 + b">\nFrom: " + b"y" * 400 + b"@z\n\n",
    "no blank line": b"From: a@x\nMessage-ID: <nb@x>",
    "blank line first": b"\r\nFrom: a@x\r\n",
    "separators": b"Message-ID: \x1c<s@x>\x1d\nFrom: a@x\n\n",
}


@pytest.mark.parametrize("raw", CASES.values(), ids=CASES.keys())
def test_identity_is_what_a_header_parse_gives(raw: bytes) -> None:
    """Folding, case, first occurrence, the end of the block, envelope lines, CR line ends,
    8-bit bytes and the length caps as the stdlib's header parser reads them."""
    assert identity_of(raw) == reference(raw)


def test_identity_values() -> None:
    """The values themselves: whitespace joined, address lower-cased, caps applied."""
    assert identity_of(CASES["folded"]) == ("<a b@c>", "x@y.cz")
    assert identity_of(CASES["first wins"]) == ("<1@x>", "a@x")
    assert identity_of(CASES["envelope line"]) == (None, "real@x")
    assert identity_of(CASES["body ignored"]) == (None, None)
    message_id, sender = identity_of(CASES["long id"])
    assert message_id is not None and len(message_id) == 998
    assert sender is not None and len(sender) == 320
    assert identity_of(CASES["8-bit"]) == ("<\ufffd\ufffd@x>", "u@x.cz")


@pytest.mark.parametrize("raw", [b"", b"\n\n", b"\xff" * 100, "not bytes", memoryview(b"From: a@x\n\n")])
def test_identity_never_raises(raw: bytes) -> None:
    """Garbage, empty input and wrong types give no identity instead of an exception."""
    message_id, sender = identity_of(raw)
    assert message_id is None or isinstance(message_id, str)
    assert sender is None or isinstance(sender, str)


def test_identity_of_a_huge_header_block_reads_only_the_first_256_kib() -> None:
    """A Message-ID beyond 256 KiB of header lines is not read (the block is capped)."""
    filler = b"X-Filler: " + b"f" * 70 + b"\r\n"
    early = b"From: a@x\r\n" + filler * 4000 + b"Message-ID: <late@x>\r\n\r\n"
    assert identity_of(early) == reference(early) == (None, "a@x")
