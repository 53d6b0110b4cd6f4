"""Header helpers whose shortcuts must answer exactly what the stdlib answers."""

from __future__ import annotations

import email.utils
import re
from email.message import Message

import pytest

from mailbot.ingest.headers import _getaddresses, clean_header, content_param, header_mailboxes

SIMPLE_ADDRESSES = [
    "a@b.cz",
    "Jan.Novak+x@Example.CZ",
    "Jan Novák <jan@example.cz>",
    "J. R. Novák <jan@example.cz>",
    "<jan@example.cz>",
    '"Novák, Jan" <jan@example.cz>',
    '"" <jan@example.cz>',
    '"a(b)c" <jan@example.cz>',
    "=?utf-8?Q?Simona_H=C3=A1jkov=C3=A1?= <s@example.cz>",
    "Name<x@y.z>",
]
OTHER_ADDRESSES = [
    '"Novák \\"Honza\\"" <jan@example.cz>',
    "a@b.cz, c@d.cz",
    "Jan (work) <jan@example.cz>",
    "jan@[192.0.2.1]",
    "a..b@c.cz",
    "a@b@c.cz",
    "ceo@bank.example <attacker@evil.example>",
    "Group: a@b.cz, c@d.cz;",
    "MAILER-DAEMON",
    "Jan\xa0Novák <jan@example.cz>",
    "",
]


@pytest.mark.parametrize("value", SIMPLE_ADDRESSES + OTHER_ADDRESSES)
def test_mailboxes_are_read_as_getaddresses_reads_them(value: str) -> None:
    """Simple single mailboxes read without the stdlib give its pairs; the rest go to it
    (a value this Python's strict parser refuses: see the next test)."""
    text = clean_header(value)
    stdlib = email.utils.getaddresses([text])
    if stdlib == [("", "")] and "<" in text:
        assert _getaddresses(text) == [("", inner) for inner in re.findall(r"<([^<>]*)>", text)]
    else:
        assert _getaddresses(text) == stdlib


def test_a_value_the_strict_parser_refuses_is_read_as_its_angle_addresses(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A stdlib with the fix of CVE-2023-27043 (CPython 3.11.10, 3.12.6, Debian's 3.11.2)
    answers an address-looking display name with [("", "")] where older ones split the value
    in two: mailbot reads the angle address on either, never the display name."""
    monkeypatch.setattr(email.utils, "getaddresses", lambda values: [("", "")])
    value = "ceo@bank.example <Attacker @evil.example>"
    assert _getaddresses(value) == [("", "Attacker@evil.example")]
    assert header_mailboxes([value], [], angle_first=True) == [("", "attacker@evil.example")]
    assert header_mailboxes(["ceo@bank.example, undisclosed"], []) == []  # nothing to go by


@pytest.mark.parametrize("value", SIMPLE_ADDRESSES)
def test_simple_mailboxes_skip_the_stdlib_parser(value: str, monkeypatch: pytest.MonkeyPatch
                                                 ) -> None:
    expected = email.utils.getaddresses([value])
    monkeypatch.setattr(email.utils, "getaddresses", lambda _: pytest.fail("stdlib called"))
    assert _getaddresses(value) == expected


def test_header_mailboxes_decode_names_and_prefer_angle_addresses() -> None:
    assert header_mailboxes(["=?utf-8?Q?Simona_H=C3=A1jkov=C3=A1?= <S@Example.cz>"], []) == [
        ("Simona Hájková", "s@example.cz")]
    assert header_mailboxes(["ceo@bank.example <attacker@evil.example>"], [],
                            angle_first=True) == [("", "attacker@evil.example")]


@pytest.mark.parametrize("value", [
    "plain", "  two  spaces  ", "tab\there", "fold\r\n\tline", "nul\x00x", "c1\x85x",
    "sep\u2028x", "bom\ufeffx", "nbsp\xa0x", " lead", "trail ", "",
])
def test_clean_header_shortcut_matches_the_full_cleaning(value: str) -> None:
    """Printable values are only stripped; anything else gets the full cleaning."""
    import re

    full = re.sub(" {2,}", " ", re.sub("[\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]+", " ", value)).strip()
    assert clean_header(value) == full


def _part(content_type: str | None) -> Message:
    part = Message()
    if content_type is not None:
        part["Content-Type"] = content_type
    return part


@pytest.mark.parametrize("content_type", [
    None,
    "text/plain",
    "text/plain; charset=utf-8",
    'text/plain; CHARSET="iso-8859-2"',
    "text/plain; format=flowed",
    "text/plain; charset*=utf-8''%C3%A1",
    "text/plain; charset*0=utf; charset*1=-8",
    "text/plain; name=charset.txt",
    'text/plain; charset="utf-8"; format=flowed',
    "text/plain; charset=<utf-8>",
    "charset=x; text/plain",
    "text/plain; charset",
    "text/plain;; charset = utf-8 ;",
    'text/plain; name="a;b"; charset=utf-8',
    'text/plain; name="a\\"b"; charset=utf-8',
    'text/plain; charset="a""b"',
])
def test_content_param_answers_as_get_param(content_type: str | None) -> None:
    part = _part(content_type)
    assert content_param(part, "charset") == part.get_param("charset")


@pytest.mark.parametrize("content_type", [
    "text/plain", "text/plain; charset=utf-8", 'text/plain; CHARSET="iso-8859-2"; format=flowed'])
def test_content_param_reads_simple_fields_itself(content_type: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    part = _part(content_type)
    expected = part.get_param("charset")
    monkeypatch.setattr(Message, "get_param", lambda *a, **k: pytest.fail("stdlib called"))
    assert content_param(part, "charset") == expected


def test_content_param_raises_where_get_param_raises() -> None:
    """RFC 2231 sections the stdlib cannot sort raise TypeError, also without the name asked
    for (the caller's fallback depends on it)."""
    part = _part("text/plain; x*=a; x*0=b")
    with pytest.raises(TypeError):
        part.get_param("charset")
    with pytest.raises(TypeError):
        content_param(part, "charset")
