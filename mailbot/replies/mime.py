"""Writing the mails mailbot sends, and checking addresses and Message-IDs (pure).

The renderers (:mod:`.render`, :mod:`.conversation`, :mod:`.digest`) write each mail as
bytes here (`mail_bytes`): headers composed token by token from cleaned and validated
values, so that no value can end a header line, and UTF-8 quoted-printable bodies. Each
becomes one `OutgoingMail` (`sealed`), the type the outbox takes.

The operator alerts still build an ``EmailMessage``; `outgoing`
serializes it by `checked_bytes`, which re-parses the bytes to prove they have exactly the
headers that were set and exactly the intended recipients in To (CPython 3.11.7 predates the
generator fixes for CVE-2024-6923 and CVE-2026-0672).
"""

from __future__ import annotations

import binascii
import email
import email.parser
import email.policy
import email.utils
import re
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from email.message import EmailMessage
from functools import lru_cache
from typing import Final

from email_validator import EmailNotValidError, validate_email

from mailbot.domain import OutgoingMail
from mailbot.replies.sanitize import HEADER_UNSAFE, clean_header_text

__all__ = [
    "BOUNDARY",
    "MSG_ID",
    "POLICY",
    "HeaderError",
    "address_header",
    "checked_bytes",
    "clean_message_id",
    "date_header",
    "id_header",
    "mail_bytes",
    "message_ids",
    "mixed_body",
    "outgoing",
    "plain_header",
    "qp_body",
    "sealed",
    "set_bodies",
    "text_header",
    "valid_address",
    "valid_message_id",
]

POLICY: Final = email.policy.SMTP
MSG_ID: Final = re.compile(r"<[!-;=?-~]{1,250}>")  # printable ASCII except < and >, no spaces
_BARE_MSG_ID = re.compile(r"[!-;=?-~]{1,248}@[!-;=?-~]{1,248}")


@lru_cache(maxsize=4096)  # the same staff and customer addresses come again and again
def valid_address(value: str | None) -> str | None:
    """`value` as an ASCII address mailbot may send to, else None: accepted by
    email-validator (no deliverability check: the relay judges that; *.test allowed for test
    rigs; no SMTPUTF8, which mailbot does not send) and holding no encoded word, which the
    `email` package would decode in a header."""
    if not value or len(value) > 320:
        return None
    try:
        valid = validate_email(value, check_deliverability=False, allow_smtputf8=False,
                               test_environment=True)
    except EmailNotValidError:
        return None
    if valid.ascii_email is None or "=?" in valid.ascii_email:
        return None
    return valid.ascii_email


def clean_message_id(value: str | None) -> str | None:
    """`value` as a well-formed ``<id>`` (angle brackets added to a bare ``a@b``, if it is
    then short enough), else None;
    None also for an id holding "=?", which the `email` package would decode as an encoded
    word (into a line break, say)."""
    if not value:
        return None
    cleaned = clean_header_text(value, 1000).strip()
    if "=?" in cleaned:
        return None
    if _BARE_MSG_ID.fullmatch(cleaned):
        cleaned = f"<{cleaned}>"
    return cleaned if MSG_ID.fullmatch(cleaned) else None


# -- writing mails directly -----------------------------------------------------------------
#
# mailbot sends a few fixed shapes: a text/plain part, or a multipart/alternative of text and
# HTML, both UTF-8 quoted-printable, under headers it composes from values it has cleaned and
# validated. Those mails are written here as bytes, without the `email` package: every header
# line is made from tokens that cannot hold CR, LF or any other control character (values
# are stripped of them, addresses and Message-IDs must match strict ASCII patterns, other
# non-ASCII or "=?" text becomes RFC 2047 encoded words), so nothing a customer writes can
# end a header line or start another. tests/unit/test_mime.py parses such mails with the
# stdlib and compares every header and both bodies with what was asked for.

BOUNDARY: Final = "===============mailbot-alternative=="
"""Boundary of the multipart/alternative: both parts are quoted-printable, whose output never
holds "==" ("=" always starts "=XX" or a soft line break), so it cannot occur in a part."""

MAX_LINE: Final = 78
_EW_OVERHEAD: Final = len("=?utf-8?q??=")
_EW_TEXT: Final = 75 - _EW_OVERHEAD  # RFC 2047 §2: an encoded word is at most 75 characters
_EW_MIN: Final = 12  # encoded text of one character: 4 UTF-8 bytes as "=XX" each
# RFC 5322 atext (an atom of a display name) and a dot-atom addr-spec with a host name: what
# email-validator returns as an ASCII address, without quoted local parts or domain literals.
_ATOM = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+")
_ADDR_SPEC = re.compile(
    r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?(?:\.[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)*"
)
_CONTINUATION = frozenset("89AB")
# RFC 2047 Q encoding of a byte (as latin-1 text): letters, digits and -!*+/ as they are
# (also safe in a display name, §5(3)), space as "_", everything else "=XX".
_Q_MAP: Final = [
    chr(b) if chr(b).isascii() and (chr(b).isalnum() or chr(b) in "-!*+/")
    else "_" if b == 0x20 else f"={b:02X}"
    for b in range(256)
]  # "=8X".."=BX": a UTF-8 continuation byte in Q encoding
_TEXT_HEADERS: Final = ('Content-Type: text/plain; charset="utf-8"\r\n'
                        "Content-Transfer-Encoding: quoted-printable\r\n")
_HTML_HEADERS: Final = ('Content-Type: text/html; charset="utf-8"\r\n'
                        "Content-Transfer-Encoding: quoted-printable\r\n")
_DELIMITER: Final = f"--{BOUNDARY}\r\n".encode("ascii")
_ALTERNATIVE_HEAD: Final = (
    "MIME-Version: 1.0\r\n"
    f'Content-Type: multipart/alternative;\r\n boundary="{BOUNDARY}"\r\n\r\n'
).encode("ascii") + _DELIMITER + (_TEXT_HEADERS + "\r\n").encode("ascii")
_HTML_HEAD: Final = b"\r\n" + _DELIMITER + (_HTML_HEADERS + "\r\n").encode("ascii")
_ALTERNATIVE_END: Final = f"\r\n--{BOUNDARY}--\r\n".encode("ascii")
_TEXT_HEAD: Final = ("MIME-Version: 1.0\r\n" + _TEXT_HEADERS + "\r\n").encode("ascii")


class HeaderError(ValueError):
    """A header value mailbot may not write (an address or Message-ID of the wrong form)."""


class _Folder:
    """One header field, folded at whitespace into lines of at most MAX_LINE characters
    (a single token longer than a line, such as a long Message-ID, stands on a line of its
    own). Tokens must hold no whitespace or control characters but for the spaces of a
    quoted string; encoded words are sized to the room left on the line."""

    __slots__ = ("done", "line")

    def __init__(self, name: str) -> None:
        self.done: list[str] = []
        self.line = name + ":"

    def word(self, token: str) -> None:
        if len(self.line) + 1 + len(token) > MAX_LINE and self.line:
            self.done.append(self.line)
            self.line = ""
        self.line += " " + token

    def _break(self) -> None:
        self.done.append(self.line)
        self.line = ""

    def encoded(self, text: str) -> None:
        """`text` as RFC 2047 encoded words (UTF-8, Q or B, whichever is shorter, as the
        stdlib chooses), split only between characters. Q uses the stdlib's header map,
        which leaves only letters, digits and ``-!*+/`` unencoded: safe in a phrase too."""
        data = text.encode("utf-8")
        q = data.decode("latin-1").translate(_Q_MAP)
        size = len(data)
        if len(q) <= 4 * ((size + 2) // 3):
            start, end = 0, len(q)
            while start < end:
                room = min(MAX_LINE - len(self.line) - 1 - _EW_OVERHEAD, _EW_TEXT)
                if room < _EW_MIN:  # not even one character may fit: next line
                    self._break()
                    continue
                cut = start + room
                if cut < end:
                    # Back off to a token boundary ("=XX"), then off any continuation bytes.
                    if q[cut - 1] == "=":
                        cut -= 1
                    elif q[cut - 2] == "=":
                        cut -= 2
                    while q[cut] == "=" and q[cut + 1] in _CONTINUATION:
                        cut -= 3
                else:
                    cut = end
                if cut <= start:
                    self._break()
                    continue
                self.word(f"=?utf-8?q?{q[start:cut]}?=")
                start = cut
        else:
            start = 0
            while start < size:
                room = min(MAX_LINE - len(self.line) - 1 - _EW_OVERHEAD, _EW_TEXT)
                if room < _EW_MIN:
                    self._break()
                    continue
                cut = start + room // 4 * 3
                if cut < size:
                    while data[cut] & 0xC0 == 0x80:
                        cut -= 1
                else:
                    cut = size
                if cut <= start:
                    self._break()
                    continue
                chunk = binascii.b2a_base64(data[start:cut], newline=False).decode("ascii")
                self.word(f"=?utf-8?b?{chunk}?=")
                start = cut

    def text(self, value: str) -> None:
        """Unstructured text: printable ASCII words as they are, runs of other words (also
        any holding "=?", or too long for a line) as encoded words."""
        self._words(value.split(), lambda w: w.isascii() and w.isprintable())

    def phrase(self, value: str) -> None:
        """A display name: atoms as they are, else a quoted string if it is printable ASCII
        and fits a line, else runs of words that are not atoms as encoded words (which the
        stdlib also decodes inside a quoted string, so no "=?" may stay literal)."""
        words = value.split()
        if all(_ATOM.fullmatch(w) and "=?" not in w and len(w) < MAX_LINE - 1 for w in words):
            for w in words:
                self.word(w)
            return
        joined = " ".join(words)
        if joined.isascii() and joined.isprintable() and "=?" not in joined:
            quoted = '"' + joined.replace("\\", "\\\\").replace('"', '\\"') + '"'
            if len(quoted) < MAX_LINE - 1:
                self.word(quoted)
                return
        self._words(words, lambda w: _ATOM.fullmatch(w) is not None)

    def _words(self, words: list[str], plain: Callable[[str], bool]) -> None:
        """`words` as they are where `plain` (and free of "=?", and short enough for a
        line), runs of the others as encoded words."""
        run: list[str] = []
        for w in words:
            if plain(w) and "=?" not in w and len(w) < MAX_LINE - 1:
                if run:
                    self.encoded(" ".join(run))
                    run.clear()
                self.word(w)
            else:
                run.append(w)
        if run:
            self.encoded(" ".join(run))

    def end(self) -> str:
        self.done.append(self.line)
        return "\r\n".join(self.done) + "\r\n"


def _one_line(value: str) -> str:
    """`value` without control or format characters (they become spaces), whitespace
    collapsed: what `clean_header_text` does, without its cut and its "=?" rewrite."""
    return " ".join((value if value.isprintable() else value.translate(HEADER_UNSAFE)).split())


def text_header(name: str, value: str) -> str:
    """``Name: value`` (unstructured, e.g. Subject): one line of text, folded, with non-ASCII
    words and anything resembling an encoded word as RFC 2047 encoded words."""
    folder = _Folder(name)
    folder.text(_one_line(value))
    return folder.end()


def plain_header(name: str, value: str) -> str:
    """``Name: value`` of a value mailbot itself composes in printable ASCII (a date, a
    keyword, an address), folded at its spaces.

    Raises:
        HeaderError: `value` is empty, not ASCII, or holds a control character.
    """
    words = value.split(" ")
    if not value or not value.isascii() or not all(w.isprintable() and w for w in words):
        raise HeaderError(f"{name}: not a printable ASCII value: {value!r}")
    folder = _Folder(name)
    for w in words:
        folder.word(w)
    return folder.end()


def address_header(name: str, addresses: Sequence[tuple[str, str]]) -> str:
    """``Name: Display Name <addr>, addr, …`` of (display name, addr-spec) pairs; an empty
    display name writes the bare address.

    Raises:
        HeaderError: no address, or one that is not a plain ASCII dot-atom addr-spec (what
            `valid_address` returns) or holds "=?".
    """
    if not addresses:
        raise HeaderError(f"{name}: no address")
    folder = _Folder(name)
    last = len(addresses) - 1
    for i, (display, addr) in enumerate(addresses):
        if not _ADDR_SPEC.fullmatch(addr) or "=?" in addr:
            raise HeaderError(f"{name}: not an address mailbot writes: {addr!r}")
        comma = "," if i < last else ""
        shown = _one_line(display)
        if shown:
            folder.phrase(shown)
            folder.word(f"<{addr}>{comma}")
        else:
            folder.word(addr + comma)
    return folder.end()


def id_header(name: str, ids: Sequence[str]) -> str:
    """``Name: <id> <id> …`` (Message-ID, In-Reply-To, References).

    Raises:
        HeaderError: no id, or one not matching MSG_ID or holding "=?" (which the stdlib
            would decode).
    """
    if not ids:
        raise HeaderError(f"{name}: no Message-ID")
    folder = _Folder(name)
    for mid in ids:
        if not MSG_ID.fullmatch(mid) or "=?" in mid:
            raise HeaderError(f"{name}: malformed Message-ID {mid!r}")
        folder.word(mid)
    return folder.end()


def date_header(when: datetime) -> str:
    """``Date:`` of the aware datetime `when` (RFC 5322 format, its own offset)."""
    return f"Date: {email.utils.format_datetime(when)}\r\n"


def qp_body(body: str) -> bytes:
    """`body` in UTF-8 quoted-printable with CRLF line ends (lines of at most 76 characters;
    CR, LF and CRLF all end a line, as in ``set_content``)."""
    data = body.encode("utf-8")
    if b"\r" in data:
        data = b"\n".join(data.splitlines()) + b"\n"
    elif not data.endswith(b"\n"):  # (without CR, splitting and joining only adds this)
        data += b"\n"
    return binascii.b2a_qp(data).replace(b"\n", b"\r\n")


def mail_bytes(headers: Iterable[str], text: str, html: str | None = None) -> bytes:
    """The whole mail: `headers` (lines made by the functions above), MIME-Version and the
    body, a text/plain part, or with `html` a multipart/alternative of text and HTML."""
    head = "".join(headers).encode("ascii")
    if html is None:
        return head + _TEXT_HEAD + qp_body(text)
    return (head + _ALTERNATIVE_HEAD + qp_body(text) + _HTML_HEAD + qp_body(html)
            + _ALTERNATIVE_END)


def mixed_body(text: str, attachments: Iterable[tuple[str, str, bytes, str | None]]
               ) -> bytes:
    """MIME-Version and the body of a mail with attachments, made by the `email` package:
    a multipart/mixed of the text (UTF-8 quoted-printable) and each (filename, content
    type, bytes, charset of a text part). Rare (relays of staff replies with files), so
    the result is re-parsed: only MIME headers, one part per attachment.

    Raises:
        HeaderError: the body does not serialize or its structure differs.
    """
    files = list(attachments)
    msg = EmailMessage(policy=POLICY)
    msg.set_content(text, cte="quoted-printable")
    for filename, ctype, payload, charset in files:
        maintype, _, subtype = ctype.partition("/")
        params = {"charset": charset} if charset else {}
        msg.add_attachment(payload, maintype=maintype, subtype=subtype, filename=filename,
                           params=params)
    try:
        raw = msg.as_bytes()
    except (ValueError, UnicodeError) as exc:
        raise HeaderError(f"attachments do not serialize: {exc}") from exc
    parsed = _COMPAT_PARSER.parsebytes(raw)
    allowed = {"content-type", "content-transfer-encoding", "content-disposition",
               "mime-version"}
    parts = parsed.get_payload() if parsed.is_multipart() else [parsed]
    if (len(parts) != 1 + len(files) and files) or any(
            not {k.lower() for k in part.keys()} <= allowed for part in (parsed, *parts)):
        raise HeaderError("the body with attachments changed in serialization")
    return raw


def sealed(raw: bytes, recipients: Sequence[str], *, purpose: str, kind: str,
           message_id: str, mail_from: str, auto: bool = False, bulk: bool = False
           ) -> OutgoingMail:
    """The `OutgoingMail` of a mail written by `mail_bytes`, enveloped to `recipients`."""
    return OutgoingMail(purpose=purpose, message_id=message_id, kind=kind,
                        mail_from=mail_from, rcpt_to=tuple(recipients), raw=raw,
                        auto=auto, bulk=bulk)


# -- the email package path (operator alerts) -----------------------------------------------


def checked_bytes(msg: EmailMessage, recipients: Sequence[str], *,
                  error: type[Exception], alternatives: bool = False) -> bytes:
    """Serialize, then re-parse the bytes we would send: the same header names and exactly
    `recipients` in To (with `alternatives`, also a two-part multipart/alternative).

    Returns the bytes, so the message is serialized once. The re-parse uses compat32, which
    splits headers exactly like any receiving MTA would and is ~3x cheaper than re-building
    header objects.

    Raises:
        `error`: the message does not serialize, or the re-parse differs (a header-injection
            symptom).
    """
    try:
        raw = msg.as_bytes()
    except (ValueError, UnicodeError) as exc:
        raise error(f"message does not serialize: {exc}") from exc
    head = raw.split(b"\r\n\r\n", 1)[0]
    if b"\r\n" not in raw or any(b"\r" in line or b"\n" in line for line in head.split(b"\r\n")):
        raise error("header section has a bare CR or LF")
    parsed = _COMPAT_PARSER.parsebytes(raw, headersonly=not alternatives)
    expected = sorted(k.lower() for k in msg.keys())
    got = sorted(k.lower() for k in parsed.keys())
    if got != expected:
        raise error(f"headers changed in serialization: {got} != {expected}")
    addresses = {a.lower() for _, a in email.utils.getaddresses(
        [str(v) for v in parsed.get_all("to", [])])}
    if addresses != {r.lower() for r in recipients}:
        raise error(f"recipients changed in serialization: {addresses}")
    if alternatives and (parsed.get_content_type() != "multipart/alternative"
                         or len(parsed.get_payload()) != 2):
        raise error("not a two-part multipart/alternative")
    return raw


_COMPAT_PARSER = email.parser.BytesParser(policy=email.policy.compat32)


def valid_message_id(value: str) -> bool:
    """Whether `value` is a well-formed ``<id>`` mailbot may write into a header as it is."""
    v = value.strip()
    return (len(v) < 250 and MSG_ID.fullmatch(v) is not None
            and "=?" not in v)  # the email package would decode an encoded word in it


def message_ids(*values: str | None) -> list[str]:
    """The values that are well-formed Message-IDs, stripped, in order, once each."""
    return list(dict.fromkeys(v.strip() for v in values if v and valid_message_id(v)))


def set_bodies(msg: EmailMessage, text: str, html: str | None = None) -> None:
    """The text body (and an HTML alternative), UTF-8 quoted-printable."""
    msg.set_content(text, cte="quoted-printable")
    if html is not None:
        msg.add_alternative(html, subtype="html", cte="quoted-printable")


def outgoing(msg: EmailMessage, recipients: Sequence[str], *, purpose: str, kind: str,
             message_id: str, mail_from: str, error: type[Exception],
             rcpt_to: Sequence[str] | None = None, alternatives: bool = False,
             auto: bool = False, bulk: bool = False) -> OutgoingMail:
    """`msg` serialized and checked (`checked_bytes` against `recipients`) as the outbox
    takes it; `rcpt_to` is the envelope when it is not `recipients` as written."""
    raw = checked_bytes(msg, recipients, error=error, alternatives=alternatives)
    return OutgoingMail(purpose=purpose, message_id=message_id, kind=kind,
                        mail_from=mail_from, rcpt_to=tuple(rcpt_to or recipients), raw=raw,
                        auto=auto, bulk=bulk)
