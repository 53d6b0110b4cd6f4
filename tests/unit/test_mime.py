"""The mails mailbot writes itself (`mailbot.replies.mime`), read back by the stdlib.

Headers are written token by token, without the `email` package and without re-parsing
each mail; these tests are that re-parse, once, over hostile values: every mail parses with
`email.policy.default` into exactly the headers that were written, each with the value that
was asked for (cleaned to one line), the addresses and Message-IDs as given, and both bodies
as rendered. The renderers' own mails are checked the same way (the decoded Subject and To
are exactly the cleaned subject and name), and so are the faster helpers of the templates
(`_fill`, `quote_excerpt`) against what they replace.
"""

from __future__ import annotations

import base64
import email
import email.header
import email.parser
import email.policy
import email.utils
import re
import textwrap
from datetime import datetime
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError

from mailbot.config import Config
from mailbot.domain import Decision, DecisionKind, Mail, Priority, TicketInfo, TicketView
from mailbot.replies import layout, sanitize
from mailbot.replies.conversation import ConversationRenderer
from mailbot.replies.language import notice_subject, reply_subject
from mailbot.replies.mime import (
    MAX_LINE,
    HeaderError,
    address_header,
    date_header,
    id_header,
    mail_bytes,
    plain_header,
    text_header,
    valid_address,
)
from mailbot.replies.render import ReplyRenderer
from mailbot.replies.sanitize import NAME_LIMIT, clean_header_text

PRAGUE = ZoneInfo("Europe/Prague")
NOW = datetime(2026, 11, 20, 16, 0, tzinfo=PRAGUE)
VICTIM = "victim@example.com"
_COMPAT = email.parser.BytesParser(policy=email.policy.compat32)
_FOLD = re.compile(r"\r\n(?=[ \t])")


def _b64_word(text: str) -> str:
    return "=?utf-8?b?" + base64.b64encode(text.encode()).decode() + "?="


PIECES = [
    "\r\n", "\n", "\r", "\x00", "\u2028", "\u0085", "\t", "\x0b", "\x7f", "\u202e", "\u200b",
    "\ufeff", "\u00a0", " ", "  ", "\udcff", f"\r\nBcc: {VICTIM}", "\nTo: " + VICTIM,
    "=?utf-8?q?Hi=0D=0ABcc:_victim@example.com?=", _b64_word(f"\r\nBcc: {VICTIM}"),
    "=?utf-8?q?=0A?=", "=?", "?=", "=", "_", "?", '"', "\\", "<", ">", ",", ";", ":", "@",
    "(", ")", "[", "]", VICTIM, "é", "Žluťoučký kůň", "\U0001f600", "x" * 90, "ř" * 40,
    "a", "Re:",
]
HOSTILE = st.one_of(
    st.text(max_size=150),
    st.lists(st.one_of(st.sampled_from(PIECES), st.text(max_size=8)), max_size=12).map("".join),
    st.sampled_from(PIECES).map(lambda p: (p * 400)[:400]),
)
ADDRESSES = st.sampled_from([
    "jan.novak@firma.cz", "a@b.cz", "podpora+T-2026-000145.abc123@estelar.example",
    "o'brien@example.com", "x" * 64 + "@" + "y" * 60 + ".example", "first.last-1@sub.do-main.cz",
    "a!#$%&'*+/?^_`{|}~=-@firma.cz",
])
MESSAGE_IDS = st.sampled_from([
    "<m-1@firma.cz>", "<ticket-T-2026-000145.1@estelar.example>",
    "<AM7PR05MB85034D97F35192734DDD82D3@AM7PR05MB8503.eurprd01.prod.outlook.com>",
    "<" + "x" * 200 + "@y>", "<a!#$%&'*+/?^_`{|}~=-.;:[]@\"b\">",
])
# Bodies are text as parsing makes it: no lone surrogates (which do not encode, as before).
BODIES = st.one_of(st.text(max_size=400, alphabet=st.characters(exclude_categories=["Cs"])),
                   st.lists(st.sampled_from([p for p in PIECES if p != "\udcff"]),
                            max_size=20).map("".join))
PROPERTY = settings(max_examples=300, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def one_line(value: str) -> str:
    """What a header value is asked to be: unsafe characters as spaces, whitespace collapsed."""
    return " ".join(value.translate(sanitize.HEADER_UNSAFE).split())


def rfc_decoded(value: str) -> str:
    """A raw header value decoded as RFC 2047 says (the whitespace between two adjacent
    encoded words is dropped; the modern parser keeps a space there in a display name)."""
    return str(email.header.make_header(email.header.decode_header(value)))


def check_head(raw: bytes) -> None:
    """ASCII, CRLF only, lines within MAX_LINE unless one token (a long address or id)."""
    head, sep, _ = raw.partition(b"\r\n\r\n")
    assert sep and raw.isascii()
    lines = head.split(b"\r\n")
    assert lines[0][:1] not in (b" ", b"\t")
    for line in lines:
        assert line and not re.search(rb"[\r\n\x00-\x08\x0b-\x1f\x7f]", line), line
        assert len(line) <= MAX_LINE or re.fullmatch(rb" (?:<[^ ]+>|[^ ]+@[^ ]+),?", line), line
        assert b":" in line.split(b" ", 1)[0] or line[:1] == b" ", line


def check_addresses(msg: EmailMessage, compat: email.message.Message, name: str,
                    expected: list[tuple[str, str]]) -> None:
    """The header `name` holds exactly the `expected` (display name, address) pairs."""
    modern = msg[name].addresses
    assert [a.addr_spec for a in modern] == [a for _, a in expected]
    unfolded = _FOLD.sub("", compat[name])
    pairs = email.utils.getaddresses([unfolded])
    assert [a for _, a in pairs] == [a for _, a in expected]
    for (shown, _), (got, _), parsed in zip(expected, pairs, modern, strict=True):
        assert rfc_decoded(got) == one_line(shown)
        # The modern parser inserts a space between adjacent encoded words: equal but for spaces.
        assert parsed.display_name.replace(" ", "") == one_line(shown).replace(" ", "")


@PROPERTY
@given(subject=HOSTILE, from_name=HOSTILE, names=st.lists(HOSTILE, min_size=1, max_size=3),
       addrs=st.lists(ADDRESSES, min_size=3, max_size=3), mid=MESSAGE_IDS,
       refs=st.lists(MESSAGE_IDS, max_size=4), text=BODIES,
       html=st.one_of(st.none(), BODIES))
def test_written_mail_reads_back_as_asked(
    subject: str, from_name: str, names: list[str], addrs: list[str], mid: str,
    refs: list[str], text: str, html: str | None,
) -> None:
    """Hostile subjects and display names (CR, LF, NUL, U+2028, encoded-word lookalikes,
    quotes, commas, long words, non-ASCII): the mail parses into exactly the headers written,
    Subject and names decode to the cleaned text, addresses and ids are as given, and the
    bodies decode to what was rendered."""
    to = list(zip(names, addrs, strict=False))
    headers = [address_header("From", ((from_name, "podpora@estelar.example"),)),
               address_header("To", to), text_header("Subject", subject), date_header(NOW),
               id_header("Message-ID", (mid,)), plain_header("Auto-Submitted", "auto-replied")]
    if refs:
        headers.append(id_header("References", refs))
    raw = mail_bytes(headers, text, html)

    check_head(raw)
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    compat = _COMPAT.parsebytes(raw)
    names_set = ["from", "to", "subject", "date", "message-id", "auto-submitted",
                 *(["references"] if refs else []), "mime-version", "content-type"]
    if html is None:
        names_set.append("content-transfer-encoding")
    assert sorted(k.lower() for k in msg.keys()) == sorted(names_set)
    assert str(msg["Subject"]) == one_line(subject)
    assert rfc_decoded(_FOLD.sub("", compat["Subject"])) == one_line(subject)
    check_addresses(msg, compat, "From", [(from_name, "podpora@estelar.example")])
    check_addresses(msg, compat, "To", to)
    assert msg["Date"].datetime == NOW
    assert _FOLD.sub("", compat["Message-ID"]).strip() == mid  # a long one: on a line of its own
    if re.fullmatch(r"<[\w.-]+@[\w.-]+>", mid):  # the modern parser knows the common form only
        assert str(msg["Message-ID"]).strip() == mid
    if refs:
        assert _FOLD.sub("", compat["References"]).split() == refs
    assert str(msg["Auto-Submitted"]) == "auto-replied"
    for part in msg.walk():
        assert not part.defects, part.defects

    def expected(body: str) -> str:  # CR, LF and CRLF all end a line; the body ends with one
        return "\n".join(line.decode("utf-8", "surrogatepass")
                         for line in body.encode("utf-8", "surrogatepass").splitlines()) + "\n"

    plain = msg.get_body(("plain",))
    assert plain is not None
    assert plain.get_content().replace("\r\n", "\n") == expected(text)
    if html is None:
        assert not msg.is_multipart()
    else:
        assert msg.get_content_type() == "multipart/alternative"
        assert len(msg.get_payload()) == 2
        rich = msg.get_body(("html",))
        assert rich is not None
        assert rich.get_content().replace("\r\n", "\n") == expected(html)


@pytest.mark.parametrize("addr", [
    "", "jan@firma.cz\r\nBcc: victim@example.com", "jan@firma.cz, victim@example.com",
    "Jan <jan@firma.cz>", '"a b"@firma.cz', "jan@pekárna.cz", "=?utf-8?q?=0D=0A?=@firma.cz",
    "jan@[127.0.0.1]", "jan@firma.cz\x00", "jan @firma.cz",
])
def test_address_that_is_not_a_plain_addr_spec_is_refused(addr: str) -> None:
    """Only what `valid_address` returns may be written: anything else raises HeaderError."""
    with pytest.raises(HeaderError):
        address_header("To", (("Jan", addr),))


@pytest.mark.parametrize("mid", [
    "m-1@firma.cz", "<a b@c>", "<a@b>\r\nBcc: victim@example.com", "<=?utf-8?q?=0D=0A?=@c>",
    "<>", "<a<b@c>", "<" + "x" * 251 + ">",
])
def test_malformed_message_id_is_refused(mid: str) -> None:
    with pytest.raises(HeaderError):
        id_header("In-Reply-To", (mid,))


@pytest.mark.parametrize("value", ["", "a\r\nb", "auto\x00", "zá"])
def test_plain_header_takes_printable_ascii_only(value: str) -> None:
    with pytest.raises(HeaderError):
        plain_header("Auto-Submitted", value)


def test_header_values_are_stripped_of_line_breaks() -> None:
    """CR, LF, NUL and the Unicode line separators in a subject or a name become spaces; an
    encoded word in them stays literal text (written encoded, so no reader decodes it)."""
    subject = f"Hello\r\nBcc: {VICTIM}\x00\u2028X-Evil: 1 =?utf-8?q?=0D=0A?="
    raw = mail_bytes([address_header("To", ((f"Eve\r\nBcc: {VICTIM}", "a@b.cz"),)),
                      text_header("Subject", subject)], "x")
    msg = email.message_from_bytes(raw, policy=email.policy.default)
    assert sorted(msg.keys()) == ["Content-Transfer-Encoding", "Content-Type", "MIME-Version",
                                  "Subject", "To"]
    assert str(msg["Subject"]) == f"Hello Bcc: {VICTIM} X-Evil: 1 =?utf-8?q?=0D=0A?="
    assert msg["To"].addresses[0].display_name == f"Eve Bcc: {VICTIM}"
    assert [a.addr_spec for a in msg["To"].addresses] == ["a@b.cz"]


# -- the renderers' mails ---------------------------------------------------------------

def make_mail(subject: str, name: str) -> Mail:
    return Mail(message_id="<m-1@firma.cz>", from_addr="jan.novak@firma.cz", from_name=name,
                to=("podpora@estelar.example",), cc=(), subject=subject, date=NOW,
                in_reply_to=(), references=(), return_path="<jan.novak@firma.cz>", headers={},
                content_type="text/plain", report_type="",
                text="Dobrý den,\nnejde tisk.\n", html="")


@pytest.fixture(scope="module")
def renderers() -> tuple[ReplyRenderer, ConversationRenderer]:
    cfg = Config()
    cfg = cfg.model_copy(update={"mailbox": cfg.mailbox.model_copy(update={
        "staff_notify": ("tym-podpory@estelar.example", "Vedouci@Estelar.example")})})
    return ReplyRenderer(cfg), ConversationRenderer(cfg, b"s" * 32)


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(subject=HOSTILE, name=HOSTILE, lang=st.sampled_from(["cs", "en"]))
def test_reply_and_notice_carry_the_subject_and_name_asked_for(
    renderers: tuple[ReplyRenderer, ConversationRenderer], subject: str, name: str, lang: str,
) -> None:
    """The acknowledgement's Subject is `reply_subject` of the mail's and its To names the
    cleaned sender's name; the staff notice's Subject is `notice_subject`; both read back
    exactly, with the stdlib."""
    reply, conversation = renderers
    mail = make_mail(subject, name)
    view = TicketView(number="T-2026-000145", subject=subject, priority=Priority.NORMAL,
                      opened_at=NOW, deadline=NOW, customer_email="jan.novak@firma.cz",
                      license="40127733")
    decision = Decision(kind=DecisionKind.TICKET, reasons=(), license="40127733",
                        priority=Priority.NORMAL, missing=(), scope_reason=None, language=lang,
                        entitlement_end=None)
    out = reply.render(decision, mail, ticket=view, now=NOW, purpose="t:1",
                       message_id="<ticket-T-2026-000145.1@estelar.example>")
    assert out is not None
    check_head(out.raw)
    msg = email.message_from_bytes(out.raw, policy=email.policy.default)
    compat = _COMPAT.parsebytes(out.raw)
    assert str(msg["Subject"]) == reply_subject(subject, lang, "T-2026-000145")
    check_addresses(msg, compat, "To", [(clean_header_text(name, NAME_LIMIT), "jan.novak@firma.cz")])
    assert str(msg["Content-Language"]) == lang

    info = TicketInfo(number="T-2026-000145", state="open", subject=subject,
                      customer_email="jan.novak@firma.cz", customer_name=name, license=None,
                      priority=Priority.NORMAL, language=lang, opened_at=NOW, deadline=NOW)
    notice = conversation.notice(event="new", ticket=info, customer=None, entitlement_end=None,
                                 mail=mail, text=mail.text, inbound_id=7, now=NOW, purpose="t:1")
    assert notice is not None
    check_head(notice.raw)
    msg = email.message_from_bytes(notice.raw, policy=email.policy.default)
    assert str(msg["Subject"]) == notice_subject("T-2026-000145", subject, "cs", emergency=False)
    assert [a.addr_spec for a in msg["To"].addresses] == list(notice.rcpt_to) == [
        "tym-podpory@estelar.example", "Vedouci@estelar.example"]


# -- the faster template helpers ----------------------------------------------------------

WORDS = st.lists(st.one_of(st.sampled_from(["a", "v", "1234", "5678", "25.", "11.", "2026",
                                            "\u00a0", "x" * 80, "slovo", "-", "- x", "  "]),
                           st.text(alphabet="ab \u00a0\u2003\t\n-.", max_size=12),
                           st.integers(1, 40).map(lambda n: "w" * n)), max_size=60)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(words=WORDS, indent=st.sampled_from([("", ""), ("- ", "  ")]))
def test_fill_is_textwrap(words: list[str], indent: tuple[str, str]) -> None:
    """`_fill`'s own greedy wrapping gives exactly what textwrap gives (its fallback)."""
    text = " ".join(words)
    glued = layout._NO_BREAK.sub("\u00a0", text)
    expected = textwrap.fill(glued, width=layout.TEXT_WIDTH, initial_indent=indent[0],
                             subsequent_indent=indent[1], break_long_words=False,
                             break_on_hyphens=False).replace("\u00a0", " ")
    assert layout._fill.__wrapped__(text, *indent) == expected


@pytest.mark.parametrize("text", ["x" * 37 + " " + "y" * 38 + " z", "x" * 37 + " " + "y" * 39,
                                  "x" * 76 + " z", "x" * 77 + " z", "b " + "x" * 80 + " c", "a " + "x" * 80])
def test_fill_at_the_exact_width(text: str) -> None:
    expected = textwrap.fill(layout._NO_BREAK.sub("\u00a0", text), width=layout.TEXT_WIDTH,
                             break_long_words=False, break_on_hyphens=False)
    assert layout._fill.__wrapped__(text) == expected.replace("\u00a0", " ")


def quote_excerpt_every_line(text: str) -> tuple[list[str], bool]:
    """`quote_excerpt` as it was written first (every line of the head cleaned): the oracle."""
    head_text = text[: sanitize.QUOTE_LINES * sanitize.QUOTE_LINE_LIMIT * 2]
    lines = [sanitize._clean_body_line(line) for line in head_text.splitlines()]
    cut = len(head_text) < len(text)
    while lines and not lines[0]:
        lines.pop(0)
    while lines and not lines[-1]:
        lines.pop()
    head: list[str] = []
    budget = sanitize.QUOTE_CHARS
    for line in lines[: sanitize.QUOTE_LINES]:
        if len(line) > budget:
            shortened = line[:budget].rsplit(" ", 1)[0] if " " in line[:budget] else line[:budget]
            head.append(shortened.rstrip() + "…")
            cut = True
            break
        head.append(line)
        budget -= len(line)
    truncated = cut or len(lines) > len(head)
    while head and not head[-1]:
        head.pop()
    return [sanitize.defang(line) for line in head], truncated


LINES = st.lists(st.sampled_from(["", " ", "\x00", "\u200b", "radek", "x" * 120, "www.evil.example",
                                  "https://a.example/x", "eve@evil.example.", "a.s.", "\t"]),
                 max_size=14)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(lines=LINES, sep=st.sampled_from(["\n", "\r\n", "\u2028"]), tail=st.integers(0, 4000))
def test_quote_excerpt_cleans_only_what_it_shows(lines: list[str], sep: str, tail: int) -> None:
    """Cleaning lines as they are needed, and defanging them in one pass, gives what
    cleaning and defanging every line gave."""
    text = sep.join(lines) + "y" * tail
    assert sanitize.quote_excerpt(text) == quote_excerpt_every_line(text)


def test_sandbox_still_guards_the_wording_module(tmp_path: Path) -> None:
    """The shortcuts for the imported wording module and its macros leave the sandbox's
    refusals in place: private names of the module, unsafe attributes and callables."""
    (tmp_path / "m.j2").write_text("{% macro hi() %}hi{% endmacro %}", encoding="utf-8")
    text_env, _ = layout.template_environments(tmp_path)
    ok = text_env.from_string('{% import "m.j2" as t %}{{ t.hi() }}')
    assert ok.render() == "hi"
    for source in ('{% import "m.j2" as t %}{{ t.__class__.__mro__ }}',
                   '{% import "m.j2" as t %}{{ t._body_stream }}',
                   '{% import "m.j2" as t %}{{ t.hi._func }}',
                   "{{ ''.__class__.__mro__ }}", "{{ cycler.__init__.__globals__ }}"):
        with pytest.raises(SecurityError):
            text_env.from_string(source).render()


def test_valid_address_is_remembered() -> None:
    """The same address is validated once (bounded cache), with the same answer."""
    valid_address.cache_clear()
    assert valid_address("Jan.Novak@Firma.CZ") == "Jan.Novak@firma.cz"
    assert valid_address("Jan.Novak@Firma.CZ") == "Jan.Novak@firma.cz"
    assert valid_address("not an address") is None
    info = valid_address.cache_info()
    assert info.hits == 1 and info.maxsize is not None


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(text=st.text(alphabet="aAkvzx1290. é\u00a0-", max_size=40))
def test_no_break_spaces_are_the_same_as_before(text: str) -> None:
    """The no-break rule, rewritten to start at a space, glues the same spaces."""
    before = re.compile(r"(?<=\b[aikosuvzAIKOSUVZ]) |(?<=\d) (?=\d)|(?<=\d\.) (?=\d)")
    assert layout._NO_BREAK.sub("\u00a0", text) == before.sub("\u00a0", text)


HOSTS = st.lists(st.sampled_from(["www", ".", "evil", "example", "a", "1", "-", "_", "://",
                                  "https", "ftp", " ", "@", "é", "ř.cz", "/", "\n", "a.s."]),
                 max_size=16).map("".join)


@settings(max_examples=500, deadline=None, derandomize=True, database=None)
@given(text=st.one_of(HOSTS, st.text(max_size=60)))
def test_defang_skips_only_what_cannot_match(text: str) -> None:
    """`defang` runs each pattern only where its hint is: the same result as always."""
    expected = sanitize._HOST.sub(lambda m: m.group(0).replace(".", "[.]"),
                                  sanitize._URL.sub(sanitize._defang_url, text))
    assert sanitize.defang(text) == expected


@settings(max_examples=300, deadline=None, derandomize=True, database=None)
@given(text=HOSTILE)
def test_clean_header_text_skips_the_table_for_printable_text(text: str) -> None:
    cleaned = " ".join(text.translate(sanitize.HEADER_UNSAFE).replace("=?", "= ?").split())
    if len(cleaned) > 80:
        cleaned = cleaned[:79].rstrip() + "…"
    assert clean_header_text(text, 80) == cleaned


def test_compiled_templates_are_shared_per_environment(tmp_path: Path) -> None:
    """A template compiled by one process is loaded by the next (the cache holds it), the
    text and the HTML environment each get their own compiled code of the same file, and an
    edited source is compiled again, not taken from the cache."""
    cache = layout.TemplateCache(str(tmp_path / "cache"))
    (tmp_path / "cache").mkdir(mode=0o700)
    (tmp_path / "t.j2").write_text("<{{ v }}>", encoding="utf-8")

    def environments() -> tuple[Any, Any]:
        text_env, html_env = layout.template_environments(tmp_path)
        text_env.bytecode_cache = html_env.bytecode_cache = cache
        return text_env, html_env

    text_env, html_env = environments()
    assert text_env.get_template("t.j2").render(v="&") == "<&>"
    assert html_env.get_template("t.j2").render(v="&") == "<&amp;>"
    assert len(list((tmp_path / "cache").iterdir())) == 2  # one per environment

    text_env, html_env = environments()  # a new process: both loaded from the cache
    loads: list[str] = []
    original = cache.load_bytecode

    def load(bucket: Any) -> None:
        original(bucket)
        loads.append("hit" if bucket.code is not None else "miss")

    cache.load_bytecode = load  # type: ignore[method-assign]
    assert html_env.get_template("t.j2").render(v="&") == "<&amp;>"
    assert text_env.get_template("t.j2").render(v="&") == "<&>"
    assert loads == ["hit", "hit"]

    (tmp_path / "t.j2").write_text("[{{ v }}]", encoding="utf-8")
    text_env, _ = environments()
    assert text_env.get_template("t.j2").render(v="&") == "[&]"
    assert loads[-1] == "miss"


def test_an_unwritable_template_cache_is_no_error(tmp_path: Path) -> None:
    """Where the cache cannot be written, templates compile as without one."""
    cache = layout.TemplateCache(str(tmp_path / "missing"))
    (tmp_path / "t.j2").write_text("{{ v }}", encoding="utf-8")
    text_env, _ = layout.template_environments(tmp_path)
    text_env.bytecode_cache = cache
    assert text_env.get_template("t.j2").render(v="ok") == "ok"
