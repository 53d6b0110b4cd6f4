"""The byte-level limits checked before parsing."""

from __future__ import annotations

from mailbot.config import LimitsConfig
from mailbot.ingest.limits import check, check_attachments, header_section

LIMITS = LimitsConfig(message_bytes=10_000, header_bytes=2_000, header_fields=20, mime_parts=10,
                multiparts=3, attachment_bytes=5_000)
HEAD = b"From: a@b.example\r\nTo: podpora@estelar.example\r\nSubject: x\r\n"


def test_a_normal_message_passes() -> None:
    assert check(HEAD + b"\r\nbody\r\n", LIMITS) is None


def test_too_large_is_answerable() -> None:
    v = check(HEAD + b"\r\n" + b"x" * 10_001, LIMITS)
    assert v is not None and v.code == "too_large" and v.answerable


def test_header_section_too_large_or_unterminated() -> None:
    long_line = HEAD + b"X-Long: " + b"a" * 2_100 + b"\r\n\r\nbody"
    v = check(long_line, LIMITS)
    assert v is not None and v.code == "header_too_large" and not v.answerable
    assert header_section(HEAD + b"\r\nbody", 2_000) == HEAD.rstrip(b"\r\n")


def test_too_many_header_fields_counts_fields_not_continuation_lines() -> None:
    folded = HEAD + b"X-Folded: a\r\n" + b" continued\r\n" * 30 + b"\r\nbody"
    assert check(folded, LIMITS) is None
    many = HEAD + b"".join(b"X-H%d: v\r\n" % i for i in range(20)) + b"\r\nbody"
    v = check(many, LIMITS)
    assert v is not None and v.code == "too_many_headers"


def test_parts_and_multiparts() -> None:
    flat = HEAD + b'Content-Type: multipart/mixed; boundary="b"\r\n\r\n' + b"".join(
        b"--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(12)) + b"--b--\r\n"
    v = check(flat, LIMITS)
    assert v is not None and v.code == "too_many_parts"
    nested = HEAD + b"".join(
        b'Content-Type: multipart/mixed; boundary="b%d"\r\n\r\n--b%d\r\n' % (i, i) for i in range(4))
    v = check(nested, LIMITS)
    assert v is not None and v.code == "too_deep"


def test_attachment_limit() -> None:
    assert check_attachments([("a.pdf", 4_000)], LIMITS) is None
    v = check_attachments([("a.pdf", 4_000), ("big.iso", 6_000)], LIMITS)
    assert v is not None and v.code == "attachment_too_large" and "big.iso" in v.detail
