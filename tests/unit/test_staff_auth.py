"""Staff authenticity (:mod:`mailbot.classify.staff_auth`): the S5 spoofing matrix and units.

The matrix (reliability.md, S5) is one table of raw RFC 5322 replies about T-2026-000123,
each parsed by the real parser (`mailbot.ingest.parse.parse`) and judged by `check_staff`.
Its first twelve rows are the twelve S5 cases; the rest are further genuine replies (so that
"0 genuine staff replies rejected" means something) and further spoofs. The last test runs
the whole table and prints the S5 line (visible with ``pytest -s``).
"""

from __future__ import annotations

import base64
import re
from dataclasses import dataclass
from datetime import date, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailbot.classify.staff_auth import (
    StaffPolicy,
    Verdict,
    authenticated_by_mta,
    check_staff,
    organizational_domain,
    parse_authentication_results,
    reply_address,
    reply_token,
    single_from,
    token_ticket,
)
from mailbot.domain import Mail
from mailbot.ingest.parse import parse

TICKET = "T-2026-000123"
OTHER_TICKET = "T-2026-000999"
TODAY = date(2026, 3, 10)
SECRET = b"test-secret"
SUPPORT = "podpora@estelar.example"
POLICY = StaffPolicy(
    staff_domains=frozenset({"estelar.example"}),
    staff_addresses=frozenset(),
    authserv_ids=frozenset({"mx.estelar.example"}),
    support_address=SUPPORT,
    token_secret=SECRET,
    verify=True,
)
BASE32 = "abcdefghijklmnopqrstuvwxyz234567"  # the MAC's alphabet (lower-case RFC 4648 base32)
EPOCH = date(2000, 1, 1)


def tamper(address: str) -> str:
    """`address` with the last character of its token's MAC changed."""
    local, _, domain = address.rpartition("@")
    changed = BASE32[(BASE32.index(local[-1]) + 1) % len(BASE32)]
    return f"{local[:-1]}{changed}@{domain}"


VALID = reply_address(SUPPORT, TICKET, SECRET, TODAY + timedelta(days=30))
EXPIRED = reply_address(SUPPORT, TICKET, SECRET, TODAY - timedelta(days=1))
FOR_OTHER_TICKET = reply_address(SUPPORT, OTHER_TICKET, SECRET, TODAY + timedelta(days=30))
TAMPERED = tamper(VALID)

AGENT = "Agent Smith <agent@estelar.example>"
AR_GENUINE = (
    "Authentication-Results: mx.estelar.example;\r\n"
    "\tspf=pass (mx.estelar.example: domain of agent@estelar.example designates 192.0.2.25"
    " as permitted sender) smtp.mailfrom=agent@estelar.example;\r\n"
    "\tdkim=pass (1024-bit key; unprotected) header.d=estelar.example"
    " header.i=@estelar.example header.s=sel header.b=\"AbCdEfGh\""
)
AR_DKIM_FOR_ESTELAR = (
    "Authentication-Results: mx.estelar.example; dkim=pass header.d=estelar.example"
)


def encoded(text: str, how: str = "b") -> str:
    """`text` as one RFC 2047 encoded word (how the sender hides specials from our MTA)."""
    if how == "b":
        return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="
    quoted = "".join(c if c.isalnum() or c in ".-" else f"={ord(c):02X}" for c in text)
    return f"=?utf-8?q?{quoted}?="


def ar(value: str) -> str:
    """One Authentication-Results line."""
    return f"Authentication-Results: {value}"


OURS = "mx.estelar.example"
# The header the border MTA puts on the dev2 staff replies (shared/labelled/dev2/d044.eml).
AR_DEV2 = ar(f"{OURS}; dkim=pass header.d=estelar.example header.s=sel1;"
             " spf=pass smtp.mailfrom=estelar.example")
INJECTED = "x; dkim=pass header.d=estelar.example ("  # decodes into a result set
PREVIOUS_SECRET = b"previous-secret"
ROTATED = reply_address(SUPPORT, TICKET, PREVIOUS_SECRET, TODAY + timedelta(days=10))


def reply(
    *,
    trace: tuple[str, ...] = (),
    from_: tuple[str, ...] = (AGENT,),
    to: str = SUPPORT,
    extra: tuple[str, ...] = (),
) -> bytes:
    """A raw staff reply about TICKET: `trace` header lines on top (as an MTA prepends them),
    one From line per `from_` value, then To, `extra` lines and the usual headers."""
    lines = [
        *trace,
        "Received: from out.estelar.example (out.estelar.example [192.0.2.25])\r\n"
        "\tby mx.estelar.example (Postfix) with ESMTPS id 4Tx1Yz; Tue, 10 Mar 2026 09:14:03 +0100",
        *(f"From: {value}" for value in from_),
        f"To: {to}",
        *extra,
        f"Subject: Re: [#{TICKET}] Licence nefunguje",
        "Date: Tue, 10 Mar 2026 09:14:00 +0100",
        "Message-ID: <4f2a9c1e@out.estelar.example>",
        f"In-Reply-To: <ticket-{TICKET}.n42@estelar.example>",
        f"References: <ticket-{TICKET}.1@estelar.example> <ticket-{TICKET}.n42@estelar.example>",
        "MIME-Version: 1.0",
        "Content-Type: text/plain; charset=utf-8",
        "Content-Transfer-Encoding: 8bit",
    ]
    body = "#assign agent\r\n\r\nDobrý den,\r\nposílám novou licenci.\r\n\r\nAgent Smith\r\n"
    return "\r\n".join(lines).encode("ascii") + b"\r\n\r\n" + body.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Case:
    """One row of the matrix: the raw mail, whether it is a genuine staff reply, and a part
    of the verdict's reason (so a spoof is refused for the right reason, not by accident)."""

    name: str
    raw: bytes
    genuine: bool
    reason: str


MATRIX: tuple[Case, ...] = (
    # --- the twelve S5 cases -----------------------------------------------------------------
    Case("S5-01 From only", reply(), False,
         "no reply token; no trusted Authentication-Results"),
    Case("S5-02 forged A-R, foreign authserv-id",
         reply(trace=("Authentication-Results: mx.evil.example;"
                      " dkim=pass header.d=estelar.example",)),
         False, "topmost Authentication-Results is from 'mx.evil.example'"),
    Case("S5-03 second A-R above a trusted one",
         reply(trace=("Authentication-Results: relay.other.example;"
                      " dkim=pass header.d=estelar.example",
                      AR_DKIM_FOR_ESTELAR)),
         False, "topmost Authentication-Results is from 'relay.other.example'"),
    Case("S5-04 dkim=fail (and spf=fail)",
         reply(trace=("Authentication-Results: mx.estelar.example;"
                      " dkim=fail (signature verification failed) header.d=estelar.example;"
                      " spf=fail smtp.mailfrom=agent@estelar.example",)),
         False, "no aligned dkim or dmarc pass from mx.estelar.example"),
    Case("S5-05 unaligned d=",
         reply(trace=("Authentication-Results: mx.estelar.example;"
                      " dkim=pass header.d=evil.example header.s=sel;"
                      " spf=pass smtp.mailfrom=eve@evil.example",)),
         False, "no aligned dkim or dmarc pass from mx.estelar.example"),
    Case("S5-06 HMAC token valid", reply(to=VALID), True, "reply token"),
    Case("S5-07 HMAC token expired", reply(to=EXPIRED), False,
         f"reply token for {TICKET} expired"),
    Case("S5-08 HMAC token for another ticket", reply(to=FOR_OTHER_TICKET), False,
         f"reply token is for {OTHER_TICKET}, not {TICKET}"),
    Case("S5-09 HMAC token tampered", reply(to=TAMPERED), False,
         f"reply token for {TICKET} does not verify"),
    Case("S5-10 several From addresses",
         reply(from_=("agent@estelar.example, eve@evil.example",), to=VALID),
         False, "ambiguous From header"),
    Case("S5-11 alice@x(<staff@y>",
         reply(from_=("alice@x.example(<agent@estelar.example>",), to=VALID,
               trace=(AR_GENUINE,)),
         False, "ambiguous From header"),
    Case("S5-12 genuine trusted A-R", reply(trace=(AR_GENUINE,)), True,
         "dkim=pass d=estelar.example"),
    # --- further genuine replies ---------------------------------------------------------------
    Case("genuine: dkim only, folded A-R, upper-case authserv-id",
         reply(trace=("Authentication-Results: MX.Estelar.Example 1;\r\n"
                      "\tdkim=pass (2048-bit key; secure) header.d=Estelar.Example\r\n"
                      "\theader.s=sel header.b=\"AbCdEfGh\"; spf=none",)),
         True, "dkim=pass d=estelar.example"),
    Case("genuine: our A-R above a forged or upstream one",
         reply(trace=(AR_GENUINE,
                      "Authentication-Results: mx.evil.example;"
                      " dkim=fail header.d=estelar.example")),
         True, "pass"),
    Case("genuine: token in Cc", reply(extra=(f"Cc: {VALID}",)), True, "reply token"),
    Case("genuine: token in Delivered-To", reply(trace=(f"Delivered-To: {VALID}",)), True,
         "reply token"),
    Case("genuine: token local part lower-cased", reply(to=VALID.lower()), True, "reply token"),
    Case("genuine: token with a display name", reply(to=f'"ESTELAR podpora" <{VALID}>'), True,
         "reply token"),
    Case("genuine: Outlook 'Last, First' encoded display name",
         reply(from_=("=?utf-8?b?RHZvxZnDoWssIEppxZnDrQ==?= <jiri.dvorak@estelar.example>",),
               trace=(AR_DKIM_FOR_ESTELAR,)),
         True, "dkim=pass d=estelar.example"),
    # --- further spoofs ------------------------------------------------------------------------
    Case("spoof: forged trusted A-R below our honest one",
         reply(trace=("Authentication-Results: mx.estelar.example;"
                      " dkim=none; spf=softfail smtp.mailfrom=eve@evil.example",
                      AR_DKIM_FOR_ESTELAR)),
         False, "no aligned dkim or dmarc pass from mx.estelar.example"),
    Case("spoof: two From header fields",
         reply(from_=("agent@estelar.example", "eve@evil.example"), to=VALID),
         False, "ambiguous From header"),
    Case("spoof: staff address as the display name",
         reply(from_=('"agent@estelar.example" <eve@evil.example>',), to=VALID),
         False, "eve@evil.example is not staff"),
    Case("spoof: look-alike staff domain",
         reply(from_=("agent@estelar.example.evil.example",), to=VALID,
               trace=(AR_DKIM_FOR_ESTELAR,)),
         False, "is not staff"),
    Case("spoof: token address on a look-alike domain",
         reply(to=VALID.replace("@estelar.example", "@estelar.example.evil.example")),
         False, "no reply token"),
    Case("spoof: quoted envelope local part smuggles a property into our A-R",
         reply(trace=("Authentication-Results: mx.estelar.example; spf=pass"
                      ' smtp.mailfrom="x smtp.mailfrom=agent@estelar.example y"@evil.example;'
                      " dkim=none",)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: quoted envelope local part smuggles a result set into our A-R",
         reply(trace=("Authentication-Results: mx.estelar.example; spf=pass"
                      ' smtp.mailfrom="x;dkim=pass header.d=estelar.example x="@evil.example',)),
         False, "no aligned dkim or dmarc pass"),
    # --- round two: encoded words (read raw, never decoded) -------------------------------
    Case("spoof: encoded word in smtp.mailfrom (base64) decodes into dkim=pass",
         reply(trace=(ar(f"{OURS}; spf=none smtp.mailfrom={encoded(INJECTED)}@nowhere.invalid;"
                         " dkim=none"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: encoded word in smtp.mailfrom (Q) decodes into dkim=pass",
         reply(trace=(ar(f"{OURS}; spf=softfail"
                         f" smtp.mailfrom={encoded(INJECTED, 'q')}@nowhere.invalid"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: encoded header.d",
         reply(trace=(ar(f"{OURS}; dkim=pass header.d={encoded('estelar.example', 'q')}"
                         " header.s=sel"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: encoded word in a comment closes it and opens a result set",
         reply(trace=(ar(f"{OURS}; spf=fail (sender {encoded(') ; dkim=pass header.d=estelar.example (')})"
                         " smtp.mailfrom=agent@estelar.example; dkim=none"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: encoded header.from of a dmarc result",
         reply(trace=(ar(f"{OURS}; dmarc=pass header.from={encoded('estelar.example')}"),)),
         False, "no aligned dkim or dmarc pass"),
    # --- comments, quoted strings, property values -----------------------------------------
    Case("spoof: result inside a comment",
         reply(trace=(ar(f"{OURS}; dkim=fail (dkim=pass header.d=estelar.example)"
                         " header.d=estelar.example"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: result set inside a comment",
         reply(trace=(ar(f"{OURS}; spf=fail (x; dkim=pass header.d=estelar.example)"
                         " smtp.mailfrom=eve@evil.test"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: result set inside a quoted reason",
         reply(trace=(ar(f'{OURS}; dkim=fail reason="; dkim=pass header.d=estelar.example"'
                         " header.d=evil.test"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: dkim=pass as a property value",
         reply(trace=(ar(f"{OURS}; spf=none smtp.mailfrom=dkim=pass header.d=estelar.example"),)),
         False, "no aligned dkim or dmarc pass"),
    # --- look-alike and other domains ------------------------------------------------------
    Case("spoof: dkim=pass for a look-alike suffix domain",
         reply(trace=(ar(f"{OURS}; dkim=pass header.d=estelar.example.evil.test"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: dkim=pass for a look-alike hyphen domain",
         reply(trace=(ar(f"{OURS}; dkim=pass header.d=estelar-example.test"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: dkim=pass for another domain",
         reply(trace=(ar(f"{OURS}; dkim=pass header.d=evil.test; spf=pass"
                         " smtp.mailfrom=eve@evil.test"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: dmarc=pass for another domain",
         reply(trace=(ar(f"{OURS}; dmarc=pass header.from=evil.test"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: dmarc=pass for a look-alike domain",
         reply(trace=(ar(f"{OURS}; dmarc=pass header.from=estelar.example.evil.test"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: dkim=pass for a subdomain d= (neither the From domain nor its org domain)",
         reply(trace=(ar(f"{OURS}; dkim=pass header.d=mail.estelar.example header.s=sel"),)),
         False, "no aligned dkim or dmarc pass"),
    Case("spoof: SPF-only pass (a shared provider passes for its other customers)",
         reply(trace=(ar(f"{OURS}; spf=pass smtp.mailfrom=agent@estelar.example; dkim=none"),)),
         False, "no aligned dkim or dmarc pass"),
    # --- several A-R headers -----------------------------------------------------------------
    Case("spoof: foreign A-R with a pass above our failing one",
         reply(trace=(ar("relay.evil.test; dkim=pass header.d=estelar.example"),
                      ar(f"{OURS}; dkim=fail header.d=estelar.example"))),
         False, "topmost Authentication-Results is from 'relay.evil.test'"),
    Case("spoof: ours (forged, passing) below a foreign one",
         reply(trace=(ar("mx.evil.test; none"),
                      ar(f"{OURS}; dkim=pass header.d=estelar.example"))),
         False, "topmost Authentication-Results is from 'mx.evil.test'"),
    Case("spoof: two of ours, the forged pass below an encoded-word one",
         reply(trace=(ar(f"{OURS}; spf=none smtp.mailfrom={encoded(INJECTED)}@x.invalid"),
                      ar(f"{OURS}; dkim=pass header.d=estelar.example"))),
         False, "no aligned dkim or dmarc pass"),
    # --- reply tokens are not passwords --------------------------------------------------------
    Case("spoof: valid token, but the mail also goes to an outside address",
         reply(to=VALID, extra=("Cc: eve@evil.test",)),
         False, "reply token in a mail also to eve@evil.test"),
    Case("spoof: valid token, our MTA says dmarc=fail for the From domain",
         reply(to=VALID, trace=(ar(f"{OURS}; dmarc=fail header.from=estelar.example"),)),
         False, "dmarc=fail for estelar.example"),
    Case("spoof: token under an unknown (e.g. retired) secret", reply(to=ROTATED), False,
         f"reply token for {TICKET} does not verify"),
    # --- round two: genuine paths --------------------------------------------------------------
    Case("genuine: the dev2 border MTA header", reply(trace=(AR_DEV2,)), True,
         "dkim=pass d=estelar.example"),
    Case("genuine: dmarc=pass for the From domain",
         reply(trace=(ar(f"{OURS}; dkim=pass header.d=mailer.test; spf=pass"
                         " smtp.mailfrom=estelar.example; dmarc=pass header.from=estelar.example"),)),
         True, "dmarc=pass header.from=estelar.example"),
    Case("genuine: d= the organizational domain of a From subdomain",
         reply(from_=("Agent <agent@podpora.estelar.example>",),
               trace=(ar(f"{OURS}; dkim=pass header.d=estelar.example"),)),
         True, "dkim=pass d=estelar.example"),
    Case("genuine: two of ours, the genuine pass on top",
         reply(trace=(AR_DEV2, ar(f"{OURS}; dkim=fail header.d=estelar.example"))),
         True, "dkim=pass d=estelar.example"),
    Case("genuine: token with a staff colleague in Cc",
         reply(to=VALID, extra=("Cc: kolega@estelar.example, podpora@estelar.example",)),
         True, "reply token"),
)


def judge(case: Case) -> tuple[Mail, Verdict]:
    mail = parse(case.raw)
    return mail, check_staff(mail, POLICY, TICKET, TODAY)


def test_matrix_has_the_twelve_s5_cases() -> None:
    names = [c.name for c in MATRIX]
    assert len(set(names)) == len(names)
    assert [n.split()[0] for n in names[:12]] == [f"S5-{i:02d}" for i in range(1, 13)]
    assert not any(n.startswith("S5-") for n in names[12:])


@pytest.mark.parametrize("case", MATRIX, ids=[c.name for c in MATRIX])
def test_s5_spoofing_matrix(case: Case) -> None:
    mail, verdict = judge(case)
    assert f"[#{TICKET}]" in mail.subject
    assert verdict.trusted is case.genuine, verdict.reason
    assert case.reason in verdict.reason


# --- reply tokens ------------------------------------------------------------------------------


def test_reply_token_is_deterministic_and_well_formed() -> None:
    expires = TODAY + timedelta(days=90)
    token = reply_token(SECRET, TICKET, expires)
    assert token == reply_token(SECRET, TICKET, expires)
    assert re.fullmatch(r"[0-9a-z]{4}[a-z2-7]{16}", token)
    assert int(token[:4], 36) == (expires - EPOCH).days
    assert reply_token(SECRET, TICKET, EPOCH)[:4] == "0000"
    assert reply_token(SECRET, TICKET, EPOCH + timedelta(days=36))[:4] == "0010"
    # Secret, ticket and expiry all go into the MAC.
    assert reply_token(b"other-secret", TICKET, expires)[4:] != token[4:]
    assert reply_token(SECRET, OTHER_TICKET, expires)[4:] != token[4:]
    assert reply_token(SECRET, TICKET, expires + timedelta(days=1))[4:] != token[4:]
    assert reply_address(SUPPORT, TICKET, SECRET, expires) == (
        f"podpora+{TICKET}.{token}@estelar.example"
    )


def test_reply_token_is_valid_through_its_expiry_day() -> None:
    address = reply_address(SUPPORT, TICKET, SECRET, TODAY)
    assert token_ticket(address, SUPPORT, SECRET, TODAY) == Verdict(True, TICKET)
    assert token_ticket(address, SUPPORT, SECRET, TODAY + timedelta(days=1)) == Verdict(
        False, f"reply token for {TICKET} expired")


@pytest.mark.parametrize("address", [
    VALID, VALID.upper(), f" <{VALID}> ", VALID.replace("podpora+T-", "podpora+t-"),
])
def test_token_ticket_accepts_the_reply_address(address: str) -> None:
    assert token_ticket(address, SUPPORT, SECRET, TODAY) == Verdict(True, TICKET)


TOKEN = VALID.partition("+")[2].partition("@")[0]  # "T-2026-000123.<expiry><mac>"


@pytest.mark.parametrize(("address", "reason"), [
    (VALID.replace("@estelar.example", "@evil.example"), "not a reply address"),
    (VALID.replace("@estelar.example", "@mail.estelar.example"), "not a reply address"),
    (f"info+{TOKEN}@estelar.example", "not a reply address"),
    (f"podporax+{TOKEN}@estelar.example", "not a reply address"),
    (f"xpodpora+{TOKEN}@estelar.example", "not a reply address"),
    (SUPPORT, "not a reply address"),
    ("", "not a reply address"),
    (f"podpora+{TICKET}@estelar.example", "malformed reply token"),
    (f"podpora+{TICKET}.@estelar.example", "malformed reply token"),
    (f"podpora+{TOKEN[:-1]}@estelar.example", "malformed reply token"),
    (f"podpora+{TOKEN}a@estelar.example", "malformed reply token"),
    (f"podpora+{TOKEN}.x@estelar.example", "malformed reply token"),
    (f"podpora+{TOKEN[:-1]}1@estelar.example", "malformed reply token"),  # 1 is not base32
    (f"podpora+{TOKEN.replace('T-2026-', 'T-26-')}@estelar.example", "malformed reply token"),
    (f"podpora+x{TOKEN}@estelar.example", "malformed reply token"),
    (f"podpora+{TOKEN}+{TOKEN}@estelar.example", "malformed reply token"),
])
def test_token_ticket_rejects(address: str, reason: str) -> None:
    assert token_ticket(address, SUPPORT, SECRET, TODAY) == Verdict(False, reason)


def test_token_ticket_rejects_another_secret() -> None:
    assert token_ticket(VALID, SUPPORT, b"other-secret", TODAY) == Verdict(
        False, f"reply token for {TICKET} does not verify")
    assert token_ticket(VALID, SUPPORT, b"", TODAY).trusted is False


TICKETS = st.builds(lambda y, n: f"T-{y:04d}-{n:06d}",
                    st.integers(0, 9999), st.integers(0, 999_999))


@settings(max_examples=200, derandomize=True, deadline=None)
@given(ticket=TICKETS, days=st.integers(0, 3650),
       mac=st.text(alphabet=BASE32, min_size=16, max_size=16))
def test_a_changed_mac_never_verifies(ticket: str, days: int, mac: str) -> None:
    expires = TODAY + timedelta(days=days)
    token = reply_token(SECRET, ticket, expires)
    if mac == token[4:]:
        return  # one chance in 2**80: not a change
    address = f"podpora+{ticket}.{token[:4]}{mac}@estelar.example"
    assert token_ticket(address, SUPPORT, SECRET, TODAY) == Verdict(
        False, f"reply token for {ticket} does not verify")


@settings(max_examples=200, derandomize=True, deadline=None)
@given(ticket=TICKETS, days=st.integers(0, 3650), lower=st.booleans())
def test_any_ticket_round_trips(ticket: str, days: int, lower: bool) -> None:
    address = reply_address(SUPPORT, ticket, SECRET, TODAY + timedelta(days=days))
    address = address.lower() if lower else address
    assert token_ticket(address, SUPPORT, SECRET, TODAY) == Verdict(True, ticket)


# --- Authentication-Results --------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    # RFC 8601 B.2: a version number after the authserv-id, no results.
    ("example.org 1; none", ("example.org", [])),
    # B.3
    ("example.com;\n          spf=pass smtp.mailfrom=example.net",
     ("example.com", [{"method": "spf", "result": "pass", "smtp.mailfrom": "example.net"}])),
    # B.4: several result sets, a comment after the result.
    ("example.com;\n          auth=pass (cram-md5) smtp.auth=sender@example.net;\n"
     "          spf=pass smtp.mailfrom=example.net",
     ("example.com", [{"method": "auth", "result": "pass", "smtp.auth": "sender@example.net"},
                      {"method": "spf", "result": "pass", "smtp.mailfrom": "example.net"}])),
    ("example.com; iprev=pass\n          policy.iprev=192.0.2.200",
     ("example.com", [{"method": "iprev", "result": "pass", "policy.iprev": "192.0.2.200"}])),
    # B.5
    ("example.com;\n          dkim=pass (good signature) header.d=example.com",
     ("example.com", [{"method": "dkim", "result": "pass", "header.d": "example.com"}])),
    # B.6: quoted values, several dkim results.
    ('example.com;\n      dkim=pass reason="good signature"\n'
     '        header.i=@mail-router.example.net;\n      dkim=fail reason="bad signature"\n'
     "        header.i=@newyork.example.com",
     ("example.com", [{"method": "dkim", "result": "pass", "reason": "good signature",
                       "header.i": "@mail-router.example.net"},
                      {"method": "dkim", "result": "fail", "reason": "bad signature",
                       "header.i": "@newyork.example.com"}])),
    # B.7: comments in every legal gap (`dkim/1=fail policy.expired=1362471462`).
    ("foo.example.net (foobar) 1 (baz);\n"
     "    dkim (Because I like it) / 1 (One yay) = (wait for it) fail\n"
     "      policy (A dot can go here) . (like that) expired\n"
     "      (this surprised me) = (as I wasn't expecting it) 1362471462",
     ("foo.example.net", [{"method": "dkim", "result": "fail",
                           "policy.expired": "1362471462"}])),
    # 2.7.6: an unknown method is still read (and ignored by the caller).
    ("example.com;\n          foo=pass bar.baz=blob (2 of 3 tests OK)",
     ("example.com", [{"method": "foo", "result": "pass", "bar.baz": "blob"}])),
    # Case is folded; a comment right after a value separates it from the next property.
    ("MX.Estelar.Example; DKIM=Pass(ok)Header.D=Estelar.Example",
     ("mx.estelar.example", [{"method": "dkim", "result": "pass",
                              "header.d": "estelar.example"}])),
    # A quoted string is one value, whatever it holds.
    ('mx.estelar.example; dkim=pass reason="a; b (c) d=e" header.d=estelar.example',
     ("mx.estelar.example", [{"method": "dkim", "result": "pass", "reason": "a; b (c) d=e",
                              "header.d": "estelar.example"}])),
    ('mx.estelar.example; spf=pass smtp.mailfrom="a smtp.mailfrom=b@estelar.example"@x.example',
     ("mx.estelar.example", [{"method": "spf", "result": "pass",
                              "smtp.mailfrom": '"a smtp.mailfrom=b@estelar.example"@x.example'}])),
    # A property given twice keeps its first value.
    ("mx.estelar.example; dkim=pass header.d=evil.example header.d=estelar.example",
     ("mx.estelar.example", [{"method": "dkim", "result": "pass", "header.d": "evil.example"}])),
    ("", ("", [])),
    ("mx.estelar.example", ("mx.estelar.example", [])),
])
def test_parse_authentication_results(
    value: str, expected: tuple[str, list[dict[str, str]]]
) -> None:
    assert parse_authentication_results(value) == expected


def ar_mail(*values: str, from_: str = AGENT) -> Mail:
    return parse(reply(trace=tuple(f"Authentication-Results: {v}" for v in values),
                       from_=(from_,)))


def test_authenticated_by_mta_without_configured_authserv_ids_trusts_nothing() -> None:
    mail = ar_mail("mx.estelar.example; dkim=pass header.d=estelar.example")
    assert authenticated_by_mta(mail, "agent@estelar.example", POLICY.authserv_ids).trusted
    assert authenticated_by_mta(mail, "agent@estelar.example", ()) == Verdict(
        False, "no trusted Authentication-Results")
    assert authenticated_by_mta(parse(reply()), "agent@estelar.example",
                                POLICY.authserv_ids).trusted is False


@pytest.mark.parametrize("value", [
    # an unterminated quoted local part that merely ends like a staff subdomain
    'mx.estelar.example; spf=pass smtp.mailfrom="x .estelar.example',
    "mx.estelar.example; dkim=pass header.d=",
    "mx.estelar.example; dkim=pass",
    "mx.estelar.example; dkim=pass header.d=xestelar.example",
    "mx.estelar.example; dkim=neutral header.d=estelar.example",
    "mx.estelar.example; spf=pass smtp.helo=estelar.example",
])
def test_authenticated_by_mta_refuses(value: str) -> None:
    verdict = authenticated_by_mta(ar_mail(value), "agent@estelar.example", POLICY.authserv_ids)
    assert verdict == Verdict(False, "no aligned dkim or dmarc pass from mx.estelar.example")


# --- From header and verify=False --------------------------------------------------------------


@pytest.mark.parametrize(("from_", "expected"), [
    (AGENT, "agent@estelar.example"),
    ('"Smith, Agent" <agent@estelar.example>', "agent@estelar.example"),
    ("=?utf-8?b?RHZvxZnDoWssIEppxZnDrQ==?= <jiri.dvorak@estelar.example>",
     "jiri.dvorak@estelar.example"),
    ("=?utf-8?q?Smith=2C_Agent_=28support=29?= <agent@estelar.example>",
     "agent@estelar.example"),
    ('"agent@estelar.example" <eve@evil.example>', "eve@evil.example"),
    ("agent@estelar.example <eve@evil.example>", None),
    ("=?utf-8?q?x_=3Cagent=40estelar.example=3E?= <eve@evil.example>", None),
    ("alice@x.example(<agent@estelar.example>", None),
    ("agent@estelar.example, eve@evil.example", None),
    ("Undisclosed:;", None),
])
def test_single_from(from_: str, expected: str | None) -> None:
    assert single_from(parse(reply(from_=(from_,)))) == expected


def test_verify_off_trusts_a_staff_from_alone_but_nothing_else() -> None:
    policy = StaffPolicy(
        staff_domains=POLICY.staff_domains, staff_addresses=frozenset({"boss@partner.example"}),
        authserv_ids=POLICY.authserv_ids, support_address=SUPPORT, token_secret=SECRET,
        verify=False,
    )
    staff = parse(reply())
    assert check_staff(staff, POLICY, TICKET, TODAY).trusted is False
    assert check_staff(staff, policy, TICKET, TODAY) == Verdict(True, "staff verification off")
    listed = parse(reply(from_=("Boss <Boss@Partner.example>",)))
    assert check_staff(listed, policy, TICKET, TODAY).trusted is True
    outsider = parse(reply(from_=("Eve <eve@evil.example>",), to=VALID,
                           trace=(AR_DKIM_FOR_ESTELAR,)))
    assert check_staff(outsider, policy, TICKET, TODAY) == Verdict(
        False, "eve@evil.example is not staff")
    ambiguous = parse(reply(from_=("agent@estelar.example, eve@evil.example",)))
    assert check_staff(ambiguous, policy, TICKET, TODAY) == Verdict(False, "ambiguous From header")


# --- round two (issue 14): named after the weaknesses ------------------------------------------


def test_encoded_words_in_authentication_results_never_become_results() -> None:
    """Item 1: the envelope sender (copied by the border MTA into smtp.mailfrom) is sender
    text; an encoded word in it must not decode into `; dkim=pass header.d=estelar.example`.
    On the base commit the header was RFC 2047-decoded first and the forgery was trusted."""
    word = encoded(INJECTED)
    mail = parse(reply(trace=(ar(f"{OURS}; spf=none smtp.mailfrom={word}@nowhere.invalid;"
                                 " dkim=none"),)))
    assert mail.header("authentication-results") == (
        f"{OURS}; spf=none smtp.mailfrom={word}@nowhere.invalid; dkim=none")
    verdict = check_staff(mail, POLICY, TICKET, TODAY)
    assert verdict.trusted is False, verdict.reason
    _, results = parse_authentication_results(mail.header("authentication-results") or "")
    assert [(r["method"], r["result"]) for r in results] == [("spf", "none"), ("dkim", "none")]


def test_reply_token_copied_to_an_outsider_proves_nothing() -> None:
    """Item 2: whoever else got a mail with the token could reuse it with a forged From; a
    token mail that also goes outside the staff is therefore not trusted (it still is with
    only staff and the support address as recipients)."""
    outside = parse(reply(to=VALID, extra=("Cc: Jan Zakaznik <jan@zakaznik.test>",)))
    assert check_staff(outside, POLICY, TICKET, TODAY).trusted is False
    inside = parse(reply(to=VALID, extra=("Cc: podpora@estelar.example",)))
    assert check_staff(inside, POLICY, TICKET, TODAY) == Verdict(True, "reply token")


def test_token_secret_rotation_accepts_the_previous_secret() -> None:
    """A rotated secret: tokens made under the previous one stay valid while it is listed as
    previous (and only then); new tokens are made under the new one."""
    rotated = StaffPolicy(
        staff_domains=POLICY.staff_domains, staff_addresses=frozenset(),
        authserv_ids=POLICY.authserv_ids, support_address=SUPPORT, token_secret=SECRET,
        previous_secrets=(PREVIOUS_SECRET,))
    old = parse(reply(to=ROTATED))
    assert check_staff(old, rotated, TICKET, TODAY) == Verdict(True, "reply token")
    assert check_staff(old, POLICY, TICKET, TODAY).trusted is False
    assert token_ticket(ROTATED, SUPPORT, SECRET, TODAY, (PREVIOUS_SECRET,)) == Verdict(
        True, TICKET)
    assert token_ticket(ROTATED, SUPPORT, SECRET, TODAY + timedelta(days=11),
                        (PREVIOUS_SECRET,)).reason == f"reply token for {TICKET} expired"


def test_a_token_under_an_empty_secret_never_verifies() -> None:
    """HMAC under b"" is computable by anyone: an empty secret must verify nothing."""
    forged = reply_address(SUPPORT, TICKET, b"", TODAY + timedelta(days=5))
    assert token_ticket(forged, SUPPORT, b"", TODAY).trusted is False
    assert token_ticket(forged, SUPPORT, SECRET, TODAY, (b"",)).trusted is False


@pytest.mark.parametrize(("domain", "org"), [
    ("estelar.example", "estelar.example"),
    ("podpora.estelar.example", "estelar.example"),
    ("mail.firma.co.uk", "firma.co.uk"),
    ("estelar.example.evil.test", "evil.test"),
    ("user.github.io", "user.github.io"),
])
def test_organizational_domain_uses_the_public_suffix_list(domain: str, org: str) -> None:
    assert organizational_domain(domain) == org


def test_dev2_staff_replies_verify_with_the_configured_authserv_id() -> None:
    """shared/labelled/dev2: every staff reply carries the border MTA's header and verifies
    (by DKIM) with authserv_ids = [mx.estelar.example]; without the id none does."""
    import json
    from pathlib import Path

    from tests.shared_data import require_shared

    dev2 = require_shared("labelled/dev2")
    labels = [json.loads(line) for line in (dev2 / "labels.jsonl").read_text().splitlines()
              if line.strip()]
    staff = [row for row in labels if row["expected"] == "staff_reply"]
    assert staff
    for row in staff:
        mail = parse(Path(dev2, row["file"]).read_bytes())
        verdict = check_staff(mail, POLICY, row["ticket_ref"], date(2026, 11, 25))
        assert verdict.trusted and verdict.reason.startswith("dkim=pass"), (row["file"], verdict)
        untrusted = StaffPolicy(staff_domains=POLICY.staff_domains, staff_addresses=frozenset(),
                                authserv_ids=frozenset(), support_address=SUPPORT,
                                token_secret=SECRET)
        assert check_staff(mail, untrusted, row["ticket_ref"], date(2026, 11, 25)).trusted is False


# --- the S5 line -------------------------------------------------------------------------------


def test_s5_spoofing_matrix_summary() -> None:
    spoofed, rejected = [], []
    for case in MATRIX:
        _, verdict = judge(case)
        if verdict.trusted and not case.genuine:
            spoofed.append(f"{case.name}: {verdict.reason}")
        elif case.genuine and not verdict.trusted:
            rejected.append(f"{case.name}: {verdict.reason}")
    genuine = sum(c.genuine for c in MATRIX)
    print(f"\nS5 spoofing matrix: {len(MATRIX)} cases, {len(spoofed)} spoofed accepted,"
          f" {len(rejected)} genuine rejected")
    print(f"  (the 12 S5 cases and {len(MATRIX) - 12} more: {genuine} genuine replies,"
          f" {len(MATRIX) - genuine} spoofs)")
    for line in spoofed + rejected:
        print(f"  {line}")
    assert spoofed == []
    assert rejected == []
